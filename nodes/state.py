"""The state a mix graph carries from node to node, and the records its nodes append."""

from __future__ import annotations

import operator
from typing import Annotated, Literal, NotRequired

from langchain_core.messages import AnyMessage
from typing_extensions import TypedDict

from moai.scorer.logprob import LogprobStats

__all__ = [
    "Call",
    "GateDecision",
    "MixInput",
    "MixOutput",
    "MixState",
    "Proposal",
    "ProposeTask",
    "RunInfo",
    "Verdict",
]


class RunInfo(TypedDict):
    """Which run of which mix a record belongs to; the usage monitor keys its rows by it."""

    run_id: str
    mix: str
    arm: str | None
    thread_id: str | None
    user_id: str | None
    key_id: NotRequired[str | None]


class Call(TypedDict):
    """One model call, whatever its outcome."""

    node: str
    model: str
    provider: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    cost_usd: float
    energy_wh: float
    co2e_g: float
    status: Literal["ok", "error", "skipped"]
    error: str | None
    fallback_for: str | None
    usage_estimated: bool


class Proposal(TypedDict):
    """An answer from one model at one step of one layer."""

    step: str
    layer: int
    model: str
    role: str | None
    content: str
    confidence: float | None
    logprob: NotRequired[LogprobStats | None]
    """Its reply's token log-probabilities, reduced, where the provider gave them (read by `read: [logprob]`)."""


class Verdict(TypedDict):
    """A judge's assessment of one proposal."""

    step: str
    layer: int
    model: str
    self_score: float | None
    cross_score: float | None
    read_scores: dict[str, float | None]
    """The score of each answer-reading judge the step declares (`read:`); None where it has no opinion."""
    score: float
    critique: str | None


class GateDecision(TypedDict):
    """What the gate saw and chose."""

    scores: dict[str, float]
    ranking: list[str]
    excluded: dict[str, str]
    selected: list[str]
    sensitive: bool
    fallback_used: bool
    kept: bool
    """Whether a thread's earlier model was kept (conversation-aware routing)."""
    cache_hit: bool
    """Whether the scores came from the routing cache."""


class ProposeTask(TypedDict):
    """What one concurrent proposer call receives through `Send`."""

    query: str
    history: list[AnyMessage]
    sensitive: bool
    run: RunInfo
    step: str
    layer: int
    model: str
    role: str | None
    instructions: str | None
    references: list[str]
    critique: str | None
    ask_confidence: bool
    allowance_usd: float | None


class MixInput(TypedDict):
    """What a caller passes in."""

    query: str
    sensitive: NotRequired[bool]
    history: NotRequired[list[AnyMessage]]
    """Earlier turns of the conversation; with a checkpointer, a thread's own turns are kept for you."""
    arm: NotRequired[str]
    """The arm of an A/B split this run belongs to (set by the split node)."""


class MixOutput(TypedDict):
    """What a caller gets back."""

    answer: str
    models_used: list[str]
    calls: list[Call]
    trace: list[str]
    run: RunInfo


class MixState(TypedDict):
    """The full state of one query through a mix.

    Keys written by concurrent proposers (`proposals`, `calls`) and by every node (`trace`) have list
    reducers, so each layer's records are kept; the gate overwrites them when a thread's next turn begins.
    """

    query: str
    history: list[AnyMessage]
    sensitive: bool
    arm: str | None
    run: RunInfo
    kept: str | None
    gate: GateDecision
    scores: dict[str, float]
    selected: list[str]
    tried: list[str]
    layer: int
    rounds: dict[str, int]
    proposals: Annotated[list[Proposal], operator.add]
    verdicts: Annotated[list[Verdict], operator.add]
    calls: Annotated[list[Call], operator.add]
    trace: Annotated[list[str], operator.add]
    answer: str
    models_used: list[str]
