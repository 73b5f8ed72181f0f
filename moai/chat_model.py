"""A mix as a LangChain chat model: drop it in where an app used `ChatOpenAI`.

`MixtureChatModel(mix="routemoa")` answers a conversation with the whole mix (gate, proposers, judges,
aggregator). It works with `invoke`, `ainvoke`, `batch`, `stream` (the aggregator's tokens), in LCEL
chains, with `bind_tools` and `with_structured_output`, and as the model of a LangGraph agent with tools.

How messages map onto the mix's input:

- The last `HumanMessage` is the query; the Human and AI messages before it are the `history`.
- Every `SystemMessage`'s text, in order, is put before the query (separated by a blank line). A mix
  has its own system prompts, and its judges see only the query, not the history: prefixed to the
  query, a chain's instructions reach every model of the mix, and every provider (some chat templates
  accept one system message only, and only first). The gate then routes on the instructions too.
- Tools go to the model whose reply is the mix's answer: the proposers of a mix that passes one answer
  through (aggregate `best` or `last`: route, cascade), the aggregator of a `synthesize` mix (its
  proposers answer in text). Their tool calls come back as the reply's `tool_calls`, and the model that
  made them as `response_metadata["answered_by"]`. A conversation that ends with the tools' results
  (an AI message with tool calls, then `ToolMessage`s) goes straight to that model: no gate, no
  proposers, one call (its fallbacks if it fails, those that take tools). A model that cannot take tools
  (the embedded llama.cpp ones) answers in text unless `tool_choice` requires a call; then it fails and
  its fallbacks are tried. See `moai.nodes.tools`.
- `with_structured_output` (`json_schema`, the default; `json_mode`; `function_calling`) asks the
  answering model for JSON: a reply that is not JSON, or breaks a strict schema, counts as a failed
  call, so the fallbacks are tried. `stop` sequences are ignored.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, NotRequired, TypeVar, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForLLMRun,
    Callbacks,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableMap, RunnablePassthrough, ensure_config
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tools import BaseTool
from langchain_core.tracers._streaming import _StreamingCallbackHandler, _V2StreamingCallbackHandler
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StreamMode
from pydantic import BaseModel, PrivateAttr
from typing_extensions import TypedDict

from moai.api import build_mix, load_mix
from moai.mix_instructions import MixSpec
from moai.nodes.context import MixContext
from moai.nodes.state import Call, GateDecision, MixInput
from moai.nodes.tools import check_offer, requires_call

__all__ = ["MixtureChatModel"]

_T = TypeVar("_T")
_Event = tuple[tuple[str, ...], str, Any]
"""What the mix's graph streams with `subgraphs=True`: namespace, mode, and the mode's part."""
_MODES: list[StreamMode] = ["values", "updates"]

_RUN = "moai_run"
"""The keyword argument that carries a call's run id and thread from `invoke`/`stream` to `_generate`/`_stream`.

LangChain hands `_stream` no run manager, hence no run id, so the public methods fix the run id first.
"""


class _Run(TypedDict):
    """What a call's run takes from its config."""

    run_id: str
    thread_id: str | None
    user_id: str | None
    key_id: NotRequired[str | None]


class MixtureChatModel(BaseChatModel):
    """A mix of models behind LangChain's chat model interface.

    The reply's `usage_metadata` sums the tokens of every model call of the run; its
    `response_metadata` holds `mix`, `model_name`, `run_id` (for `moai.usage.record_feedback`),
    `thread_id`, `models_used`, the gate's `selected`, `scores` and `cache_hit`, `cost_usd`, `trace`,
    `calls`, and `answered_by` (the model whose reply is the answer; a tool call's results go back to it).
    A run's id is LangChain's run id, so LangSmith traces and the usage rows share it; a
    `configurable.thread_id` (and `user_id`, and `key_id`: the server key the request came with) in the
    config is recorded with the run.

    Example:
        ```python
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate
        from moai import MixtureChatModel

        model = MixtureChatModel(mix="routemoa", budget_usd=0.01)
        prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{question}")])
        chain = prompt | model | StrOutputParser()
        chain.invoke({"question": "What is the capital of France?"})
        ```

    Raises:
        MixRunError: (from `invoke` and the like) No model of the mix answered.
        ValueError: Malformed tools, tool choice or response format, or a conversation the mix cannot answer.
    """

    mix: MixSpec | Path | str
    """A bundled mix's name, a mix file, or a `MixSpec`."""
    overrides: Sequence[str | Path] = ()
    """Files merged over the mix (see `moai.load_mix`); ignored when `mix` is a `MixSpec`."""
    budget_usd: float | None = None
    """Most US dollars one answer may spend; overrides the mix's budget."""
    top_k: int | None = None
    """How many models the gate selects; overrides the mix's `top_k`."""
    usage_db: str | Path | None = None
    """Where model calls are recorded (see `moai.load_mix`); `"off"` records nothing."""
    sensitive: bool = False
    """Keep every query within the mix's private tiers."""

    _graph: CompiledStateGraph[Any, Any, Any, Any] = PrivateAttr()
    _parents: dict[str, Callbacks] = PrivateAttr(default_factory=dict)
    """The callbacks of each call under way, by run id."""

    def model_post_init(self, context: Any, /) -> None:
        """Compile the mix once; every call reuses the graph."""
        super().model_post_init(context)
        # No checkpointer: a chat model is stateless, its caller keeps the conversation.
        if isinstance(self.mix, MixSpec):
            self._graph = build_mix(self.mix, usage_db=self.usage_db).compile(name=self.mix.name, checkpointer=False)
        else:
            self._graph = load_mix(self.mix, self.overrides, usage_db=self.usage_db, checkpointer=False)

    @property
    def _llm_type(self) -> str:
        return "moai-mixture"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "mix": self._graph.name,
            "budget_usd": self.budget_usd,
            "top_k": self.top_k,
            "sensitive": self.sensitive,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider="moai", ls_model_name=self._graph.name, ls_model_type="chat")

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools to the model that answers (see the module's docstring), as `ChatOpenAI.bind_tools` does.

        Args:
            tools: LangChain tools, functions, pydantic classes, or OpenAI tool dicts.
            tool_choice: `auto`, `none`, `required` (or `any`), a tool's name, True (the only tool), or
                OpenAI's `{"type": "function", "function": {"name": ...}}`.
            strict: Passed on in each tool's definition (OpenAI's strict schemas).
            **kwargs: Bound as well (`parallel_tool_calls` is accepted and left to the model).

        Raises:
            ValueError: The tools or the choice are malformed, too many or too large.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        names = [tool["function"]["name"] for tool in formatted]
        choice: str | dict[str, Any] | None
        if tool_choice is None or tool_choice is False:
            choice = None
        elif tool_choice is True:
            if len(names) != 1:
                raise ValueError(f"tool_choice=True needs exactly one tool; got {len(names)}")
            choice = {"type": "function", "function": {"name": names[0]}}
        elif tool_choice == "any":
            choice = "required"
        elif isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
            choice = {"type": "function", "function": {"name": tool_choice}}
        else:
            choice = tool_choice
        check_offer(formatted, choice)  # refused now, not at the first call
        kwargs.pop("parallel_tool_calls", None)  # a mix calls what its answering model calls
        return self.bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Literal["json_schema", "json_mode", "function_calling"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answer in the shape of `schema`, parsed (as `ChatOpenAI.with_structured_output` does).

        Args:
            schema: A pydantic class, a TypedDict, a JSON schema or an OpenAI tool dict.
            method: `json_schema` (the answering model gets the schema as its response format), `json_mode`
                (a JSON object, the schema only in the parser), or `function_calling` (the schema as a tool
                the model must call).
            include_raw: Return `{"raw": AIMessage, "parsed": ..., "parsing_error": ...}`.
            strict: For `json_schema`, check the reply against the schema (a reply that breaks it is a
                failed call, so the fallbacks are tried); for `function_calling`, passed to the tool.

        Raises:
            ValueError: An unknown method or argument.
        """
        if kwargs:
            raise ValueError(f"unsupported arguments: {sorted(kwargs)}")
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, strict=strict)
        if method not in ("json_schema", "json_mode"):
            raise ValueError(f"method must be json_schema, json_mode or function_calling; got {method!r}")
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        parser: Runnable[Any, Any] = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
        if method == "json_mode":
            response_format: dict[str, Any] = {"type": "json_object"}
        else:
            function = convert_to_openai_tool(schema)["function"]
            spec = {"name": function["name"], "schema": function.get("parameters", {}), "strict": bool(strict)}
            response_format = {"type": "json_schema", "json_schema": spec}
        check_offer(response_format=response_format)
        llm = self.bind(
            response_format=response_format,
            ls_structured_output_format={"kwargs": {"method": method, "strict": strict}, "schema": schema},
        )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")

    # The public entry points fix the run id before LangChain opens the run, and pass it on with the
    # thread, so that the mix's run and LangChain's share an id whichever path LangChain takes.

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """Answer with the mix (see `BaseChatModel.invoke`)."""
        with self._run_of(config, kwargs) as (config, kwargs):
            return super().invoke(input, config, stop=stop, **kwargs)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """Answer with the mix (see `BaseChatModel.ainvoke`)."""
        with self._run_of(config, kwargs) as (config, kwargs):
            return await super().ainvoke(input, config, stop=stop, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Stream the final answer's tokens; the last chunk carries usage and metadata."""
        with self._run_of(config, kwargs) as (config, kwargs):
            yield from super().stream(input, config, stop=stop, **kwargs)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Stream the final answer's tokens; the last chunk carries usage and metadata."""
        with self._run_of(config, kwargs) as (config, kwargs):
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                yield chunk

    @contextmanager
    def _run_of(
        self, config: RunnableConfig | None, kwargs: dict[str, Any]
    ) -> Iterator[tuple[RunnableConfig, dict[str, Any]]]:
        """Fix a call's run id in its config; yield the config and the keyword arguments for LangChain.

        LangChain opens the run with this id, but hands `_stream` neither it nor a run manager: the
        id and thread go on as a keyword argument, the callbacks (not a value to trace) in `_parents`
        while the call lasts.
        """
        config = ensure_config(config)
        config["run_id"] = run_id = config.get("run_id") or uuid.uuid4()
        configurable = config.get("configurable", {})
        run = _Run(
            run_id=str(run_id),
            thread_id=configurable.get("thread_id"),
            user_id=configurable.get("user_id"),
            key_id=configurable.get("key_id"),
        )
        self._parents[run["run_id"]] = config.get("callbacks")
        try:
            yield config, {_RUN: run, **kwargs}
        finally:
            self._parents.pop(run["run_id"], None)

    # What LangChain calls.

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        outcome = _Outcome()
        for event in _apart(self._run(messages, run_manager, kwargs, streaming=False)):
            outcome.take(event)
        return ChatResult(generations=[ChatGeneration(message=outcome.reply())])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        outcome = _Outcome()
        async for event in _aapart(self._arun(messages, run_manager, kwargs, streaming=False)):
            outcome.take(event)
        return ChatResult(generations=[ChatGeneration(message=outcome.reply())])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        outcome = _Outcome(live=_live(kwargs))
        for event in _apart(self._run(messages, run_manager, kwargs, streaming=True)):
            if (token := outcome.take(event)) is not None:
                yield ChatGenerationChunk(message=AIMessageChunk(content=token))
        yield ChatGenerationChunk(message=outcome.reply(last=True))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        outcome = _Outcome(live=_live(kwargs))
        async for event in _aapart(self._arun(messages, run_manager, kwargs, streaming=True)):
            if (token := outcome.take(event)) is not None:
                yield ChatGenerationChunk(message=AIMessageChunk(content=token))
        yield ChatGenerationChunk(message=outcome.reply(last=True))

    # Helpers.

    def _run(
        self,
        messages: list[BaseMessage],
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
        *,
        streaming: bool,
    ) -> Callable[[], Iterator[_Event]]:
        """Return what starts the mix's run on a conversation, with the graph's sync API.

        Not `asyncio.run` around the async API: that fails under a running event loop (a notebook cell).
        """
        state, config, context = self._prepare(messages, run_manager, kwargs)
        modes = _MODES + (["messages"] if streaming else [])
        return lambda: cast(
            "Iterator[_Event]",
            self._graph.stream(state, config, context=context, stream_mode=modes, subgraphs=True),
        )

    def _arun(
        self,
        messages: list[BaseMessage],
        run_manager: AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
        *,
        streaming: bool,
    ) -> Callable[[], AsyncIterator[_Event]]:
        """Return what starts the mix's run on a conversation, with the graph's async API."""
        state, config, context = self._prepare(messages, run_manager, kwargs)
        modes = _MODES + (["messages"] if streaming else [])
        return lambda: cast(
            "AsyncIterator[_Event]",
            self._graph.astream(state, config, context=context, stream_mode=modes, subgraphs=True),
        )

    def _prepare(
        self,
        messages: list[BaseMessage],
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> tuple[MixInput, RunnableConfig, MixContext]:
        """Return the mix's input, the config and the context of one run."""
        query, history, turn, resume = _split(messages)
        run: _Run | None = kwargs.get(_RUN)
        if run is None:  # called through `generate`, not the methods above
            run = _Run(run_id=str(run_manager.run_id if run_manager else uuid.uuid4()), thread_id=None, user_id=None)
        run_id = run["run_id"]
        ids = {"thread_id": run["thread_id"], "user_id": run["user_id"], "key_id": run.get("key_id")}
        config = RunnableConfig(configurable={key: value for key, value in ids.items() if value})
        # The mix's runs nest under the chat model's run: a trace shows the mix inside it. But the caller's
        # streaming handlers are left out: a graph's `messages` stream or `astream_events` would otherwise
        # show every proposer's tokens as if they were the answer's.
        manager: BaseCallbackManager | None = None
        if run_manager is not None:
            manager = CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
            manager.set_handlers(run_manager.inheritable_handlers)
            manager.add_tags(run_manager.inheritable_tags)
            manager.add_metadata(run_manager.inheritable_metadata)
        elif run_id in self._parents:
            manager = CallbackManager.configure(self._parents[run_id])
            manager.parent_run_id = uuid.UUID(run_id)
        if manager is not None:
            manager.handlers = [h for h in manager.handlers if not _streams(h)]
            manager.inheritable_handlers = [h for h in manager.inheritable_handlers if not _streams(h)]
            config["callbacks"] = manager
        context = MixContext(
            budget_usd=self.budget_usd,
            top_k=self.top_k,
            run_id=run_id,
            tools=kwargs.get("tools"),
            tool_choice=kwargs.get("tool_choice"),
            response_format=kwargs.get("response_format"),
            resume=resume,
        )
        # `turn` always goes in, empty or not: with a checkpointer, one left out would keep the last run's.
        return MixInput(query=query, history=history, sensitive=self.sensitive, turn=turn), config, context


def _apart(start: Callable[[], Iterator[_T]]) -> Iterator[_T]:
    """Iterate over `start()` as a graph of its own, not a subgraph of the graph whose node calls the model.

    LangGraph makes a graph run inside another's node its subgraph (the caller's namespace, checkpointer
    and stream) from the ambient config: the mix runs in a context without one.
    """
    context = contextvars.copy_context()
    context.run(var_child_runnable_config.set, None)
    items = context.run(start)
    try:
        while True:
            try:
                yield context.run(next, items)
            except StopIteration:
                return
    finally:
        context.run(getattr(items, "close", lambda: None))


async def _aapart(start: Callable[[], AsyncIterator[_T]]) -> AsyncIterator[_T]:
    """Iterate over `start()` as a graph of its own (see `_apart`), in a task of its own context."""
    context = contextvars.copy_context()
    context.run(var_child_runnable_config.set, None)
    results: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

    async def produce() -> None:
        try:
            async for item in start():
                await results.put((True, item))
        except BaseException as err:  # raised in the caller's task
            await results.put((False, err))
            if isinstance(err, asyncio.CancelledError):
                raise
        else:
            await results.put((False, None))

    producer = asyncio.create_task(produce(), context=context)
    try:
        while True:
            more, item = await results.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)


def _live(kwargs: dict[str, Any]) -> bool:
    """Say whether a stream may pass the aggregator's tokens on as they come.

    Not when the reply is checked before it counts (JSON asked for, a tool call required): a reply that
    fails the check is followed by a fallback's, and its tokens must not have been sent. The answer
    then comes whole, in the last chunk.
    """
    offer = check_offer(kwargs.get("tools"), kwargs.get("tool_choice"), kwargs.get("response_format"))
    return offer.json is None and not requires_call(offer)


def _streams(handler: BaseCallbackHandler) -> bool:
    """Say whether a callback handler streams what it sees to someone (LangGraph's, astream_events')."""
    return isinstance(handler, (_StreamingCallbackHandler, _V2StreamingCallbackHandler))


class _Outcome:
    """What a run of the mix streams, gathered into the reply: its final state and the gate's decision."""

    def __init__(self, *, live: bool = True) -> None:
        self.final: dict[str, Any] = {}
        self.gate: GateDecision | None = None
        self.streamed = False
        self.live = live
        """Whether the aggregator's tokens are passed on as they come (see `_live`)."""

    def take(self, event: _Event) -> str | None:
        """Note one event of the run; return the text of a token of the answer, or None.

        Whole messages in the `messages` stream are the state's history, and tokens of any other node
        are the proposers' or judges': only the aggregate node's chunks are the answer. The gate's
        decision is read from its update, since a mix's output leaves it out. With `subgraphs`, the
        events of an A/B split's arm come too.
        """
        namespace, mode, part = event
        if mode == "values" and not namespace:
            self.final = part
        elif mode == "updates" and isinstance(update := part.get("gate"), dict) and "gate" in update:
            self.gate = update["gate"]
        elif mode == "messages" and self.live:
            message, meta = part
            if meta.get("langgraph_node") == "aggregate" and isinstance(message, AIMessageChunk) and message.text:
                self.streamed = True
                return message.text
        return None

    def reply(self, *, last: bool = False) -> AIMessage:
        """Build the reply, or the last chunk of a stream (the answer if no token came before it)."""
        final = self.final
        calls: list[Call] = final["calls"]
        tokens_in = sum(c["tokens_in"] for c in calls)
        tokens_out = sum(c["tokens_out"] for c in calls)
        usage = UsageMetadata(input_tokens=tokens_in, output_tokens=tokens_out, total_tokens=tokens_in + tokens_out)
        gate = self.gate or final.get("gate") or {}
        metadata = {
            "mix": final["run"]["mix"],
            "model_name": final["run"]["mix"],
            "run_id": final["run"]["run_id"],
            "thread_id": final["run"]["thread_id"],
            "models_used": list(final["models_used"]),
            "selected": list(gate.get("selected", [])),
            "scores": dict(gate.get("scores", {})),
            "cache_hit": bool(gate.get("cache_hit", False)),
            "cost_usd": sum(c["cost_usd"] for c in calls),
            "trace": list(final["trace"]),
            "calls": [dict(c) for c in calls],
            "answered_by": final.get("answered_by"),
        }
        tool_calls = list(final.get("tool_calls") or [])
        if last:
            text = "" if self.streamed else final["answer"]
            chunks = [
                tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                for i, c in enumerate(tool_calls)
            ]
            return AIMessageChunk(
                content=text,
                tool_call_chunks=chunks,
                usage_metadata=usage,
                response_metadata=metadata,
                chunk_position="last",
            )
        return AIMessage(
            content=final["answer"], tool_calls=tool_calls, usage_metadata=usage, response_metadata=metadata
        )


def _split(messages: Sequence[BaseMessage]) -> tuple[str, list[AnyMessage], list[AnyMessage], str | None]:
    """Return the query (system texts first), the earlier turns, and a tool turn with the model it resumes.

    A tool turn is what follows the last human message when the mix answered it with tool calls: the AI
    messages with the calls and the `ToolMessage`s with their results. It goes back to the model that
    made the calls (`response_metadata["answered_by"]` of the last AI message); None when no model is
    recorded (a conversation built by hand): then the gate picks the model that continues it.

    Raises:
        ValueError: No human message, a message after the last that is no tool turn, or a tool result
            that answers no call.
    """
    last = next((i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], HumanMessage)), None)
    if last is None:
        raise ValueError("MixtureChatModel needs a human message to answer; got none")
    after = [m for m in messages[last + 1 :] if not isinstance(m, SystemMessage)]
    turn: list[AnyMessage] = []
    resume: str | None = None
    if after:
        called: set[str] = set()
        for message in after:
            if isinstance(message, AIMessage) and message.tool_calls:
                called |= {str(c["id"]) for c in message.tool_calls}
                model = message.response_metadata.get("answered_by")
                resume = model if isinstance(model, str) and model else None
                turn.append(AIMessage(message.text, tool_calls=message.tool_calls))
            elif isinstance(message, ToolMessage) and message.tool_call_id in called:
                turn.append(ToolMessage(message.text, tool_call_id=message.tool_call_id, name=message.name))
            else:
                types = ", ".join(m.type for m in after)
                raise ValueError(
                    "MixtureChatModel answers the last human message, or the results of the tools the mix "
                    "called after it (an AI message with tool calls, then a tool message per call); it is "
                    f"followed by: {types}"
                )
        if not isinstance(after[-1], ToolMessage):
            raise ValueError("a conversation that goes on after the last human message must end with tool results")
    system = [m.text for m in messages if isinstance(m, SystemMessage) and m.text]
    history: list[AnyMessage] = []
    for message in messages[:last]:
        if isinstance(message, HumanMessage):
            history.append(HumanMessage(message.text))
        elif isinstance(message, AIMessage):
            history.append(AIMessage(message.text, tool_calls=message.tool_calls))
        elif isinstance(message, ToolMessage):
            history.append(ToolMessage(message.text, tool_call_id=message.tool_call_id, name=message.name))
        elif not isinstance(message, SystemMessage):
            raise ValueError(f"MixtureChatModel takes system, human, AI and tool messages; got {message.type}")
    return "\n\n".join([*system, messages[last].text]), history, turn, resume
