"""The parallel time-to-first-spike path for feed-forward single-spike layers.

When every neuron of a layer spikes at most once and nothing feeds back, its spike is the
first threshold crossing under its inputs alone, and the event loop is unnecessary. With
the arrivals sorted, ``t_1 <= ... <= t_K``, the state just after the k-th arrival follows
from the (k-1)-th by the affine map ``x -> Phi(t_k - t_(k-1)) x + (0, w_k)``; all K
states come from one associative scan of these maps (parallel, no growing exponentials).
The crossing on each interval ``[t_k, t_(k+1))`` is then solved for every k and every
neuron at once, and the earliest one is the spike. O(K n) work, no sequential loop over
events. Differentiable by autodiff: each crossing carries its implicit-function
derivative, so gradients are exact (the same as the analytic method's).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..network import Layer, Spikes
from ..neuron import kernel
from .spike_time import SLOPE_FLOOR, first_crossing
from .step import Arrivals


def _compose(first, second):
    """The affine map ``second o first`` on ``(u, I)``; Phi = [[a, c], [0, d]], offset b."""
    a1, c1, d1, bu1, bi1 = first
    a2, c2, d2, bu2, bi2 = second
    return (a2 * a1, a2 * c1 + c2 * d1, d2 * d1, a2 * bu1 + c2 * bi1 + bu2, d2 * bi1 + bi2)


def _first_spikes(weights, params, times, sources, t_max, solver, differentiable=True):
    """``[n]`` first spike time of every neuron (inf if none) from sorted arrivals."""
    p = params
    real = jnp.isfinite(times) & (times <= t_max)
    src = jnp.where(real, sources, 0)
    jumps = jnp.where(real[:, None], weights[src], 0.0)  # [K, n]
    t_safe = jnp.where(real, times, t_max)
    gap = jnp.diff(t_safe, prepend=jnp.zeros_like(t_safe[:1]))[:, None]  # [K, 1]
    maps = (
        jnp.exp(-gap / p.tau_mem),
        kernel(gap, p.tau_mem, p.tau_syn),
        jnp.exp(-gap / p.tau_syn),
        jnp.zeros_like(jumps),
        jumps,
    )
    _, _, _, u, i = jax.lax.associative_scan(_compose, maps)  # state just after each arrival

    # Interval k starts at t_k (k = 0: time 0 at rest) and ends at the next arrival.
    zero = jnp.zeros_like(u[:1])
    u = jnp.concatenate([zero, u])
    i = jnp.concatenate([zero, i])
    start = jnp.concatenate([jnp.zeros_like(t_safe[:1]), jnp.where(real, times, jnp.inf)])
    end = jnp.concatenate([jnp.where(real, times, jnp.inf), jnp.full_like(t_safe[:1], jnp.inf)])
    open_ = jnp.isfinite(start)[:, None]
    start_safe = jnp.where(open_, start[:, None], 0.0)
    horizon = jnp.where(open_, jnp.minimum(end, t_max)[:, None] - start_safe, -1.0)
    dt = first_crossing(
        solver, u, i, p.v_th - p.v_leak, p.tau_mem, p.tau_syn, horizon, differentiable
    )
    candidate = jnp.where(open_ & (dt <= horizon), start_safe + dt, jnp.inf)
    return jnp.min(candidate, axis=0)  # [n]


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
        k = kernel(jnp.where(active, lag, 1.0), params.tau_mem, params.tau_syn)
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


def ttfs_layer(layer: Layer, arrivals: Arrivals, t_max, max_spikes: int, solver, adjoint=False):
    """First (and only) spike of every neuron of a feed-forward single-spike layer.

    With `adjoint`, gradients come from the EventProp backward pass above (a custom VJP);
    otherwise from autodiff through the parallel forward pass. Both are exact and agree.
    Returns ``(Spikes [max_spikes], count, overflow)`` like the event loop.
    """
    first = _first_spikes_adjoint if adjoint else _first_spikes
    spike = first(layer.weights, layer.params, arrivals.times, arrivals.sources, t_max, solver)

    order = jnp.argsort(spike)[:max_spikes]  # ties by index (stable)
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
