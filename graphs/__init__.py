"""Graphs: a mix compiled into a LangGraph StateGraph."""

from __future__ import annotations

from moai.graphs.compile import build_graph

__all__ = ["build_graph"]
