"""MixtureChatModel: a mix behind LangChain's chat model interface, on scripted pools."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any
from uuid import UUID

import pytest
from fakes import fake_bundled
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import create_react_agent

from moai import MixRunError, MixtureChatModel
from moai.nodes.state import Call
from moai.usage import UsageStore, monitor_for

pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")

QUESTION = "What is the capital of France?"


class Recorder(BaseCallbackHandler):
    """Record every chat model run: its id, parent, graph node and input messages."""

    def __init__(self) -> None:
        self.runs: list[tuple[UUID, UUID | None, str | None, list[BaseMessage]]] = []
        self.parents: dict[UUID, UUID | None] = {}

    def on_chain_start(
        self, serialized: dict[str, Any], inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self.parents[run_id] = parent_run_id

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.runs.append((run_id, parent_run_id, (metadata or {}).get("langgraph_node"), messages[0]))
        self.parents[run_id] = parent_run_id

    def root(self, run_id: UUID) -> UUID:
        """Return the outermost run that `run_id` nests in."""
        while (parent := self.parents.get(run_id)) is not None:
            run_id = parent
        return run_id

    def node(self, name: str) -> list[list[BaseMessage]]:
        """Return the messages of each model call made by the mix's node `name`."""
        return [messages for _, _, node, messages in self.runs if node == name]


def route(**replies: list[str]) -> MixtureChatModel:
    """The `route` mix (one model per query, its answer passed through) on scripted models."""
    return MixtureChatModel(mix=fake_bundled("route", replies or {"smol": ["Paris. ({query})"]}))


def moa(aggregate: str = "the merged answer") -> MixtureChatModel:
    """The `moa` mix: two layers of two proposers, then `smol` synthesises (and streams) `aggregate`."""
    return MixtureChatModel(mix=fake_bundled("moa", {"smol": ["s1", "s2", aggregate], "gemma": ["g1", "g2"]}))


def sums(calls: list[Call]) -> dict[str, int]:
    tokens_in = sum(c["tokens_in"] for c in calls)
    tokens_out = sum(c["tokens_out"] for c in calls)
    return {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}


def test_invoke_answers_with_the_mix() -> None:
    reply = route().invoke(QUESTION)
    assert isinstance(reply, AIMessage)
    assert reply.content == f"Paris. ({QUESTION})"
    meta = reply.response_metadata
    assert meta["mix"] == meta["model_name"] == "route"
    assert meta["models_used"] == meta["selected"] == ["smol"]
    assert set(meta["scores"]) == {"smol", "gemma"}
    assert meta["trace"] == ["gate", "answer[smol]", "aggregate:best"]
    assert meta["cost_usd"] == sum(c["cost_usd"] for c in meta["calls"])
    assert reply.id is not None and reply.id.startswith(f"lc_run--{meta['run_id']}")


def test_usage_metadata_sums_every_call_of_the_run() -> None:
    reply = moa().invoke(QUESTION)
    calls: list[Call] = reply.response_metadata["calls"]
    assert [c["node"] for c in calls].count("aggregate") == 1 and len(calls) == 5
    assert reply.usage_metadata == sums(calls)
    assert reply.usage_metadata["output_tokens"] > 0


async def test_ainvoke_and_abatch() -> None:
    model = moa()
    reply = await model.ainvoke(QUESTION)
    assert reply.content == "the merged answer"
    assert reply.response_metadata["trace"][-1] == "aggregate:synthesize"
    replies = await route().abatch(["one", "two"])
    assert [r.content for r in replies] == ["Paris. (one)", "Paris. (two)"]
    assert replies[0].response_metadata["run_id"] != replies[1].response_metadata["run_id"]


def test_batch() -> None:
    replies = route().batch(["one", "two", "three"])
    assert [r.content for r in replies] == ["Paris. (one)", "Paris. (two)", "Paris. (three)"]


def test_conversation_maps_onto_query_and_history() -> None:
    recorder = Recorder()
    conversation: list[BaseMessage] = [
        SystemMessage("Answer in French."),
        HumanMessage("Hi"),
        AIMessage("Bonjour"),
        HumanMessage(QUESTION),
    ]
    reply = route(smol=["Paris."]).invoke(conversation, config={"callbacks": [recorder]})
    assert reply.content == "Paris."
    [proposer] = recorder.node("answer")
    # The mix's own system prompt, then the earlier turns, then the system text before the question.
    assert [type(m) for m in proposer] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert [m.text for m in proposer[1:]] == ["Hi", "Bonjour", f"Answer in French.\n\n{QUESTION}"]


def test_stream_yields_the_aggregators_tokens_and_usage_last() -> None:
    chunks = list(moa("the merged answer").stream(QUESTION))
    assert [c.text for c in chunks] == ["the ", "merged ", "answer", ""]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert all(c.usage_metadata is None and not c.response_metadata.get("calls") for c in chunks[:-1])
    last = chunks[-1]
    assert last.usage_metadata == sums(last.response_metadata["calls"])
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.text == "the merged answer" and whole.usage_metadata == last.usage_metadata
    assert whole.response_metadata["trace"][-1] == "aggregate:synthesize"


async def test_astream_without_an_aggregating_model_yields_the_answer_once() -> None:
    chunks = [c async for c in route().astream(QUESTION)]
    assert [c.text for c in chunks] == [f"Paris. ({QUESTION})"]
    assert chunks[0].usage_metadata == sums(chunks[0].response_metadata["calls"])


def test_lcel_chain_keeps_the_templates_system_prompt() -> None:
    prompt = ChatPromptTemplate.from_messages([("system", "Be terse."), ("human", "Capital of {country}?")])
    chain = prompt | route(smol=["{query}"]) | StrOutputParser()
    assert chain.invoke({"country": "France"}) == "Be terse.\n\nCapital of France?"
    assert "".join(chain.stream({"country": "Peru"})) == "Be terse.\n\nCapital of Peru?"


def test_sync_invoke_inside_a_running_event_loop() -> None:
    async def cell() -> tuple[str, str]:
        # A notebook cell: sync calls while the loop runs, which must neither deadlock nor fail.
        model = moa()
        return str(model.invoke(QUESTION).content), "".join(c.text for c in model.stream(QUESTION))

    assert asyncio.run(asyncio.wait_for(cell(), 60)) == ("the merged answer", "the merged answer")


def test_react_agent_without_tools() -> None:
    agent = create_react_agent(route(), tools=[])
    result = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert [m.type for m in result["messages"]] == ["human", "ai"]
    assert result["messages"][-1].content == f"Paris. ({QUESTION})"
    assert result["messages"][-1].response_metadata["mix"] == "route"


def test_messages_state_graph_with_a_checkpointer_over_two_turns() -> None:
    model = route(smol=["first answer", "second answer"])

    def chat(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke([SystemMessage("Be kind."), *state["messages"]])]}

    graph = (
        StateGraph(MessagesState).add_node("chat", chat).add_edge(START, "chat").compile(checkpointer=InMemorySaver())
    )
    recorder = Recorder()
    config: Any = {"configurable": {"thread_id": "thread-1"}, "callbacks": [recorder]}
    graph.invoke({"messages": [HumanMessage("Hello")]}, config)
    result = graph.invoke({"messages": [HumanMessage("And then?")]}, config)
    assert [m.text for m in result["messages"]] == ["Hello", "first answer", "And then?", "second answer"]
    first, second = recorder.node("answer")
    assert [m.text for m in first[1:]] == ["Be kind.\n\nHello"]
    assert [m.text for m in second[1:]] == ["Hello", "first answer", "Be kind.\n\nAnd then?"]
    assert result["messages"][-1].response_metadata["thread_id"] == "thread-1"


@pytest.mark.parametrize("subgraphs", [False, True])
async def test_agent_streams_only_the_aggregators_tokens(subgraphs: bool) -> None:
    # The mix is the model's inside, not a subgraph of the agent: no proposer token, no inner state.
    agent = create_react_agent(moa("the merged answer"), tools=[], checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    streamed: list[tuple[Any, ...]] = []
    part: Any
    async for part in agent.astream(
        {"messages": [HumanMessage(QUESTION)]}, config, stream_mode="messages", subgraphs=subgraphs
    ):
        namespace, (message, meta) = part if subgraphs else ((), part)
        streamed.append((namespace, type(message), message.text, meta["langgraph_node"]))
    assert streamed == [
        ((), AIMessageChunk, "the ", "agent"),
        ((), AIMessageChunk, "merged ", "agent"),
        ((), AIMessageChunk, "answer", "agent"),
        ((), AIMessageChunk, "", "agent"),
    ]
    namespaces = {c.config["configurable"]["checkpoint_ns"] for c in agent.checkpointer.list(None)}  # type: ignore[union-attr]
    assert namespaces == {""}


async def test_astream_events_show_the_answers_tokens_only() -> None:
    events = [e async for e in moa("the merged answer").astream_events(QUESTION, version="v2")]
    tokens = [e["data"]["chunk"].text for e in events if e["event"] == "on_chat_model_stream"]
    assert tokens == ["the ", "merged ", "answer", ""]


def test_a_failed_mix_raises() -> None:
    model = route(smol=["!fail smol is down"], gemma=["!fail gemma is down"])
    with pytest.raises(MixRunError, match="no model answered"):
        model.invoke(QUESTION)
    with pytest.raises(MixRunError, match="no model answered"):
        list(model.stream(QUESTION))


def test_a_conversation_with_tool_results_is_answered_and_a_stray_message_refused() -> None:
    # Was test_tools_are_refused_with_the_reason: tools are now supported (tests/unit/moai/test_chat_model_tools.py).
    # A hand-built tool turn records no model: the gate's first choice continues it.
    model = route(smol=["The sum is {query}."])
    called = AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}])
    reply = model.invoke([HumanMessage("1+2?"), called, ToolMessage("3", tool_call_id="c1")])
    assert reply.text == "The sum is 3." and reply.response_metadata["trace"] == [
        "gate:resume",
        "aggregate:resume[smol]",
    ]
    with pytest.raises(ValueError, match="tool message per call"):
        model.invoke([HumanMessage("1+2?"), called, ToolMessage("3", tool_call_id="other")])
    with pytest.raises(ValueError, match="must end with tool results"):
        model.invoke([HumanMessage("1+2?"), called])


def test_a_conversation_must_end_with_a_human_message() -> None:
    with pytest.raises(ValueError, match="needs a human message"):
        route().invoke([SystemMessage("Be terse.")])
    with pytest.raises(ValueError, match="followed by: ai"):
        route().invoke([HumanMessage("Hi"), AIMessage("Hello")])


def test_usage_rows_carry_langchains_run_id_and_thread() -> None:
    recorder = Recorder()
    reply = route().invoke(QUESTION, config={"callbacks": [recorder], "configurable": {"thread_id": "t-42"}})
    [run_id] = [run for run, parent, _, _ in recorder.runs if parent is None]
    assert reply.response_metadata["run_id"] == str(run_id)
    # The mix's own model calls nest under the chat model's run.
    assert [recorder.root(run) for run, _, node, _ in recorder.runs if node == "answer"] == [run_id]
    db = os.environ["MOAI_USAGE_DB"]
    assert monitor_for(db).flush()
    store = UsageStore(db)
    try:
        [run] = [row for row in store.runs() if row["run_id"] == str(run_id)]
        calls = [row for row in store.calls() if row["run_id"] == str(run_id)]
    finally:
        store.close()
    assert run["status"] == "ok" and run["thread_id"] == "t-42" and run["mix"] == "route"
    assert [c["model"] for c in calls] == ["smol"]


@pytest.mark.parametrize("api", ["stream", "astream"])
async def test_a_streamed_run_nests_the_mix_too(api: str) -> None:
    recorder = Recorder()
    model = moa()
    config: Any = {"callbacks": [recorder]}
    if api == "stream":
        chunks = list(model.stream(QUESTION, config))
    else:
        chunks = [c async for c in model.astream(QUESTION, config)]
    [run_id] = [run for run, parent, _, _ in recorder.runs if parent is None]
    assert chunks[-1].response_metadata["run_id"] == str(run_id)
    inner = [run for run, _, node, _ in recorder.runs if node is not None]
    assert len(inner) == 5 and {recorder.root(run) for run in inner} == {run_id}
    assert not model._parents  # nothing left behind


def test_a_given_run_id_is_kept() -> None:
    run_id = uuid.uuid4()
    reply = route().invoke(QUESTION, config={"run_id": run_id})
    assert reply.response_metadata["run_id"] == str(run_id)
    assert reply.id is not None and reply.id.startswith(f"lc_run--{run_id}")


def test_exported_lazily_from_moai() -> None:
    import moai
    from moai.chat_model import MixtureChatModel as Direct

    assert moai.MixtureChatModel is Direct and "MixtureChatModel" in moai.__all__


def test_bundled_name_and_settings() -> None:
    model = MixtureChatModel(mix="routemoa", budget_usd=0.01, top_k=2, usage_db="off", sensitive=True)
    assert model._llm_type == "moai-mixture"
    assert model._identifying_params == {"mix": "routemoa", "budget_usd": 0.01, "top_k": 2, "sensitive": True}


def test_top_k_reaches_the_gate() -> None:
    model = MixtureChatModel(mix=fake_bundled("routemoa", {}), top_k=2)
    assert model.invoke(QUESTION).response_metadata["selected"] == ["smol", "gemma"]
