"""`moai serve`: the mixes behind an OpenAI-compatible HTTP API (FastAPI on uvicorn)."""

from __future__ import annotations

import os

from moai.serve.app import Catalog, create_app
from moai.serve.keys import KeyGuard, load_keys

__all__ = ["Catalog", "create_app", "serve"]


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    mixes_dir: str | None = None,
    workers: int = 1,
    keys: str | None = None,
) -> None:
    """Serve the mixes until interrupted.

    Args:
        host: The address to listen on.
        port: The port to listen on.
        mixes_dir: A folder of mix files served besides the bundled mixes.
        workers: Worker processes; each builds its own app from the environment.
        keys: A keys file: every request then needs one of its bearer keys (see `moai.serve.keys`).

    Raises:
        MixError: A mix file of `mixes_dir` or the keys file is not valid (checked here, before any worker
            starts), or a key has a limit while the usage store is off.
    """
    import uvicorn

    Catalog(mixes_dir)  # a wrong mix stops the command now, with its message, not in every worker
    if mixes_dir is not None:
        os.environ["MOAI_SERVE_MIXES"] = os.path.abspath(mixes_dir)
    if keys is not None:
        KeyGuard(load_keys(keys))  # likewise a wrong keys file, or limits with the usage store off
        os.environ["MOAI_SERVE_KEYS"] = os.path.abspath(keys)
    uvicorn.run("moai.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers)
