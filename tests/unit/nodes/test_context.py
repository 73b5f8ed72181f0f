"""MixContext refuses run-time values a mix file could not hold: no NaN switches a budget off."""

from __future__ import annotations

import math
from typing import Any

import pytest

from moai.mix_instructions.schema import MAX_MODELS
from moai.nodes.context import MixContext


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"budget_usd": math.nan}, "MixContext.budget_usd must be a finite number >= 0 or None, got nan"),
        ({"budget_usd": math.inf}, "MixContext.budget_usd must be a finite number >= 0 or None, got inf"),
        ({"budget_usd": -0.01}, "MixContext.budget_usd must be a finite number >= 0 or None, got -0.01"),
        ({"budget_usd": "0.01"}, "MixContext.budget_usd must be a finite number >= 0 or None, got '0.01'"),
        ({"top_k": 0}, f"MixContext.top_k must be an integer from 1 to {MAX_MODELS} or None, got 0"),
        ({"top_k": MAX_MODELS + 1}, f"MixContext.top_k must be an integer from 1 to {MAX_MODELS} or None, got 129"),
        ({"top_k": 1.5}, f"MixContext.top_k must be an integer from 1 to {MAX_MODELS} or None, got 1.5"),
        ({"top_k": True}, f"MixContext.top_k must be an integer from 1 to {MAX_MODELS} or None, got True"),
    ],
)
def test_out_of_range_values_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        MixContext(**fields)
    assert str(caught.value) == message


def test_valid_values_are_kept() -> None:
    assert MixContext().budget_usd is None
    context = MixContext(budget_usd=0, top_k=MAX_MODELS)
    assert (context.budget_usd, context.top_k) == (0, MAX_MODELS)
