"""The mix-file schema: a declarative description of a model pool and how its models work together."""

from __future__ import annotations

from typing import Annotated, Literal

import re2
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

__all__ = [
    "AggregateSpec",
    "Arm",
    "Circuit",
    "Constraints",
    "GateSpec",
    "JudgeStep",
    "MixSpec",
    "ModelSpec",
    "Objective",
    "Price",
    "ProposeStep",
    "Proposer",
    "RoutingCache",
    "SensitiveRule",
    "Split",
    "SplitSpec",
    "Step",
    "StopWhen",
]

_NAME = r"^[A-Za-z_][A-Za-z0-9_\-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """Price of a model in US dollars per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0, description="USD per 1M input (prompt) tokens.")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per 1M output (completion) tokens.")


class ModelSpec(_Strict):
    """One model of the pool: where it runs, what it costs, and how far a query may travel to it."""

    provider: Literal["local", "openai", "fake"] = Field(
        description="Backend: 'local' (embedded, no key, no network), 'openai' (any OpenAI-compatible "
        "endpoint), 'fake' (scripted replies, for tests)."
    )
    model: str = Field(description="Model id at the provider, e.g. 'smollm2-135m-instruct' or 'gpt-4o-mini'.")
    base_url: str | None = Field(None, description="Endpoint of an OpenAI-compatible server.")
    api_key: str | None = Field(
        None, description="API key: write an ${ENV_VAR} reference here, never the secret itself."
    )
    price: Price = Field(default=Price(), description="Price per 1M input/output tokens.")
    privacy: Literal["local", "private_cloud", "third_party"] = Field(
        "third_party",
        description="Where a query sent to this model goes: 'local' (this machine), 'private_cloud' "
        "(infrastructure you control), 'third_party' (someone else's service).",
    )
    quality: float = Field(
        0.5, ge=0, le=1, description="Prior probability of a good answer, used when no scorer is trained."
    )
    latency_s: float = Field(1.0, gt=0, description="Expected seconds for one call (latency prior).")
    energy_wh_per_ktok: float = Field(0.0, ge=0, description="Energy per 1,000 tokens processed, in Wh.")
    grid_gco2_per_kwh: float = Field(
        400.0, ge=0, description="Carbon intensity of the grid that powers the model, gCO2e per kWh."
    )
    max_tokens: int = Field(256, gt=0, description="Most output tokens one call may produce.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds before one attempt of a call is abandoned.")
    retries: int = Field(
        1, ge=0, le=10, description="Extra attempts after a transient error (timeout, connection, 429, 5xx)."
    )
    backoff_s: float = Field(
        0.5, ge=0, description="Wait before the first retry; it doubles (with jitter) for each further one."
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="Models of the pool to try, in order, when this one fails."
    )
    tags: list[str] = Field(default_factory=list, description="Free labels, e.g. 'math', 'cheap'.")
    replies: list[str] = Field(default_factory=list, description="provider 'fake' only: the replies it gives, in turn.")


class Objective(_Strict):
    """What the gate optimises: quality per cost, within a budget."""

    alpha: float = Field(0.0, ge=0, description="Cost weight: rank by score / cost**alpha (0 = quality only, Routoo).")
    budget_usd: float | None = Field(
        None, ge=0, description="Most US dollars one query may spend over all its model calls."
    )


def _linear_time_pattern(pattern: str) -> str:
    # RE2 matches in time linear in the query; what it cannot compile (backreferences, lookaround)
    # could take exponential time, so it is refused here, where the field can still be named.
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as err:
        reason = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        raise PydanticCustomError(
            "re2_pattern", "not a regular expression RE2 can match in linear time: {reason}", {"reason": reason}
        ) from None
    return pattern


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is reported once, as a MixError; not on stderr besides


class SensitiveRule(_Strict):
    """Which models may see a sensitive query, what makes a query sensitive, and what the usage database keeps of it.

    A query is sensitive when the caller flags it, a built-in detector finds personal data in it (or in
    the conversation before it), or one of the patterns matches it.
    """

    allow_privacy: tuple[Literal["local", "private_cloud", "third_party"], ...] = Field(
        default=("local",), description="Privacy tiers allowed to receive a sensitive query."
    )
    detectors: tuple[Literal["ssn", "payment_card", "email", "phone", "iban"], ...] = Field(
        default=("ssn", "payment_card", "email", "phone", "iban"),
        description="Built-in detectors of personal data, all on by default: US social-security numbers, payment "
        "card numbers (Luhn-checked), email addresses, phone numbers, IBANs (mod-97-checked). A query any of "
        "them finds is sensitive. `[]` turns them off.",
    )
    patterns: list[Annotated[str, AfterValidator(_linear_time_pattern)]] = Field(
        default_factory=list,
        description="Regular expressions in RE2 syntax (matched in linear time: no backreferences nor "
        "lookaround); a query matching any is sensitive.",
    )
    store: Literal["redacted", "none"] = Field(
        "redacted",
        description="What the usage database keeps of a sensitive query and its answer: 'redacted' (the query "
        "with what the detectors and patterns found replaced by [ssn], [email], ... or [redacted]; the whole "
        "query replaced when the caller flagged it; the answer replaced) or 'none' (no text at all).",
    )


class Constraints(_Strict):
    """Hard limits applied before ranking: a model that breaks one is never called."""

    sensitive: SensitiveRule = Field(default=SensitiveRule(), description="Rule for sensitive queries.")
    max_latency_s: float | None = Field(None, gt=0, description="Drop models whose latency prior exceeds this.")
    max_co2e_g: float | None = Field(
        None, gt=0, description="Drop models whose worst-case call would emit more gCO2e than this."
    )


class RoutingCache(_Strict):
    """Reuse the scores of a recent query for a query this close to it (the constraints still apply afresh)."""

    similarity: float = Field(
        0.95, gt=0, le=1, description="Least cosine similarity of the query embeddings that counts as a repeat."
    )
    size: int = Field(1024, ge=1, description="Most recent queries kept.")
    ttl_s: float = Field(3600.0, gt=0, description="Seconds a cached entry stays valid.")


class GateSpec(_Strict):
    """The gate: scores the pool for a query and picks the models that run first."""

    scorer: str = Field(
        "priors",
        description="What predicts each model's score: 'priors' (each model's declared quality), "
        "'bundled:<name>' (a checkpoint shipped with moai) or a checkpoint folder (relative to the mix file).",
    )
    candidates: list[str] | None = Field(None, description="Models the gate may pick; default: the whole pool.")
    order: Literal["score", "cost"] = Field(
        "score",
        description="'score': best score / cost**alpha first, ties by output cost, input cost, latency "
        "(RouteMoA); 'cost': cheapest first (a FrugalGPT cascade).",
    )
    top_k: int = Field(1, ge=1, description="How many models to select.")
    objective: Objective = Field(default=Objective(), description="Cost weight and budget.")
    constraints: Constraints = Field(default=Constraints(), description="Hard constraints.")
    min_confidence: float = Field(
        0.0, ge=0, le=1, description="If the best selected score is below this, use the fallback instead."
    )
    fallback: str | None = Field(None, description="Model used when confidence is below min_confidence.")
    sticky: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Conversation-aware routing: within a thread, keep the model chosen for earlier turns "
        "while its score for the new query is at least this (needs a checkpointer); null: choose afresh.",
    )
    cache: RoutingCache | None = Field(
        None, description="Routing cache: reuse the scores of a recent, near-identical query; null: off."
    )


class Proposer(_Strict):
    """A model with a role: a specialist of a panel."""

    model: str = Field(description="Name of a model of the pool.")
    role: str = Field(description="Short name of the role, e.g. 'legal'.")
    instructions: str = Field(description="System instructions that make the model play the role.")


class ProposeStep(_Strict):
    """Models answer, each in its own concurrent call."""

    kind: Literal["propose"] = "propose"
    name: str = Field(pattern=_NAME, description="Node name in the graph: letters, digits, '_' and '-'.")
    models: Literal["selected"] | list[str | Proposer] = Field(
        "selected",
        description="'selected' (the gate's or the last judge's choice) or a list of model names or "
        "{model, role, instructions}.",
    )
    prompt: Literal["answer", "improve", "revise"] = Field(
        "answer",
        description="'answer' the query (seeing earlier answers, if any, as references, as in MoA); "
        "'improve' the previous step's answer; 'revise' it following the judge's critique.",
    )
    next: str | None = Field(None, description="Step that follows; default: the next in the list, or aggregate.")


class StopWhen(_Strict):
    """When the loop that passes through a judge ends."""

    score_at_least: float | None = Field(None, ge=0, le=1, description="Stop once the best judged score reaches this.")
    max_rounds: int = Field(3, ge=1, description="Most times the judge runs for one query.")


class JudgeStep(_Strict):
    """Assess the answers: self-assessment by the proposers, cross-assessment by a judge model."""

    kind: Literal["judge"] = "judge"
    name: str = Field(pattern=_NAME, description="Node name in the graph: letters, digits, '_' and '-'.")
    self_assess: bool = Field(
        True, alias="self", description="Use each proposer's own stated confidence (asked for in its prompt)."
    )
    cross: str | None = Field(
        "top1",
        description="Who grades the answers: 'top1' (the best-scored model of the layer), a model name, "
        "or null for none.",
    )
    prior_weight: float = Field(
        0.3, ge=0, le=1, description="Weight of the gate's prior in the blended score (RouteMoA)."
    )
    stop_when: StopWhen = Field(default=StopWhen(), description="When to stop looping.")
    otherwise: str | None = Field(
        None, description="Step to go to when the stop condition is not met; null: never loop."
    )
    next: str | None = Field(
        None, description="Step that follows once the loop stops; default: the next in the list, or aggregate."
    )
    then_select: Literal["rerank", "next", "same"] = Field(
        "rerank",
        description="Models of the next round: 'rerank' top-k by the judged scores, 'next' the next "
        "untried model in the gate's order (escalation), 'same' the models of this round.",
    )
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Step = Annotated[ProposeStep | JudgeStep, Field(discriminator="kind")]


class AggregateSpec(_Strict):
    """How the final answer is made."""

    mode: Literal["synthesize", "best", "last"] = Field(
        "best",
        description="'synthesize' the latest answers with an aggregator model (MoA prompt); 'best' the "
        "highest-scored answer; 'last' the answer of the last step.",
    )
    model: str | None = Field(None, description="Aggregator model ('synthesize' only); 'top1' = best scored.")


class Circuit(_Strict):
    """The circuit breaker: a model that keeps failing is left alone for a while."""

    failures: int = Field(3, ge=1, description="Consecutive failed calls that open the circuit of a model.")
    cooldown_s: float = Field(
        30.0, ge=0, description="Seconds an open circuit keeps the model out; then one trial call is let through."
    )


class MixSpec(_Strict):
    """A mix: a pool of models, a gate, the steps that run, and how the answer is made."""

    name: str = Field(pattern=_NAME, description="Name of the mix: letters, digits, '_' and '-'.")
    description: str = Field("", description="What the mix does, in a sentence.")
    models: dict[str, ModelSpec] = Field(description="The pool, keyed by the names the mix uses.")
    gate: GateSpec = Field(default=GateSpec(), description="Scoring and selection before any model runs.")
    steps: list[Step] = Field(description="The steps, in order; 'next' and 'otherwise' make other edges.")
    aggregate: AggregateSpec = Field(default=AggregateSpec(), description="How the answer is made.")
    circuit: Circuit = Field(default=Circuit(), description="When a failing model is put in cooldown.")


class Arm(_Strict):
    """One arm of an A/B split: a mix, or one model of a mix's pool."""

    mix: str = Field(description="A mix file (relative to this file) or the name of a bundled mix.")
    model: str | None = Field(
        None, description="Pin the gate of that mix to this model of its pool (an A/B test of two models)."
    )
    weight: float = Field(1.0, gt=0, description="Share of the traffic, relative to the other arms' weights.")


class Split(_Strict):
    """How traffic is divided between the arms."""

    by: Literal["thread", "user"] = Field(
        "thread",
        description="What assigns a run to an arm, the same way every time: the thread id (configurable "
        "'thread_id') or the user id (context 'user_id' or configurable 'user_id'). A run with neither "
        "is assigned by its query's text.",
    )
    arms: dict[Annotated[str, StringConstraints(pattern=_NAME)], Arm] = Field(
        min_length=2,
        description="The arms, keyed by a name (letters, digits, '_' and '-') that labels their usage rows.",
    )


class SplitSpec(_Strict):
    """An A/B split: traffic divided by weight between mixes (or models), each thread always in one arm."""

    name: str = Field(pattern=_NAME, description="Name of the split: letters, digits, '_' and '-'.")
    description: str = Field("", description="What the split compares, in a sentence.")
    split: Split = Field(description="The arms and what assigns a run to one.")
