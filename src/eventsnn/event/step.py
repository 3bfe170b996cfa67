"""One event of a layer: find the next event, integrate to it, apply the discontinuity.

The state of a layer at time ``t`` (after every event at ``t`` has been applied) holds each
neuron's ``V``, ``I`` and the end of its refractory period. A refractory neuron's ``V`` is
``v_reset``; from the end of its refractory period on it follows the closed form again, so
that moment needs no event of its own.

Events, earliest first (at equal times: spikes, then arrivals from the layer's inputs, then
delayed recurrent arrivals; in CuBa-LIF ``V`` is continuous, so the order of simultaneous
events cannot change who spikes):

* a threshold crossing: the neuron spikes, ``V = v_reset`` for ``t_refrac``; with zero delay
  its recurrent row jumps ``I`` at once. Other neurons that cross at exactly the same time
  are marked pending and spike at that same time in the next steps (ties by index), each
  with the derivative of its own crossing (`crossing_times`).
* an input arrival (presynaptic spike + delay): ``I += W[source]``.
* a delayed recurrent arrival (own spike + delay): ``I += W_rec[source]``.

Derivatives at ties: a tie is a kink where the tied events act on each other (a jump of
``I`` at the time of a crossing, a refractory period ending at the tie); the gradient
there is the one-sided derivative of the order above (spikes by index, then arrivals, a
refractory period ending after every other event at its time: right-sided in
``t_refrac``), the same in both methods. Neurons that merely cross together (no jump
between them) are smooth: each time has its own derivative.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..network import Layer
from ..neuron import du_dt, propagate
from .spike_time import SpikeTimeSolver, crossing_derivative, first_crossing


class LayerState(NamedTuple):
    """Carry of the event loop for one layer and one sample (``n`` neurons, ``M`` records).

    Besides time and neuron, each spike record keeps what the EventProp backward pass needs
    and cannot recompute stably: the spiker's ``I`` at the spike (``out_current``), its
    ``I`` when the refractory period ends (``out_current_at_rest_end``, NaN until then) and
    whether it fired at once, without a threshold crossing (``out_at_once``).
    """

    t: Float[Array, ""]
    v: Float[Array, " n"]
    i: Float[Array, " n"]
    refractory_until: Float[Array, " n"]
    pending: Bool[Array, " n"]
    input_ptr: Int[Array, ""]
    recurrent_ptr: Int[Array, ""]
    out_times: Float[Array, " M"]
    out_indices: Int[Array, " M"]
    out_current: Float[Array, " M"]
    out_current_at_rest_end: Float[Array, " M"]
    out_at_once: Bool[Array, " M"]
    last_slot: Int[Array, " n"]
    count: Int[Array, ""]
    overflow: Bool[Array, ""]
    done: Bool[Array, ""]


class Arrivals(NamedTuple):
    """Input spikes of one layer, sorted by arrival time (spike time + delay)."""

    times: Float[Array, " K"]
    sources: Int[Array, " K"]


def initial_state(layer: Layer, max_spikes: int, dtype) -> LayerState:
    n = layer.size
    p = layer.params
    zero = jnp.zeros((), dtype)
    return LayerState(
        t=zero,
        v=p.v_leak.astype(dtype),
        i=jnp.zeros((n,), dtype),
        refractory_until=jnp.full((n,), -jnp.inf, dtype),
        pending=jnp.zeros((n,), bool),
        input_ptr=jnp.zeros((), jnp.int32),
        recurrent_ptr=jnp.zeros((), jnp.int32),
        out_times=jnp.full((max_spikes,), jnp.inf, dtype),
        out_indices=jnp.full((max_spikes,), -1, jnp.int32),
        out_current=jnp.zeros((max_spikes,), dtype),
        out_current_at_rest_end=jnp.full((max_spikes,), jnp.nan, dtype),
        out_at_once=jnp.zeros((max_spikes,), bool),
        last_slot=jnp.full((n,), -1, jnp.int32),
        count=jnp.zeros((), jnp.int32),
        overflow=jnp.zeros((), bool),
        done=jnp.zeros((), bool),
    )


def rest_length(layer: Layer):
    """Refractory period after a spike (s): ``t_refrac``, or forever for single-spike layers."""
    p = layer.params
    return jnp.full_like(p.t_refrac, jnp.inf) if layer.single_spike else p.t_refrac


def _resume_time(s: LayerState, t_new):
    """When each neuron integrates again: the end of its refractory period, clipped to
    ``[s.t, t_new]``. At a tie the end of the period wins, so the derivative in
    ``t_refrac`` at ``t_refrac = 0`` is the right-sided one (as EventProp's)."""
    # A period ending exactly at t_new is still running there (the next interval resumes
    # from it), keeping the derivative right-sided at ties as well.
    ends = jnp.where(s.refractory_until < t_new, s.refractory_until, t_new)
    return jnp.where(s.refractory_until >= s.t, ends, s.t)


def _advance(layer: Layer, s: LayerState, t_new, smooth: bool):
    """``(V, I)`` of every neuron at ``t_new >= s.t`` without events in between, and ``I``
    where a refractory period ends in ``(s.t, t_new]``. `smooth`: the PSP kernel's form."""
    p = layer.params
    start = _resume_time(s, t_new)
    i_start = s.i * jnp.exp(-(start - s.t) / p.tau_syn)
    u, _ = propagate(s.v - p.v_leak, i_start, t_new - start, p.tau_mem, p.tau_syn, smooth)
    # Exact when no time passes; the zero term keeps the derivative in the interval length.
    at_start = s.v + (t_new - start) * du_dt(s.v - p.v_leak, i_start, p.tau_mem)
    v = jnp.where(t_new > start, p.v_leak + u, at_start)
    return v, s.i * jnp.exp(-(t_new - s.t) / p.tau_syn), i_start


def record_rest_ends(s: LayerState, t_new, i_start) -> Float[Array, " M"]:
    """Store ``I`` at the end of refractory periods that end in ``[s.t, t_new]`` (a period
    of length 0 ends right after its spike's jumps)."""
    ended = (s.refractory_until >= s.t) & (s.refractory_until <= t_new) & (s.last_slot >= 0)
    slots = jnp.where(ended, s.last_slot, s.out_times.shape[0])  # out of range: dropped
    return s.out_current_at_rest_end.at[slots].set(i_start, mode="drop")


def crossing_times(layer: Layer, s: LayerState, t_max, solver: SpikeTimeSolver):
    """Absolute time (s) of each neuron's next threshold crossing, +inf if none by t_max.

    Each time carries its own implicit-function derivative, also for a neuron due now
    (pending after a tie, or at threshold by rounding): value ``s.t``, derivative from its
    state now, never the derivative of the spike it tied with.
    """
    p = layer.params
    start = _resume_time(s, jnp.inf)
    # A single-spike neuron that fired rests forever (start = +inf): keep the inf out of
    # the differentiated arithmetic (d/dtau_syn of exp(-inf / tau_syn) is 0 * inf = NaN).
    rests_forever = jnp.isinf(start)
    start = jnp.where(rests_forever, s.t, start)
    i_start = s.i * jnp.exp(-(start - s.t) / p.tau_syn)
    u0, theta = s.v - p.v_leak, p.v_th - p.v_leak
    dt = first_crossing(solver, u0, i_start, theta, p.tau_mem, p.tau_syn, t_max - start)
    # At t = 0 a neuron with v_leak >= v_th fires without a crossing: no derivative.
    tonic_start = (s.t == 0) & (theta <= 0)
    due_now = (s.pending | (u0 >= theta)) & (start == s.t) & ~tonic_start
    t_now = s.t + crossing_derivative(u0, s.i, theta, p.tau_mem)
    return jnp.where(rests_forever, jnp.inf, jnp.where(due_now, t_now, start + dt))


def step(layer: Layer, arrivals: Arrivals, s: LayerState, t_max, solver) -> LayerState:
    """Process the next event; a no-op once `s.done`."""
    n_in, capacity = arrivals.times.shape[0], s.out_times.shape[0]
    delayed_recurrence = layer.recurrent_weights is not None and layer.delay > 0

    crossing = crossing_times(layer, s, t_max, solver)
    spiker = jnp.argmin(crossing).astype(jnp.int32)
    t_spike = crossing[spiker]
    t_input = jnp.where(
        s.input_ptr < n_in, arrivals.times[jnp.minimum(s.input_ptr, n_in - 1)], jnp.inf
    )
    if delayed_recurrence:
        ptr = jnp.minimum(s.recurrent_ptr, capacity - 1)
        t_recur = jnp.where(s.recurrent_ptr < s.count, s.out_times[ptr] + layer.delay, jnp.inf)
    else:
        t_recur = jnp.asarray(jnp.inf, s.t.dtype)

    t_next = jnp.minimum(t_spike, jnp.minimum(t_input, t_recur))
    active = ~s.done & (t_next <= t_max)
    is_spike = active & (t_spike <= t_input) & (t_spike <= t_recur)
    full = is_spike & (s.count >= capacity)
    active = active & ~full
    is_spike = is_spike & ~full
    is_input = active & ~is_spike & (t_input <= t_recur)
    is_recur = active & ~is_spike & ~is_input

    # The event's own time, with its own derivative (at a tie, jnp.minimum would split the
    # derivative between the tied times); s.t where nothing happens: no inf/NaN.
    t_event = jnp.where(is_spike, t_spike, jnp.where(is_input, t_input, t_recur))
    t_safe = jnp.where(active, t_event, s.t)
    v, i, i_start = _advance(layer, s, t_safe, solver.smooth)
    current_at_rest_end = record_rest_ends(s, t_safe, i_start)
    p = layer.params
    # Only the initial state can start at or above threshold (V(0) = v_leak >= v_th): such a
    # spike at t = 0 has no threshold crossing, hence no derivative; simultaneous ones too.
    at_once = (t_safe == 0) & (p.v_leak[spiker] >= p.v_th[spiker])
    i_spike = i[spiker]

    jump = jnp.where(
        is_input, layer.weights[arrivals.sources[jnp.minimum(s.input_ptr, n_in - 1)]], 0.0
    )
    if layer.recurrent_weights is not None:
        if delayed_recurrence:
            src = s.out_indices[jnp.minimum(s.recurrent_ptr, capacity - 1)]
            jump = jump + jnp.where(is_recur, layer.recurrent_weights[src], 0.0)
        else:
            jump = jump + jnp.where(is_spike, layer.recurrent_weights[spiker], 0.0)
    i = i + jump

    fires = is_spike & (jnp.arange(layer.size) == spiker)
    v = jnp.where(fires, p.v_reset, v)
    slot = jnp.minimum(s.count, capacity - 1)
    new = LayerState(
        t=t_safe,
        v=v,
        i=i,
        refractory_until=jnp.where(fires, t_safe + rest_length(layer), s.refractory_until),
        pending=is_spike & (crossing == t_spike) & ~fires,
        input_ptr=s.input_ptr + is_input,
        recurrent_ptr=s.recurrent_ptr + is_recur,
        out_times=s.out_times.at[slot].set(jnp.where(is_spike, t_safe, s.out_times[slot])),
        out_indices=s.out_indices.at[slot].set(jnp.where(is_spike, spiker, s.out_indices[slot])),
        out_current=s.out_current.at[slot].set(jnp.where(is_spike, i_spike, s.out_current[slot])),
        out_current_at_rest_end=current_at_rest_end,
        out_at_once=s.out_at_once.at[slot].set(jnp.where(is_spike, at_once, s.out_at_once[slot])),
        last_slot=jnp.where(fires, slot, s.last_slot),
        count=s.count + is_spike,
        overflow=s.overflow | full,
        done=s.done | ~active,
    )
    return new


def finish(layer: Layer, s: LayerState, t_max) -> LayerState:
    """Record ``I`` at refractory ends between the last event and ``t_max``."""
    t_end = jnp.maximum(s.t, t_max)
    _, _, i_start = _advance(layer, s, t_end, smooth=True)  # only I is used
    return s._replace(out_current_at_rest_end=record_rest_ends(s, t_end, i_start))
