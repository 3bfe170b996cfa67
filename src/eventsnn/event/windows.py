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
        refractory: a neuron may be held after a spike (``t_refrac > 0`` or single-spike
            layers). ``False`` drops that case from the superposition (cheaper); checked
            like the time constants; `simulate` sets it where ``t_refrac`` is concretely 0.
    """

    arrivals: int = eqx.field(static=True, default=32)
    recurrent_arrivals: int = eqx.field(static=True, default=32)
    spikes: int = eqx.field(static=True, default=4)
    window_spikes: int = eqx.field(static=True, default=32)
    chunk: int = eqx.field(static=True, default=32)
    max_length: float | None = eqx.field(static=True, default=None)
    shared_time_constants: bool = eqx.field(static=True, default=False)
    refractory: bool = eqx.field(static=True, default=True)

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


def check_refractory(layer: Layer, cfg: Windows):
    """Refuse ``Windows(refractory=False)`` for a layer whose neurons can be held; inside
    jit, an error at run time. Returns the layer's refractory times."""
    t_ref = layer.params.t_refrac
    if cfg.refractory:
        return t_ref
    if layer.single_spike:
        raise ValueError("Windows(refractory=False) cannot run a single-spike layer.")
    held = jnp.any(t_ref != 0)
    if is_concrete(held):
        if bool(held):
            raise ValueError(
                "Windows(refractory=False) but the layer has t_refrac > 0: set refractory=True."
            )
        return t_ref
    return eqx.error_if(t_ref, held, "Windows(refractory=False) but t_refrac > 0")


def never_held(layer: Layer) -> bool:
    """Whether no neuron of the layer can be held after a spike (concrete zeros)."""
    t_ref = layer.params.t_refrac
    return not layer.single_spike and is_concrete(t_ref) and not bool(np.any(np.asarray(t_ref)))


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


def _weighted_sum(coef, jumps):
    """``sum_a coef[a] jumps[a]`` ``[n]``: a matrix-vector product where the coefficients
    are per arrival (``[m, 1]``, shared time constants), else elementwise."""
    if coef.shape[-1] == 1:
        return coef[:, 0] @ jumps
    return jnp.sum(coef * jumps, axis=0)


def _superpose_free(p, c: _Carry, end, closing, lag, jumps, smooth, taus) -> _Dense:
    """`_superpose` where no neuron is ever held (no refractory period): every arrival's
    PSP enters ``u`` directly; with shared time constants, matrix-vector products."""
    tm, ts = taus
    span = end - c.t
    e_syn, k_lag = jnp.exp(-lag / ts), kernel(lag, tm, ts, smooth)
    i_end = c.i * jnp.exp(-span / ts) + _weighted_sum(e_syn, jumps)
    u_free = c.u * jnp.exp(-span / tm) + c.i * kernel(span, tm, ts, smooth)
    peak_time, peak = psp_peak(tm, ts)
    cap = jnp.where(lag <= peak_time, k_lag, peak)  # the most each PSP reaches by the end
    excited = _weighted_sum(cap, jnp.maximum(jumps, 0.0))
    top = free_peak(c.u, c.i, span, tm, ts, u_free, smooth) + excited
    rest_ends = (c.r >= c.t) & ((c.r < end) | (closing & (c.r <= end)))
    u_end = u_free + _weighted_sum(k_lag, jumps)
    return _Dense(u_end, i_end, c.i, rest_ends, top >= p.v_th - p.v_leak)


def _superpose(
    layer: Layer, c: _Carry, end, closing, arr_t, jumps, applied, smooth, taus, hold=True
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
    if not hold:
        return _superpose_free(p, c, end, closing, lag, jumps, smooth, taus)
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


class _Prep(NamedTuple):
    """One sample's window before its candidates run."""

    end: jax.Array
    closing: jax.Array
    arr_t: jax.Array  # [m] the arrivals in time order (inf: not in the window)
    rows: jax.Array  # [m, n] their jumps
    taken: jax.Array  # [m]
    n_in: jax.Array  # input arrivals taken
    n_rec: jax.Array  # recurrent arrivals taken
    dense: _Dense
    cand_idx: jax.Array  # [n + chunk]
    n_chunks: jax.Array


def _prepare(layer, arrivals, t_max, cfg, taus, smooth, c: _Carry, active) -> _Prep:
    """One sample: the window's end and arrivals, every neuron superposed to the end and
    the candidates. An inactive sample (finished) gets an empty window."""
    rec = layer.recurrent_weights
    d = layer.delay
    delayed = rec is not None and d > 0
    times_ext = jnp.append(arrivals.times, jnp.inf)
    m_in = min(cfg.arrivals, max(times_ext.shape[0] - 1, 1))
    with jax.named_scope("arrivals"):
        limit = jnp.minimum(t_max, c.cut)
        if cfg.max_length is not None:
            limit = jnp.minimum(limit, c.t + cfg.max_length)
        if delayed:
            limit = jnp.minimum(limit, c.t + d)
        pos = c.in_ptr + jnp.arange(m_in + 1)
        in_t = jnp.take(times_ext, pos, mode="fill", fill_value=jnp.inf)
        end = jnp.where(active, jnp.minimum(limit, in_t[m_in]), c.t)
        sources = jnp.take(arrivals.sources, pos[:m_in], mode="clip")
        arr_t, rows = in_t[:m_in], layer.weights[jnp.maximum(sources, 0)]
        if delayed:
            m_rec = cfg.recurrent_arrivals
            rpos = c.rec_ptr + jnp.arange(m_rec + 1)
            rec_t = jnp.take(c.times, rpos, mode="fill", fill_value=jnp.inf) + d
            rec_t = jnp.where(rpos < c.count, rec_t, jnp.inf)
            end = jnp.where(active, jnp.minimum(end, rec_t[m_rec]), c.t)
            src = jnp.take(c.indices, rpos[:m_rec], mode="fill", fill_value=0)
            arr_t = jnp.concatenate([arr_t, rec_t[:m_rec]])
            rows = jnp.concatenate([rows, rec[jnp.maximum(src, 0)]])
        closing = end >= t_max
        taken = _applied(arr_t, c.t, end) & active
        arr_t = jnp.where(taken, arr_t, jnp.inf)
        rows = jnp.where(taken[:, None], rows, 0.0)
        n_in = jnp.sum(taken[:m_in], dtype=jnp.int32)
        n_rec = jnp.sum(taken[m_in:], dtype=jnp.int32)
        if delayed:  # merge the two sorted lists for the candidates' sequences
            order = time_order(arr_t)
            arr_t, rows, taken = arr_t[order], rows[order], taken[order]
    with jax.named_scope("superpose"):
        dense = _superpose(
            layer, c, end, closing, arr_t, rows, taken, smooth, taus, cfg.refractory
        )
        dense = dense._replace(candidate=dense.candidate & active)
        cand_idx, n_chunks = _candidates(dense, cfg.chunk)
    return _Prep(end, closing, arr_t, rows, taken, n_in, n_rec, dense, cand_idx, n_chunks)


def _lanes_of(layer, cfg, solver, c: _Carry, w: _Prep, k):
    """One sample: chunk `k` of its candidates through its window."""
    idx = jax.lax.dynamic_slice(w.cand_idx, (k * cfg.chunk,), (cfg.chunk,))
    valid = idx < layer.size
    q = _lane_params(layer, idx)
    state = tuple(jnp.take(x, idx, mode="fill", fill_value=0.0) for x in (c.u, c.i, c.r))
    jumps = jnp.take(w.rows, idx, axis=1, mode="fill", fill_value=0.0).T
    zero_delay = layer.recurrent_weights is not None and layer.delay == 0
    with jax.named_scope("lanes"):
        lanes = run_lanes(
            q, state, valid, c.t, w.end, w.arr_t, jumps, solver=solver,
            spikes=1 if layer.single_spike else cfg.spikes, first_only=zero_delay,
            closing=w.closing,
        )  # fmt: skip
    return idx, valid, lanes


def _first_chunk(layer, cfg, solver, c: _Carry, w: _Prep, first, k):
    """Zero-delay recurrence: each candidate's first crossing in the window ``[n]``."""
    idx, valid, lanes = _lanes_of(layer, cfg, solver, c, w, k)
    return first.at[idx].set(jnp.where(valid, lanes.first, jnp.inf), mode="drop")


def _commit_first(layer, t_max, budget, smooth, taus, cfg, c: _Carry, w: _Prep, first, active):
    """Zero-delay recurrence: the window ends at the layer's earliest crossing (if any
    before its end); every neuron is superposed to it and the neurons crossing there spike
    (their recurrent rows jump every ``I``)."""
    n, p = layer.size, layer.params
    t_spike = jnp.min(first)
    fires_at = t_spike <= w.end
    end = jnp.minimum(w.end, t_spike)
    # Input arrivals at the spike time itself come after it (the next window).
    applied = jnp.where(fires_at, w.arr_t < end, _applied(w.arr_t, c.t, end)) & active
    dense = _superpose(
        layer, c, end, end >= t_max, w.arr_t, w.rows, applied, smooth, taus, cfg.refractory
    )
    spikers = fires_at & (first == t_spike) & active
    rest_current = _record_rest(c, jnp.arange(n), dense.rest_current, dense.rest_ends & active)
    rank = running_count(spikers) - 1
    n_new = jnp.sum(spikers, dtype=jnp.int32)
    full = c.count + n_new > budget
    slot = jnp.where(spikers & (c.count + rank < budget), c.count + rank, c.times.shape[0])
    once = (t_spike == 0) & (p.v_th <= p.v_leak)
    neurons = jnp.arange(n, dtype=jnp.int32)
    jump = spikers.astype(c.u.dtype) @ layer.recurrent_weights

    def keep(new, old):
        return jnp.where(active, new, old)

    return c._replace(
        t=keep(end, c.t),
        u=keep(jnp.where(spikers, p.v_reset - p.v_leak, dense.u), c.u),
        i=keep(dense.i + jump, c.i),
        r=jnp.where(spikers, end + rest_length(layer), c.r),
        in_ptr=c.in_ptr + jnp.sum(applied, dtype=jnp.int32),
        times=c.times.at[slot].set(end, mode="drop"),
        indices=c.indices.at[slot].set(neurons, mode="drop"),
        current=c.current.at[slot].set(dense.i, mode="drop"),
        at_once=c.at_once.at[slot].set(once, mode="drop"),
        rest_current=rest_current,
        last_slot=jnp.where(spikers & (slot < budget), slot, c.last_slot),
        count=jnp.minimum(c.count + n_new, budget),
        overflow=c.overflow | (full & active),
    )


class _Gather(NamedTuple):
    """The candidates' results of one window, collected chunk by chunk (one sample)."""

    u: jax.Array
    i: jax.Array
    r: jax.Array
    rest_value: jax.Array  # [n] I where a period that began before the window ends in it
    rest_ok: jax.Array  # [n]
    buf: tuple  # the window's earliest wb + 1 spikes: time, neuron, I, at once, I at rest end
    n_new: jax.Array
    cut: jax.Array


def _gather_init(layer, cfg, c: _Carry, w: _Prep, active) -> _Gather:
    n, dtype = layer.size, c.u.dtype
    wb = cfg.window_spikes
    ends = w.dense.rest_ends & active
    buf = (
        jnp.full(wb + 1, jnp.inf, dtype),
        jnp.full(wb + 1, n, jnp.int32),
        jnp.zeros(wb + 1, dtype),
        jnp.zeros(wb + 1, bool),
        jnp.full(wb + 1, jnp.nan, dtype),
    )
    return _Gather(
        w.dense.u, w.dense.i, c.r, w.dense.rest_current, ends,
        buf, jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, dtype),
    )  # fmt: skip


def _gather_chunk(layer, cfg, solver, c: _Carry, w: _Prep, g: _Gather, k) -> _Gather:
    """Chunk `k` of the candidates: their end states, spikes kept in (time, neuron) order."""
    n, wb = layer.size, cfg.window_spikes
    idx, valid, lanes = _lanes_of(layer, cfg, solver, c, w, k)
    # I at the end of a period that began before the window.
    prev = lanes.rest_current[:, 0]
    ended = valid & ~jnp.isnan(prev)
    rest_value = g.rest_value.at[jnp.where(ended, idx, n)].set(prev, mode="drop")
    rest_ok = g.rest_ok.at[jnp.where(ended, idx, n)].set(True, mode="drop")
    p_ = lanes.times.shape[1]
    new = (
        lanes.times.reshape(-1),
        jnp.repeat(jnp.where(valid, idx, n), p_),
        lanes.current.reshape(-1),
        lanes.at_once.reshape(-1),
        lanes.rest_current[:, 1:].reshape(-1),
    )
    merged = tuple(jnp.concatenate([a, b]) for a, b in zip(g.buf, new))
    keep = time_order(merged[0], merged[1])[: wb + 1]
    return _Gather(
        g.u.at[idx].set(lanes.u, mode="drop"),
        g.i.at[idx].set(lanes.i, mode="drop"),
        g.r.at[idx].set(lanes.r, mode="drop"),
        rest_value,
        rest_ok,
        tuple(x[keep] for x in merged),
        g.n_new + jnp.sum(lanes.count, dtype=jnp.int32),
        jnp.minimum(g.cut, lanes.cut),
    )


def between(kept, excluded):
    """A time after `kept` and before `excluded` where a window run again ends: halfway, or
    `kept` itself where the two are adjacent floats (a window keeps a crossing at its end)."""
    mid = 0.5 * (kept + excluded)
    return jnp.where(mid < excluded, mid, kept)


def _commit_all(layer, cfg, budget, c: _Carry, w: _Prep, g: _Gather, active) -> _Carry:
    """No coupling inside the window: every candidate's sequence stands; commit them all,
    or cut the window where a budget would be exceeded and leave it to be run again."""
    n, dtype = layer.size, c.u.dtype
    wb = cfg.window_spikes
    b_t, b_i, b_cur, b_once, b_rest = g.buf
    # Too many spikes in the window: end it halfway between the last kept spike earlier
    # than the first one too many and that one (spikes tied with it go to the next window
    # together: a cut between equal times would end the window where it ended before).
    excluded = b_t[wb]
    prior = jnp.max(jnp.where(b_t[:wb] < excluded, b_t[:wb], -jnp.inf))
    too_full = jnp.where(jnp.isfinite(prior), between(prior, excluded), c.t)
    cut = jnp.where(g.n_new > wb, jnp.minimum(g.cut, too_full), g.cut)
    # More spikes at one instant than a window holds cannot be cut apart: the window
    # stands, truncated, and the overflow says so. So does a cut that would not shorten
    # the window (a window run again must end earlier: the loop always advances).
    stuck = jnp.isfinite(cut) & ((cut <= c.t) | (cut >= w.end))
    commit = active & (~jnp.isfinite(cut) | stuck)
    rank = jnp.arange(wb, dtype=jnp.int32)
    kept = commit & (rank < g.n_new)
    at = jnp.where(kept & (c.count + rank < budget), c.count + rank, c.times.shape[0])
    neurons = jnp.where(kept, b_i[:wb], n)
    last_slot = c.last_slot.at[neurons].max(jnp.where(at < budget, at, -1), mode="drop")
    # Periods that ended in a window cut short end again in its shorter run: write them
    # only when the window stands.
    rest_current = _record_rest(c, jnp.arange(n), g.rest_value, g.rest_ok & commit)

    def keep(new, old):
        return jnp.where(commit, new, old)

    return c._replace(
        t=keep(w.end, c.t),
        u=keep(g.u, c.u),
        i=keep(g.i, c.i),
        r=keep(g.r, c.r),
        in_ptr=c.in_ptr + jnp.where(commit, w.n_in, 0),
        rec_ptr=c.rec_ptr + jnp.where(commit, w.n_rec, 0),
        times=c.times.at[at].set(b_t[:wb], mode="drop"),
        indices=c.indices.at[at].set(b_i[:wb], mode="drop"),
        current=c.current.at[at].set(b_cur[:wb], mode="drop"),
        at_once=c.at_once.at[at].set(b_once[:wb], mode="drop"),
        rest_current=rest_current.at[at].set(b_rest[:wb], mode="drop"),
        last_slot=last_slot,
        count=jnp.where(commit, jnp.minimum(c.count + g.n_new, budget), c.count),
        overflow=c.overflow | (commit & ((c.count + g.n_new > budget) | stuck)),
        cut=jnp.where(active & ~commit, cut, jnp.asarray(jnp.inf, dtype)),
    )


def _window(layer, arrivals, t_max, budget, solver, cfg, c: _Carry) -> _Carry:
    """Every sample of the batch (``c`` and `arrivals` with a leading batch axis) one
    window further. The loops over candidate chunks run as often as the busiest sample
    needs (one loop, not one per sample: a per-sample loop would, under `vmap`, select
    between old and new values of its whole carry, records included, at every step)."""
    taus = time_constants(layer, cfg)
    check_refractory(layer, cfg)
    smooth = solver.smooth
    zero_delay = layer.recurrent_weights is not None and layer.delay == 0
    active = (c.t < t_max) & ~c.overflow

    def per_sample(f, *batched):
        return jax.vmap(f)(*batched)

    w = per_sample(lambda a, c_, on: _prepare(layer, a, t_max, cfg, taus, smooth, c_, on),
                   arrivals, c, active)  # fmt: skip
    n_chunks = jnp.max(w.n_chunks)
    if zero_delay:
        first0 = jnp.full(c.u.shape, jnp.inf, c.u.dtype)

        def step(k, first):
            return jax.vmap(lambda c_, w_, f: _first_chunk(layer, cfg, solver, c_, w_, f, k))(
                c, w, first
            )

        first = jax.lax.fori_loop(0, n_chunks, step, first0)
        with jax.named_scope("commit"):
            return per_sample(
                lambda c_, w_, f, on: _commit_first(
                    layer, t_max, budget, smooth, taus, cfg, c_, w_, f, on
                ),
                c, w, first, active,
            )  # fmt: skip
    g = per_sample(lambda c_, w_, on: _gather_init(layer, cfg, c_, w_, on), c, w, active)

    def step(k, g):
        return jax.vmap(lambda c_, w_, g_: _gather_chunk(layer, cfg, solver, c_, w_, g_, k))(
            c, w, g
        )

    g = jax.lax.fori_loop(0, n_chunks, step, g)
    with jax.named_scope("commit"):
        return per_sample(
            lambda c_, w_, g_, on: _commit_all(layer, cfg, budget, c_, w_, g_, on),
            c, w, g, active,
        )  # fmt: skip


def window_layer(layer: Layer, arrivals: Arrivals, t_max, max_spikes: int, solver,
                 cfg: Windows) -> LayerState:  # fmt: skip
    """Simulate one layer of a batch from its sorted arrivals ``[batch, K]``, window by
    window, every sample and neuron in parallel.

    Returns the event loop's `LayerState` with a leading batch axis (its records: spikes in
    time order, ties by index, with ``I`` at each spike and at each refractory period's
    end), which `windows_adjoint.backward_windows` differentiates.
    """
    n, dtype = layer.size, arrivals.times.dtype
    batch = arrivals.times.shape[0]
    slack = cfg.window_spikes + 1
    size = max_spikes + max(slack, n)

    def full(shape, value, dt):
        return jnp.full((batch, *shape), value, dt)

    c = _Carry(
        t=full((), 0.0, dtype),
        u=full((n,), 0.0, dtype),
        i=full((n,), 0.0, dtype),
        r=full((n,), -jnp.inf, dtype),
        in_ptr=full((), 0, jnp.int32),
        rec_ptr=full((), 0, jnp.int32),
        times=full((size,), jnp.inf, dtype),
        indices=full((size,), -1, jnp.int32),
        current=full((size,), 0.0, dtype),
        rest_current=full((size,), jnp.nan, dtype),
        at_once=full((size,), False, bool),
        last_slot=full((n,), -1, jnp.int32),
        count=full((), 0, jnp.int32),
        overflow=full((), False, bool),
        cut=full((), jnp.inf, dtype),
    )
    t_max = jnp.asarray(t_max, dtype)

    def more(c):
        return jnp.any((c.t < t_max) & ~c.overflow)

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
        pending=jnp.zeros((batch, n), bool),
        input_ptr=c.in_ptr,
        recurrent_ptr=c.rec_ptr,
        out_times=c.times[:, :m],
        out_indices=c.indices[:, :m],
        out_current=c.current[:, :m],
        out_current_at_rest_end=c.rest_current[:, :m],
        out_at_once=c.at_once[:, :m],
        last_slot=c.last_slot,
        count=c.count,
        overflow=c.overflow,
        done=jnp.ones((batch,), bool),
    )
