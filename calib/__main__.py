"""Calibrate a chip's neurons to target parameters and write a calibration file.

    python -m calib --backend mock --chip-seed 1 --tau-mem 12e-6 --tau-syn 6e-6 \\
        --threshold 120 --leak 80 --reset 60 --refractory-time 30e-6 --out calib/mock-1.json

Measures the chip only through the experiment interface (membrane traces and spikes),
searches every neuron's parameter settings, writes the file atomically and prints the
residual error per parameter (median and worst neuron). Times in s, potentials in mV.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m calib",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--backend", choices=("mock",), default="mock", help="the chip to calibrate")
    p.add_argument("--chip-seed", type=int, default=0, help="which mock chip (a chip is a seed)")
    p.add_argument("--tau-mem", type=float, default=12e-6, help="membrane time constant (s)")
    p.add_argument("--tau-syn", type=float, default=6e-6, help="synaptic time constant (s)")
    p.add_argument("--threshold", type=float, default=120.0, help="threshold (mV)")
    p.add_argument("--leak", type=float, default=80.0, help="leak potential (mV)")
    p.add_argument("--reset", type=float, default=60.0, help="reset potential (mV)")
    p.add_argument("--refractory-time", type=float, default=30e-6, help="refractory time (s)")
    p.add_argument(
        "--weight-scale",
        type=float,
        default=10.0,
        help="weight steps per model weight unit: the synaptic gain target is "
        "(threshold - leak) / weight-scale mV per step",
    )
    p.add_argument("--neurons", type=int, default=None, help="calibrate a smaller mock chip")
    p.add_argument("--out", type=Path, default=None, help="default: calib/<backend>-<seed>.json")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from eventsnn.hardware import Targets, calibrate, mock_chip, residual_table

    try:
        targets = Targets(
            v_leak=args.leak,
            v_reset=args.reset,
            v_th=args.threshold,
            tau_mem=args.tau_mem * 1e6,
            tau_syn=args.tau_syn * 1e6,
            t_refrac=args.refractory_time * 1e6,
            synapse_gain=(args.threshold - args.leak) / args.weight_scale,
        )
        chip = mock_chip(args.chip_seed, args.neurons)
    except ValueError as e:
        parser().error(str(e))
    out = args.out or Path("calib") / f"{args.backend}-{args.chip_seed}.json"
    cal = calibrate(chip, targets, backend_name=f"{args.backend}:{args.chip_seed}", progress=True)
    cal.save(out)
    print(residual_table(cal.residuals))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
