"""EventProp's backward pass window by window: the adjoint of `eventprop.backward_layer`
with every neuron in parallel.

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
that order, so equal times need no special case. Work is O(events), memory O(records).
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


class _Carry(NamedTuple):
    t: jax.Array  # time of the current position (everything later is done)
    pos: jax.Array  # sub-key of the current position (kind * _SHIFT + index)
    adj: _Adj  # [n] each
    held: jax.Array  # [n] refractory just before the current position
    in_ptr: jax.Array  # last input arrival not yet processed (counting down)
    rec_ptr: jax.Array
    spike_ptr: jax.Array
    rest_ptr: jax.Array
    g_spike: jax.Array  # [M] dL/d(spike time) from later events
    d_weights: jax.Array
    d_recurrent: jax.Array | None
    d_tau_mem: jax.Array
    d_tau_syn: jax.Array
    d_theta: jax.Array
    d_u_reset: jax.Array
    d_refrac: jax.Array
    d_arrivals: jax.Array


def _take(x, idx, fill):
    return jnp.take(x, idx, mode="fill", fill_value=fill)


def backward_windows(
    layer: Layer, arrivals: Arrivals, fwd: LayerState, g_out, t_max, smooth: bool, cfg
):
    """EventProp backward pass of one layer and sample, window by window. Same arguments
    and results as `eventprop.backward_layer` (`cfg`: the `Windows` budgets)."""
    p = layer.params
    n, capacity = layer.size, fwd.out_times.shape[0]
    dtype = fwd.out_times.dtype
    rec = layer.recurrent_weights
    d = layer.delay
    delayed, coupled = rec is not None and d > 0, rec is not None and d == 0
    slots = jnp.arange(capacity)
    real = slots < fwd.count
    owner = jnp.where(real, fwd.out_indices, 0)
    rest_end = jnp.where(real, fwd.out_times + rest_length(layer)[owner], jnp.inf)
    rest_valid = real & (rest_end <= t_max)
    rest_order = time_order(jnp.where(rest_valid, rest_end, jnp.inf))
    rest_times = jnp.where(rest_valid, rest_end, jnp.inf)[rest_order]
    n_rest = jnp.sum(rest_valid).astype(jnp.int32)
    still_resting = jnp.zeros((n,), bool).at[owner].max(real & ~rest_valid)
    g_out = jnp.where(real, g_out, 0.0)
    tm, ts = p.tau_mem, p.tau_syn
    taus = time_constants(layer, cfg)
    zeros_n = jnp.zeros((n,), dtype)
    m_in, m_rec = cfg.arrivals, (cfg.recurrent_arrivals if delayed else 0)
    s_own = cfg.window_spikes
    depth = 2 * cfg.spikes + 2  # own events of one neuron in one window
    chunk = min(cfg.chunk, n)

    c0 = _Carry(
        t=jnp.asarray(t_max, dtype),
        pos=jnp.asarray(jnp.iinfo(jnp.int32).max, jnp.int32),
        adj=_Adj(*(zeros_n,) * 6),
        held=still_resting,
        in_ptr=fwd.input_ptr - 1,
        rec_ptr=(fwd.recurrent_ptr - 1) if delayed else jnp.asarray(-1, jnp.int32),
        spike_ptr=fwd.count - 1,
        rest_ptr=n_rest - 1,
        g_spike=jnp.zeros((capacity,), dtype),
        d_weights=jnp.zeros_like(layer.weights),
        d_recurrent=None if rec is None else jnp.zeros_like(rec),
        d_tau_mem=zeros_n,
        d_tau_syn=zeros_n,
        d_theta=zeros_n,
        d_u_reset=zeros_n,
        d_refrac=zeros_n,
        d_arrivals=jnp.zeros_like(arrivals.times),
    )

    def key_at(stream_times, ptr, kind, index):
        """Key of the event a stream has at `ptr` (-inf when the stream is done)."""
        t = jnp.where(ptr >= 0, _take(stream_times, jnp.maximum(ptr, 0), jnp.inf), -jnp.inf)
        return t, _sub(kind, index)

    def window(c: _Carry) -> _Carry:
        # 1. The window's lower end: the first event each stream cannot take (budget), the
        # delay bound, and with zero-delay recurrence the next spike (taken, last).
        lo_t, lo_s = jnp.asarray(-jnp.inf, dtype), jnp.asarray(0, jnp.int32)

        def raise_to(lo, key):
            bigger = _greater(key[0], key[1], *lo)
            return jnp.where(bigger, key[0], lo[0]), jnp.where(bigger, key[1], lo[1])

        lo = (lo_t, lo_s)
        ip = c.in_ptr - m_in
        lo = raise_to(lo, key_at(arrivals.times, ip, INPUT, ip))
        if delayed:
            rp = c.rec_ptr - m_rec
            lo = raise_to(lo, key_at(fwd.out_times + d, rp, RECUR, rp))
            # Spikes of the window must have their recurrent arrivals done: times > t - d.
            lo = raise_to(lo, (c.t - d, jnp.asarray(_SHIFT * 4, jnp.int32)))
        if coupled:
            sp_t = jnp.where(
                c.spike_ptr >= 0, fwd.out_times[jnp.maximum(c.spike_ptr, 0)], -jnp.inf
            )
            lo = raise_to(lo, (sp_t, jnp.asarray(-1, jnp.int32)))
        else:
            sp = c.spike_ptr - s_own
            lo = raise_to(lo, key_at(fwd.out_times, sp, SPIKE, sp))
        qp = c.rest_ptr - s_own
        lo = raise_to(lo, key_at(rest_times, qp, REST, qp))
        # Own events (not the coupled spikes): spikes and refractory ends, each with its rank
        # among the same neuron's own events later in the window (0: its latest). A neuron
        # with more than `depth` of them ends the window before the one too many.
        own_idx = [c.rest_ptr - jnp.arange(s_own, dtype=jnp.int32)]
        own_t = [_take(rest_times, own_idx[0], jnp.inf)]
        own_s = [_sub(REST, own_idx[0])]
        own_slot = [_take(rest_order, jnp.maximum(own_idx[0], 0), 0)]
        own_kind = [jnp.full(s_own, REST)]
        if not coupled:
            sp_idx = c.spike_ptr - jnp.arange(s_own, dtype=jnp.int32)
            own_idx.append(sp_idx)
            own_t.append(_take(fwd.out_times, sp_idx, jnp.inf))
            own_s.append(_sub(SPIKE, sp_idx))
            own_slot.append(jnp.maximum(sp_idx, 0))
            own_kind.append(jnp.full(s_own, SPIKE))
        o_idx, o_t, o_s, o_slot, o_kind = (
            jnp.concatenate(x) for x in (own_idx, own_t, own_s, own_slot, own_kind)
        )
        o_in = (o_idx >= 0) & _greater(o_t, o_s, *lo)
        o_who = jnp.where(o_in, owner[o_slot], n)
        after = _greater(o_t[None, :], o_s[None, :], o_t[:, None], o_s[:, None])
        rank = jnp.sum((o_who[None, :] == o_who[:, None]) & o_in[None, :] & after, axis=1)
        too_deep = o_in & (rank >= depth)
        deep_t = jnp.max(jnp.where(too_deep, o_t, -jnp.inf))
        deep_s = jnp.max(jnp.where(too_deep & (o_t == deep_t), o_s, -1)).astype(jnp.int32)
        lo = raise_to(lo, (deep_t, deep_s))
        lo_t, lo_s = lo
        t_lo = jnp.maximum(lo_t, 0.0)

        def taken(t, s, ok):
            return ok & _greater(t, s, lo_t, lo_s) & ~_greater(t, s, c.t, c.pos)

        # 2. Arrivals of the window (inputs, then delayed recurrent ones), and their rows.
        a_idx = c.in_ptr - jnp.arange(m_in, dtype=jnp.int32)
        a_t = _take(arrivals.times, a_idx, jnp.inf)
        a_s = _sub(INPUT, a_idx)
        a_ok = taken(a_t, a_s, a_idx >= 0)
        a_src = jnp.maximum(_take(arrivals.sources, a_idx, 0), 0)
        rows = layer.weights[a_src]
        kinds = jnp.full(m_in, INPUT)
        if delayed:
            r_idx = c.rec_ptr - jnp.arange(m_rec, dtype=jnp.int32)
            r_t = _take(fwd.out_times, r_idx, jnp.inf) + d
            r_s = _sub(RECUR, r_idx)
            r_ok = taken(r_t, r_s, r_idx >= 0)
            r_src = jnp.maximum(_take(fwd.out_indices, r_idx, 0), 0)
            a_t, a_s, a_ok = (jnp.concatenate(x) for x in ((a_t, r_t), (a_s, r_s), (a_ok, r_ok)))
            a_src = jnp.concatenate([a_src, r_src])
            a_idx = jnp.concatenate([a_idx, r_idx])
            rows = jnp.concatenate([rows, rec[r_src]])
            kinds = jnp.concatenate([kinds, jnp.full(m_rec, RECUR)])
        rows = jnp.where(a_ok[:, None], rows, 0.0)
        a_t = jnp.where(a_ok, a_t, c.t)

        o_ok = taken(o_t, o_s, o_in)
        o_who = jnp.where(o_ok, o_who, n)
        active = jnp.zeros(n + 1, bool).at[o_who].set(True)[:n]

        # 4. Quiet neurons: closed forms from the window's end.
        with jax.named_scope("quiet"):
            quiet_adj = jax.tree.map(lambda x: jnp.where(active, 0.0, x), c.adj)
            lag = (c.t - a_t)[:, None]  # [m, 1]
            held_q = c.held[None, :]
            at_arrival = _back(quiet_adj, lag, held_q, *taus, smooth)  # [m, n] each
            c = _arrival_terms(c, at_arrival, held_q, rows, a_src, a_idx, kinds, a_ok, layer)

        # 5. Active neurons: own events in reverse, then the same from the nearest later one.
        cand_idx = compact(active, chunk)
        n_chunks = (jnp.sum(active, dtype=jnp.int32) + chunk - 1) // chunk
        lanes = jnp.arange(n + chunk, dtype=jnp.int32)
        lane_of = jnp.zeros(n + 1, jnp.int32).at[cand_idx].set(lanes, mode="drop")
        own = (o_t, o_s, o_slot, o_kind, lane_of[o_who], rank, o_ok)
        arr = (a_t, a_s, rows, a_src, a_idx, kinds, a_ok)

        def run_chunk(k, st):
            c, lanes_lo = st
            idx = jax.lax.dynamic_slice(cand_idx, (k * chunk,), (chunk,))
            with jax.named_scope("active"):
                c, adj_lo = _lanes(
                    c, idx, k * chunk, own, arr, t_lo, layer, fwd, g_out, smooth, depth
                )
            lanes_lo = jax.tree.map(lambda a, b: a.at[idx].set(b, mode="drop"), lanes_lo, adj_lo)
            return c, lanes_lo

        quiet_lo = _back(c.adj, c.t - t_lo, c.held, tm, ts, smooth)
        empty = (quiet_lo, c.held)
        c, (adj_lo, held_lo) = jax.lax.fori_loop(0, n_chunks, run_chunk, (c, empty))

        n_in = jnp.sum(a_ok[:m_in], dtype=jnp.int32)
        n_rec = jnp.sum(a_ok[m_in:], dtype=jnp.int32)
        n_own_spikes = jnp.sum(o_ok & (o_kind == SPIKE), dtype=jnp.int32)
        n_own_rests = jnp.sum(o_ok & (o_kind == REST), dtype=jnp.int32)
        c = c._replace(
            t=t_lo,
            pos=lo_s,
            adj=adj_lo,
            held=held_lo,
            in_ptr=c.in_ptr - n_in,
            rec_ptr=c.rec_ptr - n_rec,
            spike_ptr=c.spike_ptr - n_own_spikes,
            rest_ptr=c.rest_ptr - n_own_rests,
        )
        if coupled:  # the window ends at spikes (not at a budget's cut): apply them last
            c = _coupled_spikes(c, lo_t, lo_s < 0, layer, fwd, g_out)
        return c

    def more(c: _Carry):
        return (c.in_ptr >= 0) | (c.rec_ptr >= 0) | (c.spike_ptr >= 0) | (c.rest_ptr >= 0)

    c = jax.lax.while_loop(more, window, c0)
    grads = eqx.tree_at(
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
            c.d_weights,
            c.d_tau_mem,
            c.d_tau_syn,
            c.d_theta,
            c.d_u_reset,
            -c.d_theta - c.d_u_reset,
            c.d_refrac,
        ),
    )
    if rec is not None:
        grads = eqx.tree_at(lambda lay: lay.recurrent_weights, grads, c.d_recurrent)
    return grads, c.d_arrivals


def _arrival_terms(c: _Carry, at: _Adj, held, rows, src, idx, kinds, ok, layer, cols=None):
    """Book the arrivals' contributions given the adjoint `at` of the neurons at each
    arrival (``[m, n]``, or ``[m, C]`` for the lanes' neurons `cols`): the jump ``I += w``
    adds ``lambda_I`` to ``dL/dW[src]``, ``R_I w`` to the time constants' gradients, and
    its flux ``w . dx/dt`` to the arrival time's gradient."""
    p = layer.params
    if cols is None:
        tm, ts = p.tau_mem, p.tau_syn
    else:
        safe = jnp.minimum(cols, p.tau_mem.shape[0] - 1)
        tm, ts = p.tau_mem[safe], p.tau_syn[safe]
    w = rows if cols is None else jnp.take(rows, cols, axis=1, mode="fill", fill_value=0.0)
    w = jnp.where(ok[:, None], w, 0.0)
    li = jnp.where(ok[:, None], at.li, 0.0)
    flux = jnp.sum(jnp.where(held, 0.0, -at.lu * w / tm) + at.li * w / ts, axis=1)
    d_tm = jnp.sum(w * at.mi, axis=0)
    d_ts = jnp.sum(w * at.si, axis=0)
    inputs = ok & (kinds == INPUT)
    recur = ok & (kinds == RECUR)
    n_in = layer.weights.shape[0]

    def scatter(target, rows_ok, n_rows):
        r = jnp.where(rows_ok, src, n_rows)
        if cols is None:
            return target.at[r].add(jnp.where(rows_ok[:, None], li, 0.0), mode="drop")
        cc = jnp.broadcast_to(cols[None, :], li.shape)
        rr = jnp.broadcast_to(r[:, None], li.shape)
        return target.at[rr, cc].add(jnp.where(rows_ok[:, None], li, 0.0), mode="drop")

    d_weights = scatter(c.d_weights, inputs, n_in)
    d_recurrent = c.d_recurrent
    g_spike = c.g_spike
    if d_recurrent is not None:
        d_recurrent = scatter(d_recurrent, recur, d_recurrent.shape[0])
    n_arr = c.d_arrivals.shape[0]
    d_arrivals = c.d_arrivals.at[jnp.where(inputs, idx, n_arr)].add(
        jnp.where(inputs, flux, 0.0), mode="drop"
    )
    cap = g_spike.shape[0]
    g_spike = g_spike.at[jnp.where(recur, idx, cap)].add(jnp.where(recur, flux, 0.0), mode="drop")
    if cols is None:
        d_tau_mem, d_tau_syn = c.d_tau_mem + d_tm, c.d_tau_syn + d_ts
    else:
        d_tau_mem = c.d_tau_mem.at[cols].add(d_tm, mode="drop")
        d_tau_syn = c.d_tau_syn.at[cols].add(d_ts, mode="drop")
    return c._replace(
        d_weights=d_weights,
        d_recurrent=d_recurrent,
        g_spike=g_spike,
        d_arrivals=d_arrivals,
        d_tau_mem=d_tau_mem,
        d_tau_syn=d_tau_syn,
    )


def _lanes(c: _Carry, idx, first, own, arr, t_lo, layer, fwd, g_out, smooth, depth):
    """The active neurons `idx` ``[C]`` (padding: n; lanes `first` to ``first + C`` of the
    window): their own events in reverse, the window's arrivals from the nearest later own
    event, their adjoint at `t_lo`."""
    p = layer.params
    n = layer.size
    valid = idx < n
    cols = jnp.where(valid, idx, 0)
    tm, ts = p.tau_mem[cols], p.tau_syn[cols]
    theta = (p.v_th - p.v_leak)[cols]
    u_reset = (p.v_reset - p.v_leak)[cols]
    o_t, o_s, o_slot, o_kind, o_lane, o_rank, o_ok = own
    a_t, a_s, rows, a_src, a_idx, kinds, a_ok = arr
    q = depth
    # Each lane's own events by rank ([C, q], rank 0 its latest).
    lane_pos = o_lane - first
    place = o_ok & (lane_pos >= 0) & (lane_pos < idx.shape[0])
    row = jnp.where(place, lane_pos, idx.shape[0])
    col = jnp.minimum(o_rank, q - 1)

    def by_rank(x, fill):
        return jnp.full((idx.shape[0], q), fill, x.dtype).at[row, col].set(x, mode="drop")

    e_t, e_s = by_rank(o_t, jnp.inf), by_rank(o_s, 0)
    e_slot, e_kind = by_rank(o_slot, 0), by_rank(o_kind, REST)
    mine = by_rank(place, False)
    count = jnp.sum(mine, axis=1, dtype=jnp.int32)
    lane = jnp.arange(idx.shape[0])
    adj0 = jax.tree.map(lambda x: x[cols], c.adj)
    held0 = c.held[cols]
    dtype = adj0.lu.dtype
    post = jax.tree.map(lambda x: jnp.zeros((idx.shape[0], q), dtype), adj0)
    post_held = jnp.zeros((idx.shape[0], q), bool)

    def step(j, st):
        """Own event ``j`` (counted from the latest) of every lane that has one."""
        adj, held, now, post, post_held, acc = st
        has = valid & (j < count)
        kk = jnp.minimum(j, q - 1)
        t_e = jnp.where(has, e_t[lane, kk], now)
        slot = e_slot[lane, kk]
        kind = e_kind[lane, kk]
        adj = _back(adj, now - t_e, held, tm, ts, smooth)
        g_spike, d_theta, d_u_reset, d_refrac, d_tm, d_ts = acc
        # The end of a refractory period: u starts to move again there.
        is_rest = has & (kind == REST)
        i_end = jnp.where(is_rest, fwd.out_current_at_rest_end[slot], 0.0)
        d_rest = jnp.where(is_rest, -adj.lu * (i_end - u_reset) / tm, 0.0)
        g_spike = g_spike.at[jnp.where(is_rest, slot, g_spike.shape[0])].add(d_rest, mode="drop")
        d_refrac = d_refrac + d_rest
        # A spike: the threshold condition and the reset.
        is_spike = has & (kind == SPIKE)
        total = g_out[slot] + g_spike[slot]
        slope = (fwd.out_current[slot] - theta) / tm
        slope = jnp.maximum(slope, SLOPE_FLOOR * jnp.maximum(jnp.abs(theta), 1.0) / tm)
        coef = jnp.where(is_spike & ~fwd.out_at_once[slot], total / slope, 0.0)
        d_theta = d_theta + coef
        d_u_reset = d_u_reset + jnp.where(is_spike, adj.lu, 0.0)
        d_tm = d_tm + jnp.where(is_spike, adj.mu * u_reset, 0.0)
        d_ts = d_ts + jnp.where(is_spike, adj.su * u_reset, 0.0)
        adj = adj._replace(
            lu=jnp.where(is_spike, -coef, adj.lu),
            mu=jnp.where(is_spike, 0.0, adj.mu),
            su=jnp.where(is_spike, 0.0, adj.su),
        )
        held = jnp.where(is_rest, True, jnp.where(is_spike, False, held))
        post = jax.tree.map(
            lambda a, x: a.at[lane, kk].set(jnp.where(has, x, a[lane, kk])), post, adj
        )
        post_held = post_held.at[lane, kk].set(jnp.where(has, held, post_held[lane, kk]))
        return adj, held, t_e, post, post_held, (g_spike, d_theta, d_u_reset, d_refrac, d_tm, d_ts)

    zero = jnp.zeros(idx.shape[0], dtype)
    acc = (c.g_spike, zero, zero, zero, zero, zero)
    now = jnp.broadcast_to(c.t, idx.shape).astype(dtype)
    st = (adj0, held0, now, post, post_held, acc)
    adj, held, now, post, post_held, acc = jax.lax.fori_loop(0, jnp.max(count), step, st)
    g_spike, d_theta, d_u_reset, d_refrac, d_tm, d_ts = acc
    c = c._replace(
        g_spike=g_spike,
        d_theta=c.d_theta.at[idx].add(d_theta, mode="drop"),
        d_u_reset=c.d_u_reset.at[idx].add(d_u_reset, mode="drop"),
        d_refrac=c.d_refrac.at[idx].add(d_refrac, mode="drop"),
        d_tau_mem=c.d_tau_mem.at[idx].add(d_tm, mode="drop"),
        d_tau_syn=c.d_tau_syn.at[idx].add(d_ts, mode="drop"),
    )
    # Each arrival reads the lane's adjoint from its nearest later own event (or the end):
    # the own event of rank (number of own events after the arrival) - 1.
    later = _greater(e_t[:, None, :], e_s[:, None, :], a_t[None, :, None], a_s[None, :, None])
    n_later = jnp.sum(later & mine[:, None, :], axis=2)  # [C, m]
    from_end = n_later == 0
    pick = jnp.maximum(n_later - 1, 0)
    anchor_t = jnp.where(from_end, c.t, jnp.take_along_axis(e_t, pick, 1))
    anchor = jax.tree.map(
        lambda p_, a0: jnp.where(from_end, a0[:, None], jnp.take_along_axis(p_, pick, 1)),
        post,
        adj0,
    )
    anchor_held = jnp.where(from_end, held0[:, None], jnp.take_along_axis(post_held, pick, 1))
    at = _back(anchor, anchor_t - a_t[None, :], anchor_held, tm[:, None], ts[:, None], smooth)
    at = jax.tree.map(lambda x: jnp.where(valid[:, None], x, 0.0).T, at)  # [m, C]
    ok = a_ok
    c = _arrival_terms(c, at, anchor_held.T, rows, a_src, a_idx, kinds, ok, layer,
                       cols=jnp.where(valid, idx, n))  # fmt: skip
    # The lanes at the window's lower end.
    adj_lo = _back(adj, now - t_lo, held, tm, ts, smooth)
    return c, (adj_lo, held)


def _coupled_spikes(c: _Carry, t_spike, due, layer, fwd, g_out):
    """Zero-delay recurrence: the spikes at `t_spike` (the window's lower end), one at a
    time in reverse record order, each jumping every neuron's ``I`` by its row."""
    p = layer.params
    rec = layer.recurrent_weights
    theta, u_reset = p.v_th - p.v_leak, p.v_reset - p.v_leak
    n = layer.size

    def one(c: _Carry):
        q = c.spike_ptr
        m = fwd.out_indices[q]
        w = rec[m]
        a = c.adj
        flux = jnp.sum(jnp.where(c.held, 0.0, -a.lu * w / p.tau_mem) + a.li * w / p.tau_syn)
        d_recurrent = c.d_recurrent.at[m].add(a.li)
        d_tm = a.mi * w
        d_ts = a.si * w
        total = g_out[q] + c.g_spike[q]
        slope = (fwd.out_current[q] - theta[m]) / p.tau_mem[m]
        slope = jnp.maximum(
            slope, SLOPE_FLOOR * jnp.maximum(jnp.abs(theta[m]), 1.0) / p.tau_mem[m]
        )
        coef = jnp.where(fwd.out_at_once[q], 0.0, (flux + total) / slope)
        sel = jnp.arange(n) == m
        d_tm = d_tm + jnp.where(sel, a.mu * u_reset, 0.0)
        d_ts = d_ts + jnp.where(sel, a.su * u_reset, 0.0)
        adj = a._replace(
            lu=jnp.where(sel, -coef, a.lu),
            mu=jnp.where(sel, 0.0, a.mu),
            su=jnp.where(sel, 0.0, a.su),
        )
        return c._replace(
            adj=adj,
            held=jnp.where(sel, False, c.held),
            spike_ptr=q - 1,
            pos=jnp.asarray(_sub(SPIKE, q), jnp.int32),
            d_recurrent=d_recurrent,
            d_tau_mem=c.d_tau_mem + d_tm,
            d_tau_syn=c.d_tau_syn + d_ts,
            d_theta=c.d_theta.at[m].add(coef),
            d_u_reset=c.d_u_reset.at[m].add(a.lu[m]),
        )

    def at_time(c: _Carry):
        q = jnp.maximum(c.spike_ptr, 0)
        return due & (c.spike_ptr >= 0) & (fwd.out_times[q] == t_spike)

    return jax.lax.while_loop(at_time, one, c)
