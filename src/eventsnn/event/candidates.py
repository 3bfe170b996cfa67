"""Exact event sequences of the neurons that may spike within one window.

A window ``[t, E]`` of a layer holds arrivals whose times are all known in advance (input
spikes, and recurrent spikes of earlier windows that arrive in this one). Neurons are
independent inside it, so every candidate (a neuron its spike bound could not rule out)
runs its own sequence in parallel with the others, one lane each: from its state at ``t``,
closed-form propagation from arrival to arrival with a closed-form test for a threshold
crossing on the way (`spike_time.bracket`); the first crossing is solved by the layer's
solver; after the spike (reset, refractory hold) the lane goes on from the spike in the
next round. A round costs one pass over the window's arrivals.

At most ``spikes`` spikes per lane are recorded. One more round detects a further crossing:
then the window must be cut before it (`Lanes.cut`), and the caller runs it again shorter.
With ``first_only`` a lane stops at its first crossing (zero-delay recurrence, where the
earliest spike of the layer changes every other neuron's current at once).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..neuron import propagate
from .spike_time import bracket


class LaneParams(NamedTuple):
    """Per-lane neuron parameters ``[C]`` (``u`` relative to ``v_leak``)."""

    tau_mem: Float[Array, " C"]
    tau_syn: Float[Array, " C"]
    theta: Float[Array, " C"]  # v_th - v_leak
    u_reset: Float[Array, " C"]  # v_reset - v_leak
    rest: Float[Array, " C"]  # refractory period after a spike (s); inf: single spike


class Lanes(NamedTuple):
    """What the candidates' sequences give back (``C`` lanes, ``P`` recorded spikes each).

    Attributes:
        u, i, r: state at the window's end (``u`` relative to ``v_leak``; ``r`` the end of
            the refractory period).
        times: ``[C, P]`` spike times (s), ``inf`` padded, ascending per lane.
        current: ``[C, P]`` ``I`` at each spike.
        at_once: ``[C, P]`` spikes at time 0 of a neuron at or above threshold at rest.
        rest_current: ``[C, P + 1]`` ``I`` when a refractory period ends within the window:
            column 0 for the period that started before the window, column ``k + 1`` for
            that of spike ``k``; NaN where no period ends.
        count: ``[C]`` spikes recorded.
        first: ``[C]`` time of the first crossing (``inf`` if none); with ``first_only`` the
            lanes stop there and ``u, i, r`` are meaningless.
        cut: a time before which the window must end for no lane to exceed ``P`` spikes
            (``inf`` when none did).
    """

    u: Float[Array, " C"]
    i: Float[Array, " C"]
    r: Float[Array, " C"]
    times: Float[Array, "C P"]
    current: Float[Array, "C P"]
    at_once: Bool[Array, "C P"]
    rest_current: Float[Array, "C P1"]
    count: Int[Array, " C"]
    first: Float[Array, " C"]
    cut: Float[Array, ""]


def run_lanes(
    q: LaneParams,
    state,
    valid: Bool[Array, " C"],
    t,
    end,
    arrival_times: Float[Array, " m"],
    jumps: Float[Array, "C m"],
    *,
    solver,
    spikes: int,
    first_only: bool = False,
    closing=False,
) -> Lanes:
    """Run every lane through the window ``[t, end]``.

    Args:
        q: the lanes' parameters.
        state: ``(u, i, r)`` ``[C]`` at ``t``.
        valid: ``[C]`` lanes that hold a neuron (the others are padding, ignored).
        arrival_times: ``[m]`` arrival times in ascending order; those in the window lie in
            ``[t, end)``, the others are ``inf`` (with zero jumps).
        jumps: ``[C, m]`` the jump of each lane's ``I`` at each arrival.
        solver: the layer's `SpikeTimeSolver` (its ``root`` and kernel form).
        spikes: spikes recorded per lane (``P``).
        first_only: stop each lane at its first crossing.
        closing: the window ends the simulation (a refractory period ending exactly at
            ``end`` ends in this window, not the next).
    """
    u0, i0, r0 = state
    c, m = jumps.shape
    dtype = u0.dtype
    smooth = solver.smooth
    tm, ts, theta = q.tau_mem, q.tau_syn, q.theta
    # Segment a runs from the lane's time to arrival a (segment m: to the window's end).
    bounds = jnp.minimum(jnp.append(arrival_times, end), end)
    jumps = jnp.pad(jumps, ((0, 0), (0, 1)))
    rounds = 1 if first_only else spikes + 1
    n_arr = jnp.sum(jnp.isfinite(arrival_times), dtype=jnp.int32)  # in the window, first
    lane = jnp.arange(c)

    def reach(t_hi, t_lo, i, r):
        return _reach(t_hi, t_lo, i, r, ts)

    def one_round(carry):
        k, tau, u, i, r, ptr, live, rec = carry
        last_spike = tau  # a live lane starts each round at its last recorded spike
        rest_slot = jnp.where(k == 0, 0, k)  # the rest that ends now belongs to spike k-1

        tau, u, i, hit_at, rest_i = _segments_in_turn(
            q, (tau, u, i, r, ptr, live), bounds, jumps, n_arr, m, closing, smooth
        )
        times, current, at_once, rest_current, count, first = rec
        rest_current = rest_current.at[lane, rest_slot].set(
            jnp.where(jnp.isnan(rest_i), rest_current[lane, rest_slot], rest_i)
        )

        # The crossing, in the segment that holds it.
        found = hit_at >= 0
        fa = jnp.maximum(hit_at, 0)
        rs, i_rs, h = reach(bounds[fa], tau, i, r)
        above = u >= theta
        dt = solver.root(jnp.where(above, theta - 1.0, u), i_rs, theta, tm, ts, h)
        dt = jnp.where(above, 0.0, dt)
        t_spike = rs + dt
        fires = found & (t_spike <= end)
        first = jnp.where((k == 0) & fires, t_spike, first)
        if first_only:
            rec = (times, current, at_once, rest_current, count, first)
            stopped = jnp.zeros_like(live)
            return (k + 1, tau, u, i, r, ptr, stopped, rec), stopped, tau, t_spike

        # A crossing that rounds past the window's end is left to the next window (it
        # starts at threshold there): this lane just integrates to the end.
        missed = found & ~fires
        u_miss, i_miss = propagate(u, i_rs, h, tm, ts, smooth)
        recorded = fires & (k < spikes)
        slot = jnp.minimum(k, spikes - 1)
        i_spike = i_rs * jnp.exp(-dt / ts)
        times = times.at[lane, slot].set(jnp.where(recorded, t_spike, times[lane, slot]))
        current = current.at[lane, slot].set(jnp.where(recorded, i_spike, current[lane, slot]))
        once = recorded & (t_spike == 0) & (theta <= 0)
        at_once = at_once.at[lane, slot].set(jnp.where(recorded, once, at_once[lane, slot]))
        # A crossing beyond the recorded spikes: the window must end before it (halfway
        # from the lane's last recorded spike, which it keeps).
        too_many = fires & (k >= spikes)
        r_new = jnp.where(fires, t_spike + q.rest, r)
        return (
            (
                k + 1,
                jnp.where(fires, t_spike, jnp.where(missed, bounds[fa], tau)),
                jnp.where(fires, q.u_reset, jnp.where(missed, u_miss, u)),
                jnp.where(fires, i_spike, jnp.where(missed, i_miss + jumps[lane, fa], i)),
                r_new,
                jnp.where(fires, fa, jnp.where(missed, fa + 1, ptr)),
                recorded & (r_new < end),
                (times, current, at_once, rest_current, count + recorded, first),
            ),
            too_many,
            last_spike,
            t_spike,
        )

    inf = jnp.full((c, spikes), jnp.inf, dtype)
    rec = (
        inf,
        jnp.zeros((c, spikes), dtype),
        jnp.zeros((c, spikes), bool),
        jnp.full((c, spikes + 1), jnp.nan, dtype),
        jnp.zeros(c, jnp.int32),
        jnp.full(c, jnp.inf, dtype),
    )
    start = jnp.broadcast_to(t, (c,)).astype(dtype)
    carry = (0, start, u0, i0, r0, jnp.zeros(c, jnp.int32), valid, rec)

    def body(state):
        carry, cut = state
        carry, too_many, last_spike, extra = one_round(carry)
        # Halfway from the lane's last recorded spike to the crossing beyond (strictly
        # between them: the window run again keeps the one and not the other).
        mid = 0.5 * (last_spike + extra)
        mid = jnp.where(mid < extra, mid, last_spike)  # adjacent floats
        return carry, jnp.minimum(cut, jnp.min(jnp.where(too_many, mid, jnp.inf)))

    def more(state):
        carry, _ = state
        return (carry[0] < rounds) & jnp.any(carry[6])

    carry, cut = jax.lax.while_loop(more, body, (carry, jnp.asarray(jnp.inf, dtype)))
    k, tau, u, i, r, ptr, live, rec = carry
    times, current, at_once, rest_current, count, first = rec

    # Lanes whose last spike left them refractory past the window's end stopped there:
    # V stays at v_reset, I decays and takes the arrivals still ahead.
    unfinished = tau < end
    later = (jnp.arange(m + 1)[None, :] >= ptr[:, None]) & (bounds[None, :] < end)
    decay = jnp.exp(-(end - bounds[None, :]) / ts[:, None])
    ahead = jnp.sum(jnp.where(later, jumps * decay, 0.0), axis=1)
    i = jnp.where(unfinished, i * jnp.exp(-(end - tau) / ts) + ahead, i)
    u = jnp.where(unfinished, q.u_reset, u)
    return Lanes(u, i, r, times, current, at_once, rest_current, count, first, cut)


def _reach(t_hi, t_lo, i, r, tau_syn):
    """Resume time (after the hold), I there and the free span of a segment."""
    rs = jnp.clip(r, t_lo, t_hi)
    return rs, i * jnp.exp(-(rs - t_lo) / tau_syn), t_hi - rs


def _segments_in_turn(q: LaneParams, lane_state, bounds, jumps, n_arr, m, closing, smooth):
    """One round's segments one after the other: each lane goes from arrival to arrival
    until a segment holds a threshold crossing. Returns the state at the start of that
    segment (or at the window's end), its index (-1: none) and ``I`` at a refractory end
    passed on the way (NaN: none)."""
    tau, u, i, r, ptr, live = lane_state
    c = u.shape[0]
    tm, ts, theta = q.tau_mem, q.tau_syn, q.theta

    def segment(a, seg):
        tau, u, i, hit_at, rest_i = seg
        t_hi = bounds[a]
        rs, i_rs, h = _reach(t_hi, tau, i, r, ts)
        act = live & (a >= ptr) & (hit_at < 0)
        ends_here = (r >= tau) & ((r < t_hi) | ((a == m) & closing & (r <= t_hi)))
        rest_i = jnp.where(act & ends_here, i_rs, rest_i)
        crossing = bracket(jnp.minimum(u, theta), i_rs, theta, tm, ts, h, smooth)[0]
        hit = act & (r <= t_hi) & ((u >= theta) | crossing)
        u_hi, i_hi = propagate(u, i_rs, h, tm, ts, smooth)
        keep = act & ~hit
        return (
            jnp.where(keep, t_hi, tau),
            jnp.where(keep, u_hi, u),
            jnp.where(keep, i_hi + jumps[:, a], i),
            jnp.where(hit, a, hit_at),
            rest_i,
        )

    seg0 = (tau, u, i, jnp.full(c, -1, jnp.int32), jnp.full(c, jnp.nan, u.dtype))
    # Segments past the window's last arrival are empty but the closing one (m).
    seg = jax.lax.fori_loop(0, n_arr, segment, seg0)
    return segment(m, seg)
