"""EventProp's backward pass window by window: the adjoint of `eventprop.backward_layer`
with every sample and neuron in parallel.

The event loop's backward pass processes one recorded event at a time. Between a layer's
own events (its spikes and the ends of its refractory periods) a neuron's adjoint
``x = (lambda_u, lambda_I)`` and its time-constant sensitivities ``R = dx/dtau`` evolve
linearly and in closed form (`_back`); an arrival only reads them. So a window of events
is taken at once, going backward:

- every neuron without an own event in the window (quiet): the adjoint at each arrival is
  a closed-form function of its value at the window's end, and each arrival's
  contributions (weight gradient, the flux that moves the arrival's time, the time
  constants' gradients) follow for all neurons together;
- the others (active, a few): their own events in reverse order (spike jumps, refractory
  ends), then the same closed forms from the nearest later own event;
- zero-delay recurrence couples neurons at a spike: the window then ends there and its
  spikes are applied after everything later, to all neurons at once.

Ties: events are ordered by ``(time, kind, index)`` with kinds in the forward order of the
event loop (spike, input arrival, recurrent arrival, refractory end); windows are ranges of
that order, so equal times need no special case. The batch runs in one loop (a loop per
sample would, under `vmap`, select between old and new values of its whole carry at every
step); the gradients of the layer's parameters are summed over the batch as they come.
Work is O(events), memory O(records).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ..network import Layer
from ..neuron import kernel
from .order import compact, time_order
from .spike_time import SLOPE_FLOOR
from .step import Arrivals, LayerState, rest_length
from .windows import time_constants

SPIKE, INPUT, RECUR, REST = 0, 1, 2, 3
_SHIFT = 1 << 26  # sub-key = kind * _SHIFT + index


def _sub(kind, index):
    return kind * _SHIFT + index


def _greater(t_a, s_a, t_b, s_b):
    """Key ``(t_a, s_a)`` after key ``(t_b, s_b)`` (time, then kind and index)."""
    return (t_a > t_b) | ((t_a == t_b) & (s_a > s_b))


class _Adj(NamedTuple):
    """Adjoint of a set of neurons: ``lambda_u, lambda_I`` and their derivatives in
    ``tau_mem`` (``mu, mi``) and ``tau_syn`` (``su, si``)."""

    lu: jax.Array
    li: jax.Array
    mu: jax.Array
    mi: jax.Array
    su: jax.Array
    si: jax.Array


def _coefficients(d, tau_mem, tau_syn, smooth):
    """``exp(-d/tau_mem), exp(-d/tau_syn), k(d)`` and their derivatives in the time
    constants, for durations ``d >= 0`` (s)."""
    e_m, e_s = jnp.exp(-d / tau_mem), jnp.exp(-d / tau_syn)
    ones, zeros = jnp.ones_like(tau_mem), jnp.zeros_like(tau_mem)

    def k(tm, ts):
        return kernel(d, tm, ts, smooth)

    k_val, dk_m = jax.jvp(k, (tau_mem, tau_syn), (ones, zeros))
    _, dk_s = jax.jvp(k, (tau_mem, tau_syn), (zeros, ones))
    return e_m, e_s, k_val, d / tau_mem**2 * e_m, d / tau_syn**2 * e_s, dk_m, dk_s


def _back(a: _Adj, d, held, tau_mem, tau_syn, smooth) -> _Adj:
    """The adjoint ``d`` seconds earlier without events (`held`: refractory meanwhile,
    ``u`` frozen). The tangent of ``Phi(d)^T`` in each time constant gives ``R``."""
    e_m, e_s, k, de_m, de_s, dk_m, dk_s = _coefficients(d, tau_mem, tau_syn, smooth)
    free = jnp.where(held, 0.0, 1.0)
    lu_f, mu_f, su_f = a.lu * free, a.mu * free, a.su * free
    keep = 1.0 - free
    return _Adj(
        lu=e_m * lu_f + keep * a.lu,
        li=k * lu_f + e_s * a.li,
        mu=e_m * mu_f + de_m * lu_f + keep * a.mu,
        mi=k * mu_f + e_s * a.mi + dk_m * lu_f,
        su=e_m * su_f + keep * a.su,
        si=k * su_f + e_s * a.si + dk_s * lu_f + de_s * a.li,
    )


class _State(NamedTuple):
    """One sample's place in the backward pass (batched in the loop)."""

    t: jax.Array  # time of the current position (everything later is done)
    pos: jax.Array  # sub-key of the current position (kind * _SHIFT + index)
    adj: _Adj  # [n] each
    held: jax.Array  # [n] refractory just before the current position
    in_ptr: jax.Array  # last input arrival not yet processed (counting down)
    rec_ptr: jax.Array
    spike_ptr: jax.Array
    rest_ptr: jax.Array
    g_spike: jax.Array  # [M] dL/d(spike time) from later events
    d_arrivals: jax.Array  # [K]


class _Grads(NamedTuple):
    """The layer's gradients, summed over the batch."""

    d_weights: jax.Array
    d_recurrent: jax.Array | None
    d_tau_mem: jax.Array
    d_tau_syn: jax.Array
    d_theta: jax.Array
    d_u_reset: jax.Array
    d_refrac: jax.Array


class _Records(NamedTuple):
    """One sample's forward records as the backward pass reads them."""

    arr_t: jax.Array  # [K] input arrival times
    arr_src: jax.Array  # [K]
    out_t: jax.Array  # [M] spike times (inf past the count)
    out_i: jax.Array  # [M] spiking neuron (0 past the count)
    current: jax.Array  # [M] I at each spike
    rest_current: jax.Array  # [M] I at the end of each spike's refractory period
    at_once: jax.Array  # [M]
    g_out: jax.Array  # [M] dL/d(spike time) from the layers above
    rest_t: jax.Array  # [M] refractory ends in time order (inf: none within t_max)
    rest_slot: jax.Array  # [M] the spike each belongs to


class _Plan(NamedTuple):
    """One sample's window: its lower end, its arrivals and own events."""

    lo_t: jax.Array
    lo_s: jax.Array
    t_lo: jax.Array
    a_t: jax.Array  # [m] arrival times (the window's end where not taken)
    a_s: jax.Array
    a_src: jax.Array
    a_idx: jax.Array  # input index or record slot
    a_kind: jax.Array
    a_ok: jax.Array
    rows: jax.Array  # [m, n] jumps
    o_t: jax.Array  # [q] own events
    o_s: jax.Array
    o_slot: jax.Array
    o_kind: jax.Array
    o_ok: jax.Array
    o_lane: jax.Array  # position of the owner among the active neurons
    o_rank: jax.Array  # 0: the owner's latest own event in the window
    active: jax.Array  # [n]
    cand_idx: jax.Array  # [n + chunk] active neurons (padding: n)
    n_chunks: jax.Array
    counts: tuple  # inputs, recurrent arrivals, own spikes, own refractory ends taken


class _Terms(NamedTuple):
    """Contributions of some (arrival, neuron) pairs to the shared gradients: for the
    neurons `cols` ``[w]`` (n: none), ``lambda_I`` at each arrival ``[m, w]``."""

    li: jax.Array
    src: jax.Array  # [m] the arrivals' sources (rows of the weights)
    kind: jax.Array
    ok: jax.Array
    cols: jax.Array
    d_tau_mem: jax.Array  # [w]
    d_tau_syn: jax.Array


def _take(x, idx, fill):
    return jnp.take(x, idx, mode="fill", fill_value=fill)


def _records(layer: Layer, arrivals: Arrivals, fwd: LayerState, g_out, t_max) -> _Records:
    """One sample's records, with its refractory ends in time order."""
    capacity = fwd.out_times.shape[0]
    real = jnp.arange(capacity) < fwd.count
    owner = jnp.where(real, fwd.out_indices, 0)
    rest_end = jnp.where(real, fwd.out_times + rest_length(layer)[owner], jnp.inf)
    # A period ending at t_max or later ends after everything the loss sees (the forward
    # records no current for it: it would read as NaN); its neuron starts out held.
    rest_valid = real & (rest_end < t_max)
    order = time_order(jnp.where(rest_valid, rest_end, jnp.inf))
    return _Records(
        arrivals.times,
        arrivals.sources,
        jnp.where(real, fwd.out_times, jnp.inf),
        owner,
        fwd.out_current,
        fwd.out_current_at_rest_end,
        fwd.out_at_once,
        jnp.where(real, g_out, 0.0),
        jnp.where(rest_valid, rest_end, jnp.inf)[order],
        order,
    )


def _start(layer: Layer, fwd: LayerState, rec: _Records, t_max, delayed: bool) -> _State:
    n = layer.size
    zeros = jnp.zeros((n,), rec.out_t.dtype)
    return _State(
        t=jnp.asarray(t_max, rec.out_t.dtype),
        pos=jnp.asarray(jnp.iinfo(jnp.int32).max, jnp.int32),
        adj=_Adj(*(zeros,) * 6),
        held=jnp.zeros((n,), bool),  # set by the caller
        in_ptr=fwd.input_ptr - 1,
        rec_ptr=(fwd.recurrent_ptr - 1) if delayed else jnp.asarray(-1, jnp.int32),
        spike_ptr=fwd.count - 1,
        rest_ptr=jnp.sum(jnp.isfinite(rec.rest_t), dtype=jnp.int32) - 1,
        g_spike=jnp.zeros_like(rec.out_t),
        d_arrivals=jnp.zeros_like(rec.arr_t),
    )


def _plan(layer: Layer, cfg, s: _State, rec: _Records) -> _Plan:
    """One sample's next window (going backward)."""
    n = layer.size
    d = layer.delay
    w_rec = layer.recurrent_weights
    delayed, coupled = w_rec is not None and d > 0, w_rec is not None and d == 0
    m_in, m_rec = cfg.arrivals, (cfg.recurrent_arrivals if delayed else 0)
    s_own, chunk = cfg.window_spikes, min(cfg.chunk, n)
    depth = 2 * cfg.spikes + 2  # own events of one neuron in one window
    dtype = rec.out_t.dtype

    def key_at(times, ptr, kind):
        t = jnp.where(ptr >= 0, _take(times, jnp.maximum(ptr, 0), jnp.inf), -jnp.inf)
        return t, _sub(kind, ptr).astype(jnp.int32)

    def raise_to(lo, key):
        bigger = _greater(key[0], key[1], *lo)
        return jnp.where(bigger, key[0], lo[0]), jnp.where(bigger, key[1], lo[1])

    # 1. The window's lower end: the first event each stream cannot take (budget), the
    # delay bound, with zero-delay recurrence the next spike (taken, last), and a neuron
    # with too many own events in the window.
    lo = (jnp.asarray(-jnp.inf, dtype), jnp.asarray(0, jnp.int32))
    lo = raise_to(lo, key_at(rec.arr_t, s.in_ptr - m_in, INPUT))
    if delayed:
        lo = raise_to(lo, key_at(rec.out_t + d, s.rec_ptr - m_rec, RECUR))
        # Spikes of the window must have their recurrent arrivals done: times > t - d.
        lo = raise_to(lo, (s.t - d, jnp.asarray(_SHIFT * 4, jnp.int32)))
    if coupled:
        sp_t = jnp.where(s.spike_ptr >= 0, rec.out_t[jnp.maximum(s.spike_ptr, 0)], -jnp.inf)
        lo = raise_to(lo, (sp_t, jnp.asarray(-1, jnp.int32)))
    else:
        lo = raise_to(lo, key_at(rec.out_t, s.spike_ptr - s_own, SPIKE))
    lo = raise_to(lo, key_at(rec.rest_t, s.rest_ptr - s_own, REST))

    # Own events (not the coupled spikes): refractory ends and spikes, each ranked among
    # its neuron's own events later in the window (0: the latest).
    rest_idx = s.rest_ptr - jnp.arange(s_own, dtype=jnp.int32)
    parts = [
        (rest_idx, _take(rec.rest_t, rest_idx, jnp.inf), _sub(REST, rest_idx),
         _take(rec.rest_slot, jnp.maximum(rest_idx, 0), 0), jnp.full(s_own, REST)),
    ]  # fmt: skip
    if not coupled:
        sp_idx = s.spike_ptr - jnp.arange(s_own, dtype=jnp.int32)
        parts.append(
            (sp_idx, _take(rec.out_t, sp_idx, jnp.inf), _sub(SPIKE, sp_idx),
             jnp.maximum(sp_idx, 0), jnp.full(s_own, SPIKE))
        )  # fmt: skip
    o_idx, o_t, o_s, o_slot, o_kind = (jnp.concatenate(x) for x in zip(*parts))
    o_in = (o_idx >= 0) & _greater(o_t, o_s, *lo)
    o_who = jnp.where(o_in, rec.out_i[o_slot], n)
    after = _greater(o_t[None, :], o_s[None, :], o_t[:, None], o_s[:, None])
    rank = jnp.sum((o_who[None, :] == o_who[:, None]) & o_in[None, :] & after, axis=1)
    deep = o_in & (rank >= depth)
    deep_t = jnp.max(jnp.where(deep, o_t, -jnp.inf))
    deep_s = jnp.max(jnp.where(deep & (o_t == deep_t), o_s, -1)).astype(jnp.int32)
    lo_t, lo_s = raise_to(lo, (deep_t, deep_s))

    def taken(t, sub, ok):
        return ok & _greater(t, sub, lo_t, lo_s) & ~_greater(t, sub, s.t, s.pos)

    o_ok = taken(o_t, o_s, o_in)
    o_who = jnp.where(o_ok, o_who, n)
    active = jnp.zeros(n + 1, bool).at[o_who].set(True)[:n]
    cand_idx = compact(active, chunk)
    lanes = jnp.arange(n + chunk, dtype=jnp.int32)
    lane_of = jnp.zeros(n + 1, jnp.int32).at[cand_idx].set(lanes, mode="drop")

    # 2. Arrivals of the window (inputs, then delayed recurrent ones), and their rows.
    a_idx = s.in_ptr - jnp.arange(m_in, dtype=jnp.int32)
    a_t = _take(rec.arr_t, a_idx, jnp.inf)
    a_s = _sub(INPUT, a_idx)
    a_ok = taken(a_t, a_s, a_idx >= 0)
    a_src = jnp.maximum(_take(rec.arr_src, a_idx, 0), 0)
    rows = layer.weights[a_src]
    a_kind = jnp.full(m_in, INPUT)
    if delayed:
        r_idx = s.rec_ptr - jnp.arange(m_rec, dtype=jnp.int32)
        r_t = _take(rec.out_t, r_idx, jnp.inf) + d
        r_s = _sub(RECUR, r_idx)
        r_ok = taken(r_t, r_s, r_idx >= 0)
        r_src = jnp.maximum(_take(rec.out_i, r_idx, 0), 0)
        a_t, a_s, a_ok, a_src, a_idx = (
            jnp.concatenate(x)
            for x in ((a_t, r_t), (a_s, r_s), (a_ok, r_ok), (a_src, r_src), (a_idx, r_idx))
        )
        rows = jnp.concatenate([rows, w_rec[r_src]])
        a_kind = jnp.concatenate([a_kind, jnp.full(m_rec, RECUR)])
    rows = jnp.where(a_ok[:, None], rows, 0.0)
    a_t = jnp.where(a_ok, a_t, s.t)
    counts = (
        jnp.sum(a_ok & (a_kind == INPUT), dtype=jnp.int32),
        jnp.sum(a_ok & (a_kind == RECUR), dtype=jnp.int32),
        jnp.sum(o_ok & (o_kind == SPIKE), dtype=jnp.int32),
        jnp.sum(o_ok & (o_kind == REST), dtype=jnp.int32),
    )
    return _Plan(
        lo_t, lo_s, jnp.maximum(lo_t, 0.0), a_t, a_s, a_src, a_idx, a_kind, a_ok, rows,
        o_t, o_s, o_slot, o_kind, o_ok, lane_of[o_who], rank, active, cand_idx,
        (jnp.sum(active, dtype=jnp.int32) + chunk - 1) // chunk, counts,
    )  # fmt: skip


def _arrival_terms(s: _State, w: _Plan, at: _Adj, held, jumps, tm, ts, cols):
    """The window's arrivals read by the neurons `cols` ``[w]`` whose adjoint at each
    arrival is `at` ``[m, w]``: the jump ``I += w`` adds ``lambda_I`` to ``dL/dW[src]``,
    ``R_I w`` to the time constants' gradients, and its flux ``w . dx/dt`` to the arrival
    time's gradient (an input's, or the recurrent source spike's)."""
    jumps = jnp.where(w.a_ok[:, None], jumps, 0.0)
    flux = jnp.sum(jnp.where(held, 0.0, -at.lu * jumps / tm) + at.li * jumps / ts, axis=1)
    inputs, recur = w.a_ok & (w.a_kind == INPUT), w.a_ok & (w.a_kind == RECUR)
    k_arr, k_spk = s.d_arrivals.shape[0], s.g_spike.shape[0]
    s = s._replace(
        d_arrivals=s.d_arrivals.at[jnp.where(inputs, w.a_idx, k_arr)].add(flux, mode="drop"),
        g_spike=s.g_spike.at[jnp.where(recur, w.a_idx, k_spk)].add(flux, mode="drop"),
    )
    li = jnp.where(w.a_ok[:, None], at.li, 0.0)
    d_tm, d_ts = jnp.sum(jumps * at.mi, axis=0), jnp.sum(jumps * at.si, axis=0)
    return s, _Terms(li, w.a_src, w.a_kind, w.a_ok, cols, d_tm, d_ts)


def _quiet(layer, taus, smooth, s: _State, w: _Plan):
    """The neurons without own events in the window: closed forms from its end."""
    n = layer.size
    quiet = jax.tree.map(lambda x: jnp.where(w.active, 0.0, x), s.adj)
    at = _back(quiet, (s.t - w.a_t)[:, None], s.held[None, :], *taus, smooth)  # [m, n]
    return _arrival_terms(s, w, at, s.held[None, :], w.rows, *taus, jnp.arange(n))


def _lanes(layer, cfg, smooth, s: _State, w: _Plan, rec: _Records, k):
    """Chunk `k` of the active neurons: their own events in reverse, the window's arrivals
    from the nearest later own event, their adjoint at the window's lower end. Returns the
    sample's state, the arrival terms, the lanes' own-event terms and lower-end state."""
    p = layer.params
    n = layer.size
    chunk = min(cfg.chunk, n)
    idx = jax.lax.dynamic_slice(w.cand_idx, (k * chunk,), (chunk,))
    valid = idx < n
    cols = jnp.where(valid, idx, 0)
    tm, ts = p.tau_mem[cols], p.tau_syn[cols]
    theta = (p.v_th - p.v_leak)[cols]
    u_reset = (p.v_reset - p.v_leak)[cols]
    q = 2 * cfg.spikes + 2
    # Each lane's own events by rank ([C, q], rank 0 its latest).
    pos = w.o_lane - k * chunk
    place = w.o_ok & (pos >= 0) & (pos < chunk)
    row = jnp.where(place, pos, chunk)
    col = jnp.minimum(w.o_rank, q - 1)

    def by_rank(x, fill):
        return jnp.full((chunk, q), fill, x.dtype).at[row, col].set(x, mode="drop")

    e_t, e_s = by_rank(w.o_t, jnp.inf), by_rank(w.o_s, 0)
    e_slot, e_kind = by_rank(w.o_slot, 0), by_rank(w.o_kind, REST)
    mine = by_rank(place, False)
    count = jnp.sum(mine, axis=1, dtype=jnp.int32)
    lane = jnp.arange(chunk)
    adj0 = jax.tree.map(lambda x: x[cols], s.adj)
    held0 = s.held[cols]
    dtype = adj0.lu.dtype
    zeros = jnp.zeros((chunk, q), dtype)

    def step(j, st):
        """Own event ``j`` (counted from the latest) of every lane that has one."""
        adj, held, now, pending, post, post_held, rests, acc = st
        has = valid & (j < count)
        kk = jnp.minimum(j, q - 1)
        t_e = jnp.where(has, e_t[lane, kk], now)
        slot = e_slot[lane, kk]
        kind = e_kind[lane, kk]
        adj = _back(adj, now - t_e, held, tm, ts, smooth)
        d_theta, d_u_reset, d_refrac, d_tm, d_ts = acc
        # The end of a refractory period: u starts to move again there.
        is_rest = has & (kind == REST)
        i_end = jnp.where(is_rest, rec.rest_current[slot], 0.0)
        d_rest = jnp.where(is_rest, -adj.lu * (i_end - u_reset) / tm, 0.0)
        rests = rests.at[lane, kk].set(d_rest)
        # A spike: the threshold condition and the reset (its own refractory end, if in
        # the window, was the lane's previous own event).
        is_spike = has & (kind == SPIKE)
        total = rec.g_out[slot] + s.g_spike[slot] + pending
        slope = (rec.current[slot] - theta) / tm
        slope = jnp.maximum(slope, SLOPE_FLOOR * jnp.maximum(jnp.abs(theta), 1.0) / tm)
        coef = jnp.where(is_spike & ~rec.at_once[slot], total / slope, 0.0)
        acc = (
            d_theta + coef,
            d_u_reset + jnp.where(is_spike, adj.lu, 0.0),
            d_refrac + d_rest,
            d_tm + jnp.where(is_spike, adj.mu * u_reset, 0.0),
            d_ts + jnp.where(is_spike, adj.su * u_reset, 0.0),
        )
        adj = adj._replace(
            lu=jnp.where(is_spike, -coef, adj.lu),
            mu=jnp.where(is_spike, 0.0, adj.mu),
            su=jnp.where(is_spike, 0.0, adj.su),
        )
        held = jnp.where(is_rest, True, jnp.where(is_spike, False, held))
        pending = jnp.where(is_rest, d_rest, jnp.where(is_spike, 0.0, pending))
        post = jax.tree.map(lambda a, x: a.at[lane, kk].set(x), post, adj)
        post_held = post_held.at[lane, kk].set(held)
        return adj, held, t_e, pending, post, post_held, rests, acc

    zero = jnp.zeros(chunk, dtype)
    now = jnp.broadcast_to(s.t, (chunk,)).astype(dtype)
    post = _Adj(*(zeros,) * 6)
    st = (adj0, held0, now, zero, post, jnp.zeros((chunk, q), bool), zeros, (zero,) * 5)
    adj, held, now, _, post, post_held, rests, acc = jax.lax.fori_loop(0, jnp.max(count), step, st)
    # Refractory ends move their spike (here or in a later window).
    k_spk = s.g_spike.shape[0]
    s = s._replace(
        g_spike=s.g_spike.at[jnp.where(mine & (e_kind == REST), e_slot, k_spk)].add(
            rests, mode="drop"
        )
    )
    # Each arrival reads the lane's adjoint from its nearest later own event (or the end):
    # the own event of rank (number of own events after the arrival) - 1.
    later = _greater(e_t[:, None, :], e_s[:, None, :], w.a_t[None, :, None], w.a_s[None, :, None])
    n_later = jnp.sum(later & mine[:, None, :], axis=2)  # [C, m]
    from_end = n_later == 0
    pick = jnp.maximum(n_later - 1, 0)
    anchor_t = jnp.where(from_end, s.t, jnp.take_along_axis(e_t, pick, 1))
    anchor = jax.tree.map(
        lambda p_, a0: jnp.where(from_end, a0[:, None], jnp.take_along_axis(p_, pick, 1)),
        post,
        adj0,
    )
    anchor_held = jnp.where(from_end, held0[:, None], jnp.take_along_axis(post_held, pick, 1))
    at = _back(anchor, anchor_t - w.a_t[None, :], anchor_held, tm[:, None], ts[:, None], smooth)
    at = jax.tree.map(lambda x: jnp.where(valid[:, None], x, 0.0).T, at)  # [m, C]
    jumps = jnp.take(w.rows, cols, axis=1)
    lane_cols = jnp.where(valid, idx, n)
    s, terms = _arrival_terms(s, w, at, anchor_held.T, jumps, tm, ts, lane_cols)
    own = (lane_cols, *acc)
    # The lanes at the window's lower end.
    return s, terms, own, (lane_cols, _back(adj, now - w.t_lo, held, tm, ts, smooth), held)


def _add_terms(g: _Grads, t: _Terms, n_in: int, every: bool) -> _Grads:
    """Add a batch of arrival terms (leading batch axis) to the shared gradients (`every`:
    their columns are all the layer's neurons, in order)."""
    n = g.d_weights.shape[1]
    width = t.cols.shape[-1]
    li = t.li.reshape(-1, width)
    cols = jnp.broadcast_to(t.cols[:, None, :], t.li.shape).reshape(-1, width)

    def scatter(target, mask, n_rows):
        r = jnp.where(mask, t.src, n_rows).reshape(-1)
        if every:  # whole rows
            return target.at[r].add(li, mode="drop")
        rr = jnp.broadcast_to(r[:, None], li.shape)
        return target.at[rr, cols].add(li, mode="drop")

    d_weights = scatter(g.d_weights, t.ok & (t.kind == INPUT), n_in)
    d_recurrent = g.d_recurrent
    if d_recurrent is not None:
        d_recurrent = scatter(d_recurrent, t.ok & (t.kind == RECUR), n)
    flat = t.cols.reshape(-1)
    return g._replace(
        d_weights=d_weights,
        d_recurrent=d_recurrent,
        d_tau_mem=g.d_tau_mem.at[flat].add(t.d_tau_mem.reshape(-1), mode="drop"),
        d_tau_syn=g.d_tau_syn.at[flat].add(t.d_tau_syn.reshape(-1), mode="drop"),
    )


def _add_own(g: _Grads, own) -> _Grads:
    cols, d_theta, d_u_reset, d_refrac, d_tm, d_ts = (x.reshape(-1) for x in own)
    return g._replace(
        d_theta=g.d_theta.at[cols].add(d_theta, mode="drop"),
        d_u_reset=g.d_u_reset.at[cols].add(d_u_reset, mode="drop"),
        d_refrac=g.d_refrac.at[cols].add(d_refrac, mode="drop"),
        d_tau_mem=g.d_tau_mem.at[cols].add(d_tm, mode="drop"),
        d_tau_syn=g.d_tau_syn.at[cols].add(d_ts, mode="drop"),
    )


def _coupled(layer, s: _State, w: _Plan, rec: _Records, j):
    """Zero-delay recurrence: tie `j` of the spikes at the window's lower end (in reverse
    record order), jumping every neuron's ``I`` by its row. Returns the state, the row's
    gradient ``[n]`` with the spiker, and the per-neuron gradients ``[n]``."""
    p = layer.params
    n = layer.size
    q = s.spike_ptr
    due = (w.lo_s < 0) & (q >= 0) & (rec.out_t[jnp.maximum(q, 0)] == w.lo_t)
    qq = jnp.maximum(q, 0)
    m = rec.out_i[qq]
    row = layer.recurrent_weights[m]
    a = s.adj
    tm, ts = p.tau_mem, p.tau_syn
    flux = jnp.sum(jnp.where(s.held, 0.0, -a.lu * row / tm) + a.li * row / ts)
    theta, u_reset = p.v_th[m] - p.v_leak[m], p.v_reset - p.v_leak
    total = rec.g_out[qq] + s.g_spike[qq]
    slope = (rec.current[qq] - theta) / tm[m]
    slope = jnp.maximum(slope, SLOPE_FLOOR * jnp.maximum(jnp.abs(theta), 1.0) / tm[m])
    coef = jnp.where(due & ~rec.at_once[qq], (flux + total) / slope, 0.0)
    sel = due & (jnp.arange(n) == m)
    zero = jnp.zeros(n, a.lu.dtype)
    grads = (
        jnp.where(due, a.mi * row, 0.0) + jnp.where(sel, a.mu * u_reset, 0.0),
        jnp.where(due, a.si * row, 0.0) + jnp.where(sel, a.su * u_reset, 0.0),
        jnp.where(sel, coef, zero),
        jnp.where(sel, a.lu, zero),
    )
    adj = a._replace(
        lu=jnp.where(sel, -coef, a.lu),
        mu=jnp.where(sel, 0.0, a.mu),
        su=jnp.where(sel, 0.0, a.su),
    )
    s = s._replace(
        adj=adj,
        held=jnp.where(sel, False, s.held),
        spike_ptr=jnp.where(due, q - 1, q),
        pos=jnp.where(due, _sub(SPIKE, q).astype(jnp.int32), s.pos),
    )
    return s, (jnp.where(due, m, n), jnp.where(due, a.li, 0.0)), grads


def backward_windows(
    layer: Layer, arrivals: Arrivals, fwd: LayerState, g_out, t_max, smooth: bool, cfg
):
    """EventProp backward pass of one layer over a batch, window by window: the same
    results as `eventprop.backward_layer` per sample, with the layer's gradients summed
    over the batch. Arrays carry a leading batch axis (`cfg`: the `Windows` budgets).

    Returns ``(layer cotangent, [batch, K] cotangent of the arrival times)``.
    """
    p = layer.params
    n, n_in = layer.size, layer.weights.shape[0]
    w_rec = layer.recurrent_weights
    delayed, coupled = w_rec is not None and layer.delay > 0, w_rec is not None
    coupled = coupled and layer.delay == 0
    taus = time_constants(layer, cfg)
    rec = jax.vmap(lambda a, f, g: _records(layer, a, f, g, t_max))(arrivals, fwd, g_out)
    state = jax.vmap(lambda f, r: _start(layer, f, r, t_max, delayed))(fwd, rec)
    # Neurons still refractory at t_max (their period outlasts the run).
    real = jnp.arange(rec.out_t.shape[1])[None, :] < fwd.count[:, None]
    ends = rec.out_t + rest_length(layer)[rec.out_i]
    resting = jax.vmap(lambda i, x: jnp.zeros(n, bool).at[i].max(x))(
        rec.out_i, real & (ends >= t_max)
    )
    state = state._replace(held=resting)
    zeros = jnp.zeros((n,), p.tau_mem.dtype)
    grads = _Grads(
        jnp.zeros_like(layer.weights),
        None if w_rec is None else jnp.zeros_like(w_rec),
        zeros, zeros, zeros, zeros, zeros,
    )  # fmt: skip

    def window(carry):
        s, g = carry
        w = jax.vmap(lambda s_, r: _plan(layer, cfg, s_, r))(s, rec)
        with jax.named_scope("quiet"):
            s, terms = jax.vmap(lambda s_, w_: _quiet(layer, taus, smooth, s_, w_))(s, w)
            g = _add_terms(g, terms, n_in, every=True)
            low = jax.vmap(lambda s_, w_: _back(s_.adj, s_.t - w_.t_lo, s_.held, *taus, smooth))(
                s, w
            )
        held_low = s.held

        def chunk_step(k, st):
            s, g, low, held_low = st
            s, terms, own, (cols, lane_low, lane_held) = jax.vmap(
                lambda s_, w_, r: _lanes(layer, cfg, smooth, s_, w_, r, k)
            )(s, w, rec)
            g = _add_own(_add_terms(g, terms, n_in, every=False), own)
            low = jax.tree.map(
                lambda a, b: jax.vmap(lambda x, c_, v: x.at[c_].set(v, mode="drop"))(a, cols, b),
                low,
                lane_low,
            )
            held_low = jax.vmap(lambda x, c_, v: x.at[c_].set(v, mode="drop"))(
                held_low, cols, lane_held
            )
            return s, g, low, held_low

        with jax.named_scope("active"):
            s, g, low, held_low = jax.lax.fori_loop(
                0, jnp.max(w.n_chunks), chunk_step, (s, g, low, held_low)
            )
        n_arr, n_recur, n_spk, n_rest = w.counts
        s = s._replace(
            t=w.t_lo,
            pos=w.lo_s,
            adj=low,
            held=held_low,
            in_ptr=s.in_ptr - n_arr,
            rec_ptr=s.rec_ptr - n_recur,
            spike_ptr=s.spike_ptr - n_spk,
            rest_ptr=s.rest_ptr - n_rest,
        )
        if coupled:  # a window that ends at spikes (not at a budget's cut): apply them last

            def tie(st):
                s, g = st
                s, (m, li), (d_tm, d_ts, d_theta, d_u_reset) = jax.vmap(
                    lambda s_, w_, r: _coupled(layer, s_, w_, r, 0)
                )(s, w, rec)
                g = g._replace(
                    d_recurrent=g.d_recurrent.at[m].add(li, mode="drop"),
                    d_tau_mem=g.d_tau_mem + jnp.sum(d_tm, 0),
                    d_tau_syn=g.d_tau_syn + jnp.sum(d_ts, 0),
                    d_theta=g.d_theta + jnp.sum(d_theta, 0),
                    d_u_reset=g.d_u_reset + jnp.sum(d_u_reset, 0),
                )
                return s, g

            def more_ties(st):
                s, _ = st
                q = jnp.maximum(s.spike_ptr, 0)
                t_next = jnp.take_along_axis(rec.out_t, q[:, None], 1)[:, 0]
                return jnp.any((w.lo_s < 0) & (s.spike_ptr >= 0) & (t_next == w.lo_t))

            s, g = jax.lax.while_loop(more_ties, tie, (s, g))
        return s, g

    def more(carry):
        s, _ = carry
        return jnp.any((s.in_ptr >= 0) | (s.rec_ptr >= 0) | (s.spike_ptr >= 0) | (s.rest_ptr >= 0))

    s, g = jax.lax.while_loop(more, window, (state, grads))
    out = eqx.tree_at(
        lambda lay: (
            lay.weights,
            lay.params.tau_mem,
            lay.params.tau_syn,
            lay.params.v_th,
            lay.params.v_reset,
            lay.params.v_leak,
            lay.params.t_refrac,
        ),
        layer,
        (
            g.d_weights,
            g.d_tau_mem,
            g.d_tau_syn,
            g.d_theta,
            g.d_u_reset,
            -g.d_theta - g.d_u_reset,
            g.d_refrac,
        ),
    )
    if w_rec is not None:
        out = eqx.tree_at(lambda lay: lay.recurrent_weights, out, g.d_recurrent)
    return out, s.d_arrivals
