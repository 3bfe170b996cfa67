"""`python -m eventsnn simulate|grad NET.json`: the commands of network-spec.md.

Both write JSON to ``--out`` (atomically) or to standard output and nothing else there.
A malformed file gives one line on standard error naming the field, exit status 2, and
nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eventsnn",
        description="Simulate a CuBa-LIF network file exactly, event to event.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="spike times of every layer for every input sample")
    sim.add_argument("network", help="network file (JSON, see network-spec.md)")
    sim.add_argument("--out", help="write the result here instead of standard output")
    sim.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="floating-point precision of the simulation (default: float64)",
    )
    return parser


def spikes_to_json(result, n_samples: int) -> dict:
    """The `simulate` result document: spikes per sample and layer, sorted, unpadded."""
    samples = []
    for s in range(n_samples):
        layers = []
        for record, count in zip(result.layers, np.asarray(result.counts[s])):
            times = np.asarray(record.times[s])[:count]
            indices = np.asarray(record.indices[s])[:count]
            layers.append({"times": times.tolist(), "indices": indices.tolist()})
        samples.append({"layers": layers, "overflow": bool(np.asarray(result.overflow[s]).any())})
    return {"samples": samples}


def _emit(doc: dict, out: str | None) -> None:
    from .netfile import write_json_atomic

    if out is None:
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
    else:
        write_json_atomic(out, doc)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from .event.simulate import simulate
    from .netfile import NetworkFileError, load_network

    try:
        net = load_network(args.network, dtype=np.dtype(args.dtype))
    except NetworkFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    result = simulate(
        net.network, net.inputs, t_max=net.t_max, max_spikes=net.max_spikes, check_overflow=False
    )
    _emit(spikes_to_json(result, net.inputs.times.shape[0]), args.out)
    return 0
