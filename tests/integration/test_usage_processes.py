"""Several processes recording into one SQLite usage database at once lose no row (WAL + busy timeout)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from moai.usage import UsageStore

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, json
from fakes import fake_bundled
from moai import build_mix

graph = build_mix(fake_bundled("moa", {{}}), usage_db={db!r}).compile()
async def main():
    return await asyncio.gather(*(graph.ainvoke({{"query": f"q{{i}}"}}) for i in range(20)))
print(json.dumps(sum(len(r["calls"]) for r in asyncio.run(main()))))
"""


def test_concurrent_processes_lose_no_record(tmp_path: Path) -> None:
    db = str(tmp_path / "usage.db")
    script = WORKER.format(db=db)
    # No MOAI_USAGE_DB: the path given is used. PYTHONPATH: the tests' fakes, as pytest's `pythonpath` has it.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT / "tests")}
    workers = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, cwd=ROOT) for _ in range(4)
    ]
    calls = [json.loads(worker.communicate(timeout=300)[0]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    store = UsageStore(db)
    assert len(store.runs()) == 80 and all(run["status"] == "ok" for run in store.runs())
    assert len(store.calls()) == sum(calls)
    store.close()
