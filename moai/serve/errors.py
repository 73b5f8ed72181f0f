"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, so any client reads them."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse

__all__ = ["ApiError", "error_response"]

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "requests",
}


class ApiError(Exception):
    """A request the server answers with an error: its HTTP status and OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


def error_response(err: ApiError) -> JSONResponse:
    """Return the JSON response of an error, in OpenAI's shape."""
    kind = _TYPES.get(err.status, "server_error" if err.status >= 500 else "invalid_request_error")
    body = {"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}}
    return JSONResponse(body, status_code=err.status, headers=err.headers or None)
