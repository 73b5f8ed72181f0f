"""MixtureChatModel on the real embedded local models, in an LCEL chain: no key, no network."""

from __future__ import annotations

import os

import pytest
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from moai import MixtureChatModel
from moai.usage import UsageStore, monitor_for

pytestmark = pytest.mark.integration

LOCAL = {"smol", "gemma"}
PROMPT = ChatPromptTemplate.from_messages([("system", "Answer in one short sentence."), ("human", "{question}")])


def test_route_answers_in_a_chain() -> None:
    model = MixtureChatModel(mix="route")
    reply = (PROMPT | model).invoke({"question": "What is the capital of France?"})
    assert isinstance(reply, AIMessage) and "Paris" in reply.text
    meta = reply.response_metadata
    assert meta["mix"] == "route" and meta["trace"][0] == "gate" and meta["trace"][-1] == "aggregate:best"
    assert set(meta["selected"]) <= LOCAL and set(meta["models_used"]) <= LOCAL and meta["models_used"]
    assert meta["cost_usd"] == 0
    usage = reply.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["input_tokens"] == sum(c["tokens_in"] for c in meta["calls"])

    db = os.environ["MOAI_USAGE_DB"]
    assert monitor_for(db).flush()
    store = UsageStore(db)
    try:
        [run] = [row for row in store.runs() if row["run_id"] == meta["run_id"]]
    finally:
        store.close()
    assert run["status"] == "ok" and run["answer"] == reply.text


async def test_route_streams_in_a_chain() -> None:
    chain = PROMPT | MixtureChatModel(mix="route") | StrOutputParser()
    parts = [part async for part in chain.astream({"question": "What is the capital of France?"})]
    assert "Paris" in "".join(parts)
