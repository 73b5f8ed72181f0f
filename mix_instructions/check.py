"""Checks a schema alone cannot make: references between fields, and the shape of the step graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from moai.errors import MixError
from moai.mix_instructions.schema import RESERVED_MODEL_NAMES, JudgeStep, MixSpec, ProposeStep

__all__ = ["LANGCHAIN_PROVIDERS", "check_mix", "langchain_providers", "step_successors"]

RESERVED = ("gate", "aggregate", "__start__", "__end__")
JOIN_PREFIX = "before_"
"""Joins between two propose steps are named `before_<step>`: step names may not start so."""
AGGREGATE = "aggregate"
LANGCHAIN_PROVIDERS = (
    *("anthropic", "anthropic_bedrock", "azure_ai", "azure_openai", "baseten", "bedrock", "bedrock_converse"),
    *("bedrock_mantle_anthropic", "bedrock_mantle_openai", "cohere", "deepseek", "fireworks"),
    *("google_anthropic_vertex", "google_genai", "google_vertexai", "groq", "huggingface", "ibm", "langsmith"),
    *("litellm", "meta", "mistralai", "nvidia", "ollama", "openai", "openrouter", "perplexity", "together"),
    *("upstage", "xai"),
)
"""The provider prefixes init_chat_model knows, as of langchain 1.5: used where langchain is not installed."""


def langchain_providers() -> tuple[str, ...]:
    """Return the provider prefixes of `provider: langchain` models: langchain's own list where it is installed."""
    try:
        # Its registry is private, so read defensively; a mix then validates as the installed langchain builds.
        from langchain.chat_models.base import _BUILTIN_PROVIDERS
    except ImportError:
        return LANGCHAIN_PROVIDERS
    return tuple(sorted(_BUILTIN_PROVIDERS)) if isinstance(_BUILTIN_PROVIDERS, dict) else LANGCHAIN_PROVIDERS


def check_mix(spec: MixSpec, source: str = "<mix>") -> None:
    """Raise MixError for the first reference or topology mistake in a mix."""

    def fail(field: str, message: str) -> NoReturn:
        raise MixError(source, field, message)

    pool = list(spec.models)
    if not pool:
        fail("models", "the pool is empty: declare at least one model")
    valid = f"models of the pool: {', '.join(pool)}"

    def need_model(field: str, name: str | None, *extra: str) -> None:
        if name is not None and name not in pool and name not in extra:
            choices = ", ".join((*extra, *pool))
            fail(field, f"'{_short(name)}' is not declared in models; valid choices: {choices}")

    for name, model in spec.models.items():
        if name in RESERVED_MODEL_NAMES:
            fail(
                f"models.{name}",
                f"'{name}' is a keyword where models are named (a propose step's 'models: selected', a judge's "
                f"'cross: top1', 'aggregate.model: top1'): rename the model; reserved model names: "
                f"{', '.join(RESERVED_MODEL_NAMES)}",
            )
        for i, fallback in enumerate(model.fallbacks):
            need_model(f"models.{name}.fallbacks.{i}", fallback)
            if fallback == name:
                fail(f"models.{name}.fallbacks.{i}", "a model cannot be its own fallback")
            if fallback in model.fallbacks[:i]:
                fail(f"models.{name}.fallbacks.{i}", f"'{fallback}' is listed twice: each fallback is tried once")
        if model.replies and model.provider != "fake":
            fail(f"models.{name}.replies", "only provider 'fake' takes scripted replies")
        if model.delay_s and model.provider != "fake":
            fail(f"models.{name}.delay_s", "only provider 'fake' takes a scripted delay")
        if model.responses is not None and model.provider != "replay":
            fail(f"models.{name}.responses", "only provider 'replay' takes a responses file")
        if model.provider == "replay" and model.responses is None:
            fail(f"models.{name}.responses", "provider 'replay' needs the responses file whose answers it gives")
        if model.provider == "langchain":
            prefix, colon, model_id = model.model.partition(":")
            known = langchain_providers()
            if not colon or not model_id or prefix not in known:
                fail(
                    f"models.{name}.model",
                    f"'{_short(model.model)}' is not '<provider>:<model>' with a provider init_chat_model knows; "
                    f"valid providers: {', '.join(known)}",
                )

    gate = spec.gate
    candidates = gate.candidates if gate.candidates is not None else pool
    for i, name in enumerate(gate.candidates or []):
        need_model(f"gate.candidates.{i}", name)
        if name in candidates[:i]:
            fail(f"gate.candidates.{i}", f"'{name}' is listed twice: list each candidate once")
    if not candidates:
        fail("gate.candidates", f"no candidates: list at least one of the {valid}")
    if gate.top_k > len(candidates):
        fail(
            "gate.top_k", f"{gate.top_k} exceeds the {len(candidates)} candidate models (valid: 1 to {len(candidates)})"
        )
    need_model("gate.fallback", gate.fallback)
    if gate.min_confidence > 0 and gate.fallback is None:
        fail("gate.fallback", "min_confidence is set, so name the model to fall back to")

    if not spec.steps:
        fail("steps", "no steps: a mix needs at least one propose step")
    names = [step.name for step in spec.steps]
    for i, step in enumerate(spec.steps):
        if step.name in RESERVED or step.name.startswith(JOIN_PREFIX):
            reserved = ", ".join((*RESERVED, JOIN_PREFIX + "*"))
            fail(f"steps.{i}.name", f"'{step.name}' is reserved; reserved names: {reserved}")
        if step.name in names[:i]:
            fail(f"steps.{i}.name", f"step name '{step.name}' is used twice")
    if not isinstance(spec.steps[0], ProposeStep):
        fail("steps.0.kind", "the first step must be 'propose': a judge needs answers to judge")
    for i, step in enumerate(spec.steps):
        targets = [("next", step.next)]
        if isinstance(step, ProposeStep):
            if isinstance(step.models, list):
                if not step.models:
                    fail(f"steps.{i}.models", f"empty: list models, or write 'selected'; {valid}")
                for j, entry in enumerate(step.models):
                    need_model(f"steps.{i}.models.{j}", entry if isinstance(entry, str) else entry.model)
        else:
            need_model(f"steps.{i}.cross", step.cross, "top1")
            for j, judge in enumerate(step.read):
                if judge in step.read[:j]:
                    fail(f"steps.{i}.read.{j}", f"'{judge}' is listed twice: list each judge once")
            targets.append(("otherwise", step.otherwise))
        for key, target in targets:
            if target is not None and target not in names and target != AGGREGATE:
                choices = ", ".join((*names, AGGREGATE))
                fail(f"steps.{i}.{key}", f"no step '{_short(target)}'; valid choices: {choices}")

    agg = spec.aggregate
    need_model("aggregate.model", agg.model, "top1")
    if agg.mode == "synthesize" and agg.model is None:
        fail("aggregate.model", "mode 'synthesize' needs an aggregator model (a model name or 'top1')")
    _check_topology(spec, fail)


def _short(name: str) -> str:
    # Model and step names are at most MAX_NAME_LENGTH long; a reference to none may be any length.
    return name if len(name) <= 60 else name[:60] + "..."


def step_successors(spec: MixSpec) -> dict[str, str]:
    """Return each step's unconditional successor: its `next`, the following step, or aggregate."""
    successors: dict[str, str] = {}
    for i, step in enumerate(spec.steps):
        following = spec.steps[i + 1].name if i + 1 < len(spec.steps) else AGGREGATE
        successors[step.name] = step.next or following
    return successors


def _check_topology(spec: MixSpec, fail: Callable[[str, str], NoReturn]) -> None:
    """Reject cycles with no reachable stop, and steps no path reaches.

    A judge's `otherwise` edge is bounded by its `stop_when.max_rounds`; every other edge is not, so the
    graph of `next` edges alone must be acyclic.
    """
    successors = step_successors(spec)
    index = {step.name: i for i, step in enumerate(spec.steps)}
    for start in successors:
        path = [start]
        node = successors[start]
        while node != AGGREGATE:
            if node in path:
                cycle = [*path[path.index(node) :], node]
                # Report the explicit `next` that points back: implicit successors only go forward.
                closing = next(
                    name
                    for name in cycle[:-1]
                    if spec.steps[index[name]].next and index[successors[name]] <= index[name]
                )
                fail(
                    f"steps.{index[closing]}.next",
                    f"cycle {' -> '.join(cycle)} has no reachable stop: close a loop through a judge's "
                    "'otherwise', which stop_when bounds",
                )
            path.append(node)
            node = successors[node]
    reached = {spec.steps[0].name}
    frontier = [spec.steps[0].name]
    while frontier:
        step = spec.steps[index[frontier.pop()]]
        for target in (successors[step.name], step.otherwise if isinstance(step, JudgeStep) else None):
            if target is not None and target != AGGREGATE and target not in reached:
                reached.add(target)
                frontier.append(target)
    for step in spec.steps:
        if step.name not in reached:
            fail(f"steps.{index[step.name]}", f"step '{step.name}' is never reached from '{spec.steps[0].name}'")
