"""Shared timing helpers for the benchmark scripts (JSON figures on stdout)."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import jax


def best_time(fn, *args, repeats: int = 5, min_seconds: float = 0.2) -> float:
    """Best wall time (s) of one call of `fn(*args)` after a warm-up (compile) call.

    Each repeat runs the call enough times to last at least `min_seconds`.
    """
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            jax.block_until_ready(fn(*args))
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / n)
    return best


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu": platform.processor() or platform.machine(),
    }


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def run_peer(python: str, script: str, args: list[str], name: str) -> dict:
    """Run a peer library's side (`script`, Python source) with its own interpreter; this
    folder is on its path (so it shares `best_time`). Returns its last JSON line."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent))
    try:
        done = subprocess.run([python, f.name, *args], capture_output=True, text=True, env=env)
    finally:
        os.unlink(f.name)
    if done.returncode != 0:
        raise SystemExit(f"the {name} side failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
