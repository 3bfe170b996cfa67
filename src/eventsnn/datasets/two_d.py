"""2-D classification tasks on the unit square, generated from a seed.

Every task returns ``(points [N, 2] in [0, 1], labels [N] int)`` with balanced classes,
drawn by rejection: sample ``i`` has class ``i % n_classes`` and points are drawn until one
of that class comes up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Yin-Yang geometry (Kriener et al. 2021): outer radius 0.5 centred at (0.5, 0.5), the two
#: dots of radius 0.1 centred at (0.25, 0.5) and (0.75, 0.5).
R_BIG, R_SMALL = 0.5, 0.1
#: Seeds of the reference protocol's splits.
YINYANG_SEEDS = {"train": 42, "validation": 41, "test": 40}
YINYANG_SIZES = {"train": 5000, "validation": 1000, "test": 1000}


def yinyang_class(x, y):
    """0 (yin), 1 (yang), 2 (dot), or -1 outside the outer circle."""
    d_right = np.hypot(x - 1.5 * R_BIG, y - R_BIG)
    d_left = np.hypot(x - 0.5 * R_BIG, y - R_BIG)
    inside = np.hypot(x - R_BIG, y - R_BIG) <= R_BIG
    dot = (d_right < R_SMALL) | (d_left < R_SMALL)
    yin = (d_right <= R_SMALL) | ((d_left > R_SMALL) & (d_left <= 0.5 * R_BIG))
    yin |= (y > R_BIG) & (d_right > 0.5 * R_BIG)
    cls = np.where(dot, 2, np.where(yin, 0, 1))
    return np.where(inside, cls, -1)


def circles_class(x, y):
    """0 inside a circle of radius 0.3 around the centre, 1 outside it."""
    return (np.hypot(x - 0.5, y - 0.5) > 0.3).astype(int)


def linear_class(x, y):
    """0 below the diagonal, 1 above it."""
    return (y > x).astype(int)


@dataclass(frozen=True)
class Task2D:
    name: str
    n_classes: int
    classify: Callable


TASKS = {
    "yinyang": Task2D("yinyang", 3, yinyang_class),
    "circles": Task2D("circles", 2, circles_class),
    "linear": Task2D("linear", 2, linear_class),
}


def sample(task: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of `task` with balanced classes, deterministic in `seed`."""
    spec = TASKS[task]
    rng = np.random.default_rng(seed)
    points = np.empty((n, 2))
    labels = np.arange(n) % spec.n_classes
    for i, target in enumerate(labels):
        while True:
            x, y = rng.uniform(0.0, 1.0, 2)
            if spec.classify(x, y) == target:
                points[i] = x, y
                break
    return points, labels


def yinyang(split: str, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A split of the Yin-Yang reference protocol (5000/1000/1000, fixed seeds)."""
    if split not in YINYANG_SEEDS:
        raise ValueError(f"split must be one of {sorted(YINYANG_SEEDS)}, got {split!r}.")
    return sample("yinyang", YINYANG_SIZES[split] if n is None else n, YINYANG_SEEDS[split])


def encode_points(points, t_early: float, t_late: float, bias_time: float | None):
    """Inputs (x, y, 1-x, 1-y) as spike times in ``[t_early, t_late]`` plus a bias spike:
    times ``[N, 4 (+1)]`` (numpy; channel j at index j)."""
    values = np.concatenate([points, 1.0 - points], axis=1)
    times = t_early + (t_late - t_early) * values
    if bias_time is not None:
        times = np.concatenate([times, np.full((len(points), 1), bias_time)], axis=1)
    return times
