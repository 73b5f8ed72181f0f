"""Graphs: a mix, or an A/B split of mixes, compiled into a LangGraph StateGraph."""

from __future__ import annotations

from moai.graphs.compile import MAX_SUPERSTEPS, build_graph, superstep_bound
from moai.graphs.split import build_split

__all__ = ["MAX_SUPERSTEPS", "build_graph", "build_split", "superstep_bound"]
