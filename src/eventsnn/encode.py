"""Encoders (values or spike times to inputs) and decoders (outputs to readouts)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .network import Spikes


def latency_encode(values, t_early: float, t_late: float, bias_time: float | None = None):
    """Time-to-first-spike code: value 0 spikes at ``t_early``, 1 at ``t_late`` (s).

    Args:
        values: ``[..., c]`` in [0, 1].
        bias_time: if given, one extra channel spikes at this time in every sample.

    Returns:
        `Spikes` of shape ``[..., c (+1)]``, channel ``j`` at index ``j``.
    """
    values = jnp.asarray(values)
    times = t_early + (t_late - t_early) * values
    if bias_time is not None:
        times = jnp.concatenate(
            [times, jnp.full(times.shape[:-1] + (1,), bias_time, times.dtype)], -1
        )
    indices = jnp.broadcast_to(jnp.arange(times.shape[-1], dtype=jnp.int32), times.shape)
    return Spikes(times, indices, dtype=times.dtype)


def jitter_times(key, spikes: Spikes, std: float) -> Spikes:
    """Training augmentation: every real spike time moved by Gaussian noise of standard
    deviation `std` (s), kept >= 0; padding (time ``inf``) stays padding. The result is not
    sorted (`simulate` sorts its inputs). Shapes as `spikes`."""
    noise = std * jax.random.normal(key, spikes.times.shape, spikes.times.dtype)
    times = jnp.where(jnp.isfinite(spikes.times), jnp.maximum(spikes.times + noise, 0.0), jnp.inf)
    return Spikes(times, spikes.indices, dtype=times.dtype)


def drop_spikes(key, spikes: Spikes, rate: float) -> Spikes:
    """Training augmentation: every real spike deleted (made padding, time ``inf``) with
    probability `rate`, independently. Shapes as `spikes`."""
    keep = jax.random.bernoulli(key, 1.0 - rate, spikes.times.shape)
    times = jnp.where(keep, spikes.times, jnp.inf)
    return Spikes(times, spikes.indices, dtype=times.dtype)


def rate_encode(key, values, n_steps: int, max_prob: float = 0.5):
    """Bernoulli rate code: ``[..., c]`` values in [0, 1] to ``[..., n_steps, c]`` spike counts
    with per-step probability ``value * max_prob``."""
    values = jnp.asarray(values)
    p = jnp.clip(values, 0.0, 1.0) * max_prob
    shape = values.shape[:-1] + (n_steps,) + values.shape[-1:]
    return jax.random.bernoulli(key, p[..., None, :], shape).astype(values.dtype)


def spikes_to_train(spikes: Spikes, n_channels: int, dt: float, n_steps: int, delay: float = 0.0):
    """Spike record to a dense train ``[..., n_steps, n_channels]`` of spike counts per step.

    A spike at time ``t`` (plus ``delay``) lands in step ``floor((t + delay)/dt)``; spikes
    at or beyond ``n_steps * dt`` and padding are dropped.
    """
    step = jnp.floor((spikes.times + delay) / dt)
    real = jnp.isfinite(step) & (step >= 0) & (step < n_steps) & (spikes.indices >= 0)
    step = jnp.where(real, step, 0).astype(jnp.int32)
    flat = step * n_channels + jnp.where(real, spikes.indices, 0)  # [..., k]
    lead, k = spikes.times.shape[:-1], spikes.times.shape[-1]
    # A scatter-add per record: work and memory in spikes plus the train's size (a one-hot
    # per spike was k times the train: gigabytes for SHD-sized inputs).
    counts = real.astype(spikes.times.dtype).reshape(-1, k)
    train = jax.vmap(
        lambda f, c: jnp.zeros(n_steps * n_channels, spikes.times.dtype).at[f].add(c)
    )(flat.reshape(-1, k), counts)
    return train.reshape(lead + (n_steps, n_channels))


def first_spike_time(train: Float[Array, "... T n"], dt: float) -> Float[Array, "... n"]:
    """Time (s) of the end of the first step with a spike per neuron; +inf if silent."""
    fired = train > 0
    first = jnp.argmax(fired, axis=-2)
    return jnp.where(jnp.any(fired, axis=-2), (first + 1) * dt, jnp.inf)


def spike_count(train: Float[Array, "... T n"]) -> Float[Array, "... n"]:
    """Spikes per neuron (differentiable through surrogate spikes)."""
    return jnp.sum(train, axis=-2)


def max_voltage(trace: Float[Array, "... T n"]) -> Float[Array, "... n"]:
    """Maximum of a voltage trace over time (the usual LI readout)."""
    return jnp.max(trace, axis=-2)
