from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    # Unit tests run offline: any internet socket (loopback included) fails the test. Unix sockets stay
    # allowed, since asyncio's event loop wakes itself through a socket pair.
    pytest_socket.disable_socket(allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()
