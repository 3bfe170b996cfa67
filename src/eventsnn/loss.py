"""Losses on spike times."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from .network import Spikes


def linear_spike_time_loss(
    spikes: Spikes, coefficients: Float[Array, " n"], *, first_spike: bool = True
) -> Float[Array, "..."]:
    """``L = sum_j c_j t_j`` over output neurons ``j``.

    With ``first_spike=True`` ``t_j`` is neuron j's first spike time, else every spike of
    neuron j contributes ``c_j t``. Silent neurons (and padding) contribute nothing and get
    no gradient through their time. Reduces over the last axis: shape ``[...]``.
    """
    c = jnp.asarray(coefficients)
    if first_spike:
        t = spikes.first_times(c.shape[0])
        return jnp.sum(jnp.where(jnp.isfinite(t), c * t, 0.0), axis=-1)
    real = jnp.isfinite(spikes.times) & (spikes.indices >= 0)
    weight = c[jnp.where(real, spikes.indices, 0)]
    return jnp.sum(jnp.where(real, weight * jnp.where(real, spikes.times, 0.0), 0.0), axis=-1)
