"""Calibrate a chip's neurons to target parameters and write a calibration file.

    python -m calib --backend mock --chip 1 --tau-mem 12e-6 --tau-syn 6e-6 \\
        --threshold 120 --leak 80 --reset 60 --refractory-time 30e-6 --out calib/mock-1.json

Measures the chip only through the experiment interface (membrane traces and spikes),
searches every neuron's parameter settings, writes the file atomically (recording the
backend and the chip's identity) and prints the residual error per parameter (median and
worst neuron). Times in s, potentials in mV.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calib.backend_args import (
    add_backend_arguments,
    check_backend,
    positive_float,
    positive_int,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m calib",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_backend_arguments(p)
    p.add_argument(
        "--tau-mem", type=positive_float, default=12e-6, help="membrane time constant (s)"
    )
    p.add_argument(
        "--tau-syn", type=positive_float, default=6e-6, help="synaptic time constant (s)"
    )
    p.add_argument("--threshold", type=float, default=120.0, help="threshold (mV)")
    p.add_argument("--leak", type=float, default=80.0, help="leak potential (mV)")
    p.add_argument("--reset", type=float, default=60.0, help="reset potential (mV)")
    p.add_argument(
        "--refractory-time", type=positive_float, default=30e-6, help="refractory time (s)"
    )
    p.add_argument(
        "--weight-scale",
        type=positive_float,
        default=10.0,
        help="weight steps per model weight unit: the synaptic gain target is "
        "(threshold - leak) / weight-scale mV per step",
    )
    p.add_argument(
        "--output-weight-scale",
        type=positive_float,
        default=None,
        help="calibrate the last hemisphere's neurons (a network's output layer) to the "
        "synaptic gain (threshold - leak) / output-weight-scale instead: finer weight steps "
        "for that layer (a second calibration group); None: one gain for every neuron",
    )
    p.add_argument(
        "--neurons",
        type=positive_int,
        default=None,
        help="calibrate chip neurons 0..N-1 only (None: all)",
    )
    p.add_argument("--out", type=Path, default=None, help="None: calib/<backend>-<chip>.json")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check_backend(p, args)
    out = args.out or Path("calib") / f"{args.backend}-{args.chip}.json"
    if out.exists() and not args.force:
        p.error(f"{out} exists; pass --force to overwrite it")
    import numpy as np

    from eventsnn.hardware import Targets, calibrate, open_backend, residual_table
    from eventsnn.hardware.in_the_loop import calibration_groups
    from eventsnn.hardware.registry import parse_options

    try:
        targets = Targets(
            v_leak=args.leak,
            v_reset=args.reset,
            v_th=args.threshold,
            tau_mem=args.tau_mem * 1e6,
            tau_syn=args.tau_syn * 1e6,
            t_refrac=args.refractory_time * 1e6,
        ).with_weight_scale(args.weight_scale)
        chip = open_backend(args.backend, args.chip, **parse_options(args.option))
    except (ValueError, TypeError) as e:
        p.error(str(e))
    n = chip.limits.neurons
    if args.neurons is not None and args.neurons > n:
        p.error(f"--neurons {args.neurons}: {chip.identity()} has {n} neurons")
    neurons = np.arange(n if args.neurons is None else args.neurons)
    try:
        groups = calibration_groups(chip.limits, targets, args.output_weight_scale, neurons)
    except ValueError as e:
        p.error(f"--output-weight-scale: {e}")
    cal = calibrate(chip, groups, progress=True)
    cal.save(out, overwrite=args.force)
    print(residual_table(cal.residuals))
    print(f"wrote {out} ({cal.identity}, {len(cal.neurons)} neurons)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
