"""The logprob judge: how sure a model was of its own tokens, read from the log-probabilities of its reply.

A provider that returns log-probabilities (an OpenAI-compatible server asked with `logprobs=True,
top_logprobs=2`; the local llama.cpp models) puts them in the reply's `response_metadata["logprobs"]` in
OpenAI's shape: `{"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}, ...]}`.
`logprob_stats` reduces that to a few numbers that a proposal carries (never the tokens themselves);
`logprob_score` turns them into a score in [0, 1]: the mean of the geometric-mean token probability,
exp(mean logprob), and the mean top-1 margin, p(chosen) - p(runner-up) (when the provider gave a runner-up).
A declared rule, not learned.

Bounded on any metadata: at most `MAX_TOKENS` entries are read, values that are not numbers (or NaN, or
+inf) are skipped, and log-probabilities are clamped to [`MIN_LOGPROB`, 0].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from typing_extensions import TypedDict

__all__ = ["MAX_TOKENS", "MIN_LOGPROB", "LogprobStats", "logprob_score", "logprob_stats"]

MAX_TOKENS = 8192
"""Token entries of one reply that are read; the first ones count."""
MIN_LOGPROB = -100.0
"""The least log-probability a token counts for (a server may send -inf or -9999 for 'never')."""


class LogprobStats(TypedDict):
    """What a proposal carries of its reply's log-probabilities."""

    tokens: int
    """Tokens read."""
    mean_logprob: float
    """Mean log-probability of the chosen tokens (<= 0)."""
    mean_margin: float | None
    """Mean of p(chosen) - p(best other) over the tokens with a runner-up; None when none had one."""


def _logprob(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value == math.inf:
        return None
    return min(0.0, max(MIN_LOGPROB, float(value)))  # -inf ('never') is the floor


def logprob_stats(logprobs: Any) -> LogprobStats | None:
    """Return the statistics of a reply's token log-probabilities, or None when it carries none.

    Args:
        logprobs: `response_metadata["logprobs"]` of a chat model's reply, in OpenAI's shape (or anything).
    """
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not isinstance(content, list):
        return None
    chosen: list[float] = []
    margins: list[float] = []
    for entry in content[:MAX_TOKENS]:
        if not isinstance(entry, Mapping) or (value := _logprob(entry.get("logprob"))) is None:
            continue
        chosen.append(value)
        top = entry.get("top_logprobs")
        others = [
            v
            for item in (top[:20] if isinstance(top, list) else [])
            if isinstance(item, Mapping)
            and item.get("token") != entry.get("token")
            and (v := _logprob(item.get("logprob"))) is not None
        ]
        if others:
            margins.append(max(0.0, math.exp(value) - math.exp(max(others))))
    if not chosen:
        return None
    return LogprobStats(
        tokens=len(chosen),
        mean_logprob=sum(chosen) / len(chosen),
        mean_margin=sum(margins) / len(margins) if margins else None,
    )


def logprob_score(stats: Mapping[str, object] | None) -> float | None:
    """Return the logprob judge's score in [0, 1] (see the module docstring), or None without statistics.

    Args:
        stats: A proposal's `LogprobStats`, or None.
    """
    if not stats:
        return None
    mean = _logprob(stats.get("mean_logprob"))
    if mean is None:
        return None
    sure = math.exp(mean)
    margin = stats.get("mean_margin")
    if isinstance(margin, int | float) and not isinstance(margin, bool) and math.isfinite(margin):
        return (sure + min(1.0, max(0.0, float(margin)))) / 2
    return sure
