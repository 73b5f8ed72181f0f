"""The mix-file schema: a declarative description of a model pool and how its models work together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import re2
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "MAX_ALPHA",
    "MAX_ARMS",
    "MAX_BACKOFF_S",
    "MAX_CACHE_SIZE",
    "MAX_CIRCUIT_FAILURES",
    "MAX_DAY_S",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_EXAMPLES",
    "MAX_EXPLORE",
    "MAX_MODELS",
    "MAX_NAME_LENGTH",
    "MAX_PATTERNS",
    "MAX_PRICE_PER_MTOK",
    "MAX_PRIOR_STRENGTH",
    "MAX_RETRIES",
    "MAX_ROUNDS",
    "MAX_STEPS",
    "MAX_TIMEOUT_S",
    "MAX_TOKENS",
    "NAME_RULE",
    "READ_JUDGES",
    "RESERVED_MODEL_NAMES",
    "AggregateSpec",
    "Arm",
    "Circuit",
    "Constraints",
    "GateSpec",
    "JudgeStep",
    "Learn",
    "MixSpec",
    "ModelSpec",
    "Objective",
    "Price",
    "ProposeStep",
    "Proposer",
    "ReadJudge",
    "RoutingCache",
    "SensitiveRule",
    "Split",
    "SplitSpec",
    "Step",
    "StopWhen",
    "UsageSpec",
]

# Hard maxima. Each bounds how many model calls, graph steps or bytes a mix can cause, so a typo cannot
# run away; graphs/compile.py derives LangGraph's recursion limit from them and the mix.
MAX_ROUNDS = 20
"""Most times one judge step runs for one query (`stop_when.max_rounds`)."""
MAX_STEPS = 32
"""Most steps (propose layers and judges) in a mix."""
MAX_MODELS = 128
"""Most models in a pool, in one propose step's list, among a gate's candidates or `top_k`."""
MAX_PATTERNS = 256
"""Most patterns of a sensitivity rule (each query is matched against all of them)."""
MAX_ARMS = 32
"""Most arms of an A/B split."""
MAX_TOKENS = 1_000_000
"""Most output tokens one call may ask for (`max_tokens`)."""
MAX_RETRIES = 10
"""Most extra attempts of one call after transient errors."""
MAX_BACKOFF_S = 60.0
"""Longest first wait before a retry (it doubles for each further one)."""
MAX_TIMEOUT_S = 3600.0
"""Longest wait for one attempt of a call, and the largest latency prior."""
MAX_DAY_S = 86_400.0
"""Longest circuit cooldown and routing-cache lifetime: one day."""
MAX_CIRCUIT_FAILURES = 100
"""Most consecutive failures before a model's circuit opens."""
MAX_CACHE_SIZE = 100_000
"""Most queries a routing cache keeps (it allocates one embedding row per slot)."""
MAX_PRICE_PER_MTOK = 10_000.0
"""Highest price in USD per million tokens."""
MAX_ALPHA = 10.0
"""Largest cost weight: score / cost**alpha stays a finite, non-zero float for every cost moai computes."""
MAX_EXPLORE = 0.5
"""Largest share of queries on which online learning may explore (the rest are routed on its best estimate)."""
MAX_PRIOR_STRENGTH = 1e6
"""Largest weight, in observations, of the scorer's prediction in online learning."""
MAX_NAME_LENGTH = 64
MAX_DESCRIPTION_LENGTH = 2_000
"""Longest model description or example query, in characters (each is embedded once, when the gate is built)."""
MAX_EXAMPLES = 64
"""Most example queries a model lists under `examples:`, and most under `avoid:`."""
"""Longest name of a mix, step, model or arm (they become graph, node and file names)."""
RESERVED_MODEL_NAMES = ("selected", "top1")
"""Keywords accepted where a model name is: `steps[].models: selected`, `cross: top1`, `aggregate.model: top1`."""

_NAME = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
NAME_RULE = f"ASCII letters, digits, '_' and '-', starting with a letter or '_', at most {MAX_NAME_LENGTH} characters"
"""What `_NAME` allows, in words: names become LangGraph node and graph names, usage labels and file names."""
_MODEL_NAME = r"^[^\s\x00-\x1f\x7f]+$"
"""A model's name: any printable characters but spaces (ids such as 'gpt-4.1' or 'meta/llama-3' are common)."""
ModelName = Annotated[str, StringConstraints(pattern=_MODEL_NAME, max_length=MAX_NAME_LENGTH)]


def _name(what: str) -> str:
    return f"{what}: {NAME_RULE}."


class _Strict(BaseModel):
    # allow_inf_nan=False: .inf/.nan in YAML, NaN/Infinity in JSON and 'nan' strings are refused by field.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, data: Any) -> Any:
        # YAML reads yes/no/on/off as booleans, and pydantic takes True for 1 (`max_rounds: on` would be 1).
        # Spelt as a string, a boolean fails the number's own validation, at its field.
        if not isinstance(data, Mapping):
            return data
        booleans = {
            key: str(data[key]).lower()
            for name, field in cls.model_fields.items()
            if field.annotation in _NUMBERS and isinstance(data.get(key := field.alias or name), bool)
        }
        return {**data, **booleans} if booleans else data


_NUMBERS = (int, float, int | None, float | None)


class Price(_Strict):
    """Price of a model in US dollars per million tokens."""

    input_per_mtok: float = Field(
        0.0,
        ge=0,
        le=MAX_PRICE_PER_MTOK,
        description=f"USD per 1M input (prompt) tokens (at most {MAX_PRICE_PER_MTOK:g}).",
    )
    output_per_mtok: float = Field(
        0.0,
        ge=0,
        le=MAX_PRICE_PER_MTOK,
        description=f"USD per 1M output (completion) tokens (at most {MAX_PRICE_PER_MTOK:g}).",
    )


class ModelSpec(_Strict):
    """One model of the pool: where it runs, what it costs, and how far a query may travel to it."""

    provider: Literal["local", "openai", "langchain", "fake", "replay"] = Field(
        description="Backend: 'local' (embedded, no key, no network), 'openai' (any OpenAI-compatible "
        "endpoint), 'langchain' (any chat model LangChain's init_chat_model builds, from the integration "
        "package installed, e.g. langchain-anthropic), 'fake' (scripted replies, for tests), 'replay' (the "
        "answers `model` gave, recorded in a responses file)."
    )
    model: str = Field(
        min_length=1,
        description="Model id at the provider, e.g. 'smollm2-135m-instruct' or 'gpt-4o-mini'; for provider "
        "'langchain', '<provider>:<model>' as init_chat_model takes it, e.g. 'anthropic:claude-3-5-haiku-latest' "
        "(base_url, api_key, temperature, max_tokens and timeout_s are passed on where the integration takes them).",
    )
    base_url: str | None = Field(
        None, pattern=r"^https?://\S+$", description="Endpoint of an OpenAI-compatible server: http(s)://host:port/v1."
    )
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
    latency_s: float = Field(
        1.0,
        gt=0,
        le=MAX_TIMEOUT_S,
        description=f"Expected seconds for one call (latency prior; at most {MAX_TIMEOUT_S:g}).",
    )
    energy_wh_per_ktok: float = Field(
        0.0, ge=0, le=10_000, description="Energy per 1,000 tokens processed, in Wh (at most 10000)."
    )
    grid_gco2_per_kwh: float = Field(
        400.0,
        ge=0,
        le=5_000,
        description="Carbon intensity of the grid that powers the model, gCO2e per kWh (at most 5000).",
    )
    max_tokens: int = Field(
        256, gt=0, le=MAX_TOKENS, description=f"Most output tokens one call may produce (at most {MAX_TOKENS})."
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    timeout_s: float = Field(
        120.0,
        gt=0,
        le=MAX_TIMEOUT_S,
        description=f"Seconds before one attempt of a call is abandoned (at most {MAX_TIMEOUT_S:g}).",
    )
    retries: int = Field(
        1,
        ge=0,
        le=MAX_RETRIES,
        description=f"Extra attempts after a transient error (timeout, connection, 429, 5xx; at most {MAX_RETRIES}).",
    )
    backoff_s: float = Field(
        0.5,
        ge=0,
        le=MAX_BACKOFF_S,
        description="Wait before the first retry; it doubles (with jitter) for each further one "
        f"(at most {MAX_BACKOFF_S:g}).",
    )
    fallbacks: list[str] = Field(
        default_factory=list,
        max_length=MAX_MODELS,
        description="Models of the pool to try, in order, when this one fails (each at most once).",
    )
    tags: list[str] = Field(default_factory=list, description="Free labels, e.g. 'math', 'cheap'.")
    description: str = Field(
        "",
        max_length=MAX_DESCRIPTION_LENGTH,
        description="What the model is good at, in words, e.g. 'Python and shell code, debugging, SQL' "
        f"(read by `gate.scorer: descriptions`; at most {MAX_DESCRIPTION_LENGTH} characters).",
    )
    examples: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_DESCRIPTION_LENGTH)]] = Field(
        default_factory=list,
        max_length=MAX_EXAMPLES,
        description="Queries this model should get (`gate.scorer: descriptions` routes similar ones to it; "
        f"at most {MAX_EXAMPLES}, each at most {MAX_DESCRIPTION_LENGTH} characters).",
    )
    avoid: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_DESCRIPTION_LENGTH)]] = Field(
        default_factory=list,
        max_length=MAX_EXAMPLES,
        description="Queries this model should not get (similar ones lower its descriptions score; "
        f"at most {MAX_EXAMPLES}, each at most {MAX_DESCRIPTION_LENGTH} characters).",
    )
    replies: list[str] = Field(default_factory=list, description="provider 'fake' only: the replies it gives, in turn.")
    delay_s: float = Field(
        0.0,
        ge=0,
        le=MAX_TIMEOUT_S,
        description="provider 'fake' only: seconds each reply takes, a scripted latency for tests and benchmarks "
        f"(at most {MAX_TIMEOUT_S:g}).",
    )
    responses: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="provider 'replay' only: the responses file (JSONL, gzip or plain; relative to the mix "
        "file) whose answers of `model` it gives, found by the query's text, else by the query taken as an id.",
    )


class Objective(_Strict):
    """What the gate optimises: quality per cost, within a budget."""

    alpha: float = Field(
        0.0,
        ge=0,
        le=MAX_ALPHA,
        description=f"Cost weight: rank by score / cost**alpha (0 = quality only, Routoo; at most {MAX_ALPHA:g}).",
    )
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
        max_length=MAX_PATTERNS,
        description="Regular expressions in RE2 syntax (matched in linear time: no backreferences nor "
        f"lookaround); a query matching any is sensitive. At most {MAX_PATTERNS}.",
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
    size: int = Field(
        1024, ge=1, le=MAX_CACHE_SIZE, description=f"Most recent queries kept (at most {MAX_CACHE_SIZE})."
    )
    ttl_s: float = Field(
        3600.0, gt=0, le=MAX_DAY_S, description=f"Seconds a cached entry stays valid (at most {MAX_DAY_S:g})."
    )


class Learn(_Strict):
    """Online learning: a contextual bandit over the query embedding corrects the scorer from outcomes.

    It starts from the scorer's predictions (the prior), so a new mix routes as it would without it; it
    is kept per mix in the usage database, so it survives restarts and is shared by processes. Sensitive
    queries are never learned from: their embeddings are not stored.
    """

    sources: list[Literal["feedback", "judge"]] = Field(
        ["feedback"],
        min_length=1,
        max_length=2,
        description="What it learns from: 'feedback' (users' scores, `moai feedback`), 'judge' (each judged "
        "proposal's cross score).",
    )
    method: Literal["thompson", "linucb"] = Field(
        "thompson",
        description="How an exploring decision scores the models: 'thompson' draws each score from its "
        "posterior; 'linucb' adds its confidence width (optimism).",
    )
    explore: float = Field(
        0.1,
        ge=0,
        le=MAX_EXPLORE,
        description=f"Share of queries on which it may explore, at most {MAX_EXPLORE:g}; the rest are routed "
        "on its best estimate. Hard constraints hold on every query.",
    )
    prior_strength: float = Field(
        5.0,
        gt=0,
        le=MAX_PRIOR_STRENGTH,
        description="How many observations the scorer's prediction is worth (the ridge); larger: slower to "
        f"move away from it (at most {MAX_PRIOR_STRENGTH:g}).",
    )
    width: float = Field(
        0.3, gt=0, le=10, description="Exploration width: the confidence multiplier (linucb), the posterior scale."
    )
    scale: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Norm of the query embedding beside a constant feature of 1: below 1, each model's mean "
        "score is learned from fewer outcomes than how it varies with the query.",
    )
    encoder: str = Field(
        "static-minilm",
        max_length=256,
        description="Encoder of the query embedding: 'static-minilm' (fast) or a sentence-transformers model.",
    )
    reload_s: float = Field(
        30.0,
        ge=1,
        le=MAX_DAY_S,
        description="Seconds between two reads of the other processes' updates from the usage database.",
    )


class GateSpec(_Strict):
    """The gate: scores the pool for a query and picks the models that run first."""

    scorer: str = Field(
        "priors",
        description="What predicts each model's score: 'priors' (each model's declared quality), "
        "'descriptions' (the query's similarity to each model's description, examples and avoid, mixed with "
        "its quality; no training), 'bundled:<name>' (a checkpoint shipped with moai) or a checkpoint folder "
        "(relative to the mix file).",
    )
    describe_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="With a checkpoint scorer: weight of the descriptions score blended into the checkpoint's "
        "(0: the checkpoint's alone). A candidate the checkpoint cannot score is scored from its description "
        "and examples alone, whatever the weight, brought onto the checkpoint's scale by the declared quality.",
    )
    candidates: list[str] | None = Field(
        None, max_length=MAX_MODELS, description="Models the gate may pick, each once; default: the whole pool."
    )
    order: Literal["score", "cost"] = Field(
        "score",
        description="'score': best score / cost**alpha first, ties by output cost, input cost, latency "
        "(RouteMoA); 'cost': cheapest first (a FrugalGPT cascade).",
    )
    top_k: int = Field(
        1, ge=1, le=MAX_MODELS, description="How many models to select (at most the number of candidates)."
    )
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
    learn: Learn | None = Field(
        None,
        description="Online learning from feedback and judges (a contextual bandit over the scorer); null: off.",
    )


class Proposer(_Strict):
    """A model with a role: a specialist of a panel."""

    model: str = Field(description="Name of a model of the pool.")
    role: str = Field(description="Short name of the role, e.g. 'legal'.")
    instructions: str = Field(description="System instructions that make the model play the role.")


class ProposeStep(_Strict):
    """Models answer, each in its own concurrent call."""

    kind: Literal["propose"] = "propose"
    name: str = Field(pattern=_NAME, max_length=MAX_NAME_LENGTH, description=_name("Node name in the graph"))
    models: Literal["selected"] | list[str | Proposer] = Field(
        "selected",
        max_length=MAX_MODELS,
        description="'selected' (the gate's or the last judge's choice) or a list of model names or "
        f"{{model, role, instructions}} (at most {MAX_MODELS}).",
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
    max_rounds: int = Field(
        3, ge=1, le=MAX_ROUNDS, description=f"Most times the judge runs for one query (at most {MAX_ROUNDS})."
    )


READ_JUDGES = ("agreement", "form", "arithmetic", "code", "logprob", "verifier")
"""The answer-reading judges a judge step may declare under `read:` (moai.scorer.answers computes them)."""
ReadJudge = Literal["agreement", "form", "arithmetic", "code", "logprob", "verifier"]


class JudgeStep(_Strict):
    """Assess the answers: self-assessment by the proposers, cross-assessment by a judge model."""

    kind: Literal["judge"] = "judge"
    name: str = Field(pattern=_NAME, max_length=MAX_NAME_LENGTH, description=_name("Node name in the graph"))
    self_assess: bool = Field(
        True, alias="self", description="Use each proposer's own stated confidence (asked for in its prompt)."
    )
    cross: str | None = Field(
        "top1",
        description="Who grades the answers: 'top1' (the best-scored model of the layer), a model name, "
        "or null for none.",
    )
    read: list[ReadJudge] = Field(
        default_factory=list,
        max_length=len(READ_JUDGES),
        description="Judges that read the answers themselves, no model call: 'agreement' (the share of the "
        "other answers that agree after normalising by the form the query asks for), 'form' (the answer has "
        "the form the query asks for: a choice letter, a number), 'arithmetic' (the share of the equations "
        "written in the answer whose result is right), 'code' (where the query asks for code: the answer's code "
        "parses and defines the function asked for; where the query states asserts, the share of them it "
        "passes, run in a sandboxed subprocess), 'logprob' (from the answer's token log-probabilities, where "
        "the provider returns them: openai, local), 'verifier' (a learned P(right) of the answer: see "
        "`verifier`). Each gives a score in [0, 1] or none; the mean of an answer's scores enters the blend as "
        "one observation beside self and cross (a declared rule, not learned). Each at most once.",
    )
    verifier: str = Field(
        "bundled:verifier",
        max_length=4096,
        description="The verifier that `read: [verifier]` uses: 'bundled:<name>' (shipped) or a checkpoint folder "
        "written by `moai scorer train-verifier` (relative to the mix file). Its P(right) is a logistic "
        "regression, trained on graded answers, over the answer's features (what 'form' and 'arithmetic' read, "
        "length, hedging, code that parses, embeddings of query and answer), the model's identity and a kNN "
        "prior of the model on similar queries: the learned combination of the read judges with a prior. "
        "Declared, it replaces the gate's prior in the blend: an answer's score is the mean of the verifier's "
        "P(right) with the read judges it does not already read (agreement), then with self and cross where "
        "declared; prior_weight is not applied again.",
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
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)


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

    failures: int = Field(
        3,
        ge=1,
        le=MAX_CIRCUIT_FAILURES,
        description=f"Consecutive failed calls that open the circuit of a model (at most {MAX_CIRCUIT_FAILURES}).",
    )
    cooldown_s: float = Field(
        30.0,
        ge=0,
        le=MAX_DAY_S,
        description="Seconds an open circuit keeps the model out; then one trial call is let through "
        f"(at most {MAX_DAY_S:g}).",
    )


class UsageSpec(_Strict):
    """What the usage monitor keeps of this mix's runs beyond their cost and outcome."""

    record_answers: bool = Field(
        False,
        description="Keep each proposer's answer text with its call, so that `moai usage export --responses` "
        "can write the traffic as a responses file for a replay mix (shadow evaluation). Never kept for a "
        "sensitive query, whatever this says.",
    )


class MixSpec(_Strict):
    """A mix: a pool of models, a gate, the steps that run, and how the answer is made."""

    name: str = Field(pattern=_NAME, max_length=MAX_NAME_LENGTH, description=_name("Name of the mix"))
    description: str = Field("", description="What the mix does, in a sentence.")
    models: dict[ModelName, ModelSpec] = Field(
        max_length=MAX_MODELS,
        description=f"The pool, keyed by the names the mix uses (no spaces; not {' or '.join(RESERVED_MODEL_NAMES)}, "
        f"which are keywords; at most {MAX_MODELS} models).",
    )
    gate: GateSpec = Field(default=GateSpec(), description="Scoring and selection before any model runs.")
    steps: list[Step] = Field(
        max_length=MAX_STEPS,
        description=f"The steps, in order; 'next' and 'otherwise' make other edges (at most {MAX_STEPS}).",
    )
    aggregate: AggregateSpec = Field(default=AggregateSpec(), description="How the answer is made.")
    circuit: Circuit = Field(default=Circuit(), description="When a failing model is put in cooldown.")
    usage: UsageSpec = Field(default=UsageSpec(), description="What the usage monitor keeps of the runs.")


class Arm(_Strict):
    """One arm of an A/B split: a mix, or one model of a mix's pool."""

    mix: str = Field(description="A mix file (relative to this file) or the name of a bundled mix.")
    model: str | None = Field(
        None, description="Pin the gate of that mix to this model of its pool (an A/B test of two models)."
    )
    weight: float = Field(
        1.0, gt=0, le=1e6, description="Share of the traffic, relative to the other arms' weights (at most 1e6)."
    )


class Split(_Strict):
    """How traffic is divided between the arms."""

    by: Literal["thread", "user"] = Field(
        "thread",
        description="What assigns a run to an arm, the same way every time: the thread id (configurable "
        "'thread_id') or the user id (context 'user_id' or configurable 'user_id'). A run with neither "
        "is assigned by its query's text.",
    )
    arms: dict[Annotated[str, StringConstraints(pattern=_NAME, max_length=MAX_NAME_LENGTH)], Arm] = Field(
        min_length=2,
        max_length=MAX_ARMS,
        description=f"The arms (at most {MAX_ARMS}), keyed by a name that labels their usage rows: {NAME_RULE}.",
    )


class SplitSpec(_Strict):
    """An A/B split: traffic divided by weight between mixes (or models), each thread always in one arm."""

    name: str = Field(pattern=_NAME, max_length=MAX_NAME_LENGTH, description=_name("Name of the split"))
    description: str = Field("", description="What the split compares, in a sentence.")
    split: Split = Field(description="The arms and what assigns a run to one.")
