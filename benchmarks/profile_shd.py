"""Where the exact gradient's time goes on the SHD-shaped workload, phase by phase.

The network, weights and inputs of `compare_spyx_shd.py` (700 -> 256 recurrent CuBa-LIF ->
20 leaky integrators, 1 s, synthetic Poisson inputs), its exact side (windowed engine,
EventProp). Compiles the forward pass and the gradient, times each once, then runs each
under `jax.profiler` and adds up every compiled operation's own time by the phase whose
`jax.named_scope` it was traced in:

- forward: ``arrivals`` (a window's input and recurrent arrivals gathered), ``superpose``
  (every neuron's end state and spike bound in closed form), ``lanes`` (the candidates'
  exact event sequences), ``commit`` (spikes recorded, window cut or accepted),
  ``readout`` (the readout's maximum);
- backward: ``quiet`` (neurons without spikes in a window: closed form from its end),
  ``active`` (neurons with spikes: their own events in reverse, the arrivals' terms).

Prints one JSON line: wall seconds of forward and gradient, per-phase milliseconds and
shares (the CPU runtime's threads can overlap, so phases may add up to more than the wall).

    .venv/bin/python benchmarks/profile_shd.py [--batch 8] [--t-sim 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1] / "src"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _profile import phase_times  # noqa: E402
from compare_spyx_shd import RATE_HZ, exact_functions, exact_weight_scale, inputs, weights  # noqa: E402

PHASES = ("arrivals", "superpose", "lanes", "commit", "readout", "quiet", "active")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--t-sim", type=float, default=1.0)
    args = p.parse_args()
    w = weights(0)
    params = tuple(
        jnp.asarray(w[k] * np.float32(exact_weight_scale())) for k in ("w_in", "w_rec", "w_out")
    )
    data = inputs(0, args.batch, args.t_sim, RATE_HZ)
    times, channels = jnp.asarray(data["times"]), jnp.asarray(data["channels"])
    labels = jnp.asarray(data["labels"])
    forward, loss, _ = exact_functions(args.t_sim)
    fwd = jax.jit(lambda p_, t, c: forward(p_, t, c)[0])
    grad = jax.jit(jax.grad(loss))
    out = {"benchmark": "profile_shd", "batch": args.batch, "t_sim_s": args.t_sim}
    for name, f, a in (("forward", fwd, (params, times, channels)),
                       ("gradient", grad, (params, times, channels, labels))):  # fmt: skip
        jax.block_until_ready(f(*a))  # compile
        start = time.perf_counter()
        jax.block_until_ready(f(*a))
        out[f"{name}_s"] = time.perf_counter() - start
        per = phase_times(f, a, PHASES)
        total = sum(per.values())
        out[f"{name}_phase_ms"] = {k: round(v / 1e3, 1) for k, v in per.most_common()}
        out[f"{name}_phase_share"] = {k: round(v / total, 3) for k, v in per.most_common()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
