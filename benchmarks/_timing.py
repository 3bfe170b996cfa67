"""Shared timing helpers for the benchmark scripts (JSON figures on stdout)."""

from __future__ import annotations

import json
import platform
import resource
import time

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
