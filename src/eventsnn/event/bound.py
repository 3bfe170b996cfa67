"""The spike bound of a window: the most ``u`` can reach within it, in closed form.

A neuron's potential over a window is its free motion (from its state at the window's start,
without arrivals) plus one PSP per arrival (superposition: without a spike the dynamics are
linear). The free motion has one extremum at most, and a PSP rises until its peak, so
``u`` stays below the highest point of the free motion plus, for every excitatory arrival,
its PSP at the window's end or its peak if reached before; inhibition can only lower ``u``.
A neuron whose bound stays below threshold cannot spike in the window: its superposed end
state is exact. The others are the window's candidates.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..neuron import extremum_time, kernel, propagate


def psp_peak(tau_mem, tau_syn):
    """Time (s) and height of the peak of the unit PSP `kernel`."""
    t = extremum_time(jnp.zeros_like(tau_mem), jnp.ones_like(tau_mem), tau_mem, tau_syn)
    return t, kernel(t, tau_mem, tau_syn)


def excitation_bound(weight, lag, psp_at_lag, peak_time, peak):
    """The most an arrival of `weight`, `lag` s before the window's end, can add to u at
    any time up to that end: its PSP rises until `peak_time`, so the PSP at the end (or its
    `peak`, if reached before). Inhibitory arrivals add nothing."""
    return jnp.maximum(weight, 0.0) * jnp.where(lag <= peak_time, psp_at_lag, peak)


def free_peak(u0, i0, span, tau_mem, tau_syn, u_span, smooth: bool = True):
    """Highest u of the motion from ``(u0, i0)`` without arrivals over ``[0, span]``: at an
    end (`u_span` the value at `span`) or at its one extremum, where that falls inside."""
    t_e = extremum_time(u0, i0, tau_mem, tau_syn)
    inside = (t_e > 0) & (t_e < span)
    u_e = propagate(u0, i0, jnp.where(inside, t_e, 0.0), tau_mem, tau_syn, smooth)[0]
    return jnp.maximum(jnp.maximum(u0, u_span), jnp.where(inside, u_e, u0))
