"""The propose node: one model answers, concurrently with the other models of its layer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from moai.mix_instructions.schema import ProposeStep
from moai.nodes.call import call_model
from moai.nodes.prompts import parse_confidence, propose_messages
from moai.nodes.runtime import MixRuntime
from moai.nodes.state import Proposal, ProposeTask
from moai.scorer.logprob import logprob_stats

__all__ = ["make_propose"]


def make_propose(mix: MixRuntime, step: ProposeStep) -> Callable[[ProposeTask], Awaitable[dict[str, Any]]]:
    """Return the node of a propose step; it receives one `ProposeTask` per model through `Send`."""

    async def propose(task: ProposeTask) -> dict[str, Any]:
        messages = propose_messages(
            task["query"],
            history=task["history"],
            prompt=step.prompt,
            instructions=task["instructions"],
            references=task["references"],
            critique=task["critique"],
            ask_confidence=task["ask_confidence"],
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
        )
        label = task["model"] if task["role"] is None else f"{task['model']}/{task['role']}"
        if model != task["model"]:
            label += f"->{model}" if model else ":failed"
        update: dict[str, Any] = {"calls": calls, "trace": [f"{step.name}[{label}]"]}
        if reply is not None and model is not None:
            content, confidence = parse_confidence(reply.text) if task["ask_confidence"] else (reply.text, None)
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
            update["proposals"] = [proposal]
        return update

    propose.__name__ = step.name
    return propose
