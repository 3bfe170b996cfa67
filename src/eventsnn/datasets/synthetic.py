"""SHD-shaped random spike trains, for timing only (no structure to learn)."""

from __future__ import annotations

import numpy as np

from .spikes import SpikeDataset, from_events

SHD_SPIKES_PER_SAMPLE = 8000  # about the size of an SHD sample


def shd_like(
    n_samples: int,
    seed: int,
    *,
    spikes_per_sample: float = SHD_SPIKES_PER_SAMPLE,
    duration: float = 1.0,
    n_channels: int = 700,
    n_classes: int = 20,
    budget: int | None = None,
) -> SpikeDataset:
    """Independent homogeneous Poisson spike trains shaped like SHD, with random labels.

    Every channel of every sample is a Poisson process of rate

        r = spikes_per_sample / (n_channels * duration)      (Hz; 11.4 Hz by default)

    on ``[0, duration)`` s, so a sample holds ``Poisson(spikes_per_sample)`` spikes. Drawn
    as a count per channel, then that many uniform times (the Poisson process given its
    count). Labels are uniform in ``[0, n_classes)``. The result is marked synthetic
    (``synthetic=True``, name ``shd_like (synthetic)``). Deterministic in `seed`.

    Args:
        spikes_per_sample: expected input spikes per sample (e.g. 1000, 4000, 16000).
        duration: window (s), e.g. 0.25, 1 or 4.
        budget: slots per sample; None: the largest sample drawn.
    """
    if n_samples < 1 or n_channels < 1 or n_classes < 1:
        raise ValueError(
            f"n_samples, n_channels and n_classes must be >= 1, got {n_samples}, "
            f"{n_channels} and {n_classes}."
        )
    if not spikes_per_sample > 0 or not duration > 0:
        raise ValueError(
            f"spikes_per_sample and duration must be > 0, got {spikes_per_sample} and "
            f"{duration} s."
        )
    rng = np.random.default_rng(seed)
    counts = rng.poisson(spikes_per_sample / n_channels, (n_samples, n_channels)).ravel()
    sample = np.repeat(np.arange(n_samples).repeat(n_channels), counts)
    channels = np.repeat(np.tile(np.arange(n_channels), n_samples), counts)
    times = rng.uniform(0.0, duration, counts.sum())
    labels = rng.integers(0, n_classes, n_samples)
    return from_events(
        sample,
        times,
        channels,
        labels,
        budget=budget,
        n_channels=n_channels,
        n_classes=n_classes,
        duration=duration,
        name="shd_like (synthetic)",
        synthetic=True,
    )
