"""Checks on user input that run before any compiled code.

Values are only checked when they are concrete: under `jit`/`grad` tracing the
shapes are still checked, the values cannot be.
"""

from __future__ import annotations

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True when `x` holds values (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def check_shape(name: str, x, shape: tuple[int, ...], hint: str = "") -> None:
    """Raise ValueError naming `name` unless `x.shape == shape`."""
    if tuple(x.shape) != tuple(shape):
        extra = f" {hint}" if hint else ""
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}.{extra}")


def check_values(name: str, x, ok, requirement: str) -> None:
    """Raise ValueError naming `name` and the first bad entry where `ok` is False.

    Args:
        name: the field as the user knows it (e.g. ``layers[1].tau_mem``).
        x: the values, any shape.
        ok: boolean array of the same shape, True where the value is acceptable.
        requirement: what the value must satisfy, phrased as a fix.
    """
    if not (is_concrete(x) and is_concrete(ok)):
        return
    ok = np.asarray(ok)
    if ok.all():
        return
    x = np.asarray(x)
    where = np.argwhere(~ok)[0]
    bad = x[tuple(where)] if x.ndim else x
    loc = f" at index {tuple(int(w) for w in where)}" if x.ndim else ""
    raise ValueError(f"{name} {requirement} (got {bad!r}{loc}).")
