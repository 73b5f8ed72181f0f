"""The bundled mixes, compiled at module level for `langgraph.json` (LangGraph Studio and server)."""

from __future__ import annotations

from moai.api import load_mix

__all__ = ["ab", "cascade", "chain", "first_pool", "moa", "panel", "refine", "route", "routemoa"]

ab = load_mix("ab")
cascade = load_mix("cascade")
chain = load_mix("chain")
first_pool = load_mix("first_pool")
moa = load_mix("moa")
panel = load_mix("panel")
refine = load_mix("refine")
route = load_mix("route")
routemoa = load_mix("routemoa")
