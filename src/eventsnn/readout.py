"""A non-spiking leaky-integrator readout in the event engine: exact voltage at any time.

Each readout neuron ``j`` follows the model of the spiking layers without a threshold,
``tau_syn dI/dt = -I``, ``tau_mem dV/dt = -V + I``, ``V(0) = I(0) = 0``; a spike of source
``i`` at time ``s`` (plus the readout's delay) adds ``W[i, j]`` to ``I``. By superposition
``V(t) = sum_b W[i_b, j] k(t - s_b)`` over the arrivals before ``t``, with the PSP kernel
``k`` of `eventsnn.neuron.kernel`: the voltage is exact at any time and smooth in the weights,
time constants and spike times.

What the classification losses read (Nowotny et al. 2022, "Loss shaping enhances exact
gradient learning with EventProp"):

- `peak`: each neuron's maximum of ``V`` over ``[0, t_max]``. Between arrivals ``V`` has at
  most one extremum (closed form), so the maximum is at an arrival, at an interior extremum
  or at ``t_max``. Its gradient is exact: at an interior maximum ``dV/dt = 0`` and its time
  carries no gradient (in adjoint terms the loss enters ``lambda_V`` as a jump at that time);
  at an arrival (a kink) it moves with that arrival.
- `integral`: ``int_0^t_max V dt = sum_b W[i_b, j] K(t_max - s_b)`` with
  ``K(D) = int_0^D k = tau_syn (1 - exp(-D/tau_syn)) - tau_mem k(D)`` (from the PSP's own
  ODE), exact for every ratio of the time constants.
- `trace`: ``V`` at given times (plots, checks).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._validate import check_values
from .event.order import time_order
from .network import Spikes
from .neuron import extremum_time, kernel, propagate


class LIReadout(eqx.Module):
    """Leaky-integrator readout neurons (CuBa, no threshold, no reset).

    Attributes:
        weights: ``[n_in, n]`` jump of ``I`` per input spike, row = source.
        tau_mem, tau_syn: ``[n]`` time constants (s), > 0; any ratio, equality included.
        delay: synaptic delay (s) of every connection into the readout (static).
    """

    weights: Float[Array, "n_in n"]
    tau_mem: Float[Array, " n"]
    tau_syn: Float[Array, " n"]
    delay: float = eqx.field(static=True, default=0.0)

    def __init__(self, weights, *, tau_mem, tau_syn, delay: float = 0.0, dtype=None):
        weights = jnp.asarray(weights, dtype=dtype)
        if weights.ndim != 2:
            raise ValueError(
                f"LIReadout weights must be 2-D [inputs, size], got shape {weights.shape}."
            )
        n = weights.shape[1]
        for name, value in (("tau_mem", tau_mem), ("tau_syn", tau_syn)):
            arr = jnp.asarray(value, dtype=weights.dtype)
            if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
                raise ValueError(
                    f"LIReadout.{name} must be a scalar or have shape ({n},), got "
                    f"{tuple(arr.shape)}."
                )
            check_values(f"LIReadout.{name}", arr, arr > 0, "must be > 0 seconds")
            setattr(self, name, jnp.broadcast_to(arr, (n,)))
        check_values("LIReadout.weights", weights, jnp.isfinite(weights), "must be finite")
        if not (isinstance(delay, (int, float)) and delay >= 0):
            raise ValueError(f"LIReadout.delay must be a number of seconds >= 0, got {delay!r}.")
        self.weights = weights
        self.delay = float(delay)

    @property
    def size(self) -> int:
        return self.weights.shape[1]


def _arrivals(readout: LIReadout, spikes: Spikes, presorted: bool):
    """Arrival times ``[K]`` (sorted, inf padded) and their jumps ``[K, n]``.

    Padding is an inf time or an index -1 (whatever its time); it sorts last, where the
    per-arrival scan of `peak` expects it. `presorted`: the record is in that order."""
    t, idx = spikes.times, spikes.indices
    real = jnp.isfinite(t) & (idx >= 0)
    t = jnp.where(real, t, jnp.inf)
    if not presorted:
        order = time_order(t)
        t, idx, real = t[order], idx[order], real[order]
    jumps = jnp.where(real[:, None], readout.weights[jnp.where(real, idx, 0)], 0.0)
    return jnp.where(real, t + readout.delay, jnp.inf), jumps


def _psp_sum(readout: LIReadout, arr_t, jumps, at, smooth: bool = True):
    """``V`` at times ``at [n]`` (one per neuron): ``sum_b jumps[b] k(at - s_b)`` over the
    arrivals before ``at``. Differentiable in everything."""
    lag = at[None, :] - arr_t[:, None]  # [K, n]
    before = lag > 0
    k = kernel(jnp.where(before, lag, 1.0), readout.tau_mem, readout.tau_syn, smooth)
    return jnp.sum(jnp.where(before, jumps * k, 0.0), axis=0)


def trace(readout: LIReadout, spikes: Spikes, times, *, presorted: bool = False):
    """``V`` ``[len(times), n]`` of one sample's readout at the given times (s)."""
    arr_t, jumps = _arrivals(readout, spikes, presorted)
    times = jnp.asarray(times, arr_t.dtype)
    return jax.vmap(lambda t: _psp_sum(readout, arr_t, jumps, jnp.full(readout.size, t)))(times)


def _states_at_arrivals(readout: LIReadout, arr_t, jumps):
    """``V`` just before and ``I`` just after each arrival, ``[B, K, n]`` each, from
    arrivals ``[B, K]`` (sorted, inf padded) with jumps ``[B, K, n]``: one step per arrival,
    only as far as the batch's real arrivals go (a record is padded to its budget)."""
    tm, ts = readout.tau_mem, readout.tau_syn
    real = jnp.isfinite(arr_t)
    gap = jnp.diff(jnp.where(real, arr_t, 0.0), prepend=jnp.zeros_like(arr_t[:, :1]), axis=1)
    gap = jnp.where(real, gap, 0.0)[..., None]

    def arrive(k, state):
        u, i, u_at, i_after = state
        u, i = propagate(u, i, gap[:, k], tm, ts)
        i = i + jumps[:, k]
        return u, i, u_at.at[:, k].set(u), i_after.at[:, k].set(i)

    zero = jnp.zeros((arr_t.shape[0], readout.size), arr_t.dtype)
    table = jnp.zeros(jumps.shape, arr_t.dtype)
    n_real = jnp.max(jnp.sum(real, axis=1, dtype=jnp.int32))
    *_, u_at, i_after = jax.lax.fori_loop(0, n_real, arrive, (zero, zero, table, table))
    return u_at, i_after


def _best(readout: LIReadout, arr_t, u_at, i_after, t_max):
    """One sample: the time of each neuron's maximum of ``V`` over ``[0, t_max]`` and the
    index of the arrival it sits on (-1: an interior extremum, ``t_max`` or 0)."""
    tm, ts = readout.tau_mem, readout.tau_syn
    inside = arr_t <= t_max
    # Pieces: from each arrival to the next one (the last: to t_max).
    nxt = jnp.append(arr_t[1:], jnp.inf)
    piece_end = jnp.minimum(nxt, t_max)[:, None]
    span = jnp.where(inside[:, None], piece_end - jnp.where(inside, arr_t, 0.0)[:, None], 0.0)
    t_e = extremum_time(u_at, i_after, tm, ts)
    interior = inside[:, None] & (t_e > 0) & (t_e < span)
    u_e = propagate(u_at, i_after, jnp.where(interior, t_e, 0.0), tm, ts)[0]
    # The state at t_max: from the last arrival inside.
    any_inside = jnp.any(inside)
    last = jnp.maximum(jnp.sum(inside) - 1, 0)
    since = t_max - jnp.where(any_inside, arr_t[last], 0.0)
    u_end = jnp.where(any_inside, propagate(u_at[last], i_after[last], since, tm, ts)[0], 0.0)
    # Candidates: every arrival, every interior extremum, t_max (and V(0) = 0 at t = 0).
    at_arrival = jnp.where(inside[:, None], u_at, -jnp.inf)
    at_extremum = jnp.where(interior, u_e, -jnp.inf)
    best_arrival = jnp.argmax(at_arrival, axis=0)
    best_extremum = jnp.argmax(at_extremum, axis=0)
    cols = jnp.arange(readout.size)
    v_arr = at_arrival[best_arrival, cols]
    v_ext = at_extremum[best_extremum, cols]
    t_ext = arr_t[best_extremum] + t_e[best_extremum, cols]
    zero = jnp.zeros_like(u_end)
    values = jnp.stack([zero, u_end, v_arr, v_ext])
    times = jnp.stack([zero, jnp.full_like(u_end, t_max), arr_t[best_arrival], t_ext])
    kind = jnp.argmax(values, axis=0)
    return times[kind, cols], jnp.where(kind == 2, best_arrival, -1)


def peak(readout: LIReadout, spikes: Spikes, t_max, *, presorted: bool = False, smooth=True):
    """Each readout neuron's maximum of ``V`` over ``[0, t_max]`` and its time (s):
    ``(value [..., n], time [..., n])`` for spikes ``[..., k]`` (one sample or a batch).
    ``presorted``: each record is sorted by time with its padding last (as the simulators
    write them), which saves a sort. The value is differentiable (exactly, see the module
    docstring); the time is not.
    ``smooth=False``: the plain PSP kernel (time constants at least 10% apart,
    `eventsnn.neuron.plain_kernel_ok`) in the differentiated sum, several times cheaper."""
    lead = spikes.times.shape[:-1]
    if spikes.capacity == 0:  # no input: V stays at rest, its maximum 0 at time 0
        zero = jnp.zeros((*lead, readout.size), spikes.times.dtype)
        return zero, zero
    flat = Spikes(
        spikes.times.reshape(-1, spikes.capacity), spikes.indices.reshape(-1, spikes.capacity)
    )
    arr_t, jumps = jax.vmap(lambda s: _arrivals(readout, s, presorted))(flat)
    fixed = jax.lax.stop_gradient((arr_t, jumps, readout))
    u_at, i_after = _states_at_arrivals(fixed[2], fixed[0], fixed[1])
    t_star, on_arrival = jax.vmap(lambda *a: _best(fixed[2], *a, t_max))(fixed[0], u_at, i_after)

    # At a kink the maximum moves with the arrival it sits on; elsewhere its time is fixed.
    def value(arr_t, jumps, t_star, on_arrival):
        t_eval = jnp.where(on_arrival >= 0, arr_t[jnp.maximum(on_arrival, 0)], t_star)
        return _psp_sum(readout, arr_t, jumps, t_eval, smooth)

    v = jax.vmap(value)(arr_t, jumps, t_star, on_arrival)
    return v.reshape(*lead, readout.size), t_star.reshape(*lead, readout.size)


def integral(readout: LIReadout, spikes: Spikes, t_max, *, smooth: bool = True):
    """``int_0^t_max V dt`` ``[n]`` (V s) of one sample's readout, differentiable
    (``smooth=False``: the plain PSP kernel, as in `peak`)."""
    arr_t, jumps = _arrivals(readout, spikes, presorted=True)
    tm, ts = readout.tau_mem, readout.tau_syn
    span = t_max - arr_t[:, None]
    inside = span > 0
    d = jnp.where(inside, span, 1.0)
    area = ts * -jnp.expm1(-d / ts) - tm * kernel(d, tm, ts, smooth)
    return jnp.sum(jnp.where(inside, jumps * area, 0.0), axis=0)
