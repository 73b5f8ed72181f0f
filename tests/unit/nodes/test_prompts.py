from __future__ import annotations

from moai.nodes.prompts import parse_confidence, parse_judgement, propose_messages


def test_confidence_line_is_split_off() -> None:
    assert parse_confidence("Paris.\nConfidence: 0.85") == ("Paris.", 0.85)
    assert parse_confidence("Paris.\n**Confidence:** 90%") == ("Paris.", 0.9)
    assert parse_confidence("Paris.") == ("Paris.", None)


def test_judgement_scores_each_answer_and_keeps_the_critique() -> None:
    scores, critique = parse_judgement("Answer 1: 8\nAnswer 2: 3\nCritique: the second is wrong", 2)
    assert scores == [0.8, 0.3]
    assert critique == "the second is wrong"


def test_judgement_of_one_answer_accepts_a_plain_score_and_ignores_strays() -> None:
    assert parse_judgement("Score: 7/10. Critique: ok", 1) == ([0.7], "ok")
    assert parse_judgement("Answer 5: 9", 2) == ([None, None], "Answer 5: 9")


def test_proposers_of_a_later_layer_see_the_earlier_answers() -> None:
    system, human = propose_messages(
        "Q?", prompt="answer", instructions=None, references=["one", "two"], critique=None, ask_confidence=True
    )
    assert "1. one\n\n2. two" in system.text and "Confidence: X" in system.text
    assert human.text == "Q?"


def test_revise_sees_the_draft_and_the_critique() -> None:
    system, _ = propose_messages(
        "Q?", prompt="revise", instructions="Be brief.", references=["draft"], critique="too long", ask_confidence=False
    )
    assert system.text.startswith("Be brief.") and "draft" in system.text and "too long" in system.text
