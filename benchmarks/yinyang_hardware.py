"""Yin-Yang on mock chips: software training once, then per chip seed calibration,
deployment without training in the loop, and training in the loop.

Prints one JSON line per chip (software, deployed and in-the-loop test accuracy, seconds
per in-the-loop epoch, calibration residuals) and a summary line.
Usage: python benchmarks/yinyang_hardware.py [--chip-seeds 0 1 2] [--seed 0]
       [--software-epochs N] [--epochs N] [-o KEY=VALUE] [--calibration-dir DIR]
       [--software-checkpoint DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from _timing import emit, machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eventsnn import hardware  # noqa: E402
from eventsnn.hardware.in_the_loop import HardwareSetup, calibration_groups  # noqa: E402
from eventsnn.hardware.registry import parse_options  # noqa: E402
from eventsnn.tasks import run_hardware_task, run_point_task  # noqa: E402
from tasks.yinyang_hardware import INPUT_REPEAT, WEIGHT_SCALE, configs  # noqa: E402

MODEL, SOFTWARE, IN_THE_LOOP = configs()


def chip_calibration(chip, directory: Path | None, weight_scale, output_weight_scale):
    """The chip's calibration: from ``directory/<backend>-<chip>.json`` where it exists
    (and was measured on this chip), else measured (synaptic gain for `weight_scale`, the
    output hemisphere's for `output_weight_scale`) and written there."""
    who = chip.identity()
    path = None if directory is None else directory / f"{who.backend}-{who.chip}.json"
    if path is not None and path.exists():
        cal = hardware.Calibration.load(path)
        cal.check_chip(chip)
        return cal, 0.0
    start = time.perf_counter()
    targets = hardware.Targets().with_weight_scale(weight_scale)
    groups = calibration_groups(chip.limits, targets, output_weight_scale)
    cal = hardware.calibrate(chip, groups)
    seconds = time.perf_counter() - start
    if path is not None:
        cal.save(path)
    return cal, seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chip-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--software-epochs", type=int, default=SOFTWARE.epochs)
    p.add_argument("--epochs", type=int, default=IN_THE_LOOP.epochs)
    p.add_argument(
        "--option", "-o", action="append", default=[], help="mock option KEY=VALUE (MockSpec)"
    )
    p.add_argument("--weight-scale", type=float, default=WEIGHT_SCALE)
    p.add_argument("--output-weight-scale", type=float, default=None)
    p.add_argument("--input-repeat", type=int, default=INPUT_REPEAT)
    p.add_argument(
        "--no-quantisation-aware",
        dest="quantisation_aware",
        action="store_false",
        help="software training with continuous weights",
    )
    p.add_argument(
        "--calibration-dir",
        type=Path,
        default=None,
        help="keep calibrations here (<backend>-<chip>.json) and reuse them",
    )
    p.add_argument(
        "--software-checkpoint",
        type=Path,
        default=None,
        help="directory to keep the software-trained network in; reused when complete",
    )
    args = p.parse_args()
    options = parse_options(args.option)
    software_train = dataclasses.replace(SOFTWARE, epochs=args.software_epochs, seed=args.seed)
    loop_train = dataclasses.replace(IN_THE_LOOP, epochs=args.epochs, seed=args.seed)
    software = None
    results = []
    for chip_seed in args.chip_seeds:
        chip = hardware.open_backend("mock", chip_seed, **options)
        cal, calib_seconds = chip_calibration(
            chip, args.calibration_dir, args.weight_scale, args.output_weight_scale
        )
        setup = HardwareSetup.from_calibration(cal, input_repeat=args.input_repeat)
        if software is None:  # every chip gets the same software-trained network
            model = setup.model_config(cal, dataclasses.replace(MODEL, n_classes=3))
            if args.quantisation_aware:
                model = setup.quantised_config(model)
            ckpt = args.software_checkpoint
            software = run_point_task(
                "yinyang",
                model,
                software_train,
                checkpoint_dir=ckpt,
                resume=ckpt is not None and any(Path(ckpt).glob("*")),
            )
        res = run_hardware_task(
            chip, cal, setup, MODEL, software_train, loop_train, software=software
        )
        results.append(res)
        emit(
            {
                "chip_seed": chip_seed,
                "software_test_accuracy": res["software_test_accuracy"],
                "deployed_test_accuracy": res["deployed_test_accuracy"],
                "test_accuracy": res["test_accuracy"],
                "in_the_loop_epochs": args.epochs,
                "seconds_per_epoch": res["seconds_per_epoch"],
                "calibration_seconds": calib_seconds,
                "calibration_residuals": res["calibration_residuals"],
            }
        )
    emit(
        {
            "benchmark": "yinyang_hardware",
            "chip_seeds": args.chip_seeds,
            "mock_options": options,
            "weight_scale": args.weight_scale,
            "output_weight_scale": args.output_weight_scale,
            "input_repeat": args.input_repeat,
            "quantisation_aware": args.quantisation_aware,
            "test_accuracy_min": float(min(r["test_accuracy"] for r in results)),
            "test_accuracy_mean": float(np.mean([r["test_accuracy"] for r in results])),
            "deployed_test_accuracy_mean": float(
                np.mean([r["deployed_test_accuracy"] for r in results])
            ),
            **machine(),
        }
    )


if __name__ == "__main__":
    main()
