"""The Python API: a mix file in, a LangGraph graph out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from moai.graphs.compile import build_graph, superstep_bound
from moai.graphs.split import arm_spec, build_split
from moai.mix_instructions import MixSpec, SplitSpec, load_any, resolve_path
from moai.mix_instructions.schema import JudgeStep
from moai.nodes.runtime import MixRuntime

__all__ = ["build_mix", "load_mix", "mix_runtime", "recursion_limit", "threads_db"]


def threads_db() -> Path:
    """Return the SQLite file the CLI keeps conversations in: $MOAI_THREADS_DB, else beside the usage database."""
    from moai.usage import default_db

    return Path(os.environ.get("MOAI_THREADS_DB") or default_db().with_name("threads.db"))


def build_mix(
    spec: MixSpec | SplitSpec | str | os.PathLike[str],
    overrides: Sequence[str | os.PathLike[str]] = (),
    *,
    usage_db: str | os.PathLike[str] | None = None,
) -> StateGraph[Any, Any, Any, Any]:
    """Return the uncompiled graph of a mix or an A/B split (a spec, a file, or a bundled mix's name).

    Compile it with the checkpointer of your choice: `build_mix("moa").compile(checkpointer=...)`.
    `overrides` are files merged over the mix (see `load_spec`); `usage_db` as for `load_mix`.
    """
    if isinstance(spec, MixSpec | SplitSpec):
        return _build(spec, "<mix>", usage_db)
    return _build(load_any(spec, overrides), str(resolve_path(spec)), usage_db)


def load_mix(
    path_or_name: str | os.PathLike[str],
    overrides: Sequence[str | os.PathLike[str]] = (),
    *,
    usage_db: str | os.PathLike[str] | None = None,
    **compile_kwargs: Any,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Return a mix compiled into a runnable graph (a LangChain `Runnable`).

    Args:
        path_or_name: A mix file or an A/B split file, or the name of a bundled one such as `"routemoa"`.
        overrides: Files merged over the mix, e.g. a `models:` section pointing at your endpoints.
        usage_db: Where every model call is recorded: a SQLite file or a `postgresql://` URL; `"off"`
            records nothing. Default: `~/.local/share/moai/usage.db`. `$MOAI_USAGE_DB` overrides it.
        **compile_kwargs: Passed to `StateGraph.compile`, e.g. `checkpointer=`.

    The graph's recursion limit is the most supersteps a run of this mix can take, so a loop can never
    run on past what the mix declares (`build_mix` leaves it to the caller: LangGraph's default is higher
    than any valid mix's bound).
    """
    spec = load_any(path_or_name, overrides)
    source = str(resolve_path(path_or_name))
    graph = _build(spec, source, usage_db).compile(name=spec.name, **compile_kwargs)
    return graph.with_config(recursion_limit=recursion_limit(spec, source))


def recursion_limit(spec: MixSpec | SplitSpec, source: str = "<mix>") -> int:
    """Return the most supersteps a run of a mix (or of an A/B split's largest arm, plus its split) takes."""
    if isinstance(spec, SplitSpec):
        return 1 + max(superstep_bound(arm_spec(spec, name, source)[0]) for name in spec.split.arms)
    return superstep_bound(spec)


def mix_runtime(spec: MixSpec, source: str = "<mix>", usage_db: str | os.PathLike[str] | None = None) -> MixRuntime:
    """Return the runtime a mix's nodes share, with moai's providers and its usage monitor.

    Args:
        spec: The mix.
        source: Where it came from, for messages.
        usage_db: As for `load_mix`.
    """
    from moai.providers import check_chat_model, make_chat_model
    from moai.usage import LearnReader, monitor_for, resolve_db

    for name, model in spec.models.items():
        check_chat_model(name, model, source)  # a missing package is named now, not at the model's first call
    db = resolve_db(usage_db)
    learn_log = LearnReader(db) if db and spec.gate.learn is not None else None
    # A judge that reads log-probabilities has the providers that can give them asked for them.
    logprobs = any(isinstance(step, JudgeStep) and "logprob" in step.read for step in spec.steps)
    return MixRuntime(
        spec,
        partial(make_chat_model, mix_file=source, logprobs=logprobs),
        source,
        monitor_for(db) if db else None,
        learn_log,
    )


def _build(
    spec: MixSpec | SplitSpec, source: str, usage_db: str | os.PathLike[str] | None
) -> StateGraph[Any, Any, Any, Any]:
    if isinstance(spec, SplitSpec):
        return build_split(spec, lambda mix, mix_source: mix_runtime(mix, mix_source, usage_db), source)
    return build_graph(mix_runtime(spec, source, usage_db))
