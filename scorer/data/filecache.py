"""What is read from a file, kept once per process while the file is unchanged."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["FileCache"]

T = TypeVar("T")


class FileCache(Generic[T]):
    """Read a file (or a folder of files) once per process while it is unchanged.

    A value is keyed by the resolved path and the size and modification time of what it was read from;
    only the latest version of each path is kept, so an edited file replaces its old value.
    """

    def __init__(self, read: Callable[[Path], T], files: Sequence[str] = ()) -> None:
        """Keep what `read` returns for a path.

        Args:
            read: Reads a resolved path.
            files: The names, inside a folder, that a value is read from; none: the path is the file.
        """
        self._read, self._files = read, tuple(files)
        self._values: dict[tuple[Path, int, int], T] = {}
        self._lock = threading.Lock()

    def get(self, path: str | Path) -> T:
        """Return the value of `path`, reading it only if it is new or changed.

        Raises:
            FileNotFoundError: No such file.
        """
        resolved = Path(path).resolve()
        stats = [(resolved / name).stat() for name in self._files] or [resolved.stat()]
        key = (resolved, sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats))
        with self._lock:
            if key not in self._values:
                for old in [k for k in self._values if k[0] == resolved]:
                    del self._values[old]
                self._values[key] = self._read(resolved)
            return self._values[key]
