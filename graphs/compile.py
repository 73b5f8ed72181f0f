"""Compile a MixSpec into a LangGraph StateGraph: gate -> steps (fan-out, joins, judged loops) -> aggregate."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langgraph._internal._runnable import RunnableCallable
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph

from moai.errors import MixError, MixRunError
from moai.mix_instructions.check import check_mix, step_successors
from moai.mix_instructions.schema import JudgeStep, MixSpec, ProposeStep
from moai.nodes.aggregate import make_aggregate
from moai.nodes.context import MixContext
from moai.nodes.gate import make_gate
from moai.nodes.judge import make_judge
from moai.nodes.propose import make_propose
from moai.nodes.runtime import MixRuntime
from moai.nodes.state import MixInput, MixOutput, MixState
from moai.nodes.stop import make_next_layer

__all__ = ["MAX_SUPERSTEPS", "build_graph", "superstep_bound", "sync_and_async"]

MAX_SUPERSTEPS = 5000
"""The most supersteps one run of a mix may take (LangGraph's own default limit is about 10,000)."""


def sync_and_async(afunc: Callable[..., Awaitable[Any]]) -> RunnableCallable:
    """Let an async node run under `invoke` too (LangGraph's prebuilt agents pair func and afunc likewise).

    Under `invoke` the node's coroutine runs on a fresh event loop: in the calling thread, or, when that
    thread already runs a loop (a notebook cell, an async app calling `invoke`), in a worker thread with
    the caller's context (LangGraph's config lives in a context variable).
    """

    @functools.wraps(afunc)
    def func(*args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            return asyncio.run(afunc(*args, **kwargs))  # type: ignore[arg-type]

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return run()
        with ThreadPoolExecutor(1) as worker:
            return worker.submit(contextvars.copy_context().run, run).result()

    return RunnableCallable(func, afunc, name=afunc.__name__)


def superstep_bound(spec: MixSpec) -> int:
    """Return the most supersteps a run of the mix can take: its recursion limit.

    A pass through the steps takes at most two supersteps a step (the step, and the join before a
    propose step). A judge counts its rounds over the whole run, and loops back only below its
    `max_rounds`, so there are at most the sum of the looping judges' `max_rounds` extra passes; the gate
    and the aggregator take one each.
    """
    loops = sum(s.stop_when.max_rounds for s in spec.steps if isinstance(s, JudgeStep) and s.otherwise is not None)
    return 2 + 2 * len(spec.steps) * (1 + loops)


def _finishing_on_error(mix: MixRuntime, afunc: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Record the run as failed when anything escapes a node (a bug, a cancelled run), then re-raise.

    `MixRunError` is recorded where it is raised; LangGraph's own control flow (interrupts, commands to
    a parent graph) is not an error.
    """

    @functools.wraps(afunc)
    async def node(state: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await afunc(state, *args, **kwargs)
        except (GraphBubbleUp, MixRunError):
            raise
        except BaseException as err:
            run = state.get("run") if isinstance(state, Mapping) else None
            if run:
                mix.fail(run, f"{type(err).__name__}: {err}"[:500])  # the original error is what propagates
            raise

    return node


def build_graph(mix: MixRuntime) -> StateGraph[MixState, MixContext, MixInput, MixOutput]:
    """Return the uncompiled graph of a mix, so the caller picks the checkpointer.

    Every step becomes a node named after it. A propose step is entered by one `Send` per model; what
    follows it (a judge, the aggregator, or a `before_<step>` join when another propose step follows)
    runs once: every `Send` of a layer runs in the same superstep, so no node needs `defer` (which
    would also make LangGraph draw false edges into it). A judge's `otherwise` edge closes a loop.
    The runtime `mix` carries what the nodes share: the spec, its scorer, chat-model factory and recorder.

    Raises:
        MixError: A reference or the shape of the steps is wrong; the message names the mix's
            source and the field.
    """
    spec, source = mix.spec, mix.source
    check_mix(spec, source)
    if (bound := superstep_bound(spec)) > MAX_SUPERSTEPS:
        raise MixError(
            source,
            "steps",
            f"a run could take {bound:,} steps of the graph, more than the {MAX_SUPERSTEPS:,} allowed: "
            "lower the judges' stop_when.max_rounds or use fewer steps",
        )

    def node(afunc: Callable[..., Awaitable[Any]]) -> RunnableCallable:
        return sync_and_async(_finishing_on_error(mix, afunc))

    successors = step_successors(spec)
    propose_steps = {step.name for step in spec.steps if isinstance(step, ProposeStep)}
    builder = StateGraph(MixState, context_schema=MixContext, input_schema=MixInput, output_schema=MixOutput)

    # The gate sends a turn that carries tool results straight to the aggregator (see `nodes.gate`).
    builder.add_node("gate", node(make_gate(mix)), destinations=(spec.steps[0].name, "aggregate"))
    for step in spec.steps:
        target = successors[step.name]
        if isinstance(step, ProposeStep):
            builder.add_node(step.name, node(make_propose(mix, step)))
            if target in propose_steps:
                join = f"before_{target}"
                builder.add_node(join, node(make_next_layer(mix, target)), destinations=(target,))
                target = join
            builder.add_edge(step.name, target)
        else:
            assert isinstance(step, JudgeStep)
            exits = tuple(dict.fromkeys(t for t in (target, step.otherwise) if t is not None))
            builder.add_node(step.name, node(make_judge(mix, step)), destinations=exits)
    builder.add_node("aggregate", node(make_aggregate(mix)))
    builder.add_edge(START, "gate")
    builder.add_edge("aggregate", END)
    return builder
