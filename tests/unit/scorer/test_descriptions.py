"""The descriptions predictor: calibration, the avoid list, the prior, the blend with a checkpoint, the errors."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from routing_fakes import FakeEncoder

from moai.scorer.predictors.descriptions import (
    BlendedScorer,
    Description,
    DescriptionScorer,
    Domain,
    read_descriptions,
    read_domains,
)
from moai.scorer.predictors.knn import KnnPredictor

POOL = {
    "coder": Description("python code functions bugs", ("write a python function",), (), 0.5),
    "mathy": Description("algebra equations arithmetic numbers", ("solve the equation for x",), (), 0.5),
    "chat": Description("friendly conversation advice", ("hello how are you",), (), 0.5),
}
QUERIES = ["write a python function for bugs", "solve the algebra equation", "hello friendly advice", "", "zzz qqq"]


def scorer(pool: dict[str, Description] = POOL, **kwargs: float) -> DescriptionScorer:
    return DescriptionScorer(pool, encoder=FakeEncoder(), **kwargs)


def test_each_query_goes_to_the_model_it_resembles() -> None:
    scores = np.array(scorer().predict(QUERIES[:3], list(POOL)))
    assert scores.argmax(axis=1).tolist() == [0, 1, 2]


@pytest.mark.parametrize("temperature", [1e-6, 0.05, 1.0, 1e6])
@pytest.mark.parametrize("off_domain", [0.0, 0.3, 1.0])
def test_scores_are_finite_and_in_the_unit_interval(temperature: float, off_domain: float) -> None:
    pool = {**POOL, "bare": Description("", (), ("anything at all",), 1.0)}
    pred = scorer(pool, temperature=temperature, off_domain=off_domain).predict(QUERIES, list(pool))
    arr = np.array(pred)
    assert np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1


def test_the_best_match_scores_its_declared_quality_and_the_others_less() -> None:
    pool = {**POOL, "coder": Description(POOL["coder"].text, POOL["coder"].examples, (), 0.9)}
    row = scorer(pool, off_domain=0.3).predict([QUERIES[0]], list(pool))[0]
    assert row[0] == pytest.approx(0.9)
    assert all(0.3 * 0.5 <= s < 0.5 for s in row[1:])


def test_scores_do_not_depend_on_which_models_are_asked_for() -> None:
    s = scorer()
    full = s.predict([QUERIES[1]], list(POOL))[0]
    assert s.predict([QUERIES[1]], ["chat", "mathy"])[0] == pytest.approx([full[2], full[1]])


def test_an_avoided_query_lowers_the_model_score() -> None:
    query = "tell me a joke about cats"
    plain = scorer().predict([query], list(POOL))[0]
    avoiding = {**POOL, "chat": Description(POOL["chat"].text, POOL["chat"].examples, (query,), 0.5)}
    lowered = scorer(avoiding).predict([query], list(POOL))[0]
    assert lowered[2] < plain[2]
    assert scorer(avoiding).predict([QUERIES[2]], ["chat"])[0][0] > lowered[2]


def test_a_query_that_matches_nothing_better_falls_back_to_the_best_declared_quality() -> None:
    pool = {
        name: Description(d.text, d.examples, (), q) for (name, d), q in zip(POOL.items(), (0.2, 0.9, 0.4), strict=True)
    }
    row = scorer(pool).predict([""], list(pool))[0]  # an empty query embeds to zeros: every match is 0
    assert int(np.argmax(row)) == 1


def test_a_model_described_alone_is_sure_only_of_queries_like_its_own() -> None:
    alone = scorer({"coder": POOL["coder"]})
    (related,), (unrelated,) = alone.predict(["write a python function", "zzz qqq"], ["coder"])
    assert related == pytest.approx(0.5)
    assert unrelated < 0.5 * (0.3 + 0.7 * 0.01)  # a fit of at most 1% of the in-domain one


def test_a_model_without_a_description_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'other'"):
        scorer().predict(["q"], ["other"])
    with pytest.raises(ValueError, match="no description for other"):
        scorer().fit(np.zeros((2, 32)), np.zeros((2, 2)), ["coder", "other"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_domain": 1.5}, "in_domain"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"off_domain": 2.0}, "off_domain"),
    ],
)
def test_settings_out_of_range_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scorer(**kwargs)


def test_state_round_trips() -> None:
    s = scorer(temperature=0.1)
    arrays, config = s.state()
    again = DescriptionScorer.from_state(arrays, config)
    again.encoder = FakeEncoder()
    assert np.array(again.predict(QUERIES, list(POOL))) == pytest.approx(np.array(s.predict(QUERIES, list(POOL))))


def test_fit_learns_nothing_and_keeps_the_column_order() -> None:
    s = scorer()
    before = s.predict(QUERIES, list(POOL))
    s.fit(np.ones((3, 32)), np.ones((3, 3)), ["chat", "mathy", "coder"])
    assert s.models == ("chat", "mathy", "coder")
    assert np.array(s.predict(QUERIES, list(POOL))) == pytest.approx(np.array(before))


def trained_knn(encoder: FakeEncoder) -> KnnPredictor:
    texts = ["write a python function", "solve the equation", "hello there", "fix my code"] * 5
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]] * 5)
    return KnnPredictor(encoder=encoder).fit(encoder.encode(texts), scores, ["coder", "mathy"], seed=0)


def test_a_blend_scores_a_model_the_checkpoint_lacks_from_its_description() -> None:
    encoder = FakeEncoder()
    knn = trained_knn(encoder)
    blend = BlendedScorer(knn, scorer({"chat": POOL["chat"]}), weight=0.0, quality={"coder": 0.8, "mathy": 0.4})
    row = blend.predict([QUERIES[2]], ["coder", "mathy", "chat"])[0]
    known = knn.predict([QUERIES[2]], ["coder", "mathy"])[0]
    assert row[:2] == pytest.approx(known)
    # On the checkpoint's scale: chat's own score times the known models' mean score per declared quality.
    own = scorer({"chat": POOL["chat"]}).predict([QUERIES[2]], ["chat"])[0][0]
    assert row[2] == pytest.approx(own * np.mean(known) / np.mean([0.8, 0.4]))


def test_a_blend_mixes_a_known_model_by_the_weight() -> None:
    encoder = FakeEncoder()
    knn = trained_knn(encoder)
    described = scorer()
    for weight in (0.0, 0.3, 1.0):
        blend = BlendedScorer(knn, scorer(), weight=weight)
        got = blend.predict(QUERIES, ["coder", "mathy"])
        known = np.array(knn.predict(QUERIES, ["coder", "mathy"]))
        scale = known.mean(axis=1, keepdims=True) / 0.5  # the declared quality of both is 0.5
        want = (1 - weight) * known + weight * np.array(described.predict(QUERIES, ["coder", "mathy"])) * scale
        assert np.array(got) == pytest.approx(want)
        assert blend.encoder is knn.encoder


def test_the_shipped_routerdc_descriptions_describe_the_benchmark_pool() -> None:
    import json
    from pathlib import Path

    from moai.scorer.benchmark.evaluate import ROUTERDC_DESCRIPTIONS

    results = Path(__file__).resolve().parents[3] / "bench" / "results" / "routing_routerdc.json"
    pool = json.loads(results.read_text())["setup"]["models"]
    described = read_descriptions(ROUTERDC_DESCRIPTIONS)
    assert sorted(described) == sorted(pool)
    assert all(d.text and d.examples for d in described.values())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  a: {descripton: x}\n", "models.a.descripton: Extra inputs are not permitted"),
        ("models:\n  a: {quality: 2}\n", "models.a.quality: Input should be less than or equal to 1"),
        (f"models:\n  a: {{examples: [{', '.join(['q'] * 65)}]}}\n", "models.a.examples: List should have at most 64"),
        ("models: [\n", "not YAML"),
    ],
)
def test_a_bad_descriptions_file_is_refused_naming_the_field(tmp_path: Any, text: str, message: str) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(message)):
        read_descriptions(path)


DOMAINS = {
    "code": Domain("python code functions", ("write a python function",)),
    "math": Domain("algebra equations arithmetic", ("solve the equation for x",)),
}
# The generalist states the best figure on code, the specialist on math; both texts say "code".
STATED = {
    "generalist": Description("python code functions", (), (), 0.6, {"code": 0.7, "math": 0.3}),
    "specialist": Description("python code functions", (), (), 0.5, {"math": 0.8}),
}


def test_domains_route_on_the_stated_figure_of_the_query_s_domain() -> None:
    s = DescriptionScorer(STATED, encoder=FakeEncoder(), domains=DOMAINS)
    scores = np.array(s.predict(["write a python function for bugs", "solve the algebra equation"], list(STATED)))
    assert scores.argmax(axis=1).tolist() == [0, 1]
    probs = s.domain_probabilities(s.encoder.encode(["solve the algebra equation"]))
    assert probs.sum() == pytest.approx(1.0) and probs[0, 1] > 0.9
    # off_domain defaults to 1 with domains: a score is the expected stated figure, unscaled by the texts.
    assert scores[1] == pytest.approx(probs[0] @ np.array([[0.7, 0.5], [0.3, 0.8]]))


def test_a_domain_a_model_states_nothing_on_counts_at_its_quality() -> None:
    s = DescriptionScorer(STATED, encoder=FakeEncoder(), domains=DOMAINS)
    emb = s.encoder.encode(["write a python function"])
    s.fit(emb, np.zeros((1, 2)), list(STATED), 0)
    probs = s.domain_probabilities(emb)[0]
    assert s.declared_quality(emb)[0, 1] == pytest.approx(probs[0] * 0.5 + probs[1] * 0.8)


def test_domains_without_texts_or_scores_keep_the_flat_prior() -> None:
    s = DescriptionScorer(POOL, encoder=FakeEncoder(), domains={"empty": Domain()})
    emb = s.encoder.encode(QUERIES)
    assert s.domain_probabilities(emb).sum() == 0
    assert np.allclose(s.declared_quality(emb), 0.5)
    arr = np.array(s.predict(QUERIES, list(POOL)))
    assert np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1


def test_a_score_naming_an_unknown_domain_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown domains: code"):
        DescriptionScorer(STATED, encoder=FakeEncoder(), domains={"math": DOMAINS["math"]})


def test_a_scorer_with_domains_round_trips_through_its_state() -> None:
    s = DescriptionScorer(STATED, encoder=FakeEncoder(), domains=DOMAINS)
    again = DescriptionScorer.from_state(*s.state())
    again.encoder = FakeEncoder()
    assert again.domains == DOMAINS and again.descriptions == STATED and again.off_domain == 1.0
    assert np.allclose(again.predict(QUERIES, list(STATED)), s.predict(QUERIES, list(STATED)))


def test_a_descriptions_file_reads_its_domains_and_refuses_a_score_on_an_undeclared_one(tmp_path: Any) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(
        "domains:\n  code: {description: python code, examples: [write a function]}\n"
        "models:\n  a: {quality: 0.4, scores: {code: 0.9}}\n",
        encoding="utf-8",
    )
    assert read_domains(path) == {"code": Domain("python code", ("write a function",))}
    assert read_descriptions(path)["a"].scores == {"code": 0.9}
    path.write_text("models:\n  a: {scores: {code: 0.9}}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"models\.a\.scores names no declared domain: code \(domains: none\)"):
        read_descriptions(path)
    path.write_text("domains: {c: {}}\nmodels:\n  a: {scores: {c: 1.5}}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"models\.a\.scores\.c: Input should be less than or equal to 1"):
        read_descriptions(path)


def test_the_shipped_routerdc_descriptions_state_a_figure_per_domain_for_every_model() -> None:
    from moai.scorer.benchmark.evaluate import ROUTERDC_DESCRIPTIONS

    domains = read_domains(ROUTERDC_DESCRIPTIONS)
    assert set(domains) == {"mmlu", "arc", "gsm8k", "humaneval", "cmmlu"}
    assert all(set(d.scores) == set(domains) for d in read_descriptions(ROUTERDC_DESCRIPTIONS).values())
