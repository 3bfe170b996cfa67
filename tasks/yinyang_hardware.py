"""Train Yin-Yang on a BrainScaleS-2-style chip (or its mock), in the loop, and print the
chip's test accuracy.

    python -m tasks.yinyang_hardware [--backend mock] [--chip N] [-o KEY=VALUE]
        [--calibration PATH] [--force] [--seed S] [--epochs N] [--software-epochs N]
        [--metrics PATH] [--plots DIR] [--checkpoint DIR] [--resume]

Steps: calibrate the chip (unless --calibration gives a file, or calib/<backend>-<chip>.json
exists), train the network (5-120-3) in software on the calibrated model, deploy it and
measure it on the chip, then train in the loop: forward on the chip, exact gradients in
software at the recorded spike times. The last JSON line of --metrics holds
`test_accuracy` (on the chip after training in the loop) beside `deployed_test_accuracy`
(software training only) and `software_test_accuracy` (the software model itself).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from calib.backend_args import (
    add_backend_arguments,
    check_backend,
    positive_float,
    positive_int,
)

HIDDEN = 120  # two synapse rows per hidden neuron feed the outputs: 240 of a hemisphere's 256
SOFTWARE_EPOCHS = 300
EPOCHS = 60
#: Integer steps per model weight unit when the runner calibrates: a synaptic gain of
#: (120 - 80) / 40 = 1 mV per step, so the output weights (within about +-1.5) take 0.025
#: steps up to 63 / 40 = 1.58 ...
WEIGHT_SCALE = 40.0
#: ... and every input drives 25 rows (5 x 25 x 2 signs = 250 of hemisphere 0's 256), so
#: the hidden weights reach 25 x 63 / 40 = 39 in the same steps.
INPUT_REPEAT = 25


def configs():
    """``(model, software training, training in the loop)``: the task's one config
    (imported here, not at module level, so that --help needs no JAX). The calibrated time
    constants replace the model's own (the same 12 ms / 6 ms); the run (28 us on the chip)
    stays within the 30 us refractory time, so every neuron spikes at most once."""
    from eventsnn.classify import ClassifierConfig
    from eventsnn.train import TrainConfig

    model = ClassifierConfig(engine="event", grad="analytic", hidden=HIDDEN)
    software = TrainConfig(epochs=SOFTWARE_EPOCHS)
    in_the_loop = TrainConfig(epochs=EPOCHS, learning_rate=1e-3, final_learning_rate=1e-5)
    return model, software, in_the_loop


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tasks.yinyang_hardware",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_backend_arguments(p)
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="calibration file (python -m calib); None: calib/<backend>-<chip>.json, "
        "written by calibrating the chip first where it does not exist",
    )
    p.add_argument(
        "--force", action="store_true", help="use a calibration measured on another chip"
    )
    p.add_argument(
        "--weight-scale",
        type=positive_float,
        default=WEIGHT_SCALE,
        help="when calibrating: integer steps per model weight unit (python -m calib "
        "--weight-scale)",
    )
    p.add_argument(
        "--output-weight-scale",
        type=positive_float,
        default=None,
        help="when calibrating: the output layer's own (python -m calib "
        "--output-weight-scale); None: --weight-scale",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of weights and shuffling")
    p.add_argument("--epochs", type=positive_int, default=EPOCHS, help="epochs in the loop")
    p.add_argument(
        "--software-epochs",
        type=positive_int,
        default=SOFTWARE_EPOCHS,
        help="epochs of software training before deployment",
    )
    p.add_argument(
        "--train-noise",
        type=float,
        default=0.0,
        help="std (s, model time) of input-time jitter during software training",
    )
    p.add_argument(
        "--input-repeat",
        type=positive_int,
        default=INPUT_REPEAT,
        help="synapse rows per input channel",
    )
    p.add_argument(
        "--no-quantisation-aware",
        dest="quantisation_aware",
        action="store_false",
        help="train the software model with continuous weights (default: with the chip's "
        "weight steps and limits)",
    )
    p.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        help="split each software batch over this many devices (data parallel; on CPU set "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N)",
    )
    p.add_argument("--metrics", type=Path, default=None, help="JSON lines, one per epoch")
    p.add_argument("--plots", type=Path, default=None, help="directory for plots")
    p.add_argument("--checkpoint", type=Path, default=None, help="directory for checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--train-samples", type=positive_int, default=None, help="first N only")
    return p


def main(argv=None) -> float:
    p = parser()
    args = p.parse_args(argv)
    check_backend(p, args)
    if args.resume and args.checkpoint is None:
        p.error("--resume needs --checkpoint DIR")
    import dataclasses

    from eventsnn import hardware
    from eventsnn.hardware.in_the_loop import HardwareSetup, calibration_groups
    from eventsnn.hardware.registry import parse_options
    from eventsnn.tasks import run_hardware_task

    try:
        chip = hardware.open_backend(args.backend, args.chip, **parse_options(args.option))
    except (ValueError, TypeError) as e:
        p.error(str(e))
    path = args.calibration or Path("calib") / f"{args.backend}-{args.chip}.json"
    if args.calibration is not None or path.exists():
        try:
            cal = hardware.Calibration.load(path)
            cal.check_chip(chip, force=args.force)
        except ValueError as e:
            p.error(str(e))
        print(f"calibration: {path} ({cal.identity})")
    else:
        lim = chip.limits
        scale = args.output_weight_scale if lim.hemispheres > 1 else None
        targets = hardware.Targets().with_weight_scale(args.weight_scale)
        groups = calibration_groups(lim, targets, scale)
        cal = hardware.calibrate(chip, groups, progress=True)
        cal.save(path)
        print(f"calibrated {cal.identity}, wrote {path}")
    print(hardware.residual_table(cal.residuals))

    model, software, in_the_loop = configs()
    result = run_hardware_task(
        chip,
        cal,
        HardwareSetup.from_calibration(cal, input_repeat=args.input_repeat),
        dataclasses.replace(model, time_noise=args.train_noise),
        dataclasses.replace(software, epochs=args.software_epochs, seed=args.seed),
        dataclasses.replace(in_the_loop, epochs=args.epochs, seed=args.seed),
        metrics_path=args.metrics,
        checkpoint_dir=args.checkpoint,
        resume=args.resume,
        plots_dir=args.plots,
        train_samples=args.train_samples,
        devices=args.devices,
        quantisation_aware=args.quantisation_aware,
    )
    keys = ("software_test_accuracy", "deployed_test_accuracy", "test_accuracy")
    print(json.dumps({k: result[k] for k in keys}))
    print(f"test accuracy (chip, in the loop): {result['test_accuracy']:.4f}")
    return result["test_accuracy"]


if __name__ == "__main__":
    main()
