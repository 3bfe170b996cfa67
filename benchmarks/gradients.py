"""Forward+gradient speed and memory of the two exact gradient methods.

Prints JSON lines and a final summary:
* forward+gradient samples/s of the 5-120-3 Yin-Yang-sized network (tau_mem = 2 tau_syn)
  at batch 64 and 256, EventProp and analytic;
* peak temporary memory of the compiled gradient (XLA's memory analysis, batch 64) as
  t_max grows at a fixed spike budget, and as the spike budget (events) grows.

Usage: python benchmarks/gradients.py [--float64] [--quick]
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _timing import best_time, emit, machine, peak_rss_mib
from event_core import yinyang_like_inputs, yinyang_network

import eventsnn as es


def make_grad(method, t_max, budgets, solver):
    @eqx.filter_jit
    def value_and_grad(net, inputs):
        def loss(n):
            res = es.simulate(
                n,
                inputs,
                t_max=t_max,
                max_spikes=budgets,
                method=method,
                solver=solver,
                check_overflow=False,
            )
            return jnp.mean(es.linear_spike_time_loss(res.output, jnp.array([1.0, -0.5, 0.25])))

        return jax.value_and_grad(loss)(net)

    return value_and_grad


def temp_mib(fn, *args) -> float:
    """Peak temporary buffer size of the compiled computation (MiB)."""
    compiled = jax.jit(fn).lower(*args).compile()
    analysis = compiled.memory_analysis()
    return analysis.temp_size_in_bytes / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--quick", action="store_true", help="batch 64 only, fewer sizes")
    args = parser.parse_args()
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.float64 else jnp.float32
    rng = np.random.default_rng(0)
    net = yinyang_network(rng, dtype)
    summary = {"benchmark": "gradients", "dtype": jnp.dtype(dtype).name, **machine()}
    budgets = (128, 16)
    solver = es.QuadraticSolver()

    for method in ("eventprop", "analytic"):
        fn = make_grad(method, 0.03, budgets, solver)
        for batch in (64,) if args.quick else (64, 256):
            inputs = yinyang_like_inputs(batch, rng)
            seconds = best_time(fn, net, inputs, repeats=3)
            rec = {
                "case": "yinyang_5_120_3_fwd_grad",
                "method": method,
                "batch": batch,
                "samples_per_s": batch / seconds,
            }
            emit(rec)
            summary[f"grad_{method}_b{batch}_samples_per_s"] = rec["samples_per_s"]

    # The same shape with single-spike (TTFS) layers: the parallel path training uses.
    ttfs = es.Network([es.Layer(lay.weights, lay.params, single_spike=True) for lay in net.layers])
    fn = make_grad("eventprop", 0.03, (120, 3), solver)
    for batch in (64,) if args.quick else (64, 256):
        inputs = yinyang_like_inputs(batch, rng)
        rate = batch / best_time(fn, ttfs, inputs, repeats=3)
        emit({"case": "yinyang_5_120_3_ttfs_fwd_grad", "batch": batch, "samples_per_s": rate})
        summary[f"grad_ttfs_b{batch}_samples_per_s"] = rate

    inputs = yinyang_like_inputs(64, rng)
    for method in ("eventprop", "analytic"):
        for t_max in (0.03, 0.3, 3.0):
            mib = temp_mib(make_grad(method, t_max, budgets, solver), net, inputs)
            emit(
                {
                    "case": "memory_vs_t_max",
                    "method": method,
                    "t_max_s": t_max,
                    "budgets": budgets,
                    "temp_mib": mib,
                }
            )
            summary[f"mem_{method}_tmax{t_max}_mib"] = mib
        for hidden_budget in (64, 256) if args.quick else (64, 256, 1024):
            b = (hidden_budget, 16)
            mib = temp_mib(make_grad(method, 0.03, b, solver), net, inputs)
            emit(
                {
                    "case": "memory_vs_events",
                    "method": method,
                    "hidden_budget": hidden_budget,
                    "temp_mib": mib,
                }
            )
            summary[f"mem_{method}_budget{hidden_budget}_mib"] = mib
    summary["peak_rss_mib"] = peak_rss_mib()
    emit(summary)


if __name__ == "__main__":
    main()
