"""Surrogate gradients: a Heaviside step forward, a smooth pseudo-derivative backward.

Each surrogate is a small final class with a documented ``slope``; the spike function is
``spike(x) = H(x)`` (``x = V - v_th``) with ``d spike/dx`` replaced by ``derivative(x)``.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp


class Surrogate(eqx.Module):
    """Pseudo-derivative of the spike nonlinearity."""

    @abc.abstractmethod
    def derivative(self, x):
        """Surrogate of dH/dx at ``x = V - v_th``."""

    def __call__(self, x):
        return _spike(self, x)


class SuperSpike(Surrogate):
    """Fast sigmoid (Zenke & Ganguli 2018): ``1 / (1 + slope |x|)^2``; 1 at threshold."""

    slope: float = eqx.field(static=True, default=25.0)

    def derivative(self, x):
        return 1.0 / (1.0 + self.slope * jnp.abs(x)) ** 2


class Sigmoid(Surrogate):
    """Derivative of ``sigmoid(slope x)``: ``slope s (1 - s)``; ``slope/4`` at threshold."""

    slope: float = eqx.field(static=True, default=10.0)

    def derivative(self, x):
        s = jax.nn.sigmoid(self.slope * x)
        return self.slope * s * (1.0 - s)


class ArcTan(Surrogate):
    """Derivative of ``arctan(pi slope x / 2) / pi``: ``(slope/2) / (1 + (pi slope x/2)^2)``;
    ``slope/2`` at threshold (Fang et al. 2021)."""

    slope: float = eqx.field(static=True, default=2.0)

    def derivative(self, x):
        return 0.5 * self.slope / (1.0 + (0.5 * jnp.pi * self.slope * x) ** 2)


@jax.custom_jvp
def _heaviside(x, surrogate_derivative):
    del surrogate_derivative
    return (x >= 0).astype(x.dtype)


@_heaviside.defjvp
def _heaviside_jvp(primals, tangents):
    x, d = primals
    dx, _ = tangents
    return _heaviside(x, d), d * dx


def _spike(surrogate: Surrogate, x):
    return _heaviside(x, jax.lax.stop_gradient(surrogate.derivative(x)))
