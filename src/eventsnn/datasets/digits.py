"""An offline spike-train dataset: scikit-learn's bundled 8x8 handwritten digits.

``sklearn.datasets.load_digits`` ships with scikit-learn (1797 images, 10 classes, pixel
values 0-16), so every machine can train and test without a download. Each image becomes
a spike train over 64 channels (one per pixel, row-major) with `encode_intensities`.
"""

from __future__ import annotations

import numpy as np

from .spikes import SpikeDataset, from_events

DIGITS_MAX_VALUE = 16  # load_digits pixels are integers in [0, 16]


def encode_intensities(
    values, *, max_spikes: int, duration: float, jitter: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regular rate code: a value in [0, 1] becomes a few evenly spaced spikes.

    Channel ``c`` of sample ``s`` with value ``x`` in [0, 1] fires

        n = round(x * max_spikes)

    spikes, spike ``k = 0 .. n-1`` at

        t_k = duration * (k + 1/2 + u_k) / n                (s),
        u_k ~ Uniform(-jitter/2, jitter/2), independent, from `seed`,

    i.e. one spike near the centre of each of ``n`` equal slots of the window
    ``[0, duration]``. For ``0 <= jitter < 1`` every spike stays inside its own slot, so the
    spikes of one channel are distinct and ordered, and all times lie strictly inside
    ``(0, duration)``. Brighter channels fire more spikes and earlier (first spike at
    ``duration / (2 n)``); the jitter breaks the exact coincidences of channels with the
    same count. Deterministic in `seed`.

    Args:
        values: ``[N, C]`` in [0, 1].

    Returns:
        ``(sample [E], times [E] (s), channels [E])``: flat event arrays (see `from_events`).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or np.any(~((values >= 0) & (values <= 1))):
        raise ValueError("values must be [N, C] with every entry in [0, 1].")
    if max_spikes < 1 or not duration > 0 or not 0 <= jitter < 1:
        raise ValueError(
            f"need max_spikes >= 1, duration > 0 s and 0 <= jitter < 1, got {max_spikes}, "
            f"{duration} and {jitter}."
        )
    counts = np.rint(values * max_spikes).astype(np.int64)  # [N, C]
    n_samples, n_channels = values.shape
    sample = np.repeat(np.repeat(np.arange(n_samples), n_channels), counts.ravel())
    channel = np.repeat(np.tile(np.arange(n_channels), n_samples), counts.ravel())
    n = np.repeat(counts.ravel(), counts.ravel())  # spikes of each event's channel
    start = np.cumsum(counts.ravel()) - counts.ravel()
    k = np.arange(n.size) - np.repeat(start, counts.ravel())  # index within the channel
    u = np.random.default_rng(seed).uniform(-jitter / 2, jitter / 2, n.size)
    times = duration * (k + 0.5 + u) / np.maximum(n, 1)
    return sample, times, channel


def digits(
    seed: int = 0,
    *,
    max_spikes_per_pixel: int = 4,
    duration: float = 20e-3,
    jitter: float = 0.5,
    train_fraction: float = 0.7,
    budget: int | None = None,
) -> tuple[SpikeDataset, SpikeDataset]:
    """The 8x8 digits as spike trains, split ``(train, test)`` 70/30 (stratified, seeded).

    Pixel value ``v`` in 0..16 gives ``round(v / 16 * max_spikes_per_pixel)`` spikes on
    channel ``8 * row + col`` within ``[0, duration]`` s, timed by `encode_intensities`.
    `seed` drives both the jitter and the split.

    Args:
        budget: slots per sample; None: the largest sample (both parts share it).

    Raises:
        ImportError: scikit-learn is missing (``pip install eventsnn[digits]``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "the digits dataset needs scikit-learn: pip install eventsnn[digits]"
        ) from err
    images = load_digits()
    pixels = np.asarray(images.data, dtype=np.float64) / DIGITS_MAX_VALUE  # [1797, 64]
    sample, times, channels = encode_intensities(
        pixels, max_spikes=max_spikes_per_pixel, duration=duration, jitter=jitter, seed=seed
    )
    data = from_events(
        sample,
        times,
        channels,
        images.target,
        budget=budget,
        n_channels=pixels.shape[1],
        n_classes=10,
        duration=duration,
        name="digits",
    )
    return data.split(train_fraction, seed)
