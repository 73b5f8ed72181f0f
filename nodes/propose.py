"""The propose node: one model answers, concurrently with the other models of its layer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.runtime import Runtime

from moai.mix_instructions.schema import ProposeStep
from moai.nodes.call import call_model
from moai.nodes.context import MixContext
from moai.nodes.prompts import parse_confidence, propose_messages
from moai.nodes.runtime import MixRuntime
from moai.nodes.state import Proposal, ProposeTask
from moai.scorer.logprob import logprob_stats

__all__ = ["make_propose"]


def make_propose(
    mix: MixRuntime, step: ProposeStep
) -> Callable[[ProposeTask, Runtime[MixContext]], Awaitable[dict[str, Any]]]:
    """Return the node of a propose step; it receives one `ProposeTask` per model through `Send`.

    Where one model's answer is the mix's (aggregate `best` or `last`), the proposers get the caller's
    tools and response format; in a `synthesize` mix they answer in text, for the aggregator.
    """
    answers_the_caller = mix.spec.aggregate.mode != "synthesize"

    async def propose(task: ProposeTask, runtime: Runtime[MixContext]) -> dict[str, Any]:
        offer = runtime.context.offer if answers_the_caller and runtime.context is not None else None
        # A stated confidence after the answer would break the JSON asked for.
        ask_confidence = task["ask_confidence"] and not (offer is not None and offer.json is not None)
        messages = propose_messages(
            task["query"],
            history=task["history"],
            prompt=step.prompt,
            instructions=task["instructions"],
            references=task["references"],
            critique=task["critique"],
            ask_confidence=ask_confidence,
        )
        reply, model, calls = await call_model(
            mix,
            step.name,
            task["model"],
            messages,
            sensitive=task["sensitive"],
            allowance_usd=task["allowance_usd"],
            run=task["run"],
            answers=True,
            offer=offer,
        )
        label = task["model"] if task["role"] is None else f"{task['model']}/{task['role']}"
        if model != task["model"]:
            label += f"->{model}" if model else ":failed"
        update: dict[str, Any] = {"calls": calls, "trace": [f"{step.name}[{label}]"]}
        if reply is not None and model is not None:
            content, confidence = parse_confidence(reply.text) if ask_confidence else (reply.text, None)
            content = content or reply.text  # a reply that is only a confidence line is still what it said
            proposal = Proposal(
                step=step.name,
                layer=task["layer"],
                model=model,
                role=task["role"],
                content=content,
                confidence=confidence,
                logprob=logprob_stats(reply.response_metadata.get("logprobs")),
            )
            if reply.tool_calls:
                proposal["tool_calls"] = list(reply.tool_calls)
            update["proposals"] = [proposal]
        return update

    propose.__name__ = step.name
    return propose
