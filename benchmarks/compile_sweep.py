"""A training sweep in one process that compiles a new shape every few steps.

Every compiled XLA CPU executable keeps its machine code in a few memory mappings of its
own (text, read-only data, data: about 3 per LLVM module, 15 for a tiny function, thousands
for an op-by-op run of the event engine) for as long as JAX's caches hold it. Linux caps a
process's mappings at ``vm.max_map_count`` (65,530 by default); at the cap LLVM cannot map
the next executable ("LLVM compilation error: Cannot allocate memory") and the process dies
with a segfault or abort inside ``backend_compile_and_load``. A sweep that compiles new
shapes for long enough meets it; so did the test suite in one pytest process.

This script trains a small network and changes its hidden size every ``--every`` steps
(a new shape: a new compile), printing one JSON line per shape with the process's mapping
count. ``--clear`` calls `jax.clear_caches()` at each shape change, which drops every compiled
executable (a jitted function compiles again on its next call):
the count then stays flat instead of growing without bound.

``--reserve N`` takes all but N mapping slots first (pages of one anonymous mapping with
alternating protections, each its own mapping), standing in for a process that has already
compiled for hours, so the cap is met in seconds rather than after thousands of compiles:

    .venv/bin/python benchmarks/compile_sweep.py --reserve 3000            # dies (rc 139/134)
    .venv/bin/python benchmarks/compile_sweep.py --reserve 3000 --clear    # completes
    .venv/bin/python benchmarks/compile_sweep.py --steps 2000 --every 100 --clear

``--eager`` runs the loss op by op instead of under jit (as most tests do): every primitive
of every new shape is its own executable, many more mappings per shape.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import eventsnn as es


def mappings() -> int:
    """The number of memory mappings of this process (Linux: lines of /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def max_map_count() -> int:
    with open("/proc/sys/vm/max_map_count") as f:
        return int(f.read())


def reserve_all_but(free: int):
    """Take mapping slots until only `free` are left: one anonymous mapping whose every
    other page is made read-only splits into one mapping per page. Returns the mapping
    (kept alive by the caller)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    n = max(max_map_count() - free - mappings(), 0)
    page = mmap.PAGESIZE
    prot_rw, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    base = libc.mmap(None, (n + 1) * page, prot_rw, flags, -1, 0)
    for k in range(0, n, 2):
        libc.mprotect(base + k * page, page, mmap.PROT_READ)
    return base


def network(hidden: int, seed: int) -> es.Network:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(4.0, 1.0, (4, hidden))
    w2 = rng.normal(3.0, 1.0, (hidden, 3))
    kw = dict(tau_mem=10e-3, tau_syn=5e-3, single_spike=True)
    layers = [es.dense_layer(jnp.asarray(w1), **kw), es.dense_layer(jnp.asarray(w2), **kw)]
    return es.Network(layers)


def loss(net: es.Network, inputs: es.Spikes, target):
    out = es.simulate(net, inputs, t_max=0.05, max_spikes=1, check_overflow=False).output
    first = out.first_times(3)
    return jnp.mean((jnp.where(jnp.isfinite(first), first, 0.05) - target) ** 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--every", type=int, default=100, help="steps per shape (new hidden size)")
    p.add_argument("--clear", action="store_true", help="release compiled code per shape")
    p.add_argument("--eager", action="store_true", help="run the loss op by op (no jit)")
    p.add_argument("--reserve", type=int, help="leave only this many mapping slots free")
    args = p.parse_args(argv)

    keep = reserve_all_but(args.reserve) if args.reserve is not None else None
    rng = np.random.default_rng(0)
    times = jnp.asarray(rng.uniform(0, 0.01, (16, 4)))
    inputs = es.Spikes(times, jnp.tile(jnp.arange(4), (16, 1)))  # 16 samples, 4 channels
    target = jnp.asarray(rng.uniform(0.01, 0.03, (16, 3)))

    def train_step(net, inputs, target):  # plain gradient descent on the weights
        value, grads = jax.value_and_grad(loss)(net, inputs, target)
        new = [layer.weights - 1e-4 * g.weights for layer, g in zip(net.layers, grads.layers)]
        return value, eqx.tree_at(lambda n: [layer.weights for layer in n.layers], net, new)

    step_fn = train_step if args.eager else jax.jit(train_step)
    start = time.perf_counter()
    print(json.dumps({"max_map_count": max_map_count(), "mappings": mappings(),
                      "reserved": keep is not None}), flush=True)
    net = None
    for step in range(args.steps):
        if step % args.every == 0:
            if args.clear:
                jax.clear_caches()
            net = network(hidden=8 + step // args.every, seed=step)
        value, net = step_fn(net, inputs, target)
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            print(json.dumps({"step": step + 1, "hidden": 8 + step // args.every,
                              "loss": float(value), "mappings": mappings(),
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    print(json.dumps({"done": True, "steps": args.steps, "mappings": mappings()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
