"""Compile an A/B split into a LangGraph StateGraph: a `split` node sends each run to one arm's mix.

Each arm is the compiled graph of its mix, added as a subgraph node, so Studio draws every arm and a
checkpointer keeps each arm's threads (`checkpointer=True`: a thread's history and kept model persist in
the arm that answers it). The arm a run takes is recorded in every usage row as `<split>/<arm>`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Overwrite

from moai.errors import MixError
from moai.graphs.compile import build_graph, sync_and_async
from moai.mix_instructions import MixSpec, bundled_mixes, load_any, resolve_path
from moai.mix_instructions.schema import Arm, SplitSpec
from moai.nodes.context import MixContext, caller
from moai.nodes.runtime import MixRuntime
from moai.nodes.state import MixInput, MixOutput, MixState

__all__ = ["arm_spec", "assign_arm", "build_split"]


def assign_arm(split: str, key: str, arms: Mapping[str, Arm]) -> str:
    """Return the arm of a key: a hash of split and key, spread over the arms by weight (stable across runs)."""
    digest = hashlib.sha256(f"{split}/{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(arm.weight for arm in arms.values())
    for name, arm in arms.items():
        point -= arm.weight
        if point < 0:
            return name
    return name  # float rounding at the very top of the range


def arm_spec(spec: SplitSpec, name: str, source: str) -> tuple[MixSpec, str]:
    """Load an arm's mix (relative to the split's file, else bundled), pinned to its model if it names one.

    Raises:
        MixError: The arm's mix is missing or is itself a split, or its model is not in that mix's pool.
    """
    arm, field = spec.split.arms[name], f"split.arms.{name}"
    beside = Path(source).parent / arm.mix
    try:
        path = beside if beside.is_file() else resolve_path(arm.mix)
    except MixError:
        bundled = ", ".join(bundled_mixes())
        message = f"'{arm.mix}' is neither a file beside this split nor a bundled mix; bundled mixes: {bundled}"
        raise MixError(source, f"{field}.mix", message) from None
    mix = load_any(path)
    if not isinstance(mix, MixSpec):
        raise MixError(source, f"{field}.mix", f"'{arm.mix}' is a split itself: an arm must be a mix")
    if arm.model is not None:
        if arm.model not in mix.models:
            valid = ", ".join(mix.models)
            raise MixError(
                source, f"{field}.model", f"'{arm.model}' is not a model of mix '{arm.mix}'; valid choices: {valid}"
            )
        gate = mix.gate.model_copy(update={"candidates": [arm.model], "top_k": 1})
        mix = mix.model_copy(update={"gate": gate})
    return mix, str(path)


def _make_split(spec: SplitSpec) -> Callable[..., Coroutine[Any, Any, Command[Any]]]:
    by, arms = spec.split.by, spec.split.arms

    async def split(state: MixState, runtime: Runtime[MixContext]) -> Command[Any]:
        thread_id, user_id = caller(runtime.context)
        key = thread_id if by == "thread" else user_id
        arm = assign_arm(spec.name, str(key) if key is not None else state["query"], arms)
        # The arm's records replace the previous turn's (a subgraph's output is added to these lists).
        update = {"arm": f"{spec.name}/{arm}", "calls": Overwrite([]), "trace": Overwrite([f"split:{arm}"])}
        return Command(update=update, goto=arm)

    return split


def build_split(
    spec: SplitSpec, runtime: Callable[[MixSpec, str], MixRuntime], source: str = "<split>"
) -> StateGraph[MixState, MixContext, MixInput, MixOutput]:
    """Return the uncompiled graph of an A/B split: `split` -> one subgraph node per arm.

    `runtime(mix, source)` gives each arm's runtime (the surface hands in its models and recorder).

    Raises:
        MixError: An arm's name is not a valid node name, or its mix is wrong (see `arm_spec`).
    """
    builder = StateGraph(MixState, context_schema=MixContext, input_schema=MixInput, output_schema=MixOutput)
    builder.add_node("split", sync_and_async(_make_split(spec)), destinations=tuple(spec.split.arms))
    builder.add_edge(START, "split")
    for name in spec.split.arms:
        if name == "split":
            raise MixError(source, "split.arms.split", "'split' is the name of the node that assigns the arms")
        mix, mix_source = arm_spec(spec, name, source)
        builder.add_node(name, build_graph(runtime(mix, mix_source)).compile(checkpointer=True, name=name))
        builder.add_edge(name, END)
    return builder
