"""Multi-spike layers advanced window by window, exactly, with every neuron in parallel.

The event loop (`step`) handles one event at a time. Here a layer is advanced through
windows ``[t, E]`` that hold many arrivals at once. Inside a window no spike of the layer
can reach another neuron: without recurrence nothing couples the neurons; with recurrence
of delay ``d > 0`` the window is at most ``d`` long; with zero delay it ends at the layer's
earliest spike in it. One window:

1. **Arrivals**: the next input arrivals (at most `Windows.arrivals`; the window ends
   before the first one beyond) and the delayed recurrent arrivals from the layer's own
   earlier spikes (at most `Windows.recurrent_arrivals`), each with its row of jumps.
2. **Superposition** (every neuron at once): the end state of a neuron that does not spike
   is its free motion plus one closed-form PSP per arrival (a held refractory neuron takes
   them into ``I`` only), and its spike bound (`bound`) says whether it may spike at all.
3. **Candidates** (those the bound cannot rule out, a chunk at a time): their exact event
   sequences through the window (`candidates.run_lanes`), every spike solved to machine
   precision by the layer's solver. With zero-delay recurrence only the first crossing is
   wanted: the window then ends at the earliest one, every neuron is superposed to it,
   the neurons crossing there spike and their recurrent rows jump every ``I``.
4. **Record**: the window's spikes in time order (ties by index), appended after the
   previous windows' (the record stays sorted, so delayed recurrent arrivals are read from
   it in order), with what EventProp's backward pass needs per spike.

A window that would hold more spikes than the engine keeps per window (`Windows.spikes`
per neuron, `Windows.window_spikes` in all) is cut before the first one too many and run
again: never a silent loss. The result is the event loop's `LayerState`, so EventProp's
backward pass (`eventprop.backward_layer`) applies unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validate import is_concrete
from ..network import Layer
from ..neuron import kernel
from .bound import excitation_bound, free_peak, psp_peak
from .candidates import LaneParams, run_lanes
from .order import compact, running_count, time_order
from .step import Arrivals, LayerState, rest_length


class Windows(eqx.Module):
    """Settings of the windowed layer engine (all static: they set array sizes).

    Attributes:
        arrivals: input arrivals per window; a window ends before the next one.
        recurrent_arrivals: delayed recurrent arrivals per window (layers with recurrence
            and a delay > 0).
        spikes: spikes one neuron may emit within one window; a window where one would
            emit more is cut short and run again.
        window_spikes: spikes of the whole layer within one window (the same).
        chunk: candidate neurons advanced together.
        max_length: longest window (s); None: only the arrivals and the delay bound it.
        shared_time_constants: every neuron of a layer has the same ``tau_mem`` and the
            same ``tau_syn``, so exponentials are computed once per arrival instead of
            once per arrival and neuron (several times faster). Checked: a layer whose time
            constants differ raises an error (at run time inside jit). `simulate` sets it
            by itself where the time constants are concrete and uniform.
    """

    arrivals: int = eqx.field(static=True, default=32)
    recurrent_arrivals: int = eqx.field(static=True, default=32)
    spikes: int = eqx.field(static=True, default=4)
    window_spikes: int = eqx.field(static=True, default=32)
    chunk: int = eqx.field(static=True, default=32)
    max_length: float | None = eqx.field(static=True, default=None)
    shared_time_constants: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        for name in ("arrivals", "recurrent_arrivals", "spikes", "window_spikes", "chunk"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"Windows.{name} must be a positive integer, got {value!r}.")
        if self.max_length is not None and not self.max_length > 0:
            raise ValueError(
                f"Windows.max_length must be None or > 0 seconds, got {self.max_length!r}."
            )


def time_constants(layer: Layer, cfg: Windows):
    """``(tau_mem, tau_syn)`` of the layer: ``[n]`` each, or scalars where
    ``cfg.shared_time_constants`` (checked, inside jit too)."""
    tm, ts = layer.params.tau_mem, layer.params.tau_syn
    if not cfg.shared_time_constants:
        return tm, ts
    differ = jnp.any(tm != tm[0]) | jnp.any(ts != ts[0])
    if is_concrete(differ):
        if bool(differ):
            raise ValueError(
                "Windows(shared_time_constants=True) but the layer's neurons have different "
                "tau_mem or tau_syn: set shared_time_constants=False."
            )
        return tm[0], ts[0]
    message = "Windows(shared_time_constants=True) but the neurons' time constants differ"
    return eqx.error_if(tm[0], differ, message), ts[0]


def uniform_time_constants(layer: Layer) -> bool:
    """Whether the layer's time constants are concrete and shared by all its neurons."""
    tm, ts = layer.params.tau_mem, layer.params.tau_syn
    if not (is_concrete(tm) and is_concrete(ts)):
        return False
    return bool(
        np.all(np.asarray(tm) == np.asarray(tm)[0]) and np.all(np.asarray(ts) == np.asarray(ts)[0])
    )


class _Carry(NamedTuple):
    t: jax.Array  # the window's start (s)
    u: jax.Array  # [n] V - v_leak at t
    i: jax.Array  # [n]
    r: jax.Array  # [n] end of the refractory period
    in_ptr: jax.Array  # next input arrival
    rec_ptr: jax.Array  # next record entry to arrive (delayed recurrence)
    times: jax.Array  # record [M + S]
    indices: jax.Array
    current: jax.Array
    rest_current: jax.Array
    at_once: jax.Array
    last_slot: jax.Array  # [n] record slot of each neuron's latest spike
    count: jax.Array
    overflow: jax.Array
    cut: jax.Array  # the window must end by then (a window run again shorter)


class _Dense(NamedTuple):
    """Every neuron superposed to the window's end, as if it did not spike."""

    u: jax.Array
    i: jax.Array
    rest_current: jax.Array  # I where a refractory period ends (at rho)
    rest_ends: jax.Array  # [n] a held neuron's period ends within the window
    candidate: jax.Array  # [n] the bound reaches threshold


def _applied(arr_t, t, end):
    """The arrivals a window ``[t, end]`` applies: those in ``[t, end)``, and those at
    ``t`` when it has zero length (more arrivals at one time than a window holds)."""
    return (arr_t < end) | ((arr_t == t) & (end == t))


def _superpose(
    layer: Layer, c: _Carry, end, closing, arr_t, jumps, applied, smooth, taus
) -> _Dense:
    """State of every neuron at `end` from its state at ``c.t`` and the `applied` arrivals
    of ``arr_t [m]`` with ``jumps [m, n]``, exact where it does not spike, and the spike
    bound."""
    p = layer.params
    t = c.t
    tm, ts = taus
    theta, u_reset = p.v_th - p.v_leak, p.v_reset - p.v_leak
    lag = jnp.where(applied, end - arr_t, 0.0)[:, None]  # [m, 1]
    jumps = jnp.where(applied[:, None], jumps, 0.0)
    held = c.r > t
    rho = jnp.clip(c.r, t, end)  # where integration resumes
    # Arrivals up to the end of a hold enter I only (and I at the end of the hold).
    before = held[None, :] & (arr_t[:, None] <= rho[None, :])  # [m, n]
    e_syn = jnp.exp(-lag / ts)
    i_end = c.i * jnp.exp(-(end - t) / ts) + jnp.sum(jumps * e_syn, axis=0)
    to_rest = jnp.where(before, rho[None, :] - jnp.where(applied, arr_t, t)[:, None], 0.0)
    i_rest = c.i * jnp.exp(-(rho - t) / ts) + jnp.sum(
        jnp.where(before, jumps * jnp.exp(-to_rest / ts), 0.0), axis=0
    )
    k_lag = kernel(lag, tm, ts, smooth)
    u_arrived = jnp.sum(jnp.where(before, 0.0, jumps * k_lag), axis=0)
    u_start = jnp.where(held, u_reset, c.u)
    span = end - rho
    u_free = u_start * jnp.exp(-span / tm) + i_rest * kernel(span, tm, ts, smooth)
    peak_time, peak = psp_peak(tm, ts)
    excited = jnp.sum(
        jnp.where(before, 0.0, excitation_bound(jumps, lag, k_lag, peak_time, peak)), axis=0
    )
    top = free_peak(u_start, i_rest, span, tm, ts, u_free, smooth) + excited
    # Periods ending in [t, end) (at the very end too when the window closes the run).
    rest_ends = (c.r >= t) & ((c.r < end) | (closing & (c.r <= end)))
    return _Dense(u_free + u_arrived, i_end, i_rest, rest_ends, top >= theta)


def _lane_params(layer: Layer, idx):
    p = layer.params

    def take(x, fill=1.0):
        return jnp.take(x, idx, mode="fill", fill_value=fill)

    return LaneParams(
        take(p.tau_mem),
        take(p.tau_syn),
        take(p.v_th - p.v_leak),
        take(p.v_reset - p.v_leak, 0.0),
        take(rest_length(layer), 0.0),
    )


def _candidates(dense: _Dense, chunk: int):
    """Indices of the candidates ``[n + chunk]`` (padding: n) and the number of chunks."""
    cand = dense.candidate
    return compact(cand, chunk), (jnp.sum(cand, dtype=jnp.int32) + chunk - 1) // chunk


def _record_rest(c: _Carry, neurons, values, ok):
    """Write ``I`` at the end of each neuron's current refractory period into its record."""
    slot = jnp.where(ok & (c.last_slot[neurons] >= 0), c.last_slot[neurons], c.times.shape[0])
    return c.rest_current.at[slot].set(values, mode="drop")


def _window(layer, arrivals, t_max, budget, solver, cfg, c: _Carry) -> _Carry:
    n = layer.size
    taus = time_constants(layer, cfg)
    rec = layer.recurrent_weights
    d = layer.delay
    delayed, zero_delay = rec is not None and d > 0, rec is not None and d == 0
    times_ext = jnp.append(arrivals.times, jnp.inf)
    n_arr = times_ext.shape[0] - 1
    m_in = min(cfg.arrivals, max(n_arr, 1))

    # 1. The window's end and arrivals.
    scope = jax.named_scope("arrivals")
    scope.__enter__()
    limit = jnp.minimum(t_max, c.cut)
    if cfg.max_length is not None:
        limit = jnp.minimum(limit, c.t + cfg.max_length)
    if delayed:
        limit = jnp.minimum(limit, c.t + d)
    pos = c.in_ptr + jnp.arange(m_in + 1)
    in_t = jnp.take(times_ext, pos, mode="fill", fill_value=jnp.inf)
    end = jnp.minimum(limit, in_t[m_in])
    sources = jnp.take(arrivals.sources, pos[:m_in], mode="clip")
    arr_t, rows = in_t[:m_in], layer.weights[jnp.maximum(sources, 0)]
    if delayed:
        m_rec = cfg.recurrent_arrivals
        rpos = c.rec_ptr + jnp.arange(m_rec + 1)
        rec_t = jnp.where(
            rpos < c.count, jnp.take(c.times, rpos, mode="fill", fill_value=jnp.inf) + d, jnp.inf
        )
        end = jnp.minimum(end, rec_t[m_rec])
        src = jnp.take(c.indices, rpos[:m_rec], mode="fill", fill_value=0)
        arr_t = jnp.concatenate([arr_t, rec_t[:m_rec]])
        rows = jnp.concatenate([rows, rec[jnp.maximum(src, 0)]])
    closing = end >= t_max
    taken = _applied(arr_t, c.t, end)
    arr_t = jnp.where(taken, arr_t, jnp.inf)
    rows = jnp.where(taken[:, None], rows, 0.0)
    n_taken_in = jnp.sum(taken[:m_in], dtype=jnp.int32)
    n_taken_rec = jnp.sum(taken[m_in:], dtype=jnp.int32)
    if delayed:  # merge the two sorted lists for the candidates' sequences
        order = time_order(arr_t)
        arr_t, rows, taken = arr_t[order], rows[order], taken[order]
    scope.__exit__(None, None, None)

    # 2. Superposition and the bound.
    with jax.named_scope("superpose"):
        dense = _superpose(layer, c, end, closing, arr_t, rows, taken, solver.smooth, taus)
        cand_idx, n_chunks = _candidates(dense, cfg.chunk)

    # 3. Candidates, a chunk at a time.
    def lanes_of(k):
        idx = jax.lax.dynamic_slice(cand_idx, (k * cfg.chunk,), (cfg.chunk,))
        valid = idx < n
        q = _lane_params(layer, idx)
        state = tuple(jnp.take(x, idx, mode="fill", fill_value=0.0) for x in (c.u, c.i, c.r))
        jumps = jnp.take(rows, idx, axis=1, mode="fill", fill_value=0.0).T
        with jax.named_scope("lanes"):
            lanes = run_lanes(
                q, state, valid, c.t, end, arr_t, jumps, solver=solver,
                spikes=1 if layer.single_spike else cfg.spikes, first_only=zero_delay,
                closing=closing,
            )  # fmt: skip
        return idx, valid, lanes

    if zero_delay:
        with jax.named_scope("commit"):
            return _commit_first(
                layer, c, end, t_max, arr_t, rows, solver, lanes_of, n_chunks, budget, taus
            )
    with jax.named_scope("commit"):
        return _commit_all(layer, c, end, dense, lanes_of, n_chunks, n_taken_in, n_taken_rec,
                           budget, cfg)  # fmt: skip


def _commit_first(layer, c, end, t_max, arr_t, rows, solver, lanes_of, n_chunks, budget, taus):
    """Zero-delay recurrence: the window ends at the layer's earliest crossing (if any
    before `end`); every neuron is superposed to it and the neurons crossing there spike."""
    n, p = layer.size, layer.params

    def chunk(k, first):
        idx, valid, lanes = lanes_of(k)
        return first.at[idx].set(jnp.where(valid, lanes.first, jnp.inf), mode="drop")

    first = jax.lax.fori_loop(0, n_chunks, chunk, jnp.full(n, jnp.inf, c.u.dtype))
    t_spike = jnp.min(first)
    fires_at = t_spike <= end
    end = jnp.minimum(end, t_spike)
    # Input arrivals at the spike time itself come after it (the next window).
    applied = jnp.where(fires_at, arr_t < end, _applied(arr_t, c.t, end))
    dense = _superpose(layer, c, end, end >= t_max, arr_t, rows, applied, solver.smooth, taus)
    spikers = fires_at & (first == t_spike)
    taken_in = jnp.sum(applied, dtype=jnp.int32)

    rest_current = _record_rest(c, jnp.arange(n), dense.rest_current, dense.rest_ends)
    c = c._replace(rest_current=rest_current)
    rank = running_count(spikers) - 1
    n_new = jnp.sum(spikers, dtype=jnp.int32)
    full = c.count + n_new > budget
    slot = jnp.where(spikers & (c.count + rank < budget), c.count + rank, c.times.shape[0])
    once = (t_spike == 0) & (p.v_th <= p.v_leak)
    neurons = jnp.arange(n, dtype=jnp.int32)
    jump = spikers.astype(c.u.dtype) @ layer.recurrent_weights
    return c._replace(
        t=end,
        u=jnp.where(spikers, p.v_reset - p.v_leak, dense.u),
        i=dense.i + jump,
        r=jnp.where(spikers, end + rest_length(layer), c.r),
        in_ptr=c.in_ptr + taken_in,
        times=c.times.at[slot].set(end, mode="drop"),
        indices=c.indices.at[slot].set(neurons, mode="drop"),
        current=c.current.at[slot].set(dense.i, mode="drop"),
        at_once=c.at_once.at[slot].set(once, mode="drop"),
        last_slot=jnp.where(spikers & (slot < budget), slot, c.last_slot),
        count=jnp.minimum(c.count + n_new, budget),
        overflow=c.overflow | full,
        cut=jnp.asarray(jnp.inf, c.u.dtype),
    )


def _commit_all(layer, c, end, dense, lanes_of, n_chunks, n_taken_in, n_taken_rec, budget,
                cfg):  # fmt: skip
    """No coupling inside the window: every candidate's sequence stands; commit them all,
    or cut the window where a budget would be exceeded and leave it to be run again."""
    n, dtype = layer.size, c.u.dtype
    wb = cfg.window_spikes
    u, i, r = dense.u, dense.i, c.r
    rest_current = _record_rest(c, jnp.arange(n), dense.rest_current, dense.rest_ends)
    # The window's earliest wb + 1 spikes, kept in (time, neuron) order as chunks come in.
    buf = (
        jnp.full(wb + 1, jnp.inf, dtype),
        jnp.full(wb + 1, n, jnp.int32),
        jnp.zeros(wb + 1, dtype),
        jnp.zeros(wb + 1, bool),
        jnp.full(wb + 1, jnp.nan, dtype),
    )

    def chunk(k, st):
        u, i, r, rest_current, buf, n_new, cut = st
        idx, valid, lanes = lanes_of(k)
        u = u.at[idx].set(lanes.u, mode="drop")
        i = i.at[idx].set(lanes.i, mode="drop")
        r = r.at[idx].set(lanes.r, mode="drop")
        # I at the end of a period that began before the window (into the record now).
        prev = lanes.rest_current[:, 0]
        rest_current = _record_rest(
            c._replace(rest_current=rest_current), idx, prev, valid & ~jnp.isnan(prev)
        )
        p_ = lanes.times.shape[1]
        new = (
            lanes.times.reshape(-1),
            jnp.repeat(jnp.where(valid, idx, n), p_),
            lanes.current.reshape(-1),
            lanes.at_once.reshape(-1),
            lanes.rest_current[:, 1:].reshape(-1),
        )
        merged = tuple(jnp.concatenate([a, b]) for a, b in zip(buf, new))
        keep = time_order(merged[0], merged[1])[: wb + 1]
        buf = tuple(x[keep] for x in merged)
        n_new = n_new + jnp.sum(lanes.count, dtype=jnp.int32)
        return u, i, r, rest_current, buf, n_new, jnp.minimum(cut, lanes.cut)

    st = (u, i, r, rest_current, buf, jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, dtype))
    u, i, r, rest_current, buf, n_new, cut = jax.lax.fori_loop(0, n_chunks, chunk, st)
    b_t, b_i, b_cur, b_once, b_rest = buf
    # Too many spikes in the window: end it halfway between the last kept and the next.
    cut = jnp.where(n_new > wb, jnp.minimum(cut, 0.5 * (b_t[wb - 1] + b_t[wb])), cut)
    retry = jnp.isfinite(cut)

    rank = jnp.arange(wb, dtype=jnp.int32)
    kept = rank < n_new
    full = c.count + n_new > budget
    at = jnp.where(kept & (c.count + rank < budget), c.count + rank, c.times.shape[0])
    neurons = jnp.where(kept, b_i[:wb], n)
    last_slot = c.last_slot.at[neurons].max(jnp.where(at < budget, at, -1), mode="drop")
    committed = c._replace(
        t=end,
        u=u,
        i=i,
        r=r,
        in_ptr=c.in_ptr + n_taken_in,
        rec_ptr=c.rec_ptr + n_taken_rec,
        times=c.times.at[at].set(b_t[:wb], mode="drop"),
        indices=c.indices.at[at].set(b_i[:wb], mode="drop"),
        current=c.current.at[at].set(b_cur[:wb], mode="drop"),
        at_once=c.at_once.at[at].set(b_once[:wb], mode="drop"),
        rest_current=rest_current.at[at].set(b_rest[:wb], mode="drop"),
        last_slot=last_slot,
        count=jnp.minimum(c.count + n_new, budget),
        overflow=c.overflow | full,
        cut=jnp.asarray(jnp.inf, dtype),
    )
    again = c._replace(cut=cut)
    return jax.tree.map(lambda a, b: jnp.where(retry, a, b), again, committed)


def window_layer(layer: Layer, arrivals: Arrivals, t_max, max_spikes: int, solver,
                 cfg: Windows) -> LayerState:  # fmt: skip
    """Simulate one layer of one sample from its sorted arrivals, window by window.

    Returns the event loop's `LayerState` (its records: spikes in time order, ties by
    index, with ``I`` at each spike and at each refractory period's end), which
    `eventprop.backward_layer` differentiates.
    """
    n, dtype = layer.size, arrivals.times.dtype
    slack = cfg.window_spikes + 1
    size = max_spikes + max(slack, n)
    c = _Carry(
        t=jnp.zeros((), dtype),
        u=jnp.zeros(n, dtype),
        i=jnp.zeros(n, dtype),
        r=jnp.full(n, -jnp.inf, dtype),
        in_ptr=jnp.zeros((), jnp.int32),
        rec_ptr=jnp.zeros((), jnp.int32),
        times=jnp.full(size, jnp.inf, dtype),
        indices=jnp.full(size, -1, jnp.int32),
        current=jnp.zeros(size, dtype),
        rest_current=jnp.full(size, jnp.nan, dtype),
        at_once=jnp.zeros(size, bool),
        last_slot=jnp.full(n, -1, jnp.int32),
        count=jnp.zeros((), jnp.int32),
        overflow=jnp.zeros((), bool),
        cut=jnp.asarray(jnp.inf, dtype),
    )
    t_max = jnp.asarray(t_max, dtype)

    def more(c):
        return (c.t < t_max) & ~c.overflow

    c = jax.lax.while_loop(
        more, lambda c: _window(layer, arrivals, t_max, max_spikes, solver, cfg, c), c
    )
    m = max_spikes
    p = layer.params
    return LayerState(
        t=c.t,
        v=c.u + p.v_leak,
        i=c.i,
        refractory_until=c.r,
        pending=jnp.zeros(n, bool),
        input_ptr=c.in_ptr,
        recurrent_ptr=c.rec_ptr,
        out_times=c.times[:m],
        out_indices=c.indices[:m],
        out_current=c.current[:m],
        out_current_at_rest_end=c.rest_current[:m],
        out_at_once=c.at_once[:m],
        last_slot=c.last_slot,
        count=c.count,
        overflow=c.overflow,
        done=jnp.ones((), bool),
    )
