"""The sandbox: code runs against asserts in a subprocess that hostile code cannot break out of or fool.

Each hostile case tries its attack first, then defines the function the tests call. A refused attack
raises, so the function is never defined and the score is 0; an attack that went through would leave the
function defined and the tests passing. Where the attack aims at the host, the host is checked as well.
No test asserts on wall-clock time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from moai.scorer import sandbox
from moai.scorer.sandbox import SandboxLimits, network_isolated, run_asserts

TESTS = ["assert f(1) == 2", "assert f(2) == 3"]
DEFINE = "\ndef f(x):\n    return x + 1\n"
# Tight limits, so that a runaway case ends soon; legitimate code needs far less.
TIGHT = SandboxLimits(wall_s=3.0, cpu_s=2, memory_mb=256)


def passed(code: str, tests: list[str] = TESTS, limits: SandboxLimits = TIGHT) -> int | None:
    return asyncio.run(run_asserts(code, tests, limits))


def test_code_that_works_passes_and_code_that_does_not_fails() -> None:
    assert passed(DEFINE) == 2
    assert passed("def f(x):\n    return x") == 0
    assert passed("def f(x):\n    return 2") == 1
    assert passed("def f(x):\n    return x +") == 0  # does not compile


def test_the_standard_modules_an_answer_uses_are_there() -> None:
    code = (
        "import heapq, math, re, itertools, functools, bisect, string\n"
        "from collections import Counter, namedtuple, deque\n"
        "Point = namedtuple('Point', 'x y')\n"
        "def f(x):\n"
        "    return Point(x, 0).x + len(re.findall('a', 'a')) + int(math.sqrt(0)) + heapq.nsmallest(1, [0])[0]\n"
    )
    assert passed(code) == 2


def test_printing_and_reading_stdin_do_not_disturb_the_verdict() -> None:
    assert passed("print('x' * 1_000_000)\nimport sys\nprint(sys.stdin.read(), file=sys.stderr)" + DEFINE) == 2


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param("while True:\n    pass", id="infinite-loop"),
        pytest.param("import time\ntime.sleep(3600)", id="sleep"),
        pytest.param("x = bytearray(1 << 40)", id="huge-allocation"),
        pytest.param("x = []\nwhile True:\n    x.append(' ' * 10**6)", id="growing-allocation"),
        pytest.param("import os\nwhile True:\n    os.fork()", id="fork-bomb"),
        pytest.param("import os\nos.system('echo hi')", id="os-system"),
        pytest.param("import os\nos.execv('/bin/sh', ['sh'])", id="exec"),
        pytest.param("import os\nos.posix_spawn('/bin/sh', ['sh'], {})", id="posix-spawn"),
        pytest.param("import subprocess\nsubprocess.run(['true'])", id="subprocess"),
        pytest.param("import socket\nsocket.create_connection(('127.0.0.1', 80), 1)", id="socket"),
        pytest.param("import _socket\n_socket.socket()", id="raw-socket"),
        pytest.param("import urllib.request\nurllib.request.urlopen('http://127.0.0.1')", id="urllib"),
        pytest.param("import ctypes\nctypes.CDLL(None).system(b'true')", id="ctypes"),
        pytest.param("open('/etc/passwd').read()", id="read-outside"),
        pytest.param("import os\nos.kill(os.getppid(), 9)", id="kill-parent"),
        pytest.param("import signal", id="signal"),
        pytest.param("import sys\nsys._getframe(0).f_back.f_locals", id="frame"),
        pytest.param("try:\n    1 / 0\nexcept Exception as e:\n    e.__traceback__.tb_frame", id="traceback-frame"),
        pytest.param("import sys\nsys.settrace(lambda *a: None)", id="settrace"),
        pytest.param("import gc\ngc.get_objects()", id="gc"),
        pytest.param("import marshal\nmarshal.loads(marshal.dumps(compile('1', '', 'eval')))", id="marshal"),
        pytest.param("(lambda: 0).__code__.replace(co_code=b'')", id="crafted-bytecode"),
        pytest.param("import os\nos.chdir('/')", id="chdir"),
    ],
)
def test_a_hostile_answer_is_contained_and_scores_0(attack: str) -> None:
    assert passed(attack + DEFINE) == 0


def test_writes_and_deletions_of_files_are_refused(tmp_path: Path) -> None:
    kept = tmp_path / "kept.txt"
    kept.write_text("mine")
    target = tmp_path / "written.txt"
    attacks = [
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nos.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)",
        f"import os\nos.remove({str(kept)!r})",
        f"import os\nos.rename({str(kept)!r}, {str(target)!r})",
        f"import os\nos.truncate({str(kept)!r}, 0)",
        f"import os\nos.system('touch {target}')",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"import os\nos.mkfifo({str(target)!r})",
        "open('here.txt', 'w').write('x')",  # in its own working folder as well
    ]
    for attack in attacks:
        assert passed(attack + DEFINE) == 0, attack
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]
    assert kept.read_text() == "mine"


def test_the_verdict_cannot_be_forged_by_output_or_by_exiting_early() -> None:
    forged = "import os, sys\nfor i in range(3):\n    print(f'ready {i}')\n    os.write(1, b'x 0\\n')\nos._exit(0)"
    assert passed(forged) == 0
    assert passed("import sys\nsys.exit(0)") == 0
    # rebinding the builtins the harness uses changes nothing
    rebound = "import builtins, os\nbuiltins.enumerate = lambda xs: [(0, xs[0]), (1, xs[0])]\nos.write = None"
    assert passed(rebound + "\ndef f(x):\n    return 2") == 1


def test_a_test_that_hangs_keeps_the_tests_that_passed_before_it() -> None:
    assert passed(DEFINE + "def g():\n    while True:\n        pass\n", ["assert f(1) == 2", "assert g()"]) == 1


def test_the_network_is_isolated_where_unshare_works() -> None:
    # Either way the audit hook refuses sockets (above). Here the namespace itself is looked into, without
    # the hook: a process started as sandboxes are sees only a loopback interface.
    if not asyncio.run(network_isolated()):
        pytest.skip("unshare cannot make a network namespace here; the audit hook alone refuses sockets")
    look = "import socket; print(sorted(name for _, name in socket.if_nameindex()))"
    host = subprocess.run([sys.executable, "-I", "-S", "-c", look], capture_output=True, text=True)
    if host.stdout.strip() == "['lo']":
        pytest.skip("this host has no interface but loopback: nothing to hide")
    mode = sandbox._MODES["mode"]
    seen = subprocess.run(mode.command(sys.executable, "-I", "-S", "-c", look), capture_output=True, text=True)
    assert seen.stdout.strip() == "['lo']"


def test_the_file_systems_are_read_only_where_a_mount_namespace_can_be_made(tmp_path: Path) -> None:
    # Beneath the hook: a process started as sandboxes are, without the harness, cannot write a file.
    asyncio.run(network_isolated())  # probes the way sandboxes start here
    mode = sandbox._MODES["mode"]
    if mode.remount is None:
        pytest.skip("no mount namespace here; the audit hook alone refuses writes")
    target = tmp_path / "written.txt"
    write = f"open({str(target)!r}, 'w').write('x')"
    done = subprocess.run(mode.command(sys.executable, "-I", "-S", "-c", write), cwd=tmp_path, capture_output=True)
    assert done.returncode != 0 and b"Read-only file system" in done.stderr
    assert not target.exists()


def test_no_more_sandboxes_run_at_once_than_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    running = peak = 0

    async def fake_run(code: str, tests: list[str], limits: SandboxLimits, mode: Any) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return len(tests)

    monkeypatch.setattr(sandbox, "_run", fake_run)
    limits = SandboxLimits(concurrent=2)

    async def many() -> list[int | None]:
        return await asyncio.gather(*(run_asserts("pass", TESTS, limits) for _ in range(7)))

    assert asyncio.run(many()) == [2] * 7
    assert peak == 2


def test_the_event_loop_keeps_running_while_a_sandbox_runs() -> None:
    ticks = 0

    async def both() -> int | None:
        nonlocal ticks
        task = asyncio.create_task(run_asserts("import time\ntime.sleep(0.5)" + DEFINE, TESTS, TIGHT))
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return await task

    assert asyncio.run(both()) == 2
    assert ticks > 1


def test_no_sandbox_here_means_no_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.sys, "executable", os.devnull)
    monkeypatch.setitem(sandbox._MODES, "mode", sandbox._Mode(None, None, False))
    assert passed(DEFINE) is None
