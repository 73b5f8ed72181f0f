"""The nodes of a mix graph and the state they share: gate, propose, judge, stop, aggregate."""

from __future__ import annotations

from moai.nodes.aggregate import make_aggregate
from moai.nodes.context import MixContext
from moai.nodes.gate import make_gate
from moai.nodes.judge import make_judge
from moai.nodes.propose import make_propose
from moai.nodes.state import Call, GateDecision, MixInput, MixOutput, MixState, Proposal, ProposeTask, Verdict
from moai.nodes.stop import make_next_layer, stop_reason

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
