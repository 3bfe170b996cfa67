"""Speed and memory of the discrete engine (forward Euler, surrogate gradients).

Prints JSON lines and a summary: samples/s forward and forward+gradient of the 5-120-3
network at dt = 0.5 ms over 30 ms (batch 64, 256), and the compiled gradient's peak
temporary memory as the number of steps grows (memory grows with steps: the price of
backpropagation through time, which the event engine's EventProp does not pay).

Usage: python benchmarks/discrete.py [--quick]
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _timing import best_time, emit, machine, peak_rss_mib
from event_core import yinyang_like_inputs

import eventsnn as es


def network(rng):
    kw = dict(tau_mem=0.01, tau_syn=0.005)
    return es.Network(
        [
            es.dense_layer(rng.normal(0.8, 1.2, (5, 120)), **kw),
            es.dense_layer(rng.normal(0.1, 0.2, (120, 3)), **kw),
        ]
    )


def make(dt, t_max, grad: bool):
    def scores(net, x):
        out = es.simulate_discrete(net, x, dt=dt, t_max=t_max, li_readout=True)
        return es.max_voltage(out.output_voltage)

    if not grad:
        return eqx.filter_jit(scores)

    @eqx.filter_jit
    def value_and_grad(net, x):
        labels = jnp.zeros(x.times.shape[0], jnp.int32)
        return jax.value_and_grad(lambda n: es.loss.voltage_cross_entropy(scores(n, x), labels))(
            net
        )

    return value_and_grad


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    net = network(rng)
    summary = {"benchmark": "discrete", "dtype": "float32", **machine()}
    for grad in (False, True):
        fn = make(0.5e-3, 0.03, grad)
        for batch in (64,) if args.quick else (64, 256):
            x = yinyang_like_inputs(batch, rng)
            rate = batch / best_time(fn, net, x, repeats=3)
            name = "fwd_grad" if grad else "fwd"
            emit(
                {
                    "case": f"discrete_5_120_3_{name}",
                    "dt_s": 0.5e-3,
                    "t_max_s": 0.03,
                    "batch": batch,
                    "samples_per_s": rate,
                }
            )
            summary[f"discrete_{name}_b{batch}_samples_per_s"] = rate
    x = yinyang_like_inputs(64, rng)
    for steps in (60, 600, 6000) if not args.quick else (60, 600):
        fn = make(0.03 / steps, 0.03, True)
        compiled = jax.jit(fn).lower(net, x).compile()
        mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
        emit({"case": "discrete_grad_memory", "steps": steps, "batch": 64, "temp_mib": mib})
        summary[f"discrete_grad_mem_{steps}_steps_mib"] = mib
    summary["peak_rss_mib"] = peak_rss_mib()
    emit(summary)


if __name__ == "__main__":
    main()
