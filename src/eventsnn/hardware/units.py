"""Conversion between model units and chip units, in one place.

Model: time in s, potentials in units of the threshold distance (``v_th - v_leak = 1``),
weights as jumps of ``I`` in the same units. Chip (BrainScaleS-2 style): time in us on a
clock ``speedup`` times faster than the model's, potentials in mV of the membrane, weights
as signed 6-bit integers: ``q = round(clip(weight_scale * w, -63, 63))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHT_MAX = 63  # 6-bit magnitude with a sign


@dataclass(frozen=True)
class ChipUnits:
    """How one model network maps onto the chip.

    Attributes:
        speedup: model time / chip time (BrainScaleS-2: ~1000, 12 ms -> 12 us).
        weight_scale: integer steps per unit of model weight.
        v_leak, v_th: the chip's calibrated leak and threshold (mV); model potential
            ``v`` is chip potential ``v_leak + v * (v_th - v_leak)``.
    """

    speedup: float = 1000.0
    weight_scale: float = 10.0
    v_leak: float = 80.0
    v_th: float = 120.0

    def __post_init__(self):
        for name in ("speedup", "weight_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ChipUnits.{name} must be > 0, got {getattr(self, name)!r}.")
        if not self.v_th > self.v_leak:
            raise ValueError(
                f"ChipUnits: v_th ({self.v_th}) must be above v_leak ({self.v_leak})."
            )

    @property
    def swing(self) -> float:
        """mV per model potential unit."""
        return self.v_th - self.v_leak

    @property
    def synapse_gain(self) -> float:
        """The calibrated jump of ``I`` per integer weight step (mV)."""
        return self.swing / self.weight_scale

    def time_to_chip(self, t_model):
        """Model seconds -> chip microseconds."""
        return np.asarray(t_model) / self.speedup * 1e6

    def time_to_model(self, t_chip_us):
        """Chip microseconds -> model seconds."""
        return np.asarray(t_chip_us) * 1e-6 * self.speedup

    def potential_to_chip(self, v_model):
        return self.v_leak + np.asarray(v_model) * self.swing

    def potential_to_model(self, v_chip):
        return (np.asarray(v_chip) - self.v_leak) / self.swing

    def weights_to_chip(self, w):
        """Model weights -> integers in [-63, 63] (rounded, saturated)."""
        q = np.rint(
            np.clip(np.asarray(w, dtype=float) * self.weight_scale, -WEIGHT_MAX, WEIGHT_MAX)
        )
        return q.astype(np.int32)

    def weights_to_model(self, q):
        """Integers -> the model weights they realise (exact inverse on the integer grid)."""
        return np.asarray(q, dtype=float) / self.weight_scale
