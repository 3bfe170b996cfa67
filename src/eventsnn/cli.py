"""`python -m eventsnn simulate|grad NET.json`: the commands of network-spec.md.

Both write JSON to ``--out`` (atomically) or to standard output and nothing else there.
A malformed or unreadable file (missing, a directory, empty, binary, a ``.nir`` name on
something that is not HDF5) gives one line on standard error naming the file or field
and what was expected, exit status 2, and nothing written. A NIR graph is recognised by
its content (HDF5), whatever its name.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

EXIT_BAD_INPUT = 2


def _file_and_output(sub, help_file: str) -> None:
    """The arguments `simulate` and `grad` share: the network file, --inputs, --out,
    --dtype."""
    sub.add_argument("network", help=help_file)
    sub.add_argument(
        "--inputs",
        help="JSON with t_max, inputs (and optionally max_spikes, loss) as in the network "
        "file: required for a .nir network, overrides a JSON file's own",
    )
    sub.add_argument("--out", help="write the result here (atomically) instead of stdout")
    sub.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="floating-point precision (default: float64)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eventsnn",
        description="Simulate a CuBa-LIF network file exactly, event to event.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="spike times of every layer for every input sample")
    _file_and_output(sim, "network file (JSON, see network-spec.md) or NIR graph (.nir)")
    sim.add_argument(
        "--engine",
        choices=("event", "discrete"),
        default="event",
        help="event: exact event-driven simulation (default); discrete: forward Euler at a "
        "fixed step --dt, spike times are the ends of the steps they occur in",
    )
    sim.add_argument("--dt", type=float, help="time step (s) of the discrete engine")
    grad = sub.add_parser(
        "grad", help="the file's loss summed over samples and its gradient w.r.t. every weight"
    )
    _file_and_output(grad, "network file (JSON or .nir) with a `loss` entry")
    grad.add_argument(
        "--method",
        choices=("eventprop", "analytic"),
        required=True,
        help="eventprop: adjoint over the recorded events; analytic: exact spike-time "
        "derivatives through the forward simulation",
    )
    conv = sub.add_parser(
        "convert", help="convert between the network file (.json) and NIR (.nir)"
    )
    conv.add_argument("source", help="IN.json or IN.nir")
    conv.add_argument("target", help="OUT.nir or OUT.json (written atomically)")
    conv.add_argument("--inputs", help="settings (t_max, inputs, ...) for a .nir source")
    return parser


def convert(source: str, target: str, inputs: str | None) -> None:
    """json -> nir keeps the file's settings (t_max, inputs, ...) in the graph's metadata;
    nir -> json restores them (or takes them from `inputs`)."""
    from .netfile import (
        SETTINGS_FIELDS,
        NetworkFileError,
        check_writable,
        load_document,
        parse_network,
        write_json_atomic,
    )

    if not (target.endswith(".nir") or target.endswith(".json")):
        raise NetworkFileError(f"{target}: the target must end in .nir or .json")
    check_writable(target, "target")
    doc = load_document(source, inputs)
    parsed = parse_network(doc)  # validates everything before anything is written
    if target.endswith(".json"):
        write_json_atomic(target, doc)
        return
    from .nir import write_nir

    settings = {k: doc[k] for k in SETTINGS_FIELDS if k in doc}
    write_nir(target, parsed.network, metadata={"eventsnn": json.dumps(settings)})


def gradient_document(net, method: str) -> dict:
    """The `grad` result: loss summed over samples and d loss / d every weight matrix."""
    import jax
    import jax.numpy as jnp

    from .event.simulate import simulate
    from .loss import linear_spike_time_loss

    def total_loss(network):
        result = simulate(
            network,
            net.inputs,
            t_max=net.t_max,
            max_spikes=net.max_spikes,
            method=method,
            check_overflow=False,
        )
        c = jnp.asarray(net.loss.coefficients, result.output.times.dtype)
        per_sample = linear_spike_time_loss(result.output, c, first_spike=net.loss.first_spike)
        return jnp.sum(per_sample), result.overflow

    (loss, overflow), grads = jax.value_and_grad(total_loss, has_aux=True)(net.network)
    layers = []
    for layer in grads.layers:
        entry = {"weights": np.asarray(layer.weights).tolist()}
        if layer.recurrent_weights is not None:
            entry["recurrent_weights"] = np.asarray(layer.recurrent_weights).tolist()
        layers.append(entry)
    doc = {"loss": float(loss), "grads": {"layers": layers}}
    if bool(np.asarray(overflow).any()):
        doc["overflow"] = True
    return doc


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


def discrete_result(net, dt: float):
    """Run the discrete engine and package its spikes like the event core's result."""
    import jax.numpy as jnp

    from .discrete.simulate import simulate_discrete, trains_to_spikes
    from .event.simulate import SimulationResult

    out = simulate_discrete(net.network, net.inputs, dt=dt, t_max=net.t_max, record_voltages=False)
    records, overflow = zip(*(trains_to_spikes(t, dt, net.max_spikes) for t in out.trains))
    counts = jnp.stack([jnp.sum(jnp.isfinite(r.times), -1) for r in records], -1)
    return SimulationResult(tuple(records), counts, jnp.stack(overflow, -1))


def _emit(doc: dict, out: str | None) -> None:
    from .netfile import write_json_atomic

    if out is None:
        try:
            json.dump(doc, sys.stdout)
            sys.stdout.write("\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the reader (e.g. `head`) stopped early: not an error
            sys.stdout = None
    else:
        write_json_atomic(out, doc)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import jax

    if getattr(args, "dtype", "float64") == "float64":
        jax.config.update("jax_enable_x64", True)
    from .event.simulate import simulate
    from .netfile import NetworkFileError, check_writable, load_network

    try:
        if getattr(args, "out", None) is not None:
            check_writable(args.out, "--out")
        if args.command == "convert":
            convert(args.source, args.target, args.inputs)
            return 0
        net = load_network(args.network, dtype=np.dtype(args.dtype), inputs_path=args.inputs)
        if args.command == "grad" and net.loss is None:
            raise NetworkFileError(
                "loss: is required for grad (first_spike_coefficients or all_spike_coefficients)"
            )
    except NetworkFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "grad":
        _emit(gradient_document(net, args.method), args.out)
        return 0
    if args.engine == "discrete":
        if args.dt is None or not args.dt > 0:
            print(
                "error: --dt: the discrete engine needs a positive time step in seconds",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        _emit(spikes_to_json(discrete_result(net, args.dt), net.inputs.times.shape[0]), args.out)
        return 0
    result = simulate(
        net.network, net.inputs, t_max=net.t_max, max_spikes=net.max_spikes, check_overflow=False
    )
    _emit(spikes_to_json(result, net.inputs.times.shape[0]), args.out)
    return 0
