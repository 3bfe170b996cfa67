"""EventProp: the adjoint method over the recorded events of one layer (custom_vjp).

Per neuron the state is ``x = (u, I)``, ``u = V - v_leak``; between events
``dx/dt = A x`` with ``A = [[-1/tau_mem, 1/tau_mem], [0, -1/tau_syn]]`` (``u`` frozen while
refractory). The adjoint ``lam = dL/dx`` runs backward in closed form,
``lam(t - D) = Phi(D)^T lam(t)``, which decays: stable for any ``t_max``. At an event at
``t_k`` with jump ``x+ = J(x-)`` and, for a spike of neuron m, time fixed by
``g = u_m - theta = 0``, perturbing ``x-`` gives (the saltation relation)::

    lam- = DJ^T lam+ - grad(g) / g' * (lam+ . (DJ F- - F+) + dL/dt_k)

with ``F-``/``F+`` the flows just before/after and ``g' = du_m/dt-``. An event at a given
time (an arrival) shifts by ``dL/dt_k = lam+ . (F- - F+)``. Every ``F- - F+`` needs only
weights and, for the spiker, ``I`` at its spike or refractory end, recorded in the
forward pass: work and memory O(events), nothing of the state is reconstructed.

Parameter gradients: an arrival from source j adds ``lam_I+`` to ``dL/dW[j]``; a spike
adds ``(Q + dL/dt)/g'`` to ``dL/dtheta`` and ``lam_u+`` to ``dL/du_reset``; the end of a
refractory period shifts with the spike and with ``t_refrac``. Time constants enter the
flow, ``dL/dtau = int lam . (dA/dtau) x dt``; writing ``x`` as the superposition of its
jumps, this is ``sum_jumps R(t_j+) . dx_j`` with ``R = d lam / d tau`` propagated backward
alongside ``lam`` (a JVP of the backward propagator).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ..network import Layer
from ..neuron import kernel
from .order import time_order
from .spike_time import SLOPE_FLOOR
from .step import Arrivals, LayerState, finish, initial_state, rest_length, step
from .windows import window_layer
from .windows_adjoint import backward_windows


def run_layer(layer: Layer, arrivals: Arrivals, t_max, max_spikes: int, solver) -> LayerState:
    """Forward event loop of one layer (while loop: stops at the last event)."""
    state = initial_state(layer, max_spikes, arrivals.times.dtype)
    state = jax.lax.while_loop(
        lambda s: ~s.done, lambda s: step(layer, arrivals, s, t_max, solver), state
    )
    return finish(layer, state, t_max)


class _Adjoint(NamedTuple):
    t: jax.Array
    lam_u: jax.Array  # [n] dL/du
    lam_i: jax.Array  # [n] dL/dI
    r_m: tuple  # (R_u, R_I) = d lam / d tau_mem, [n] each
    r_s: tuple  # d lam / d tau_syn
    refractory: jax.Array  # [n] status in the interval just before t
    ptr_input: jax.Array  # next arrival to process, counting down
    ptr_recur: jax.Array
    ptr_rest: jax.Array
    ptr_spike: jax.Array
    g_spike: jax.Array  # [M] dL/d(own spike time) from later uses
    d_weights: jax.Array
    d_recurrent: jax.Array
    d_tau_mem: jax.Array
    d_tau_syn: jax.Array
    d_theta: jax.Array
    d_u_reset: jax.Array
    d_refrac: jax.Array
    d_arrivals: jax.Array


def _propagate_back(lam_u, lam_i, tau_mem, tau_syn, dt, refractory, smooth):
    """``Phi(dt)^T lam``: the adjoint ``dt`` seconds earlier, without events."""
    decay_m, decay_s = jnp.exp(-dt / tau_mem), jnp.exp(-dt / tau_syn)
    k = kernel(dt, tau_mem, tau_syn, smooth)
    lu = jnp.where(refractory, lam_u, decay_m * lam_u)
    li = jnp.where(refractory, decay_s * lam_i, k * lam_u + decay_s * lam_i)
    return lu, li


def _back_to(a: _Adjoint, layer: Layer, t_new, smooth: bool) -> _Adjoint:
    p = layer.params
    dt = a.t - t_new
    ones = jnp.ones_like(p.tau_mem)
    zeros = jnp.zeros_like(p.tau_mem)

    def prop(lu, li, tm, ts):
        return _propagate_back(lu, li, tm, ts, dt, a.refractory, smooth)

    (lu, li), r_m = jax.jvp(prop, (a.lam_u, a.lam_i, p.tau_mem, p.tau_syn), (*a.r_m, ones, zeros))
    _, r_s = jax.jvp(prop, (a.lam_u, a.lam_i, p.tau_mem, p.tau_syn), (*a.r_s, zeros, ones))
    return a._replace(t=t_new, lam_u=lu, lam_i=li, r_m=r_m, r_s=r_s)


def _arrival_terms(a: _Adjoint, layer: Layer, w):
    """dL/d(arrival time) and the tau gradients of a jump ``I += w`` at the current time."""
    p = layer.params
    flux = jnp.where(a.refractory, 0.0, -a.lam_u * w / p.tau_mem) + a.lam_i * w / p.tau_syn
    return jnp.sum(flux), a.r_m[1] * w, a.r_s[1] * w


def backward_layer(layer: Layer, arrivals: Arrivals, fwd: LayerState, g_out, t_max, smooth):
    """EventProp backward pass of one layer and sample.

    Args:
        layer: the layer that ran.
        arrivals: its sorted input arrivals (times include the delay).
        fwd: the final forward state (records).
        g_out: ``[M]`` cotangent of the recorded spike times.
        t_max: the horizon of the forward run.
        smooth: the PSP kernel's form (the forward solver's).

    Returns:
        ``(layer cotangent, [K] cotangent of the arrival times)``.
    """
    p = layer.params
    n, capacity = layer.size, fwd.out_times.shape[0]
    dtype = fwd.out_times.dtype
    slots = jnp.arange(capacity)
    real = slots < fwd.count
    owner = jnp.where(real, fwd.out_indices, 0)
    rest_end = jnp.where(real, fwd.out_times + rest_length(layer)[owner], jnp.inf)
    rest_valid = real & (rest_end <= t_max)
    rest_order = time_order(jnp.where(rest_valid, rest_end, jnp.inf))
    n_rest = jnp.sum(rest_valid).astype(jnp.int32)
    still_resting = jnp.zeros((n,), bool).at[owner].max(real & ~rest_valid)
    rec = layer.recurrent_weights
    delayed = rec is not None and layer.delay > 0
    has_rec = rec is not None
    zeros_n = jnp.zeros((n,), dtype)
    g_out = jnp.where(real, g_out, 0.0)

    a = _Adjoint(
        t=jnp.asarray(t_max, dtype),
        lam_u=zeros_n,
        lam_i=zeros_n,
        r_m=(zeros_n, zeros_n),
        r_s=(zeros_n, zeros_n),
        refractory=still_resting,
        ptr_input=fwd.input_ptr - 1,
        ptr_recur=(fwd.recurrent_ptr - 1) if delayed else jnp.asarray(-1, jnp.int32),
        ptr_rest=n_rest - 1,
        ptr_spike=fwd.count - 1,
        g_spike=jnp.zeros((capacity,), dtype),
        d_weights=jnp.zeros_like(layer.weights),
        d_recurrent=jnp.zeros_like(rec) if has_rec else None,
        d_tau_mem=zeros_n,
        d_tau_syn=zeros_n,
        d_theta=zeros_n,
        d_u_reset=zeros_n,
        d_refrac=zeros_n,
        d_arrivals=jnp.zeros_like(arrivals.times),
    )

    def pick(values, ptr):
        return jnp.where(ptr >= 0, values[jnp.maximum(ptr, 0)], -jnp.inf)

    def body(a: _Adjoint) -> _Adjoint:
        rest_slot = rest_order[jnp.maximum(a.ptr_rest, 0)]
        times = jnp.stack(
            [
                pick(rest_end[rest_order], a.ptr_rest),
                pick(fwd.out_times + layer.delay, a.ptr_recur),
                pick(arrivals.times, a.ptr_input),
                pick(fwd.out_times, a.ptr_spike),
            ]
        )
        kind = jnp.argmax(times)  # ties: rest end, recurrent, input, spike (reverse order)
        a = _back_to(a, layer, times[kind], smooth)
        is_rest, is_recur, is_input, is_spike = (kind == 0), (kind == 1), (kind == 2), (kind == 3)

        # Arrivals (input, or delayed recurrent): I += w for every target.
        src_in = arrivals.sources[jnp.maximum(a.ptr_input, 0)]
        slot_rc = jnp.maximum(a.ptr_recur, 0)
        w = jnp.where(is_input, layer.weights[jnp.maximum(src_in, 0)], 0.0)
        if delayed:
            src_rc = fwd.out_indices[slot_rc]
            w = w + jnp.where(is_recur, rec[src_rc], 0.0)
        # The spike of neuron m (zero-delay recurrence jumps too).
        slot_sp = jnp.maximum(a.ptr_spike, 0)
        m = fwd.out_indices[slot_sp]
        if has_rec and not delayed:
            w = w + jnp.where(is_spike, rec[m], 0.0)
        flux, dtm, dts = _arrival_terms(a, layer, w)
        d_weights = a.d_weights.at[jnp.maximum(src_in, 0)].add(jnp.where(is_input, a.lam_i, 0.0))
        d_recurrent = a.d_recurrent
        if delayed:
            d_recurrent = d_recurrent.at[src_rc].add(jnp.where(is_recur, a.lam_i, 0.0))
        elif has_rec:
            d_recurrent = d_recurrent.at[m].add(jnp.where(is_spike, a.lam_i, 0.0))
        d_arrivals = a.d_arrivals.at[jnp.maximum(a.ptr_input, 0)].add(
            jnp.where(is_input, flux, 0.0)
        )
        g_spike = a.g_spike.at[slot_rc].add(jnp.where(is_recur, flux, 0.0))

        # End of a refractory period of neuron r: u starts to move again.
        r = fwd.out_indices[rest_slot]
        u_reset_r = p.v_reset[r] - p.v_leak[r]
        i_end = fwd.out_current_at_rest_end[rest_slot]
        i_end = jnp.where(is_rest, i_end, 0.0)
        d_rest = jnp.where(is_rest, -a.lam_u[r] * (i_end - u_reset_r) / p.tau_mem[r], 0.0)
        g_spike = g_spike.at[rest_slot].add(d_rest)
        d_refrac = a.d_refrac.at[r].add(d_rest)
        refractory = a.refractory.at[r].set(jnp.where(is_rest, True, a.refractory[r]))

        # The spike itself: threshold condition and reset.
        theta = p.v_th[m] - p.v_leak[m]
        u_reset = p.v_reset[m] - p.v_leak[m]
        total = g_out[slot_sp] + g_spike[slot_sp]
        slope = (fwd.out_current[slot_sp] - theta) / p.tau_mem[m]
        slope = jnp.maximum(slope, SLOPE_FLOOR * jnp.maximum(jnp.abs(theta), 1.0) / p.tau_mem[m])
        coef = jnp.where(is_spike & ~fwd.out_at_once[slot_sp], (flux + total) / slope, 0.0)
        sel = is_spike & (jnp.arange(n) == m)
        d_theta = a.d_theta.at[m].add(coef)
        d_u_reset = a.d_u_reset.at[m].add(jnp.where(is_spike, a.lam_u[m], 0.0))
        # w is zero unless this event jumps I (arrival, or spike with zero-delay recurrence).
        tau_m_grad = dtm + jnp.where(sel, a.r_m[0] * u_reset, 0.0)
        tau_s_grad = dts + jnp.where(sel, a.r_s[0] * u_reset, 0.0)
        lam_u = jnp.where(sel, -coef, a.lam_u)
        r_m = (jnp.where(sel, 0.0, a.r_m[0]), a.r_m[1])
        r_s = (jnp.where(sel, 0.0, a.r_s[0]), a.r_s[1])
        refractory = jnp.where(sel, False, refractory)

        return a._replace(
            lam_u=lam_u,
            r_m=r_m,
            r_s=r_s,
            refractory=refractory,
            ptr_input=a.ptr_input - is_input,
            ptr_recur=a.ptr_recur - is_recur,
            ptr_rest=a.ptr_rest - is_rest,
            ptr_spike=a.ptr_spike - is_spike,
            g_spike=g_spike,
            d_weights=d_weights,
            d_recurrent=d_recurrent,
            d_tau_mem=a.d_tau_mem + tau_m_grad,
            d_tau_syn=a.d_tau_syn + tau_s_grad,
            d_theta=d_theta,
            d_u_reset=d_u_reset,
            d_refrac=d_refrac,
            d_arrivals=d_arrivals,
        )

    def cond(a: _Adjoint):
        return (a.ptr_input >= 0) | (a.ptr_recur >= 0) | (a.ptr_rest >= 0) | (a.ptr_spike >= 0)

    a = jax.lax.while_loop(cond, body, a)
    a = _back_to(a, layer, jnp.zeros((), dtype), smooth)
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
            a.d_weights,
            a.d_tau_mem,
            a.d_tau_syn,
            a.d_theta,
            a.d_u_reset,
            -a.d_theta - a.d_u_reset,
            a.d_refrac,
        ),
    )
    if has_rec:
        grads = eqx.tree_at(lambda lay: lay.recurrent_weights, grads, a.d_recurrent)
    return grads, a.d_arrivals


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def eventprop_layer(layer: Layer, times, sources, t_max, max_spikes: int, solver) -> LayerState:
    """Simulate one layer (one sample) from sorted arrivals; differentiable by EventProp.

    Only the spike times (``out_times``) carry gradients.
    """
    return run_layer(layer, Arrivals(times, sources), t_max, max_spikes, solver)


def _fwd(layer, times, sources, t_max, max_spikes, solver):
    state = run_layer(layer, Arrivals(times, sources), t_max, max_spikes, solver)
    return state, (layer, times, sources, t_max, state)


def _bwd(max_spikes, solver, residuals, cotangent: LayerState):
    layer, times, sources, t_max, state = residuals
    grads, d_times = backward_layer(
        layer, Arrivals(times, sources), state, cotangent.out_times, t_max, solver.smooth
    )
    return grads, d_times, None, jnp.zeros_like(t_max)


eventprop_layer.defvjp(_fwd, _bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def windowed_layer(layer: Layer, times, sources, t_max, max_spikes: int, solver, windows):
    """Simulate one layer of a batch (arrivals ``[batch, K]``, sorted) window by window
    (`windows.window_layer`); differentiable by EventProp run window by window
    (`windows_adjoint.backward_windows`). The records are the event loop's, per sample.
    Only the spike times (``out_times``) carry gradients.
    """
    return window_layer(layer, Arrivals(times, sources), t_max, max_spikes, solver, windows)


def _wfwd(layer, times, sources, t_max, max_spikes, solver, windows):
    state = window_layer(layer, Arrivals(times, sources), t_max, max_spikes, solver, windows)
    return state, (layer, times, sources, t_max, state)


def _wbwd(max_spikes, solver, windows, residuals, cotangent: LayerState):
    layer, times, sources, t_max, state = residuals
    grads, d_times = backward_windows(
        layer, Arrivals(times, sources), state, cotangent.out_times, t_max, solver.smooth, windows
    )
    return grads, d_times, None, jnp.zeros_like(t_max)


windowed_layer.defvjp(_wfwd, _wbwd)
