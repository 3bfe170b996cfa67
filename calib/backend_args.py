"""Command-line arguments that pick a chip (`--backend`, `--chip`, `--option`), shared by
`python -m calib` and the hardware task runners. Imports no JAX: `--help` stays fast."""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points

GROUP = "eventsnn.backends"  # eventsnn.hardware.registry.GROUP, read here without JAX


def installed_backends() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """--backend, --chip and --option (shared with the task runners)."""
    names = installed_backends()
    p.add_argument(
        "--backend",
        default="mock",
        metavar="NAME",
        help=f"the chip's backend; installed: {', '.join(names) or 'none'}",
    )
    p.add_argument(
        "--chip",
        "--chip-seed",
        dest="chip",
        default="0",
        help="which chip of the backend (mock: a seed; a chip is a seed)",
    )
    p.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="backend option, repeatable (mock: any MockSpec field, e.g. jitter=0.05)",
    )


def check_backend(p: argparse.ArgumentParser, args) -> None:
    names = installed_backends()
    if args.backend not in names:
        p.error(f"unknown backend {args.backend!r}; installed: {', '.join(names) or 'none'}")
