"""Time-step rules of the discrete engine: how one step of ``dt`` updates a layer.

A rule is a small final class; the engine (`discrete.simulate`) is the same for all.
States are ``(v, i, refractory_steps)`` arrays ``[batch, n]``.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from ..neuron import LIFParams, propagate
from .surrogate import Surrogate


class StepRule(eqx.Module):
    """Advances CuBa-LIF and leaky-integrator layers by one step of ``dt`` seconds.

    ``lag``: steps from a spike to its arrival at the next layer (without delay): 1 when
    spikes are detected at the end of a step (they act from the next one), 0 when they are
    detected from the state at its start (they act within the same step).
    """

    lag = 1

    @abc.abstractmethod
    def lif(self, p: LIFParams, state, current, dt: float, surrogate: Surrogate):
        """One step of a spiking layer: ``current`` ``[batch, n]`` is the jump of ``I``
        arriving at the start of the step. Returns ``(state, spikes, v)``."""

    @abc.abstractmethod
    def li(self, p: LIFParams, state, current, dt: float):
        """One step of a non-spiking readout (no threshold). Returns ``(state, v)``."""


class IntegrateAndReset(StepRule):
    """Shared threshold, reset and refractoriness; subclasses say how ``(V, I)`` advance.

    Per step: ``I += current``, advance ``(V, I)`` by ``dt`` (``V`` held at ``v_reset``
    while refractory), spike where ``V >= v_th`` (Heaviside forward, surrogate backward).
    A spike is reported at the end of its step.

    The reset keeps the spike's phase, so timing errors do not pile up along a spike train:
    without refractoriness ``V = v_reset + (V - v_th)`` (the overshoot is the time since the
    crossing, times the slope); with it, ``V = v_reset`` and the hold lasts
    ``round(t_refrac/dt - f)`` steps, ``f`` the fraction of the step since the crossing
    (linear interpolation).
    """

    @abc.abstractmethod
    def integrate(self, p: LIFParams, v, i, dt: float):
        """``(V, I)`` after ``dt`` seconds without events."""

    def lif(self, p, state, current, dt, surrogate):
        v_old, i, refractory = state
        resting = refractory > 0
        v_new, i = self.integrate(p, v_old, i + current, dt)
        v_new = jnp.where(resting, v_old, v_new)
        spikes = surrogate(v_new - p.v_th) * ~resting
        has_refrac = p.t_refrac > 0
        after = jnp.where(has_refrac, p.v_reset, p.v_reset + (v_new - p.v_th))
        v = v_new - spikes * (v_new - after)
        rise = jax.lax.stop_gradient(v_new - v_old)
        over = jax.lax.stop_gradient(v_new - p.v_th)
        since = jnp.clip(over / jnp.where(rise > 0, rise, 1.0), 0, 1)
        hold = jnp.round(p.t_refrac / dt - since).astype(refractory.dtype)
        hold = jnp.where(has_refrac, jnp.maximum(hold, 0), 0)
        refractory = jnp.where(spikes > 0, hold, jnp.maximum(refractory - 1, 0))
        return (v, i, refractory), spikes, v_new

    def li(self, p, state, current, dt):
        v, i, refractory = state
        v, i = self.integrate(p, v, i + current, dt)
        return (v, i, refractory), v


class ForwardEuler(IntegrateAndReset):
    """Forward Euler: ``V += dt/tau_mem (v_leak - V + I)``, ``I -= dt/tau_syn I``. First-order
    in dt; what most time-stepped SNN code does."""

    def integrate(self, p, v, i, dt):
        return v + dt / p.tau_mem * (p.v_leak - v + i), i - dt / p.tau_syn * i


class ExactStep(IntegrateAndReset):
    """The closed-form solution over each step (exact between events): only the snapping
    of inputs and spikes to the grid remains, so spike times are within about a step."""

    def integrate(self, p, v, i, dt):
        u, i = propagate(v - p.v_leak, i, dt, p.tau_mem, p.tau_syn)
        return p.v_leak + u, i


class SpyxStep(StepRule):
    """The step of Spyx's ``CuBaLIF`` and ``LI`` (Spyx 1.0), as a configuration of this
    engine: per step, in order, ``s = H(V - v_th)`` from the previous ``V``; ``V -= s v_th``
    (subtractive reset); ``I = alpha I + x``; ``V = beta V + I``, with
    ``alpha = exp(-dt/tau_syn)``, ``beta = exp(-dt/tau_mem)``. The readout: ``V = beta V + x``
    (no synaptic filter). Potentials are relative to 0: ``v_leak``, ``v_reset`` and
    ``t_refrac`` are not part of this rule, and ``I`` enters ``V`` with unit gain per step
    (so weights mean what they mean in Spyx, not jumps of the continuous model's ``I``).
    Layers run in sequence within a step, so a spike reaches the next layer in the same
    step (``lag = 0``)."""

    lag = 0

    def lif(self, p, state, current, dt, surrogate):
        v, i, refractory = state
        spikes = surrogate(v - p.v_th)
        v = v - spikes * p.v_th
        i = decay(dt, p.tau_syn) * i + current
        v = decay(dt, p.tau_mem) * v + i
        return (v, i, refractory), spikes, v

    def li(self, p, state, current, dt):
        v, i, refractory = state
        v = decay(dt, p.tau_mem) * v + current
        return (v, i, refractory), v


def decay(dt: float, tau):
    """``exp(-dt/tau)`` rounded once to the dtype of `tau`: evaluated in float64 (a few
    operations per neuron), because float32 ``exp`` is off by an ulp for some arguments and
    such an error compounds over hundreds of steps (libraries that take the factors from the
    host, as Spyx does, see the correctly rounded value)."""
    if tau.dtype == jnp.float64:
        return jnp.exp(-dt / tau)
    with jax.enable_x64(True):
        return jnp.exp(-dt / tau.astype(jnp.float64)).astype(tau.dtype)
