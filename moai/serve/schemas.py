"""The request and response bodies of the server, mirroring OpenAI's chat completion shapes.

The request models accept the fields OpenAI's clients send and ignore the sampling knobs a mix does not
take per request (`top_p`, `seed`, `stop`, penalties...). `tools`, `tool_choice` and `response_format`
are validated by `moai.nodes.tools.check_offer` (the mix's own rules); what a mix cannot do (`n` > 1,
`logprobs`, the legacy `functions`) is refused by name in `unsupported`, never ignored: a client that
asked for something must not get an answer as if it had been honoured.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

__all__ = [
    "MAX_MESSAGES",
    "ChatCompletionRequest",
    "ChatMessage",
    "FeedbackRequest",
    "FunctionCall",
    "StreamOptions",
    "TextPart",
    "ToolCallIn",
    "unsupported",
]

MAX_MESSAGES = 512
"""The most messages one request may carry."""
MAX_TOKENS = 1_000_000
"""The largest `max_tokens` accepted (a mix's models keep their own limits: see the README)."""
MAX_TOOL_CALLS = 128
"""The most tool calls one assistant message may carry."""
MAX_ARGUMENTS_CHARS = 256 * 1024
"""The longest arguments text of one tool call."""


class _Body(BaseModel):
    # Unknown fields are allowed (clients send defaults of their own); NaN and infinities never are.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class TextPart(_Body):
    """A part of a message's content; only text parts are supported."""

    type: Literal["text"]
    text: str


class FunctionCall(_Body):
    """The function an assistant's tool call calls, with its arguments as a JSON text."""

    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=MAX_ARGUMENTS_CHARS)


class ToolCallIn(_Body):
    """A tool call of an earlier assistant message, as the server returned it."""

    id: str = Field(min_length=1, max_length=512)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=MAX_TOOL_CALLS)
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=512)

    def text(self) -> str:
        """Return the message's text, its parts joined."""
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Body):
    """What a stream carries besides the answer."""

    include_usage: StrictBool = False


class ChatCompletionRequest(_Body):
    """`POST /v1/chat/completions`."""

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=128)
    user: str | None = Field(default=None, max_length=256)
    tools: list[Any] | None = None
    """Checked by `moai.nodes.tools.check_offer`, with `tool_choice` and `response_format`."""
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    """Accepted and left to the answering model: a mix returns the calls its answering model makes."""


class FeedbackRequest(_Body):
    """`POST /v1/feedback`: a user's score of a run's answer."""

    run_id: str = Field(min_length=1, max_length=200)
    score: float = Field(ge=0.0, le=1.0)
    comment: str | None = Field(default=None, max_length=10_000)


def unsupported(request: ChatCompletionRequest) -> tuple[str, str] | None:
    """Return the field of a request a mix cannot honour, and why; None if there is none."""
    extra = request.model_extra or {}
    for field in ("functions", "function_call"):
        if extra.get(field) is not None:
            return (
                field,
                f"'{field}' (OpenAI's legacy function calling) is not supported: use 'tools' and 'tool_choice'",
            )
    if request.n not in (None, 1):
        return "n", "'n' must be 1: a mix gives one answer per request"
    if extra.get("logprobs"):
        return "logprobs", "'logprobs' is not supported: a mix's answer has no single model's log probabilities"
    return None
