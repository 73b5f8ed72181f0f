"""Every model call of every node goes through here: constraints, fallbacks, and the usage record.

Privacy and budget are enforced at this one place, so no node can send a sensitive query to a model
outside the allowed tiers, or spend past the budget, whatever the mix's steps say.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage

from moai.errors import NoRecordedAnswer
from moai.mix_instructions.schema import ModelSpec
from moai.nodes.prompts import query_of
from moai.nodes.runtime import MixRuntime, transient_errors
from moai.nodes.state import Call, RunInfo
from moai.nodes.tools import Offer, check_reply
from moai.scorer.data.responses import resolve_responses, responses_index
from moai.scorer.select import call_cost

__all__ = ["call_model", "worst_case_cost"]

_MESSAGE_OVERHEAD_TOKENS = 16
"""Chat-template tokens a message may add around its text."""


def _prompt_tokens_bound(messages: list[BaseMessage]) -> int:
    # A byte-level tokenizer never makes more tokens than the text has bytes.
    return sum(len(m.text.encode()) + _MESSAGE_OVERHEAD_TOKENS for m in messages) + _MESSAGE_OVERHEAD_TOKENS


def worst_case_cost(mix: MixRuntime, name: str, messages: list[BaseMessage]) -> float:
    """Return the most a call can cost: every prompt byte a token, and every output token used.

    A replay model is charged its recorded cost, whatever its price: that cost is known before the call,
    and the bound covers it, so a budget holds on a replay as it does live.
    """
    spec = mix.spec.models[name]
    bound: float = call_cost(spec, _prompt_tokens_bound(messages), spec.max_tokens)
    if spec.provider == "replay" and spec.responses is not None:
        query = query_of(messages)
        index = responses_index(resolve_responses(spec.responses, mix.source))
        found = index.find(spec.model, query) if query is not None else None
        bound = max(bound, found.cost_usd if found is not None else 0.0)
    return bound


def _recorded_cost(spec: ModelSpec, reply: AIMessage) -> float | None:
    # Only a replay model's reply is trusted to say what it cost: it is read from the responses file,
    # which check_replay has validated; a server's metadata never sets what a call is charged.
    cost = reply.response_metadata.get("cost_usd") if spec.provider == "replay" else None
    return float(cost) if isinstance(cost, float | int) and math.isfinite(cost) and cost >= 0 else None


def _record(
    mix: MixRuntime,
    node: str,
    name: str,
    *,
    status: Literal["ok", "error", "skipped"],
    fallback_for: str | None,
    tokens_in: int = 0,
    tokens_out: int = 0,
    latency_s: float = 0.0,
    error: str | None = None,
    usage_estimated: bool = False,
    cost_usd: float | None = None,
) -> Call:
    spec = mix.spec.models[name]
    energy_wh = (tokens_in + tokens_out) / 1000 * spec.energy_wh_per_ktok
    return Call(
        node=node,
        model=name,
        provider=spec.provider,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        latency_s=latency_s,
        cost_usd=call_cost(spec, tokens_in, tokens_out) if cost_usd is None else cost_usd,
        energy_wh=energy_wh,
        co2e_g=energy_wh / 1000 * spec.grid_gco2_per_kwh,
        status=status,
        error=error,
        fallback_for=fallback_for,
        usage_estimated=usage_estimated,
    )


async def call_model(
    mix: MixRuntime,
    node: str,
    name: str,
    messages: list[BaseMessage],
    *,
    sensitive: bool,
    allowance_usd: float | None,
    run: RunInfo,
    answers: bool = False,
    offer: Offer | None = None,
) -> tuple[AIMessage | None, str | None, list[Call]]:
    """Call a model, or its fallbacks in order, within the privacy rule and the allowance.

    Every attempt goes to the usage monitor as it ends, so a run that fails later still leaves its rows.
    When `answers` (the call answers the query itself, as a proposer's does) and the mix records answers,
    the reply's text goes with its row, unless the query is sensitive: then it never does.

    With an `offer` (the caller's tools, tool choice and response format: only the call that gives the
    run's answer gets one), a reply may be tool calls instead of text; a reply that does not meet the
    offer (not the JSON asked for, no call where one is required) is a failed call, billed and recorded,
    and the fallbacks are tried.

    Returns:
        The reply (None if every route failed or was refused), the model that gave it, and a record
        of every attempt.
    """
    calls: list[Call] = []

    keep_answer = answers and mix.spec.usage.record_answers and not sensitive

    def done(call: Call, reply: AIMessage | None = None) -> None:
        calls.append(call)
        row: dict[str, Any] = {"mix": run["mix"], "arm": run["arm"], "thread_id": run["thread_id"], **call}
        if keep_answer and reply is not None and call["status"] == "ok":
            row["response"] = reply.text  # in the usage row only: the run's state and output do not carry it
        mix.record("call", run, row)

    allowed = mix.spec.gate.constraints.sensitive.allow_privacy
    for candidate in [name, *mix.spec.models[name].fallbacks]:
        spec = mix.spec.models[candidate]
        fallback_for = None if candidate == name else name
        refusal = mix.breaker.open_reason(candidate)
        if sensitive and spec.privacy not in allowed:
            refusal = f"privacy '{spec.privacy}' not allowed for a sensitive query"
        elif allowance_usd is not None and (worst := worst_case_cost(mix, candidate, messages)) > allowance_usd:
            refusal = f"worst-case cost ${worst:.6f} exceeds this call's ${allowance_usd:.6f} share of the budget left"
        if refusal:
            done(_record(mix, node, candidate, status="skipped", fallback_for=fallback_for, error=refusal))
            continue
        start = time.perf_counter()
        try:
            reply = await mix.ainvoke(candidate, messages, offer)
        except Exception as err:
            if not isinstance(err, NoRecordedAnswer):  # a replay's gap says nothing of the model's health
                mix.breaker.record(candidate, ok=False)
            reason = f"timed out after {spec.timeout_s:g}s" if isinstance(err, TimeoutError) else str(err)
            tries = f" ({spec.retries + 1} attempts)" if spec.retries and isinstance(err, transient_errors()) else ""
            error = f"{type(err).__name__}: {reason}{tries}"
            latency = time.perf_counter() - start
            done(
                _record(mix, node, candidate, status="error", fallback_for=fallback_for, error=error, latency_s=latency)
            )
            continue
        usage: dict[str, Any] = dict(reply.usage_metadata or {})
        if not usage.get("input_tokens") and not usage.get("output_tokens"):
            # Some servers report no usage (llama.cpp's, when streaming): count the upper bound, so the
            # budget still holds, and say so.
            out_bound = min(len(reply.text.encode()), spec.max_tokens)
            usage = {"input_tokens": _prompt_tokens_bound(messages), "output_tokens": out_bound, "estimated": True}
        recorded_cost = _recorded_cost(spec, reply)
        if recorded_cost is not None:
            usage["estimated"] = bool(reply.response_metadata.get("usage_estimated", False))
        # An empty reply, or one that breaks the offer, is billed all the same, so recorded with its tokens.
        wrong = "ValueError: empty reply" if not reply.text.strip() and not reply.tool_calls else None
        if wrong is None and offer and (why := check_reply(reply, offer)) is not None:
            wrong = f"ValueError: {why}"
        mix.breaker.record(candidate, ok=wrong is None)
        done(
            _record(
                mix,
                node,
                candidate,
                status="error" if wrong else "ok",
                fallback_for=fallback_for,
                tokens_in=usage.get("input_tokens", 0),
                tokens_out=usage.get("output_tokens", 0),
                latency_s=time.perf_counter() - start,
                error=wrong,
                usage_estimated=usage.get("estimated", False),
                cost_usd=recorded_cost,
            ),
            reply,
        )
        if wrong is None:
            return reply, candidate, calls
    return None, None, calls
