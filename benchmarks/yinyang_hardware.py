"""Yin-Yang on mock chips: software training once, then per chip seed calibration,
deployment without training in the loop, and training in the loop.

Prints one JSON line per chip (software, deployed and in-the-loop test accuracy, seconds
per in-the-loop epoch, calibration residuals) and a summary line.
Usage: python benchmarks/yinyang_hardware.py [--chip-seeds 0 1 2] [--seed 0]
       [--software-epochs N] [--epochs N] [--jitter 0.1]
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
from eventsnn.hardware.in_the_loop import HardwareSetup  # noqa: E402
from eventsnn.tasks import run_hardware_task, run_point_task  # noqa: E402
from tasks.yinyang_hardware import configs  # noqa: E402

MODEL, SOFTWARE, IN_THE_LOOP = configs()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chip-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--software-epochs", type=int, default=SOFTWARE.epochs)
    p.add_argument("--epochs", type=int, default=IN_THE_LOOP.epochs)
    p.add_argument("--jitter", type=float, default=0.1, help="us")
    p.add_argument(
        "--software-checkpoint",
        type=Path,
        default=None,
        help="directory to keep the software-trained network in; reused when complete",
    )
    args = p.parse_args()
    software_train = dataclasses.replace(SOFTWARE, epochs=args.software_epochs, seed=args.seed)
    loop_train = dataclasses.replace(IN_THE_LOOP, epochs=args.epochs, seed=args.seed)
    software = None
    results = []
    for chip_seed in args.chip_seeds:
        chip = hardware.open_backend("mock", chip_seed, jitter=args.jitter)
        start = time.perf_counter()
        cal = hardware.calibrate(chip)
        calib_seconds = time.perf_counter() - start
        setup = HardwareSetup.from_calibration(cal)
        if software is None:  # every chip gets the same software-trained network
            model = setup.model_config(cal, dataclasses.replace(MODEL, n_classes=3))
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
            "jitter_us": args.jitter,
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
