"""Train Yin-Yang on a (mock) BrainScaleS-2-style chip, in the loop, and print the chip's
test accuracy.

    python -m tasks.yinyang_hardware [--backend mock] [--chip-seed N] [--calibration PATH]
        [--seed S] [--epochs N] [--software-epochs N] [--metrics PATH] [--plots DIR]
        [--checkpoint DIR] [--resume]

Steps: calibrate the chip (unless --calibration gives a file), train the network in
software on the calibrated model (optionally with input-time noise), deploy it and measure
it on the chip, then train in the loop: forward on the chip, exact gradients in software
at the recorded spike times. The last JSON line of --metrics holds `test_accuracy` (on the
chip after training in the loop) beside `deployed_test_accuracy` (software training only)
and `software_test_accuracy` (the software model itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from eventsnn.classify import ClassifierConfig
from eventsnn.train import TrainConfig

#: The network for the chip: the event task's (calibrated time constants replace its own,
#: the same 12 ms / 6 ms); the run (28 us on the chip) stays within the 30 us refractory
#: time, so every neuron spikes at most once.
MODEL = ClassifierConfig(engine="event", grad="analytic")
SOFTWARE = TrainConfig(epochs=300)
IN_THE_LOOP = TrainConfig(epochs=60, learning_rate=1e-3, final_learning_rate=1e-5)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tasks.yinyang_hardware",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--backend", choices=("mock",), default="mock", help="the chip to run on")
    p.add_argument("--chip-seed", type=int, default=0, help="which mock chip (a chip is a seed)")
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="calibration file (python -m calib); without it the chip is calibrated first "
        "and the file written to calib/<backend>-<chip-seed>.json",
    )
    p.add_argument("--jitter", type=float, default=0.1, help="mock spike-time jitter (us)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and shuffling")
    p.add_argument(
        "--epochs", type=int, default=IN_THE_LOOP.epochs, help="epochs of training in the loop"
    )
    p.add_argument(
        "--software-epochs",
        type=int,
        default=SOFTWARE.epochs,
        help="epochs of software training before deployment",
    )
    p.add_argument(
        "--train-noise",
        type=float,
        default=0.0,
        help="std (s, model time) of input-time jitter during software training",
    )
    p.add_argument("--input-repeat", type=int, default=5, help="synapse rows per input channel")
    p.add_argument(
        "--devices",
        type=int,
        default=1,
        help="split each batch over this many devices (data parallel; on CPU set "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N)",
    )
    p.add_argument("--metrics", type=Path, default=None, help="JSON lines, one per epoch")
    p.add_argument("--plots", type=Path, default=None, help="directory for plots")
    p.add_argument("--checkpoint", type=Path, default=None, help="directory for checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--train-samples", type=int, default=None, help="first N samples only")
    return p


def main(argv=None) -> float:
    args = parser().parse_args(argv)
    if args.resume and args.checkpoint is None:
        parser().error("--resume needs --checkpoint DIR")
    from eventsnn import hardware
    from eventsnn.hardware.in_the_loop import HardwareSetup
    from eventsnn.tasks import run_hardware_task

    chip = hardware.mock_chip(args.chip_seed, jitter=args.jitter)
    if args.calibration is not None:
        try:
            cal = hardware.Calibration.load(args.calibration)
        except ValueError as e:
            parser().error(str(e))
    else:
        cal = hardware.calibrate(
            chip, backend_name=f"{args.backend}:{args.chip_seed}", progress=True
        )
        cal.save(Path("calib") / f"{args.backend}-{args.chip_seed}.json")
    print(hardware.residual_table(cal.residuals))

    result = run_hardware_task(
        chip,
        cal,
        HardwareSetup.from_calibration(cal, input_repeat=args.input_repeat),
        dataclasses.replace(MODEL, time_noise=args.train_noise),
        dataclasses.replace(SOFTWARE, epochs=args.software_epochs, seed=args.seed),
        dataclasses.replace(IN_THE_LOOP, epochs=args.epochs, seed=args.seed),
        metrics_path=args.metrics,
        checkpoint_dir=args.checkpoint,
        resume=args.resume,
        plots_dir=args.plots,
        train_samples=args.train_samples,
        devices=args.devices,
    )
    keys = ("software_test_accuracy", "deployed_test_accuracy", "test_accuracy")
    print(json.dumps({k: result[k] for k in keys}))
    print(f"test accuracy (chip, in the loop): {result['test_accuracy']:.4f}")
    return result["test_accuracy"]


if __name__ == "__main__":
    main()
