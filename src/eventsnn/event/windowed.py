"""Large recurrent networks with a synaptic delay: the exact windowed engine.

With a delay ``d > 0`` nothing emitted in ``[T, T + d)`` reaches any neuron before
``T + d``, so time is cut into windows of length ``d`` and every neuron is advanced
through a window on its own, in parallel, from the arrivals already known: the spikes of
the previous window shifted by ``d``. Spike times stay continuous and exact (the scheme of
precise-spike-timing simulators, vectorised over neurons). One window:

1. **Push** the previous window's spikes through their by-source synapse blocks (a fixed
   number of blocks per step, over the blocks there actually are) and scatter-add, per
   target, the exact end-of-window
   effect of every arrival (closed form, superposition: without a spike the dynamics are
   linear) and the most each excitatory arrival can add to ``V`` within the window (its
   PSP rises until its peak: the PSP at the window's end, or the peak).
2. **Bound**: ``V`` stays below the highest point of its motion without arrivals (closed
   form: the ends or the one extremum) plus those excitatory maxima; inhibition can only
   lower it. A neuron whose bound stays under threshold cannot spike, and its superposed
   end state is exact. The others are the candidates.
3. **Candidates** (in chunks): each pulls its own arrivals through its by-target synapse
   row, sorts them (at most ``max_arrivals``), and runs its event sequence: closed-form
   propagation to each arrival with a closed-form test for a crossing on the way; the
   first crossing is solved by the safeguarded Newton method of the event core; after the
   spike (reset, refractoriness) the sequence goes on from there.

Work per window is proportional to the spikes, their synapses and the candidates, memory
to neurons + synapses (+ the spike record). Where the time constants allow it (10% apart)
the PSP kernel is the plain difference of exponentials (`eventsnn.neuron.kernel`'s
``smooth=False``): nothing here is differentiated. Each phase runs in a `jax.named_scope`
(push, bound, candidates with pull and sequence, record) for profiles. With ``d = 0`` the
scheme does not apply and `simulate_windowed` refuses (the general event core,
`eventsnn.simulate`, handles it).
No external inputs: the population is driven by ``v_leak`` (tonic) and its own spikes.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._validate import is_concrete
from ..network import Spikes
from ..neuron import LIFParams, kernel, plain_kernel_ok, propagate
from ..sparse import Synapses
from .bound import excitation_bound, free_peak, psp_peak
from .order import compact
from .spike_time import NewtonSolver, bracket

OVERFLOW_FIELDS = ("max_spikes", "max_arrivals", "spikes_per_window")
_PARAMS = ("tau_mem", "tau_syn", "v_th", "v_reset", "v_leak", "t_refrac")


class SparseNetwork(eqx.Module):
    """One recurrent population of CuBa-LIF neurons with sparse synapses and one delay.

    Attributes:
        params: `LIFParams` of the ``n`` neurons (per neuron or broadcast).
        synapses: `Synapses` from the population to itself (``n`` sources, ``n`` targets).
        delay: synaptic delay (s) of every synapse, > 0 for the windowed engine (static).
    """

    params: LIFParams
    synapses: Synapses
    delay: float = eqx.field(static=True)

    def __init__(self, synapses: Synapses, *, delay: float, dtype=None, **params):
        """`params` are `LIFParams` fields (``tau_mem``, ``tau_syn``, ``v_th``, ``v_reset``,
        ``v_leak``, ``t_refrac``), scalars or ``[n]``."""
        n = synapses.n_targets
        if synapses.n_sources != n:
            raise ValueError(
                f"synapses must connect the population to itself: {synapses.n_sources} "
                f"sources but {n} targets."
            )
        if not (isinstance(delay, (int, float, np.floating)) and np.isfinite(delay)):
            raise ValueError(f"delay must be a finite number of seconds, got {delay!r}.")
        if delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay!r}.")
        self.params = LIFParams(n, dtype=dtype or synapses.weights.dtype, name="params", **params)
        self.synapses = synapses
        self.delay = float(delay)

    @property
    def size(self) -> int:
        return self.synapses.n_targets


class WindowedResult(eqx.Module):
    """What `simulate_windowed` returns.

    Attributes:
        spikes: ``[max_spikes]`` spike record (times in s, neuron indices), in time order,
            padded with ``inf`` / ``-1``.
        count: spikes emitted in total (also those beyond the record).
        spike_counts: ``[n]`` spikes per neuron (complete even when the record is full).
        overflow: ``[3]`` flags, one per `OVERFLOW_FIELDS` entry: the record was full; a
            candidate had more arrivals in one window than ``max_arrivals`` (its result is
            wrong from there on); a neuron spiked more often in one window than
            ``spikes_per_window`` (extra spikes are counted but not passed on).
        v, i, refractory_until: ``[n]`` state at ``t_end``.
    """

    spikes: Spikes
    count: Int[Array, ""]
    spike_counts: Int[Array, " n"]
    overflow: Bool[Array, " 3"]
    v: Float[Array, " n"]
    i: Float[Array, " n"]
    refractory_until: Float[Array, " n"]

    def raise_if_overflow(self) -> None:
        """Raise RuntimeError naming the budget when one was exceeded (outside jit)."""
        if not is_concrete(self.overflow):
            return
        over = np.asarray(self.overflow)
        if over[0] and not over[1:].any():
            raise RuntimeError(
                f"the spike record is full: {int(self.count)} spikes were emitted but "
                f"max_spikes={self.spikes.capacity}; spike_counts is still complete. "
                f"Increase max_spikes to at least {int(self.count)}."
            )
        if over[1]:
            raise RuntimeError(
                "a neuron received more arrivals within one window than max_arrivals, so "
                "its simulation is wrong from there on. Increase max_arrivals."
            )
        if over[2]:
            raise RuntimeError(
                "a neuron spiked more often within one window (one delay) than "
                "spikes_per_window. Increase spikes_per_window."
            )


def _table(x, pad):
    """Per-neuron array (or rows) with one padding entry at index n (gathers at n)."""
    return jnp.concatenate([x, jnp.full((1,) + x.shape[1:], pad, x.dtype)])


def _uniform_values(params: LIFParams) -> tuple:
    """``((field, value), ...)`` for each parameter whose concrete entries are all equal
    (value None otherwise): a static scalar is cheaper than a gather per arrival."""
    out = []
    for f in _PARAMS:
        x = getattr(params, f)
        same = is_concrete(x) and x.size and bool(np.all(np.asarray(x) == np.asarray(x)[0]))
        out.append((f, float(np.asarray(x)[0]) if same else None))
    return tuple(out)


def _param_tables(params: LIFParams, uniform: dict) -> dict:
    """Per parameter: its common value (a scalar), or the per-neuron array padded for
    gathers at index n; and, derived from the time constants the same way, the time and
    height of the PSP's peak (the spike bound's excitation term). Built once per window,
    outside the loops that gather from it."""
    table = {
        f: uniform[f] if uniform[f] is not None else _table(getattr(params, f), 1.0)
        for f in _PARAMS
    }
    table["psp_peak_time"], table["psp_peak"] = psp_peak(table["tau_mem"], table["tau_syn"])
    return table


def _gather(table, idx):
    """``table[idx]``, or the scalar itself for a uniform parameter."""
    return table if jnp.ndim(table) == 0 else table[idx]


def _pull_arrivals(net: SparseNetwork, cand, last_times, max_arrivals: int):
    """Arrivals of the candidate neurons `cand` ``[c]`` in this window, sorted by time:
    ``(times [c, A+1], weights [c, A+1], count [c])``; columns from the row's count on
    (and always column A) are padding (inf, 0). Beyond A arrivals the earliest A are kept
    (``count`` says how many there were)."""
    syn = net.synapses
    real = cand < syn.n_targets  # padding candidates read row 0, masked
    rows = jnp.where(real, cand, 0)
    src = jnp.where(real[:, None], syn.sources[rows], syn.n_sources)  # [c, K]
    times = last_times[src] + net.delay  # [c, K, P]
    weights = jnp.broadcast_to(syn.source_weights[rows][..., None], times.shape)
    times, weights = times.reshape(cand.shape[0], -1), weights.reshape(cand.shape[0], -1)
    count = jnp.sum(jnp.isfinite(times), axis=1)

    # The earliest k in time order (top_k keeps equal times in position order): one partial
    # sort instead of compacting the row and ranking it. Its cost grows with k, so k is the
    # smallest of a few sizes that holds every row's arrivals (up to A) in this chunk.
    def earliest(k):
        neg, idx = jax.lax.top_k(-times, k)
        t = -neg
        w = jnp.where(jnp.isfinite(t), jnp.take_along_axis(weights, idx, 1), 0.0)
        pad = max_arrivals + 1 - k
        return jnp.pad(t, ((0, 0), (0, pad)), constant_values=jnp.inf), jnp.pad(
            w, ((0, 0), (0, pad))
        )

    sizes = sorted(
        {min(k, max_arrivals, times.shape[1]) for k in (8, 12, 16, 20, 24, max_arrivals)}
    )
    need = jnp.minimum(jnp.max(count), max_arrivals)
    branch = jnp.sum(need > jnp.asarray(sizes[:-1]))
    t, w = jax.lax.switch(branch, [functools.partial(earliest, k) for k in sizes])
    return t, w, count


def _run_candidates(p, state, arrivals, t_end_w, spikes_per_window: int, smooth: bool):
    """Exact event sequence of each candidate through the window ``[t, t_end_w)``.

    `p`: parameters per candidate (dict of ``[c]`` or scalars); `state`: ``(u, i, r)`` at
    the window start ``t`` (``u = V - v_leak``, ``r`` end of refractoriness). Returns the
    state at ``t_end_w``, spike times ``[c, P]`` (inf padded), spike counts ``[c]`` and
    whether some neuron spiked more than ``P`` times.
    """
    t0, u0, i0, r0 = state
    at, aw, count = arrivals
    n_seg = at.shape[1]  # A arrivals + the closing segment
    c = u0.shape[0]
    theta = p["v_th"] - p["v_leak"]
    u_reset = p["v_reset"] - p["v_leak"]
    tm, ts = p["tau_mem"], p["tau_syn"]
    solver = NewtonSolver(smooth=smooth)

    def one_round(carry):
        k, t, u, i, r, ptr, live, spk, nsp, extra = carry

        def reach(t_hi, t, i):
            """A segment from ``t`` to ``t_hi``: where integration resumes (after the
            refractory hold), I there and the free span."""
            rs = jnp.minimum(jnp.maximum(r, t), t_hi)
            return rs, i * jnp.exp(-(rs - t) / ts), t_hi - rs

        def segment(a, seg):
            t, u, i, hit_at = seg  # hit_at: the segment with the crossing, -1 before
            t_hi = jnp.minimum(at[:, a], t_end_w)
            rs, i_rs, h = reach(t_hi, t, i)
            act = live & (a >= ptr) & (hit_at < 0)
            crossing, *_ = bracket(jnp.minimum(u, theta), i_rs, theta, tm, ts, h, smooth)
            hit = act & (r <= rs) & ((u >= theta) | crossing)
            u_hi, i_hi = propagate(u, i_rs, h, tm, ts, smooth)
            keep = act & ~hit
            return (
                jnp.where(keep, t_hi, t),
                jnp.where(keep, u_hi, u),
                jnp.where(keep, i_hi + aw[:, a], i),
                jnp.where(hit, a, hit_at),
            )

        # Segments after the last arrival of every neuron are empty: stop there. A neuron
        # that crosses stays at the start of that segment, from which it is redone below.
        n_used = jnp.minimum(jnp.max(jnp.where(live, count, 0)), n_seg - 1) + 1
        init = (t, u, i, jnp.full(c, -1, jnp.int32))
        t, u, i, hit_at = jax.lax.fori_loop(0, n_used, segment, init)
        found, fa = hit_at >= 0, jnp.maximum(hit_at, 0)
        ft, fi, fh = reach(
            jnp.minimum(jnp.take_along_axis(at, fa[:, None], 1)[:, 0], t_end_w), t, i
        )
        fu = u
        at_once = fu >= theta
        dt = solver.root(jnp.where(at_once, theta - 1.0, fu), fi, theta, tm, ts, fh)
        dt = jnp.where(at_once, 0.0, dt)
        t_spike = ft + dt
        fires = found & (t_spike < t_end_w)
        # A crossing that rounds to the window's end is left to the next window (it starts
        # at threshold there); this one just integrates to its end.
        u_miss, i_miss = propagate(fu, fi, fh, tm, ts, smooth)
        missed = found & ~fires
        slot = jnp.minimum(nsp, spikes_per_window - 1)
        record = fires & (nsp < spikes_per_window)
        spk = spk.at[jnp.arange(c), slot].set(jnp.where(record, t_spike, spk[jnp.arange(c), slot]))
        r_new = jnp.where(fires, t_spike + p["t_refrac"], r)
        return (
            k + 1,
            jnp.where(fires, t_spike, jnp.where(missed, ft + fh, t)),
            jnp.where(fires, u_reset, jnp.where(missed, u_miss, u)),
            jnp.where(fires, fi * jnp.exp(-dt / ts), jnp.where(missed, i_miss, i)),
            r_new,
            jnp.where(fires, fa, ptr),
            fires & (r_new < t_end_w),  # refractory past the end: finished below
            spk,
            nsp + fires,
            extra | jnp.any(fires & (nsp >= spikes_per_window)),
        )

    def more(carry):
        k, *_, live, _, _, _ = carry
        return jnp.any(live) & (k <= spikes_per_window)

    spk0 = jnp.full((c, spikes_per_window), jnp.inf, u0.dtype)
    carry = (
        0,
        jnp.broadcast_to(t0, u0.shape),
        u0,
        i0,
        r0,
        jnp.zeros(c, jnp.int32),
        jnp.ones(c, bool),
        spk0,
        jnp.zeros(c, jnp.int32),
        jnp.asarray(False),
    )
    _, t, u, i, r, ptr, live, spk, nsp, extra = jax.lax.while_loop(more, one_round, carry)
    # Neurons whose last spike left them refractory past the window's end need no further
    # round: V stays at v_reset, I decays and takes the remaining arrivals.
    unfinished = t < t_end_w
    later = (jnp.arange(n_seg)[None, :] >= ptr[:, None]) & (at <= t_end_w)
    ts_col = ts[:, None] if jnp.ndim(ts) else ts
    decay = jnp.exp(-(t_end_w - jnp.minimum(at, t_end_w)) / ts_col)
    rest = jnp.sum(jnp.where(later, aw * decay, 0.0), axis=1)
    i = jnp.where(unfinished, i * jnp.exp(-(t_end_w - t) / ts) + rest, i)
    return (u, i, r), spk, nsp, extra | jnp.any(live)


def _window(net: SparseNetwork, budgets, carry, w):
    """Advance every neuron through window `w`: ``[w d, min((w + 1) d, t_end))``."""
    t_end, n_spikes_max, n_arr, n_per, b_push, b_cand, uniform, smooth = budgets
    p, syn, d, n = net.params, net.synapses, net.delay, net.size
    table = _param_tables(p, dict(uniform))
    v, i, r, last_times, buf_src, buf_t, n_buf, rec_t, rec_i, count, counts, over = carry
    dtype = v.dtype
    t0 = (w * d).astype(dtype)
    t1 = jnp.minimum(t0 + d, t_end).astype(dtype)
    tm, ts = p.tau_mem, p.tau_syn

    # 1. Push last window's spikes: exact end-of-window effect of each arrival, by target.
    # The spikes' synapse blocks form one list, taken b_push slots at a time. A step starts
    # inside the blocks of spike `first` (whose blocks start at slot `s0`) and covers at most
    # the b_push spikes after it (each has at least one block), so a running count of block
    # starts over those says which spike owns each slot.
    r_table = _table(jnp.minimum(jnp.maximum(r, t0), t1), t1)
    blocks_of = _table(jnp.diff(syn.first_block), 0)

    def push(carry):
        k, first, s0, sums = carry
        near = first + jnp.arange(b_push + 1)
        src_near = jax.lax.dynamic_slice(buf_src, (first,), (b_push + 1,))
        n_blk = jnp.where(near < n_buf, blocks_of[src_near], 0)
        ends = s0 + jnp.cumsum(n_blk)
        starts = ends - n_blk  # first slot of each spike from `first` on
        later = starts[1:] - k * b_push  # where the next spikes start within this step
        own = jnp.cumsum(jnp.zeros(b_push, jnp.int32).at[later].add(1, mode="drop"))
        g = k * b_push + jnp.arange(b_push)
        real = g < ends[own]  # past the last spike's blocks: nothing
        src = src_near[own]
        blk = jnp.where(real, syn.first_block[jnp.minimum(src, n - 1)] + g - starts[own], 0)
        tgt = jnp.where(real[:, None], syn.targets[blk], n)  # [b, block]; padding: sink n
        # Arrival times stay [b, 1] (one per block): with uniform time constants the
        # exponentials are then evaluated once per block, not once per synapse.
        t_near = jax.lax.dynamic_slice(buf_t, (first,), (b_push + 1,))
        ta = jnp.where(real, t_near[own], t1)[:, None] + d
        wt = jnp.where(ta <= t1, syn.weights[blk], 0.0)  # past t_end (last window only)
        ta = jnp.minimum(ta, t1)
        tm_a, ts_a = _gather(table["tau_mem"], tgt), _gather(table["tau_syn"], tgt)
        c_i = wt * jnp.exp(-(t1 - ta) / ts_a)
        before_rest = ta <= r_table[tgt]  # lands while V is held: only I(rest end) sees it
        k_a = kernel(t1 - ta, tm_a, ts_a, smooth)
        c_u = jnp.where(before_rest, 0.0, wt * k_a)
        peak = (_gather(table["psp_peak_time"], tgt), _gather(table["psp_peak"], tgt))
        c_up = jnp.where(before_rest, 0.0, excitation_bound(wt, t1 - ta, k_a, *peak))
        parts = (c_i, jnp.where(before_rest, c_i, 0.0), c_u, c_up)
        sums = tuple(a.at[tgt].add(x) for a, x in zip(sums, parts))
        # The next step starts in the spike that owns slot (k + 1) b_push.
        step = jnp.sum(later <= b_push, dtype=first.dtype)
        return k + 1, first + step, starts[step], sums

    with jax.named_scope("push"):
        zero = jnp.asarray(0, jnp.int32)
        init = (zero, zero, zero, (jnp.zeros(n + 1, dtype),) * 4)
        *_, sums = jax.lax.while_loop(lambda c: c[1] < n_buf, push, init)
    # Per target: I at t1 from all arrivals; the part that landed while V was held; u at t1
    # from the others; the most the excitatory ones among those can add to u in the window.
    i_arrived, i_held, u_arrived, u_excited = (x[:n] for x in sums)

    # 2. Superposed end state (exact for neurons that do not spike) and the spike bound.
    with jax.named_scope("bound"):
        u0 = v - p.v_leak
        rest_end = r_table[:n]
        span = t1 - rest_end
        # I when V is released: the current it had plus what arrived while V was held.
        i_free = i * jnp.exp(-(rest_end - t0) / ts) + i_held * jnp.exp(span / ts)
        u_end = u0 * jnp.exp(-span / tm) + i_free * kernel(span, tm, ts, smooth) + u_arrived
        # The bound: the highest u of the free motion from the release on, plus the most every
        # later excitatory arrival can add (inhibition dropped).
        free_top = free_peak(u0, i_free, span, tm, ts, u_end - u_arrived, smooth)
        cand = free_top + u_excited >= p.v_th - p.v_leak
        v_new = p.v_leak + u_end
        i_new = i * jnp.exp(-(t1 - t0) / ts) + i_arrived
        # The candidates' indices, padded for whole chunks, and the tables they gather from.
        cand_idx = compact(cand, b_cand)
        last_table = _table(last_times, jnp.inf)
        v_ext, i_ext, r_ext = _table(v, 0.0), _table(i, 0.0), _table(r, -jnp.inf)

    # 3. Candidates: their own event sequences, in chunks.
    def run_chunk(k, st):
        v_new, i_new, r_new, last_new, src_new, t_new, n_new, count, counts, over = st
        c = jax.lax.dynamic_slice(cand_idx, (k * b_cand,), (b_cand,))
        with jax.named_scope("pull"):
            arrivals = _pull_arrivals(net, c, last_table, n_arr)
            pc = {f: _gather(table[f], c) for f in _PARAMS}
            state = (t0, v_ext[c] - pc["v_leak"], i_ext[c], r_ext[c])
        with jax.named_scope("sequence"):
            (u_c, i_c, r_c), spk, nsp, extra = _run_candidates(
                pc, state, arrivals, t1, n_per, smooth
            )
        v_new = v_new.at[c].set(pc["v_leak"] + u_c, mode="drop")
        i_new = i_new.at[c].set(i_c, mode="drop")
        r_new = r_new.at[c].set(r_c, mode="drop")
        last_new = last_new.at[c].set(spk, mode="drop")
        flat_t = spk.reshape(-1)
        flat_i = jnp.repeat(c, n_per)
        real = jnp.isfinite(flat_t)
        order = jnp.cumsum(real) - 1
        big = jnp.iinfo(jnp.int32).max
        at_buf = jnp.where(real, n_new + order, big)
        src_new = src_new.at[at_buf].set(flat_i.astype(jnp.int32), mode="drop")
        t_new = t_new.at[at_buf].set(flat_t, mode="drop")
        counts = counts.at[c].add(nsp, mode="drop")
        n_real = jnp.sum(real).astype(jnp.int32)
        over = over | jnp.stack([False, jnp.any(arrivals[2] > n_arr), extra])
        return (
            v_new, i_new, r_new, last_new, src_new, t_new, n_new + n_real,
            count + jnp.sum(nsp).astype(count.dtype), counts, over,
        )  # fmt: skip

    n_cand_chunks = (jnp.sum(cand) + b_cand - 1) // b_cand
    st = (
        v_new, i_new, r, jnp.full_like(last_times, jnp.inf),
        buf_src, buf_t, jnp.asarray(0, jnp.int32), count, counts, over,
    )  # fmt: skip
    with jax.named_scope("candidates"):
        st = jax.lax.fori_loop(0, n_cand_chunks, run_chunk, st)
    v_new, i_new, r_new, last_new, src_new, t_new, n_new, count_new, counts, over = st

    # 4. Append the window's spikes to the record, a block at a time (in place; the record
    # has one block of slack at its end).
    def write(k, rec):
        rec_t, rec_i = rec
        real = k * b_cand + jnp.arange(b_cand) < n_new
        blk_t = jnp.where(real, jax.lax.dynamic_slice(t_new, (k * b_cand,), (b_cand,)), jnp.inf)
        blk_i = jnp.where(real, jax.lax.dynamic_slice(src_new, (k * b_cand,), (b_cand,)), -1)
        at = (count + k * b_cand,)
        return (
            jax.lax.dynamic_update_slice(rec_t, blk_t, at),
            jax.lax.dynamic_update_slice(rec_i, blk_i, at),
        )

    n_blocks = jnp.where(count < n_spikes_max, (n_new + b_cand - 1) // b_cand, 0)
    with jax.named_scope("record"):
        rec_t, rec_i = jax.lax.fori_loop(0, n_blocks, write, (rec_t, rec_i))
    count = count_new
    return (
        v_new, i_new, r_new, last_new, src_new, t_new, n_new,
        rec_t, rec_i, count, counts, over,
    ), None  # fmt: skip


@eqx.filter_jit
def _simulate(net: SparseNetwork, budgets):
    t_end, max_spikes, _, n_per, b_push, b_cand, *_ = budgets
    n, d = net.size, net.delay
    dtype = net.synapses.weights.dtype
    n_windows = math.ceil(t_end / d - 1e-12)
    # Every neuron at its limit, plus padding for the loops that read it in steps.
    cap = n * n_per + max(b_cand, b_push + 1)
    carry = (
        net.params.v_leak.astype(dtype),
        jnp.zeros(n, dtype),
        jnp.full(n, -jnp.inf, dtype),
        jnp.full((n, n_per), jnp.inf, dtype),
        jnp.full(cap, n, jnp.int32),
        jnp.full(cap, jnp.inf, dtype),
        jnp.asarray(0, jnp.int32),
        jnp.full(max_spikes + b_cand, jnp.inf, dtype),
        jnp.full(max_spikes + b_cand, -1, jnp.int32),
        jnp.asarray(0, jnp.int32),
        jnp.zeros(n, jnp.int32),
        jnp.zeros(3, bool),
    )

    # The buffer of spikes read by a window is the one the previous window wrote.
    carry, _ = jax.lax.scan(functools.partial(_window, net, budgets), carry, jnp.arange(n_windows))
    v, i, r, _, _, _, _, rec_t, rec_i, count, counts, over = carry
    with jax.named_scope("record"):
        rec_t, rec_i = jax.lax.sort((rec_t[:max_spikes], rec_i[:max_spikes]), num_keys=2)
    over = over.at[0].set(count > max_spikes)
    return WindowedResult(Spikes(rec_t, rec_i), count, counts, over, v, i, r)


def simulate_windowed(
    net: SparseNetwork,
    t_end: float,
    *,
    max_spikes: int,
    max_arrivals: int = 32,
    spikes_per_window: int | None = None,
    push_chunk: int | None = None,
    candidate_chunk: int | None = None,
    check_overflow: bool = True,
) -> WindowedResult:
    """Simulate a sparse recurrent network with a synaptic delay exactly, window by window.

    Args:
        net: the `SparseNetwork`; its ``delay`` must be > 0.
        t_end: simulated time (s); spikes in ``[0, t_end)`` are returned.
        max_spikes: size of the spike record (``spike_counts`` is complete regardless).
        max_arrivals: most arrivals one neuron may receive within one window while it is
            near threshold (a candidate); more is reported as overflow.
        spikes_per_window: most spikes of one neuron within one window; default
            ``floor(delay / min t_refrac) + 1`` (exact bound), or 4 without refractoriness.
        push_chunk, candidate_chunk: work sizes of the inner loops (speed only): synapse
            blocks per step of the push, neurons per step of the candidates. Defaults
            n/32 within [64, 4096] and n/100 within [128, 1024]; on the balanced E/I
            benchmark (about 3.5% of neurons spike per window) these were the fastest
            measured at 1k, 10k and 100k neurons.
        check_overflow: raise RuntimeError when a budget was exceeded.

    Returns:
        A `WindowedResult` (float dtype of the synapse weights).
    """
    result = _simulate(
        net,
        _budgets(
            net, t_end, max_spikes, max_arrivals, spikes_per_window, push_chunk, candidate_chunk
        ),
    )
    if check_overflow:
        result.raise_if_overflow()
    return result


def _budgets(net, t_end, max_spikes, max_arrivals, spikes_per_window, push_chunk, cand_chunk):
    """The static configuration of `_simulate` from `simulate_windowed`'s arguments, checked
    (one clear error per bad value) and with the defaults filled in."""
    if net.delay <= 0:
        raise ValueError(
            "the windowed engine needs a synaptic delay > 0: with delay 0 a spike can act "
            "at once and the network must be simulated one event at a time. Set "
            "SparseNetwork(delay=...) > 0, or use eventsnn.simulate (the general event core) "
            "with the dense weights (Synapses.to_dense())."
        )
    if not (isinstance(t_end, (int, float, np.floating)) and np.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be a finite positive number of seconds, got {t_end!r}.")
    if push_chunk is None:
        push_chunk = min(max(net.size // 32, 64), 4096)
    if cand_chunk is None:
        cand_chunk = min(max(net.size // 100, 128), 1024)
    for name, value in (
        ("max_spikes", max_spikes),
        ("max_arrivals", max_arrivals),
        ("push_chunk", push_chunk),
        ("candidate_chunk", cand_chunk),
    ):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if spikes_per_window is None:
        t_ref = net.params.t_refrac
        shortest = float(jnp.min(t_ref)) if is_concrete(t_ref) else 0.0
        spikes_per_window = int(net.delay // shortest) + 1 if shortest > 0 else 4
    return (
        float(t_end),
        int(max_spikes),
        int(max_arrivals),
        int(spikes_per_window),
        int(min(push_chunk, net.synapses.targets.shape[0] * spikes_per_window)),
        int(min(cand_chunk, net.size)),
        _uniform_values(net.params),
        # The PSP kernel as a plain difference of exponentials where the time constants
        # allow it (about 4x cheaper; no derivatives are taken here).
        not plain_kernel_ok(net.params.tau_mem, net.params.tau_syn),
    )
