"""One container for every spike-train dataset: padded spike records, labels, splits, batches.

A sample is a list of input spikes ``(time (s), channel)`` and an integer label. A dataset
stores ``N`` samples as two ``[N, budget]`` arrays, each row sorted by time and padded at
the end (time ``+inf``, channel ``-1``), the layout of `eventsnn.Spikes`. The budget is
the same for every sample so that a batch is a plain array; it is never smaller than the
largest sample: spikes are never dropped.

Training with `eventsnn.train.fit`::

    train, test = digits(seed=0)
    train = train.to_device()                         # once: jnp arrays on the device
    train_data = (train.spikes(), train.labels)      # pytrees with a leading sample axis

or by hand inside a jitted loop: ``data = train.to_device()`` once, then
``data.batch(idx)`` for each row ``idx`` of ``data.batch_indices(key, batch_size)``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._validate import check_shape, check_values, is_concrete
from ..network import Spikes


class SpikeDataset(eqx.Module):
    """Labelled spike trains padded to a common budget (an immutable pytree).

    Attributes:
        times: ``[N, budget]`` float32 spike times (s), ascending within each row,
            ``+inf`` padding after the last spike.
        channels: ``[N, budget]`` int32 input channel of each spike, ``-1`` padding.
        labels: ``[N]`` int32 class of each sample, in ``[0, n_classes)``.
        n_channels: number of input channels (static).
        n_classes: number of classes (static).
        duration: every spike lies in ``[0, duration]`` (s): the window to simulate (static).
        name: printed name; synthetic data says so in its name (static).
        synthetic: True for generated data that only serves timing (static).

    The arrays are numpy (host) after construction; `to_device` puts them on a JAX
    device. Construction checks shapes, dtypes and (for concrete arrays) values: times
    ``>= 0``, ``<= duration`` and sorted, padding only at the end, channels and labels in
    range. Rows of a dataset are independent, so `jax.tree.map` over the three arrays
    (as `subset` and `batch` do) keeps every invariant.
    """

    times: Float[Array, "n budget"]
    channels: Int[Array, "n budget"]
    labels: Int[Array, " n"]
    n_channels: int = eqx.field(static=True)
    n_classes: int = eqx.field(static=True)
    duration: float = eqx.field(static=True)
    name: str = eqx.field(static=True)
    synthetic: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.times.ndim != 2:
            raise ValueError(f"times must be [N, budget], got shape {tuple(self.times.shape)}.")
        n = self.times.shape[0]
        check_shape("channels", self.channels, self.times.shape, "(the shape of times)")
        check_shape("labels", self.labels, (n,), "(one label per sample)")
        for field, kind in (("times", "floating"), ("channels", "integer"), ("labels", "integer")):
            dtype = getattr(self, field).dtype
            if not np.issubdtype(dtype, np.floating if kind == "floating" else np.integer):
                raise TypeError(f"{field} must have a {kind} dtype, got {dtype}.")
        if self.n_channels < 1 or self.n_classes < 1 or not self.duration > 0:
            raise ValueError(
                f"n_channels and n_classes must be >= 1 and duration > 0 s, got "
                f"{self.n_channels}, {self.n_classes} and {self.duration}."
            )
        if all(is_concrete(x) for x in (self.times, self.channels, self.labels)):
            self._check_values()

    def _check_values(self):
        t, c = np.asarray(self.times), np.asarray(self.channels)
        real = np.isfinite(t)
        check_values("times", t, ~np.isnan(t) & (t >= 0), "must be >= 0 s (padding +inf)")
        check_values("times", t, ~real | (t <= self.duration), f"must be <= {self.duration} s")
        check_values("times", t[:, 1:], t[:, 1:] >= t[:, :-1], "must be ascending in each row")
        check_values("channels", c, real == (c >= 0), "must be -1 exactly where times is +inf")
        check_values("channels", c, c < self.n_channels, f"must be < {self.n_channels}")
        lab = np.asarray(self.labels)
        check_values("labels", lab, (lab >= 0) & (lab < self.n_classes), "out of range")

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def budget(self) -> int:
        """Spike slots per sample (the padded width)."""
        return self.times.shape[1]

    @property
    def spikes_per_sample(self) -> Int[Array, " n"]:
        """Number of real (finite-time) spikes in each sample."""
        xp = np if isinstance(self.times, np.ndarray) else jnp
        return xp.isfinite(self.times).sum(axis=1)

    @property
    def max_spikes(self) -> int:
        """Spikes of the largest sample: the smallest budget `with_budget` accepts."""
        return int(np.max(self.spikes_per_sample, initial=0))

    def spikes(self, dtype=None) -> Spikes:
        """The inputs as an `eventsnn.Spikes` record ``[N, budget]`` (float32 times unless
        `dtype` asks for another)."""
        return Spikes(self.times, self.channels, dtype=dtype)

    def subset(self, indices) -> SpikeDataset:
        """The samples at `indices` (an int array or a boolean mask), same budget."""
        return jax.tree.map(lambda x: x[indices], self)

    def batch(self, indices) -> tuple[Spikes, Int[Array, " b"]]:
        """``(Spikes [b, budget], labels [b])`` at `indices`; traceable, for use in jit."""
        part = self.subset(indices)
        return part.spikes(), part.labels

    def batch_indices(self, key, batch_size: int) -> Int[Array, "n_batches batch_size"]:
        """A random permutation of the samples cut into ``len // batch_size`` batches of
        `batch_size` indices (the remainder of the permutation is dropped)."""
        n_batches = len(self) // batch_size
        if n_batches == 0:
            raise ValueError(f"batch_size {batch_size} exceeds the {len(self)} samples.")
        order = jax.random.permutation(key, len(self))
        return order[: n_batches * batch_size].reshape(n_batches, batch_size)

    def to_device(self, device=None) -> SpikeDataset:
        """The same dataset with its arrays on a JAX device (the default one if None)."""
        return jax.tree.map(lambda x: jax.device_put(x, device), self)

    def with_budget(self, budget: int) -> SpikeDataset:
        """The same spikes padded (or unpadded) to `budget` slots per sample.

        Raises:
            ValueError: a sample has more spikes than `budget` (nothing is ever cut).
        """
        if budget < self.max_spikes:
            raise ValueError(
                f"budget {budget} is too small for {self.name}: a sample has "
                f"{self.max_spikes} spikes; use a budget of at least {self.max_spikes}."
            )
        xp = np if isinstance(self.times, np.ndarray) else jnp
        keep = min(budget, self.budget)
        pad = ((0, 0), (0, budget - keep))
        times = xp.pad(self.times[:, :keep], pad, constant_values=np.inf)
        channels = xp.pad(self.channels[:, :keep], pad, constant_values=-1)
        return eqx.tree_at(lambda d: (d.times, d.channels), self, (times, channels))

    def split(self, fraction: float, seed: int) -> tuple[SpikeDataset, SpikeDataset]:
        """Two disjoint parts, `fraction` of the samples in the first, stratified by label.

        Each class gives ``fraction`` of its samples to the first part, rounded so that the
        first part has ``round(fraction * N)`` samples in all (largest remainders). Which
        samples go where is a seeded permutation within each class; both parts keep the
        original order of their samples.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}.")
        labels = np.asarray(self.labels)
        classes, counts = np.unique(labels, return_counts=True)
        share = fraction * counts
        take = np.floor(share).astype(int)
        extra = int(round(fraction * len(self))) - take.sum()
        take[np.argsort(-(share - take), kind="stable")[:extra]] += 1
        rng = np.random.default_rng(seed)
        first = np.zeros(len(self), dtype=bool)
        for cls, k in zip(classes, take):  # one pass per class, not per sample
            members = np.flatnonzero(labels == cls)
            first[rng.permutation(members)[:k]] = True
        if first.all() or not first.any():
            raise ValueError(f"fraction {fraction} of {len(self)} samples leaves a part empty.")
        return self.subset(np.flatnonzero(first)), self.subset(np.flatnonzero(~first))

    def summary(self) -> str:
        """One line: name (with ``[synthetic]`` unless the name says so), sizes, spikes per
        sample, budget."""
        counts = np.asarray(self.spikes_per_sample)
        mean = float(counts.mean()) if counts.size else 0.0
        tag = " [synthetic]" if self.synthetic and "synthetic" not in self.name else ""
        return (
            f"{self.name}{tag}: {len(self)} samples, {self.n_channels} channels, "
            f"{self.n_classes} classes, {self.duration:g} s, spikes per sample mean "
            f"{mean:.0f} max {self.max_spikes}, budget {self.budget}"
        )


def from_events(
    sample, times, channels, labels, *, budget: int | None = None, **meta
) -> SpikeDataset:
    """Build a `SpikeDataset` from flat event arrays (vectorised, no loop over samples).

    Args:
        sample: ``[E]`` int, the sample each event belongs to, in ``[0, N)``.
        times: ``[E]`` spike times (s); stored as float32, then sorted per sample (ties by
            channel).
        channels: ``[E]`` int channel of each event.
        labels: ``[N]`` int, one per sample (``N = len(labels)``).
        budget: slots per sample; None: the largest sample's count (at least 1).
        **meta: ``n_channels``, ``n_classes``, ``duration``, ``name``, ``synthetic``.

    Raises:
        ValueError: a sample has more than `budget` events.
    """
    labels = np.asarray(labels, dtype=np.int32)
    n = labels.shape[0]
    sample = np.asarray(sample, dtype=np.int64)
    times = np.asarray(times, dtype=np.float32)
    channels = np.asarray(channels, dtype=np.int32)
    if not sample.shape == times.shape == channels.shape or sample.ndim != 1:
        raise ValueError(
            f"sample, times and channels must be 1-D of one length, got shapes "
            f"{sample.shape}, {times.shape} and {channels.shape}."
        )
    check_values("sample", sample, (sample >= 0) & (sample < n), f"must be in [0, {n})")
    order = np.lexsort((channels, times, sample))  # by sample, then time, then channel
    sample, times, channels = sample[order], times[order], channels[order]
    counts = np.bincount(sample, minlength=n)
    largest = int(counts.max(initial=0))
    budget = max(largest, 1) if budget is None else budget
    if budget < largest:
        raise ValueError(f"budget {budget} is too small: a sample has {largest} spikes.")
    slot = np.arange(sample.size) - (np.cumsum(counts) - counts)[sample]
    padded_t = np.full((n, budget), np.inf, dtype=np.float32)
    padded_c = np.full((n, budget), -1, dtype=np.int32)
    padded_t[sample, slot] = times
    padded_c[sample, slot] = channels
    return SpikeDataset(padded_t, padded_c, labels, **meta)


def from_ragged(times, channels, labels, *, budget: int | None = None, **meta) -> SpikeDataset:
    """Build a `SpikeDataset` from per-sample sequences ``times[i]``, ``channels[i]``
    (e.g. the variable-length rows of an HDF5 file); see `from_events`."""
    lengths = np.array([len(t) for t in times], dtype=np.int64)
    if lengths.tolist() != [len(c) for c in channels]:
        raise ValueError("times[i] and channels[i] must have the same length for every i.")
    sample = np.repeat(np.arange(len(lengths)), lengths)
    flat_t = np.concatenate([np.asarray(t, np.float32).ravel() for t in times] or [[]])
    flat_c = np.concatenate([np.asarray(c).ravel().astype(np.int32) for c in channels] or [[]])
    return from_events(sample, flat_t, flat_c, labels, budget=budget, **meta)
