"""Yin-Yang accuracy over seeds: full training runs with the task's default settings.

Prints one JSON line per seed (test accuracy, median seconds per epoch) and a summary.
Usage: python benchmarks/yinyang_accuracy.py [--engine event|discrete] [--grad ...]
       [--seeds 0 1 2] [--epochs N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _timing import emit, machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eventsnn.tasks import run_point_task  # noqa: E402
from tasks.yinyang import configs  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", default="event", choices=("event", "discrete"))
    p.add_argument("--grad", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--plain-kernel", action="store_true", help="event engine: plain PSP kernel")
    args = p.parse_args()
    accuracies, seconds = [], []
    for seed in args.seeds:
        ns = argparse.Namespace(
            engine=args.engine,
            grad=args.grad,
            seed=seed,
            epochs=args.epochs,
            batch_size=None,
            plain_kernel=args.plain_kernel,
        )
        model, train = configs(ns)
        res = run_point_task("yinyang", model, train)
        accuracies.append(res["test_accuracy"])
        seconds.append(res["seconds_per_epoch"])
        emit(
            {
                "engine": model.engine,
                "grad": model.grad,
                "seed": seed,
                "test_accuracy": res["test_accuracy"],
                "epochs": res["epochs"],
                "seconds_per_epoch": res["seconds_per_epoch"],
            }
        )
    emit(
        {
            "benchmark": "yinyang_accuracy",
            "engine": args.engine,
            "grad": model.grad,
            "seeds": args.seeds,
            "test_accuracy_mean": float(np.mean(accuracies)),
            "test_accuracy_min": float(np.min(accuracies)),
            "seconds_per_epoch_median": float(np.median(seconds)),
            **machine(),
        }
    )


if __name__ == "__main__":
    main()
