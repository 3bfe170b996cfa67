"""Simulate a random 5-120-3 network on Yin-Yang-encoded points and print its spikes.

python -m tasks.simulate_example [--samples N] [--seed S] [--float64]
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3, help="input points (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and points")
    parser.add_argument("--float64", action="store_true", help="simulate in float64")
    args = parser.parse_args(argv)
    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    import eventsnn as es

    rng = np.random.default_rng(args.seed)
    xy = rng.uniform(0, 1, (args.samples, 2))
    times = np.concatenate(
        [0.02 * np.concatenate([xy, 1 - xy], 1), np.zeros((args.samples, 1))], 1
    )
    inputs = es.Spikes(times, np.tile(np.arange(5), (args.samples, 1)))
    kw = dict(tau_mem=0.01, tau_syn=0.005, v_th=1.0, t_refrac=0.001)
    net = es.Network(
        [
            es.dense_layer(rng.normal(0.8, 1.2, (5, 120)), **kw),
            es.dense_layer(rng.normal(0.1, 0.2, (120, 3)), **kw),
        ]
    )
    result = es.simulate(net, inputs, t_max=0.03, max_spikes=(256, 32))
    for s in range(args.samples):
        print(f"sample {s}: x={xy[s, 0]:.3f} y={xy[s, 1]:.3f}")
        for k, (record, count) in enumerate(zip(result.layers, np.asarray(result.counts[s]))):
            t = np.asarray(record.times[s])[:count] * 1e3
            i = np.asarray(record.indices[s])[:count]
            shown = ", ".join(f"{ti:.3f}ms#{ii}" for ti, ii in zip(t[:8], i[:8]))
            more = f" ... ({count} spikes)" if count > 8 else ""
            print(f"  layer {k}: {shown}{more}")


if __name__ == "__main__":
    main()
