"""Forward simulation speed of the event core.

Prints one JSON line per measurement and a final summary line:
* samples/s for a 5-120-3 Yin-Yang-sized network (tau_mem = 2 tau_syn), batch 1, 64, 256,
  for the general Newton solver and the tau ratio 2 closed form;
* events/s for one 1,000-neuron recurrent layer (10% connectivity, balanced E/I, tonic drive).

Usage: python benchmarks/event_core.py [--float64] [--quick]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import best_time, emit, machine, peak_rss_mib

import eventsnn as es


def yinyang_like_inputs(batch: int, rng, t_early=0.0, t_late=0.02, t_bias=0.0):
    """Yin-Yang encoding: x, y, 1-x, 1-y mapped to [t_early, t_late] plus a bias spike."""
    xy = rng.uniform(0, 1, (batch, 2))
    values = np.concatenate([xy, 1 - xy], axis=1)
    times = t_early + (t_late - t_early) * values
    times = np.concatenate([times, np.full((batch, 1), t_bias)], axis=1)
    return es.Spikes(times, np.tile(np.arange(5), (batch, 1)))


def yinyang_network(rng, dtype, hidden=120, tau_mem=0.01, tau_syn=0.005):
    w1 = rng.normal(0.8, 1.2, (5, hidden))
    w2 = rng.normal(0.1, 0.2, (hidden, 3))
    kw = dict(tau_mem=tau_mem, tau_syn=tau_syn, v_th=1.0, dtype=dtype)
    return es.Network([es.dense_layer(w1, **kw), es.dense_layer(w2, **kw)])


def recurrent_network(n, rng, dtype, p=0.1):
    n_exc = int(0.8 * n)
    mask = rng.uniform(size=(n, n)) < p
    np.fill_diagonal(mask, False)
    w = np.where(mask, 0.2, 0.0)
    w[n_exc:] *= -4.0  # inhibitory rows
    w *= 10 / (p * n)  # keep the input per neuron comparable across n
    return es.Network(
        [
            es.dense_layer(
                np.zeros((1, n)),
                recurrent_weights=w,
                tau_mem=0.02,
                tau_syn=0.005,
                v_th=1.0,
                v_reset=0.0,
                t_refrac=0.002,
                v_leak=rng.uniform(1.05, 1.5, n),
                dtype=dtype,
            )
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float64", action="store_true", help="simulate in float64")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.float64 else jnp.float32
    rng = np.random.default_rng(0)
    summary = {"benchmark": "event_core", "dtype": jnp.dtype(dtype).name, **machine()}

    net = yinyang_network(rng, dtype)
    for name, solver in (("newton", es.NewtonSolver()), ("quadratic", es.QuadraticSolver())):
        for batch in (1, 64) if args.quick else (1, 64, 256):
            inputs = yinyang_like_inputs(batch, rng)

            def run(x, solver=solver):
                return es.simulate(net, x, t_max=0.03, max_spikes=(128, 16), solver=solver)

            res = run(inputs)
            seconds = best_time(run, inputs, repeats=3 if args.quick else 5)
            rec = {
                "case": "yinyang_5_120_3_forward",
                "solver": name,
                "batch": batch,
                "samples_per_s": batch / seconds,
                "hidden_spikes_per_sample": float(np.mean(res.counts[..., 0])),
                "output_spikes_per_sample": float(np.mean(res.counts[..., 1])),
            }
            emit(rec)
            summary[f"yinyang_fwd_{name}_b{batch}_samples_per_s"] = rec["samples_per_s"]

    n = 200 if args.quick else 1000
    t_max = 0.1
    net = recurrent_network(n, rng, dtype)
    inputs = es.Spikes(jnp.full((1,), jnp.inf), jnp.full((1,), -1))

    def run_rec(x):
        return es.simulate(net, x, t_max=t_max, max_spikes=20 * n)

    res = run_rec(inputs)
    seconds = best_time(run_rec, inputs, repeats=2, min_seconds=0.0)
    spikes = int(res.counts[0])
    rec = {
        "case": "recurrent_layer",
        "neurons": n,
        "t_max_s": t_max,
        "spikes": spikes,
        "mean_rate_hz": spikes / n / t_max,
        "seconds": seconds,
        "events_per_s": spikes / seconds,
    }
    emit(rec)
    summary[f"recurrent_{n}_events_per_s"] = rec["events_per_s"]
    summary["peak_rss_mib"] = peak_rss_mib()
    emit(summary)


if __name__ == "__main__":
    main()
