"""The error a wrong mix raises: it names the file, the field and what would be valid."""

from __future__ import annotations

__all__ = ["MixError"]


class MixError(ValueError):
    """A mix file (or a MixSpec built in code) that cannot be used as written."""

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")
