"""Time-step rules of the discrete engine: how one step of ``dt`` updates a layer.

A rule is a small final class; the engine (`discrete.simulate`) is the same for all.
States are ``(v, i, refractory_steps)`` arrays ``[batch, n]``.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from ..neuron import LIFParams
from .surrogate import Surrogate


class StepRule(eqx.Module):
    """Advances CuBa-LIF and leaky-integrator layers by one step of ``dt`` seconds."""

    @abc.abstractmethod
    def lif(self, p: LIFParams, state, current, dt: float, surrogate: Surrogate):
        """One step of a spiking layer: ``current`` ``[batch, n]`` is the jump of ``I``
        arriving at the start of the step. Returns ``(state, spikes, v)``."""

    @abc.abstractmethod
    def li(self, p: LIFParams, state, current, dt: float):
        """One step of a non-spiking readout (no threshold). Returns ``(state, v)``."""


class ForwardEuler(StepRule):
    """Forward Euler of the model's ODEs with the event core's discontinuities.

    Per step: ``I += current``; ``V += dt/tau_mem (v_leak - V + I)`` (held at ``v_reset``
    while refractory); ``I -= dt/tau_syn I``; spike where ``V >= v_th`` (Heaviside forward,
    surrogate backward). A spike is reported at the end of its step.

    The reset keeps the spike's phase, so timing errors do not pile up along a spike train:
    without refractoriness ``V = v_reset + (V - v_th)`` (the overshoot is the time since the
    crossing, times the slope); with it, ``V = v_reset`` and the hold lasts
    ``round(t_refrac/dt - f)`` steps, ``f`` the fraction of the step since the crossing
    (linear interpolation). Spike times converge to the event core's at first order in dt.
    """

    def _integrate(self, p, v, i, current, dt):
        i = i + current
        v_new = v + dt / p.tau_mem * (p.v_leak - v + i)
        return v_new, i - dt / p.tau_syn * i

    def lif(self, p, state, current, dt, surrogate):
        v_old, i, refractory = state
        resting = refractory > 0
        v_new, i = self._integrate(p, v_old, i, current, dt)
        v_new = jnp.where(resting, v_old, v_new)
        spikes = surrogate(v_new - p.v_th) * ~resting
        has_refrac = p.t_refrac > 0
        after = jnp.where(has_refrac, p.v_reset, p.v_reset + (v_new - p.v_th))
        v = v_new - spikes * (v_new - after)
        rise = jax.lax.stop_gradient(v_new - v_old)
        since = jnp.clip(
            jax.lax.stop_gradient(v_new - p.v_th) / jnp.where(rise > 0, rise, 1.0), 0, 1
        )
        hold = jnp.round(p.t_refrac / dt - since).astype(refractory.dtype)
        hold = jnp.where(has_refrac, jnp.maximum(hold, 0), 0)
        refractory = jnp.where(spikes > 0, hold, jnp.maximum(refractory - 1, 0))
        return (v, i, refractory), spikes, v_new

    def li(self, p, state, current, dt):
        v, i, refractory = state
        v, i = self._integrate(p, v, i, current, dt)
        return (v, i, refractory), v
