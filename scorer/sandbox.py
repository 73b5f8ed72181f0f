"""Run an answer's code against asserts in a sandboxed subprocess, without blocking the event loop.

What holds, layer by layer:

- **A separate process**, `python -I -S -B` (isolated: no environment variables, no user site, no
  site-packages, no bytecode written), with an empty environment, in a fresh temporary directory that is
  removed afterwards, in its own session, so the wall timeout kills its whole process group. At most
  `SandboxLimits.concurrent` run at once per event loop; the loop awaits them (asyncio subprocesses).
- **Resource limits** set by the harness before the code runs, as hard limits: CPU seconds, address
  space, file size 0, open files, processes (the kernel exempts root from RLIMIT_NPROC, in a user
  namespace too: as root, forks are stopped by the hook alone).
- **An audit hook** (PEP 578), installed before the code runs and impossible to remove, which refuses
  every event not known to be safe: sockets, subprocesses, `os.system`, the exec/spawn/fork family,
  signals to other processes, `ctypes`, writes, deletions and renames of files, reads outside the
  standard library, crafted bytecode (`code.__new__`, `marshal.loads`), and every way to reach an
  interpreter frame (where the harness keeps its secret, below).
- **Its own user, network and mount namespaces** where `unshare` can make them (the strongest way that
  works is probed once per process, by running the harness on a known case): the child sees only a
  loopback interface, which is down, and every file system remounted read-only, whatever the hook lets
  through; failing a mount namespace, the user and network ones alone.
- **Another user**: started as root, the child drops to `nobody`, without supplementary groups, where
  `nobody` can run this Python (not when it lies under a private home such as /root).
- **An unforgeable verdict**: the harness reports each passed assert on a private pipe as a line tagged
  with a random nonce that only its own frame holds; the code's stdout and stderr go to /dev/null, so
  printing, exiting early or crashing cannot claim a pass. Output read back is capped.

A judge, not a security boundary for arbitrary programs: CPython's audit hooks are not meant as one
(a memory-safety bug of the interpreter would get past them), and an answer can still make an assert
pass by cheating it (an object that equals everything), as it can in any test-based grading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SandboxLimits", "network_isolated", "run_asserts"]


@dataclass(frozen=True, kw_only=True)
class SandboxLimits:
    """The limits of one sandboxed run.

    Attributes:
        wall_s: Seconds before the whole process group is killed.
        cpu_s: CPU seconds (RLIMIT_CPU).
        memory_mb: Address space in MiB (RLIMIT_AS).
        open_files: Open file descriptors (RLIMIT_NOFILE).
        processes: Processes of the sandbox's user (RLIMIT_NPROC; the kernel exempts root).
        output_bytes: Bytes of the result pipe read back; the run is killed past them.
        concurrent: Sandboxes running at once in one event loop (with these limits); more wait their turn.
    """

    wall_s: float = 5.0
    cpu_s: int = 3
    memory_mb: int = 512
    open_files: int = 64
    processes: int = 64
    output_bytes: int = 64 * 1024
    concurrent: int = 2


DEFAULT_LIMITS = SandboxLimits()
_NOBODY = 65534

# The harness runs in the child. It reads the payload, sets the limits, moves the code's stdout and stderr
# to /dev/null, installs the audit hook, and only then executes the code. Its secrets (the nonce, the
# result pipe's writer) are locals of `main`, bound before the code runs, so that rebinding a builtin or
# os.write cannot intercept them, and every route to a frame is refused.
_HARNESS = r"""
import json, os, posix, resource, sys

def main():
    payload = json.loads(sys.stdin.buffer.read())
    nonce = payload["nonce"].encode()
    code, tests = payload["code"], payload["tests"]
    for name in payload["preload"]:
        try:
            __import__(name)
        except ImportError:
            pass
    out = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    for name, value in payload["limits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    # A signal handler is handed the interrupted frame: the code gets no signal module to set one with.
    sys.modules.pop("_signal", None)
    for module in (os, posix):
        for name in payload["strip"]:
            if hasattr(module, name):
                delattr(module, name)
    roots = tuple({root for p in sys.path if p for root in (p + os.sep, os.path.realpath(p) + os.sep)})
    write, _compile, _exec, _enumerate, bad = os.write, compile, exec, enumerate, BaseException
    refused, frame_refused = PermissionError, ValueError
    allowed = frozenset(payload["events"])
    refused_modules = frozenset(payload["modules"])
    frame_attributes = frozenset(payload["frame_attributes"])
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    str_, int_, type_ = str, int, type

    def hook(event, args):
        if event == "import":
            if type_(args[0]) is not str_ or args[0].partition(".")[0] in refused_modules:
                raise refused("sandbox: import refused")
            return
        if event == "open":
            path, mode, flags = args
            if type_(mode) is str_:
                for letter in "wax+":
                    if letter in mode:
                        raise refused("sandbox: write refused")
            if type_(flags) is int_ and flags & writing:
                raise refused("sandbox: write refused")
            if type_(path) is not str_ or "/.." in path or not path.startswith(roots):
                raise refused("sandbox: read refused")
            return
        if event == "object.__getattr__":
            if args[1] in frame_attributes:
                raise frame_refused("sandbox: frames refused")
            return
        if event in ("sys._getframe", "sys._getframemodulename"):
            raise frame_refused("sandbox: frames refused")  # ValueError: namedtuple and enum fall back on it
        if event not in allowed:
            raise refused("sandbox: " + event + " refused")

    compiled = [_compile(test, "<test>", "exec") for test in tests]
    namespace = {"__name__": "__answer__", "__builtins__": __builtins__}
    sys.addaudithook(hook)
    write(out, b"%s ready\n" % nonce)
    try:
        _exec(_compile(code, "<answer>", "exec"), namespace)
    except bad:
        os._exit(0)
    for index, test in _enumerate(compiled):
        try:
            _exec(test, namespace)
        except bad:
            continue
        write(out, b"%s %d\n" % (nonce, index))
    os._exit(0)

main()
"""

# Audit events (PEP 578) the code may raise; 'import', 'open', 'object.__getattr__' and the frame events are
# checked by the hook itself, every other event is refused: among them socket.*, subprocess.Popen,
# os.system, os.exec, os.posix_spawn, os.spawn, os.fork, os.kill, ctypes.*, os.remove/rename/mkdir/chmod/
# chdir/truncate, shutil.*, sys._current_frames, sys.settrace, sys.setprofile, gc.get_objects/referrers,
# code.__new__ and marshal.loads (crafted bytecode can corrupt memory, and so escape any hook; the modules
# an answer usually imports are loaded before the hook, and a .pyc of any other is refused).
_ALLOWED_EVENTS = (
    "compile",
    "exec",
    "builtins.id",
    "builtins.input",
    "array.__new__",
    "object.__setattr__",
    "object.__delattr__",
    "time.sleep",
    "sys.addaudithook",
    "sys.excepthook",
    "sys.unraisablehook",
    "os.listdir",
    "os.scandir",
)
_FRAME_ATTRIBUTES = ("tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back")
_REFUSED_MODULES = (
    "ctypes",
    "_ctypes",
    "socket",
    "_socket",
    "ssl",
    "_ssl",
    "subprocess",
    "_posixsubprocess",
    "multiprocessing",
    "_multiprocessing",
    "mmap",
    "pty",
    "fcntl",
    "signal",
    "_signal",
    "faulthandler",
)
_STRIPPED = ("mkfifo", "mknod", "chroot", "setns", "unshare", "memfd_create", "eventfd", "pidfd_open", "setsid")
"""Functions of `os` (and `posix`) that raise no audit event and have no use in an answer: removed."""
_PRELOAD = (
    "array",
    "bisect",
    "calendar",
    "cmath",
    "collections",
    "collections.abc",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "heapq",
    "itertools",
    "math",
    "numbers",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "threading",
    "typing",
    "unicodedata",
)
"""Standard modules loaded before the hook, so an answer imports them without reading bytecode."""


@dataclass(frozen=True)
class _Mode:
    """How sandboxes start here: which namespaces they get, and as which user.

    Attributes:
        unshare: The `unshare` program, for new user and network namespaces; None: none.
        remount: The `mount` program, to remount every file system read-only in a new mount namespace
            (with `unshare`); None: the file systems stay as they are.
        nobody: Drop to `nobody` (only started as root).
    """

    unshare: str | None
    remount: str | None
    nobody: bool

    def command(self, *argv: str) -> list[str]:
        if self.unshare is None:
            return list(argv)
        if self.remount is None:
            return [self.unshare, "--user", "--net", "--", *argv]
        # Every mount point read-only (a failure leaves one as it was: the probe checks the working folder).
        script = (
            f'while read -r _ target _; do {shlex.quote(self.remount)} -o remount,bind,ro "$target" 2>/dev/null; '
            'done < /proc/self/mounts; if (: > ./.writable) 2>/dev/null; then exit 97; fi; exec "$@"'
        )
        shell = shutil.which("sh") or "/bin/sh"
        return [self.unshare, "--user", "--map-root-user", "--net", "--mount", "--", shell, "-c", script, "sh", *argv]

    def user(self) -> dict[str, Any]:
        return {"user": _NOBODY, "group": _NOBODY, "extra_groups": []} if self.nobody else {}


_MODES: dict[str, _Mode] = {}
_SEMAPHORES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)
_PROBE = ("def f():\n    return 1\n", ["assert f() == 1", "assert f() == 2"])
"""A run whose answer is known (one pass of two): a way of starting that gives it works here."""


async def _mode() -> _Mode:
    """Return the strongest way of starting a sandbox that works here; probed once per process.

    Tried in turn, strongest first: new user, network and mount namespaces with every file system
    read-only; new user and network namespaces; neither. Each as `nobody` first when started as root
    (which works only if `nobody` can run this Python: not when it lies under a private home). A way
    works when the harness, started so, reports the probe's known result.
    """
    if "mode" not in _MODES:
        unshare = shutil.which("unshare") if sys.platform == "linux" else None
        mount = shutil.which("mount") if unshare else None
        root = hasattr(os, "geteuid") and os.geteuid() == 0
        namespaces = [(unshare, mount), (unshare, None), (None, None)]
        candidates = [_Mode(u, m, n) for u, m in namespaces for n in ((True, False) if root else (False,))]
        chosen = _Mode(None, None, False)
        for mode in dict.fromkeys(c for c in candidates if c.unshare or not c.remount):
            with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
                if await _run(*_PROBE, DEFAULT_LIMITS, mode) == 1:
                    chosen = mode
                    break
        _MODES["mode"] = chosen
    return _MODES["mode"]


async def network_isolated() -> bool:
    """Return whether sandboxes here get their own network namespace, with no interface up (`unshare`)."""
    return (await _mode()).unshare is not None


def _semaphore(concurrent: int) -> asyncio.Semaphore:
    # One per event loop (an asyncio.Semaphore belongs to the loop that first waits on it) and per bound.
    per_loop = _SEMAPHORES.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(concurrent, asyncio.Semaphore(max(1, concurrent)))


async def run_asserts(code: str, tests: Sequence[str], limits: SandboxLimits | None = None) -> int | None:
    """Return how many of the asserts pass after the code is run, in the sandbox (see the module docstring).

    A run that fails in any way once started (code that does not run, a limit hit, the timeout, a crash)
    counts the asserts that passed before it.

    Args:
        code: The answer's code.
        tests: Assert statements, each run on its own after the code, in the code's namespace.
        limits: The limits; None: `DEFAULT_LIMITS`.

    Returns:
        The number of asserts that passed; None when no sandbox could be started here.
    """
    limits = limits or DEFAULT_LIMITS
    if not tests:
        return 0
    async with _semaphore(limits.concurrent):
        return await _run(code, list(tests), limits, await _mode())


async def _run(code: str, tests: list[str], limits: SandboxLimits, mode: _Mode) -> int | None:
    nonce = secrets.token_hex(16)
    payload = {
        "nonce": nonce,
        "code": code,
        "tests": tests,
        "limits": {
            "RLIMIT_CPU": limits.cpu_s,
            "RLIMIT_AS": limits.memory_mb * 1024 * 1024,
            "RLIMIT_FSIZE": 0,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_NPROC": limits.processes,
        },
        "events": _ALLOWED_EVENTS,
        "modules": _REFUSED_MODULES,
        "frame_attributes": _FRAME_ATTRIBUTES,
        "strip": _STRIPPED,
        "preload": _PRELOAD,
    }
    output = bytearray()
    try:
        with tempfile.TemporaryDirectory(prefix="moai-sandbox-") as folder:
            if mode.nobody:
                os.chown(folder, _NOBODY, _NOBODY)
            process = await asyncio.create_subprocess_exec(
                *mode.command(sys.executable, "-I", "-S", "-B", "-c", _HARNESS),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env={},
                cwd=folder,
                start_new_session=True,
                **mode.user(),
            )
            try:
                await asyncio.wait_for(_exchange(process, json.dumps(payload).encode(), limits, output), limits.wall_s)
            except TimeoutError:
                pass  # what it reported before counts
            finally:
                _kill(process)
                with contextlib.suppress(ProcessLookupError):
                    await process.wait()
    except (OSError, subprocess.SubprocessError):
        return None
    tag = nonce.encode() + b" "
    said = {bytes(line[len(tag) :]) for line in output.splitlines() if line.startswith(tag)}
    if b"ready" not in said:
        return None
    return sum(1 for index in said if index.isdigit() and int(index) < len(tests))


async def _exchange(
    process: asyncio.subprocess.Process, payload: bytes, limits: SandboxLimits, output: bytearray
) -> None:
    """Send the payload, then read the result pipe into `output` until it closes or the cap is reached."""
    assert process.stdin is not None and process.stdout is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        process.stdin.write(payload)
        await process.stdin.drain()
    process.stdin.close()
    while len(output) < limits.output_bytes:
        chunk = await process.stdout.read(limits.output_bytes - len(output))
        if not chunk:
            break
        output += chunk


def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the child's whole process group (its session), whatever it left running."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
