"""Independent numerical reference for CuBa-LIF networks (scipy ``solve_ivp``).

Written from the network specification only; it never calls eventsnn's closed-form
solution. Every neuron of every layer follows::

    tau_syn dI/dt = -I
    tau_mem dV/dt = -(V - v_leak) + I          V(0) = v_leak, I(0) = 0

A presynaptic spike of neuron ``j`` at time ``t`` adds ``W[j, i]`` to ``I_i`` at
``t + delay`` (delay of the receiving layer). When ``V`` reaches ``v_th`` from below the
neuron spikes, ``V`` is set to ``v_reset`` and held there for ``t_refrac`` while ``I``
keeps evolving. A neuron with ``V >= v_th`` at ``t = 0`` spikes at ``t = 0``. Spikes at the
same time are all emitted; their effects are applied afterwards.

All layers are integrated jointly as one ODE system, piecewise between discontinuities
(input arrivals, delayed spike arrivals, ends of refractory periods, ``t_max``), with
DOP853 at tight tolerances and threshold crossings located by ``solve_ivp`` events
(brentq on the dense output).

Between two breakpoints each active neuron's ``V`` is a constant plus two exponentials,
so it has at most one extremum. ``solve_ivp`` only sees sign changes at step ends (an
excursion above threshold inside one step is invisible to it) and drops every event after
the first terminal one, so after each solve every active neuron is checked on the solved
span: it crossed iff ``V >= v_th`` at the end or its interior maximum (where ``dV/dt``
turns negative, found by brentq) is ``>= v_th``; the earliest crossing wins. Maxima that
stay below threshold give the ``margin`` diagnostic.
"""

from __future__ import annotations

import heapq
import itertools
from functools import partial

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

#: crossings of other neurons this close (s) after an event are treated as simultaneous
TIE_WINDOW = 1e-13
_EPS4 = 4 * np.finfo(np.float64).eps


def _as_vec(x, n):
    return np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)).astype(np.float64)


def _slope(y, g, n_total, v_leak):
    """tau_mem dV/dt of neuron g at state y."""
    return y[n_total + g] - (y[g] - v_leak[g])


def reference_simulate(
    layers, input_times, input_indices, t_max, *, max_spikes=None, rtol=1e-13, atol=1e-13
):
    """Simulate a network of CuBa-LIF layers.

    Args:
        layers: list of dicts with ``weights`` ``[n_in, n]``, ``recurrent_weights``
            ``[n, n]`` or None, ``tau_mem``, ``tau_syn``, ``v_th``, ``v_reset``, ``v_leak``,
            ``t_refrac`` (scalars or ``[n]``) and ``delay`` (float, default 0).
        input_times, input_indices: input spikes (any order; non-finite times ignored).
        t_max: horizon (s); spikes at times ``<= t_max`` are reported.
        max_spikes: stop once a layer has emitted more than this many spikes (runaway
            networks), setting ``diagnostics["overflow"]``; None: no limit.

    Returns:
        ``(spikes, diagnostics)``: ``spikes`` is a list (one per layer) of
        ``(times, indices)`` numpy arrays sorted by time, ties by index. ``diagnostics``
        is a dict:

        - ``margin``: smallest ``v_th - V`` at a local maximum of ``V`` that did not cross
          (smooth maxima and kinks made by an arriving spike), and ``|v_leak - v_th|``:
          a small value means a spike nearly appears or vanishes.
        - ``min_slope``: smallest ``dV/dt`` (1/s) at a threshold crossing (``inf`` if none).
        - ``end_gap``: smallest distance (s) between ``t_max`` and a spike time, or the
          first-order time to threshold of a neuron rising at ``t_max``.
        - ``n_spikes``: spikes per layer; ``n_intervals``: integration pieces;
          ``overflow``: stopped early because of `max_spikes`.
    """
    sizes = [np.asarray(layer["weights"]).shape[1] for layer in layers]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    n_total = int(offsets[-1])
    layer_of = np.repeat(np.arange(len(layers)), sizes)

    def gather(name, default=None):
        return np.concatenate(
            [_as_vec(layer.get(name, default), n) for layer, n in zip(layers, sizes)]
        )

    tau_mem = gather("tau_mem")
    tau_syn = gather("tau_syn")
    v_th = gather("v_th", 1.0)
    v_reset = gather("v_reset", 0.0)
    v_leak = gather("v_leak", 0.0)
    t_refrac = gather("t_refrac", 0.0)
    delays = [float(layer.get("delay", 0.0) or 0.0) for layer in layers]
    weights = [np.asarray(layer["weights"], dtype=np.float64) for layer in layers]
    rec = [
        None
        if layer.get("recurrent_weights") is None
        else np.asarray(layer["recurrent_weights"], dtype=np.float64)
        for layer in layers
    ]
    assert np.all(tau_mem > 0) and np.all(tau_syn > 0) and np.all(v_reset < v_th)

    def rhs(_, y, mask):
        """The ODE; ``mask`` is 0 for refractory neurons (V held at v_reset)."""
        vv, ii = y[:n_total], y[n_total:]
        return np.concatenate([mask * (ii - (vv - v_leak)) / tau_mem, -ii / tau_syn])

    # arrival queue: (time, seq, layer, weight row); rows of a layer add to its I
    queue: list = []
    seq = itertools.count()

    def push(time, k, row):
        if k < len(layers) and time <= t_max and np.any(row != 0):
            heapq.heappush(queue, (time, next(seq), k, row))

    for t_in, c in zip(np.asarray(input_times, float).ravel(), np.asarray(input_indices).ravel()):
        if np.isfinite(t_in):
            push(float(t_in) + delays[0], 0, weights[0][int(c)])

    v = v_leak.copy()
    cur = np.zeros(n_total)  # synaptic currents I
    refrac_until = np.full(n_total, -np.inf)  # refractory while t < refrac_until
    spike_t: list[list[float]] = [[] for _ in layers]
    spike_i: list[list[int]] = [[] for _ in layers]
    diag = dict(
        margin=float(np.min(np.abs(v_leak - v_th))),
        min_slope=np.inf,
        end_gap=np.inf,
        n_intervals=0,
        overflow=False,
    )

    def emit(t, neurons):
        for g in sorted(neurons):
            k = int(layer_of[g])
            j = g - offsets[k]
            spike_t[k].append(t)
            spike_i[k].append(j)
            diag["end_gap"] = min(diag["end_gap"], t_max - t)
            v[g] = v_reset[g]
            refrac_until[g] = t + t_refrac[g] if t_refrac[g] > 0 else -np.inf
            if k + 1 < len(layers):
                push(t + delays[k + 1], k + 1, weights[k + 1][j])
            if rec[k] is not None:
                push(t + delays[k], k, rec[k][j])

    def apply_arrivals(t):
        """Add every arrival due at ``t``; record kink maxima they create."""
        if not queue or queue[0][0] > t:
            return
        active = refrac_until <= t
        slope_before = (cur - (v - v_leak)) / tau_mem
        while queue and queue[0][0] <= t:
            _, _, k, row = heapq.heappop(queue)
            cur[offsets[k] : offsets[k + 1]] += row
        slope_after = (cur - (v - v_leak)) / tau_mem
        kink = active & (slope_before > 0) & (slope_after <= 0)
        if kink.any():
            diag["margin"] = min(diag["margin"], float(np.min((v_th - v)[kink])))

    # tonic neurons: already at/above threshold at t = 0
    t = 0.0
    emit(0.0, np.flatnonzero(v >= v_th))

    while True:
        if max_spikes is not None and max(len(x) for x in spike_t) > max_spikes:
            diag["overflow"] = True
            break
        apply_arrivals(t)
        active = refrac_until <= t
        if t >= t_max:
            break
        breaks = [t_max]
        if queue:
            breaks.append(queue[0][0])
        pending = refrac_until[refrac_until > t]
        if pending.size:
            breaks.append(float(pending.min()))
        t_next = min(breaks)
        if t_next <= t:  # numerically coincident breakpoint
            t = max(t, t_next)
            continue

        act = np.flatnonzero(active)
        events = []
        for g in act:

            def cross(_, y, g=g):
                return y[g] - v_th[g]

            cross.terminal, cross.direction = True, 1.0
            events.append(cross)

        y0 = np.concatenate([v, cur])
        sol = solve_ivp(
            partial(rhs, mask=active.astype(float)),
            (t, t_next),
            y0,
            method="DOP853",
            rtol=rtol,
            atol=atol,
            events=events,
            dense_output=True,
        )
        assert sol.success, sol.message
        diag["n_intervals"] += 1

        t_stop, y_stop, hit = t_next, sol.y[:, -1], None
        for e, g in enumerate(act):
            if len(sol.t_events[e]):
                t_stop, y_stop, hit = float(sol.t_events[e][0]), sol.y_events[e][0], g
        # solve_ivp only sees sign changes at step ends: a crossing followed by a fall
        # below threshold within one step is invisible to it, and it drops every event
        # after the first terminal one. Check every active neuron on [t, t_stop]: V has
        # at most one extremum there, so it crossed iff V(t_stop) >= v_th or it has an
        # interior maximum >= v_th.
        first, maxima = (t_stop, hit), []
        slope0 = cur - (v - v_leak)
        slope1 = y_stop[n_total:] - (y_stop[:n_total] - v_leak)
        for g in act:
            if g == hit:
                continue
            top = t_stop
            if y_stop[g] < v_th[g]:
                if not (slope0[g] > 0 > slope1[g]):
                    continue  # monotone or a minimum: no crossing, no maximum
                top = brentq(
                    lambda s, g=g, d=sol.sol: _slope(d(s), g, n_total, v_leak),
                    t,
                    t_stop,
                    xtol=1e-18,
                    rtol=_EPS4,
                )
                v_top = sol.sol(top)[g]
                if v_top < v_th[g]:
                    maxima.append((top, v_th[g] - v_top))
                    continue
            tc = brentq(
                lambda s, g=g, d=sol.sol: d(s)[g] - v_th[g], t, top, xtol=1e-18, rtol=_EPS4
            )
            if tc < first[0]:
                first = (tc, g)
        if first[1] is not None and first[1] != hit:
            t_stop, hit = first
            y_stop = sol.sol(t_stop)
        for tm_, gap in maxima:
            if tm_ <= t_stop:
                diag["margin"] = min(diag["margin"], float(gap))

        v, cur = y_stop[:n_total].copy(), y_stop[n_total:].copy()
        t = t_stop
        if hit is None:  # reached the breakpoint
            if t >= t_max:
                dv = (cur - (v - v_leak)) / tau_mem
                up = active & (dv > 0)
                if up.any():
                    diag["end_gap"] = min(diag["end_gap"], float(np.min((v_th - v)[up] / dv[up])))
            continue

        # the crossing neuron, plus any active neuron reaching threshold within TIE_WINDOW
        dv = (cur - (v - v_leak)) / tau_mem
        near = active & ((v >= v_th) | (v_th - v <= np.maximum(dv, 0.0) * TIE_WINDOW))
        near[hit] = True
        crossing = np.flatnonzero(near)
        diag["min_slope"] = min(diag["min_slope"], float(np.min(dv[crossing])))
        emit(t, crossing)

    spikes = []
    for k in range(len(layers)):
        tt = np.asarray(spike_t[k], dtype=np.float64)
        ii = np.asarray(spike_i[k], dtype=np.int64)
        order = np.lexsort((ii, tt))
        spikes.append((tt[order], ii[order]))
    diag["n_spikes"] = [len(s[0]) for s in spikes]
    return spikes, diag
