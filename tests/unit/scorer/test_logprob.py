"""The logprob judge: token log-probabilities of any shape reduced to bounded statistics and a score."""

from __future__ import annotations

import math
from typing import Any

import pytest

from moai.scorer.logprob import MAX_TOKENS, logprob_score, logprob_stats


def entry(token: str, logprob: Any, *top: tuple[str, Any]) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "top_logprobs": [{"token": t, "logprob": v} for t, v in top]}


def test_the_statistics_are_the_mean_logprob_and_the_mean_top1_margin() -> None:
    half, quarter = math.log(0.5), math.log(0.25)
    stats = logprob_stats(
        {"content": [entry("a", 0.0, ("a", 0.0), ("b", -100.0)), entry("c", half, ("c", half), ("d", quarter))]}
    )
    assert stats == {"tokens": 2, "mean_logprob": pytest.approx(half / 2), "mean_margin": pytest.approx(0.625)}
    # exp(mean logprob) = sqrt(0.5); the margins 1.0 and 0.25 average to 0.625
    assert logprob_score(stats) == pytest.approx((math.sqrt(0.5) + 0.625) / 2)


def test_a_token_sampled_below_its_runner_up_has_no_margin() -> None:
    stats = logprob_stats({"content": [entry("b", math.log(0.2), ("a", math.log(0.7)), ("b", math.log(0.2)))]})
    assert stats is not None and stats["mean_margin"] == 0.0


def test_without_runner_ups_the_score_is_the_geometric_mean_probability() -> None:
    stats = logprob_stats({"content": [entry("a", math.log(0.8)), entry("b", math.log(0.2))]})
    assert stats is not None and stats["mean_margin"] is None
    assert logprob_score(stats) == pytest.approx(0.4)


@pytest.mark.parametrize(
    "logprobs",
    [None, {}, {"content": None}, {"content": []}, {"content": "abc"}, [1, 2], "x", {"content": [{"logprob": "x"}]}],
)
def test_no_logprobs_or_unreadable_ones_give_no_score(logprobs: Any) -> None:
    assert logprob_stats(logprobs) is None
    assert logprob_score(logprob_stats(logprobs)) is None


def test_hostile_values_are_skipped_or_clamped() -> None:
    content = [
        entry("a", float("nan")),
        entry("b", float("inf")),
        entry("c", True),
        entry("d", float("-inf")),  # a 'never' token: clamped, so the mean stays finite
        entry("e", 5.0, ("e", 5.0), ("f", float("nan")), ("g", "high")),  # a positive logprob: clamped to 0
        "not an entry",
    ]
    stats = logprob_stats({"content": content})
    assert stats == {"tokens": 2, "mean_logprob": -50.0, "mean_margin": None}
    score = logprob_score(stats)
    assert score is not None and 0.0 <= score <= 1.0
    assert logprob_score({"mean_logprob": float("nan")}) is None
    assert logprob_score({"mean_logprob": -1.0, "mean_margin": 7.0}) == pytest.approx((math.exp(-1) + 1) / 2)


def test_only_the_first_tokens_are_read() -> None:
    stats = logprob_stats({"content": [entry("a", -1.0)] * (MAX_TOKENS + 1000)})
    assert stats is not None and stats["tokens"] == MAX_TOKENS
