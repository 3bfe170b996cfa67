"""Losses on spike times."""

from __future__ import annotations

import jax
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


def first_spike_cross_entropy(first_times, labels, *, t_max: float, tau: float):
    """Cross-entropy over logits ``-t/tau`` of the output neurons' first spike times.

    Silent neurons count as spiking at ``t_max`` (their logit is constant, so a silent
    label neuron still pulls the others later). Mean over the batch.
    Args: first_times ``[batch, classes]`` (s, inf where silent), labels ``[batch]`` int.
    """
    t = jnp.where(jnp.isfinite(first_times), first_times, t_max)
    logits = -t / tau
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))


def early_label_regulariser(first_times, labels, *, t_max: float, tau: float):
    """Mean ``exp(t_label/tau) - 1`` (Göltz et al. 2021): rewards an early label spike."""
    t = jnp.where(jnp.isfinite(first_times), first_times, t_max)
    t_label = jnp.take_along_axis(t, labels[:, None], axis=-1)[:, 0]
    return jnp.mean(jnp.expm1(t_label / tau))


def target_time_loss(first_times, target_times, *, t_max: float):
    """Mean squared error (s^2) of first spike times to targets; silent = ``t_max``."""
    t = jnp.where(jnp.isfinite(first_times), first_times, t_max)
    return jnp.mean((t - target_times) ** 2)


def first_spike_prediction(first_times):
    """Class of the earliest output spike, -1 when every output neuron is silent."""
    pred = jnp.argmin(first_times, axis=-1)
    return jnp.where(jnp.isfinite(jnp.min(first_times, axis=-1)), pred, -1)


def voltage_cross_entropy(max_voltage, labels):
    """Cross-entropy with the readout's maximum voltage over time as logits (LI readout)."""
    log_p = jax.nn.log_softmax(max_voltage, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))


def silent_neuron_push(weights, presyn_fired, should_fire):
    """A gradient-only term (its value is 0) whose gradient is that of ``-sum W[i, j]`` over
    inputs ``i`` that fired into neurons ``j`` that stayed silent but should have fired,
    averaged over the batch. It raises exactly those weights, so such a neuron (which gets
    no gradient through a spike time it does not have) starts firing again.

    Args: weights ``[n_in, n]``; presyn_fired ``[batch, n_in]``, should_fire
    ``[batch, n]`` booleans, True where a silent neuron should have spiked (e.g. the label
    neuron, or a hidden neuron silent on the whole batch). Not differentiated.
    """
    pre = jax.lax.stop_gradient(presyn_fired.astype(weights.dtype))
    silent = jax.lax.stop_gradient(should_fire.astype(weights.dtype))
    push = -jnp.mean(jnp.einsum("bi,ij,bj->b", pre, weights, silent))
    return push - jax.lax.stop_gradient(push)


def weighted_spike_counts(spikes: Spikes, n: int, t_max) -> Float[Array, "... n"]:
    """Spikes per neuron, each weighted by the share of the run still ahead of it,
    ``(t_max - t) / t_max``, shape ``[..., n]``.

    A spike count is piecewise constant in every parameter: its exact gradient is zero. This
    count's gradient is exact and not zero: a spike that moves later counts less, and one
    at ``t_max`` counts nothing, so no value jumps when a spike leaves the run. It is
    differentiable through the spike times (hence through EventProp).
    """

    def one(times, indices):
        real = jnp.isfinite(times) & (indices >= 0) & (times <= t_max)
        w = jnp.where(real, (t_max - jnp.where(real, times, 0.0)) / t_max, 0.0)
        idx = jnp.where(real, indices, n)
        return jnp.zeros((n,), w.dtype).at[idx].add(w, mode="drop")

    for _ in range(spikes.times.ndim - 1):
        one = jax.vmap(one)
    return one(spikes.times, spikes.indices)


def spike_count_cross_entropy(spikes: Spikes, labels, *, n_classes: int, t_max, scale=1.0):
    """Cross-entropy with `weighted_spike_counts` of the output neurons (times `scale`) as
    logits: the class whose neuron spikes most, and earliest, wins. Mean over the batch.
    Args: spikes ``[batch, k]`` of the output layer, labels ``[batch]`` int."""
    logits = scale * weighted_spike_counts(spikes, n_classes, t_max)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))


def firing_rate_penalty(spikes: Spikes, n: int, *, t_max, upper, lower=0.0):
    """The loss-shaping regulariser of hidden activity: mean over samples and neurons of
    ``relu(c - upper)^2 + relu(lower - c)^2``, with ``c`` the `weighted_spike_counts`
    (spikes per run). Its exact gradient moves the spikes of too busy neurons later (out of
    the run, eventually) and those of too quiet ones earlier; a neuron that never spikes
    has no spike time to move, and gets no gradient from it."""
    c = weighted_spike_counts(spikes, n, t_max)
    return jnp.mean(jax.nn.relu(c - upper) ** 2 + jax.nn.relu(lower - c) ** 2)
