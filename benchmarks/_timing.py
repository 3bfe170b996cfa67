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


def compile_seconds(jitted, *args) -> float:
    """Seconds to lower and compile a jitted function for these arguments."""
    start = time.perf_counter()
    jitted.lower(*args).compile()
    return time.perf_counter() - start


def throughputs(prefix: str, fwd, grad, params, batch_of, batches) -> dict:
    """Samples/s of ``fwd(params, x)`` and ``grad(params, x, y)`` at each batch size, where
    ``batch_of(b)`` gives that batch's ``(x, y)``. Keys ``{prefix}fwd_b{b}`` and
    ``{prefix}grad_b{b}``."""
    out = {}
    for b in batches:
        x, y = batch_of(b)
        out[f"{prefix}fwd_b{b}"] = b / best_time(fwd, params, x)
        out[f"{prefix}grad_b{b}"] = b / best_time(grad, params, x, y)
    return out


def epoch_seconds(loss, params, xs, ys, learning_rate: float = 1e-3) -> float:
    """Best time (s) of one training epoch: an Adam step on ``loss(params, xs[k], ys[k])``
    for every batch ``k``, all in one `lax.scan` inside one jit, data on the device."""
    import optax

    opt = optax.adam(learning_rate)

    @jax.jit
    def epoch(params, state):
        def step(carry, batch):
            p, s = carry
            updates, s = opt.update(jax.grad(loss)(p, *batch), s, p)
            return (optax.apply_updates(p, updates), s), None

        return jax.lax.scan(step, (params, state), (xs, ys))[0]

    return best_time(epoch, params, opt.init(params), repeats=3, min_seconds=0.0)
