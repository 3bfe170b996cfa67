"""The parallel time-to-first-spike path for feed-forward single-spike layers.

When every neuron of a layer spikes at most once and nothing feeds back, its spike is the
first threshold crossing under its inputs alone, and the event loop is unnecessary. With
the arrivals sorted, ``t_1 <= ... <= t_K``, the state just after the k-th arrival follows
from the (k-1)-th by the affine map ``x -> Phi(t_k - t_(k-1)) x + (0, w_k)``: one scan
over the K arrivals, each step a vector operation over all neurons (and, under vmap, the
batch), with no threshold tests or branches in it. A closed-form test (`crosses`: no root
finding) then marks every interval ``[t_k, t_(k+1))`` on which each neuron reaches
threshold; the first marked interval holds the spike, and only that crossing is solved,
for all neurons at once. O(K n) work. Differentiable by autodiff: the crossing carries its
implicit-function derivative, so gradients are exact (the same as the analytic method's).

(An associative scan of the maps gives the same states in log K depth, but on CPU, for the
K <= a few hundred arrivals of a layer, the plain scan is faster. With it, solving only the
first crossing interval instead of all K + 1, and ordering by pairwise ranks, forward+
gradient became 1.6-1.8x faster.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..network import Layer, Spikes
from ..neuron import extremum_time, kernel, propagate
from .order import time_order
from .spike_time import SLOPE_FLOOR, first_crossing
from .step import Arrivals


def _interval_states(weights, params, times, sources, t_max, smooth: bool):
    """State ``(u, I)`` ``[K+1, n]`` at the start of every interval between sorted arrivals
    (interval 0 starts at time 0, at rest), the start times ``[K+1, 1]``, the lengths
    ``[K+1, n]`` (cut at `t_max`; -1 where the interval does not exist) and which exist."""
    p = params
    real = jnp.isfinite(times) & (times <= t_max)
    src = jnp.where(real, sources, 0)
    jumps = jnp.where(real[:, None], weights[src], 0.0)  # [K, n]
    t_safe = jnp.where(real, times, t_max)
    gap = jnp.diff(t_safe, prepend=jnp.zeros_like(t_safe[:1]))[:, None]  # [K, 1]
    decay_mem, decay_syn = jnp.exp(-gap / p.tau_mem), jnp.exp(-gap / p.tau_syn)
    rise = kernel(gap, p.tau_mem, p.tau_syn, smooth)

    def arrive(state, x):  # advance to the next arrival, then add its jump
        (u, i), (dm, k, ds, w) = state, x
        u, i = u * dm + i * k, i * ds + w
        return (u, i), (u, i)

    zero = jnp.zeros_like(jumps[0])
    _, (u, i) = jax.lax.scan(arrive, (zero, zero), (decay_mem, rise, decay_syn, jumps))

    # Interval k starts at t_k (k = 0: time 0 at rest) and ends at the next arrival.
    u = jnp.concatenate([zero[None], u])
    i = jnp.concatenate([zero[None], i])
    start = jnp.concatenate([jnp.zeros_like(t_safe[:1]), jnp.where(real, times, jnp.inf)])
    end = jnp.concatenate([jnp.where(real, times, jnp.inf), jnp.full_like(t_safe[:1], jnp.inf)])
    open_ = jnp.isfinite(start)[:, None]
    start_safe = jnp.where(open_, start[:, None], 0.0)
    horizon = jnp.where(open_, jnp.minimum(end, t_max)[:, None] - start_safe, -1.0)
    return u, i, start_safe, horizon, open_


def _first_spikes(weights, params, times, sources, t_max, solver, differentiable=True):
    """``[n]`` first spike time of every neuron (inf if none) from sorted arrivals."""
    p = params
    u, i, start_safe, horizon, open_ = _interval_states(
        weights, params, times, sources, t_max, solver.smooth
    )
    # Test every interval, then solve only each neuron's first crossing interval.
    theta = p.v_th - p.v_leak
    crosses = solver.crosses(u, i, theta, p.tau_mem, p.tau_syn, horizon) & open_
    first = jnp.argmax(crosses, axis=0)[None]  # [1, n]

    def at_first(x):
        return jnp.take_along_axis(jnp.broadcast_to(x, crosses.shape), first, 0)[0]

    u, i, horizon, start = at_first(u), at_first(i), at_first(horizon), at_first(start_safe)
    dt = first_crossing(solver, u, i, theta, p.tau_mem, p.tau_syn, horizon, differentiable)
    return jnp.where(jnp.any(crosses, axis=0) & (dt <= horizon), start + dt, jnp.inf)  # [n]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _first_spikes_adjoint(weights, params, times, sources, t_max, solver):
    # Values only: the backward pass below needs nothing of the forward solve.
    return _first_spikes(weights, params, times, sources, t_max, solver, False)


def _adjoint_fwd(weights, params, times, sources, t_max, solver):
    spike = _first_spikes(weights, params, times, sources, t_max, solver, False)
    return spike, (weights, params, times, sources, t_max, spike)


def _adjoint_bwd(solver, residuals, g):
    """EventProp for single-spike neurons. The adjoint jumps at each output spike by
    ``g / V'(t*)`` and, integrated in closed form back to every earlier arrival, yields
    ``dL/dw = -g k(t* - t_a) / V'`` and ``dL/dt_a = g w k'(t* - t_a) / V'``: the gradient of
    the residual ``u(t*) - theta`` at the recorded spike times, scaled by ``-g / V'``. One
    pass over (arrival, neuron) pairs; nothing of the forward solve is differentiated."""
    weights, params, times, sources, t_max, spike = residuals
    real = jnp.isfinite(times) & (times <= t_max)
    src = jnp.where(real, sources, 0)
    fired = jnp.isfinite(spike)
    t_star = jnp.where(fired, spike, 0.0)

    def membrane(weights, params, times, t_star):
        lag = t_star[None, :] - jnp.where(real, times, 0.0)[:, None]  # [K, n]
        active = real[:, None] & fired[None, :] & (lag > 0)
        w = weights[src]
        k = kernel(jnp.where(active, lag, 1.0), params.tau_mem, params.tau_syn, solver.smooth)
        return jnp.sum(jnp.where(active, w * k, 0.0), axis=0) - (params.v_th - params.v_leak)

    _, vjp = jax.vjp(membrane, weights, params, times, t_star)
    _, slope = jax.jvp(
        lambda t: membrane(weights, params, times, t), (t_star,), (jnp.ones_like(t_star),)
    )
    theta = params.v_th - params.v_leak
    floor = SLOPE_FLOOR * jnp.maximum(jnp.abs(theta), 1.0) / params.tau_mem
    moving = fired & (theta > 0)  # a neuron above threshold at rest fires at 0, fixed
    cot = jnp.where(moving, -g / jnp.maximum(slope, floor), 0.0)
    d_weights, d_params, d_times, _ = vjp(cot)
    return d_weights, d_params, d_times, None, None


_first_spikes_adjoint.defvjp(_adjoint_fwd, _adjoint_bwd)


def peak_potential(layer: Layer, arrivals: Arrivals, t_max, smooth: bool = True):
    """``[n]`` highest ``u = V - v_leak`` each neuron of a feed-forward layer reaches within
    ``[0, t_max]`` under its inputs alone (as if it never spiked): on every interval, the
    larger of its ends and its extremum. Differentiable by autodiff; an interior maximum's
    location carries no gradient (du/dt = 0 there), an interval end's does (it is the next
    arrival's time). `smooth`: the PSP kernel's form (`SpikeTimeSolver.smooth`)."""
    p = layer.params
    u, i, _, horizon, open_ = _interval_states(
        layer.weights, p, arrivals.times, arrivals.sources, t_max, smooth
    )
    length = jnp.maximum(horizon, 0.0)
    t_e = jax.lax.stop_gradient(jnp.clip(extremum_time(u, i, p.tau_mem, p.tau_syn), 0.0, length))
    # Interior extrema only: one clipped to an end would tie with that end and halve the
    # gradient the end carries through its time.
    interior = (t_e > 0) & (t_e < length)
    at_extremum = jnp.where(
        interior, propagate(u, i, t_e, p.tau_mem, p.tau_syn, smooth)[0], -jnp.inf
    )
    at_end = propagate(u, i, length, p.tau_mem, p.tau_syn, smooth)[0]
    peak = jnp.maximum(jnp.maximum(u, at_extremum), at_end)
    return jnp.max(jnp.where(open_, peak, -jnp.inf), axis=0)


def ttfs_layer(layer: Layer, arrivals: Arrivals, t_max, max_spikes: int, solver, adjoint=False):
    """First (and only) spike of every neuron of a feed-forward single-spike layer.

    With `adjoint`, gradients come from the EventProp backward pass above (a custom VJP);
    otherwise from autodiff through the parallel forward pass. Both are exact and agree.
    Returns ``(Spikes [max_spikes], count, overflow)`` like the event loop.
    """
    first = _first_spikes_adjoint if adjoint else _first_spikes
    spike = first(layer.weights, layer.params, arrivals.times, arrivals.sources, t_max, solver)

    order = time_order(spike)[:max_spikes]  # ties by index
    fired = jnp.isfinite(spike[order])
    n_fired = jnp.sum(jnp.isfinite(spike)).astype(jnp.int32)
    pad = max_spikes - order.shape[0]
    out_t = jnp.pad(jnp.where(fired, spike[order], jnp.inf), (0, pad), constant_values=jnp.inf)
    out_i = jnp.pad(jnp.where(fired, order, -1).astype(jnp.int32), (0, pad), constant_values=-1)
    return (
        Spikes(out_t, out_i, dtype=out_t.dtype),
        jnp.minimum(n_fired, max_spikes),
        n_fired > max_spikes,
    )
