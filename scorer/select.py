"""Cost-aware selection: hard constraints first, then a ranking by the mix's objective."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from moai.mix_instructions.schema import Constraints, ModelSpec, SensitiveRule
from moai.scorer.privacy import sensitive_in

__all__ = ["call_cost", "excluded", "is_sensitive", "rank", "worst_case_co2e"]

TYPICAL_PROMPT_TOKENS = 500
"""Prompt size assumed when a model's cost per query is estimated for ranking."""

_COST_FLOOR = 1e-9
"""Free models still rank by quality when alpha > 0: their cost counts as a nanodollar."""


def call_cost(spec: ModelSpec, tokens_in: int, tokens_out: int) -> float:
    """Return the US dollars a call with these token counts costs."""
    return (tokens_in * spec.price.input_per_mtok + tokens_out * spec.price.output_per_mtok) / 1e6


def worst_case_co2e(spec: ModelSpec, tokens_in: int = TYPICAL_PROMPT_TOKENS) -> float:
    """Return the grams of CO2e of a call that uses every token it may."""
    energy_wh = (tokens_in + spec.max_tokens) / 1000 * spec.energy_wh_per_ktok
    return energy_wh / 1000 * spec.grid_gco2_per_kwh


def is_sensitive(query: str, flagged: bool, rule: SensitiveRule, context: Iterable[str] = ()) -> bool:
    """Return whether a query must stay within the rule's privacy tiers.

    It must when the caller flagged it, or when a built-in detector or a pattern of the rule finds
    something in it or in its `context` (the earlier turns of the conversation, which go to the models
    with it).
    """
    return flagged or any(sensitive_in(text, rule) for text in (query, *context))


def excluded(models: Mapping[str, ModelSpec], constraints: Constraints, sensitive: bool) -> dict[str, str]:
    """Return the models a hard constraint rules out, each with the reason."""
    reasons: dict[str, str] = {}
    allowed = constraints.sensitive.allow_privacy
    for name, spec in models.items():
        if sensitive and spec.privacy not in allowed:
            reasons[name] = f"privacy '{spec.privacy}' not allowed for a sensitive query ({', '.join(allowed)})"
        elif constraints.max_latency_s is not None and spec.latency_s > constraints.max_latency_s:
            reasons[name] = f"latency {spec.latency_s:g}s above {constraints.max_latency_s:g}s"
        elif constraints.max_co2e_g is not None and worst_case_co2e(spec) > constraints.max_co2e_g:
            reasons[name] = f"{worst_case_co2e(spec):.3g} gCO2e above {constraints.max_co2e_g:g} g"
    return reasons


def rank(
    scores: Mapping[str, float],
    models: Mapping[str, ModelSpec],
    order: Literal["score", "cost"] = "score",
    alpha: float = 0.0,
) -> list[str]:
    """Order models best first.

    'score' ranks by s / c**alpha (Routoo), ties broken by output price, input price, then latency
    (RouteMoA's priority); 'cost' ranks cheapest first, ties by score (a FrugalGPT cascade).
    """

    def cost(name: str) -> float:
        return max(call_cost(models[name], TYPICAL_PROMPT_TOKENS, models[name].max_tokens), _COST_FLOOR)

    def by_score(name: str) -> tuple[float, ...]:
        spec = models[name]
        value = scores[name] / cost(name) ** alpha
        return (-value, spec.price.output_per_mtok, spec.price.input_per_mtok, spec.latency_s)

    def by_cost(name: str) -> tuple[float, ...]:
        # Among equally priced (e.g. free local) models the faster, smaller one goes first.
        return (cost(name), models[name].latency_s, -scores[name])

    names: Sequence[str] = list(scores)
    return sorted(names, key=by_score if order == "score" else by_cost)
