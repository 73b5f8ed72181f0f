"""The nodes of a mix graph and the state they share: gate, propose, judge, stop, aggregate."""

from __future__ import annotations

from nodes.aggregate import make_aggregate
from nodes.context import MixContext
from nodes.gate import make_gate
from nodes.judge import make_judge
from nodes.propose import make_propose
from nodes.state import Call, GateDecision, MixInput, MixOutput, MixState, Proposal, ProposeTask, Verdict
from nodes.stop import make_next_layer, stop_reason

__all__ = [
    "Call",
    "GateDecision",
    "MixContext",
    "MixInput",
    "MixOutput",
    "MixState",
    "Proposal",
    "ProposeTask",
    "Verdict",
    "make_aggregate",
    "make_gate",
    "make_judge",
    "make_next_layer",
    "make_propose",
    "stop_reason",
]
