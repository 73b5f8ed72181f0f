"""The public errors of moai, in one module that imports nothing of the project, so every layer may raise them."""

from __future__ import annotations

__all__ = ["MixError", "MixRunError", "NoRecordedAnswer", "ProviderError"]


class MixError(ValueError):
    """A mix file (or a MixSpec built in code) that cannot be used as written.

    Its message names the file, the field and what would be valid.
    """

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


class MixRunError(RuntimeError):
    """A query no route of the mix could answer; the message lists what was tried."""


class ProviderError(RuntimeError):
    """A model that cannot be built as declared (missing key, missing package)."""


class NoRecordedAnswer(LookupError):
    """A replay model has no recorded answer to what it was sent (an unknown query, or a judge's prompt).

    An error of that call, so the model's fallbacks apply; not of the model, so its circuit stays closed.
    """
