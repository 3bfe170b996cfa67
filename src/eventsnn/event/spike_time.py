"""Next-threshold-crossing solvers.

For one inter-event interval, ``f(t) = u(t) - theta`` is a constant plus two exponentials,
so ``f'`` has at most one zero: ``f`` is monotone on ``[0, t_e]`` and on ``[t_e, T]``,
where ``t_e`` is the extremum (closed form, `neuron.extremum_time`). The first upward
crossing is therefore bracketed by ``[0, t_e]`` when ``f(t_e) >= 0``, else by
``[t_e, T]`` when ``f(T) >= 0``; otherwise there is none before the horizon ``T``.

Solvers find the root to machine precision without gradients; `first_crossing` then
attaches the exact derivative by the implicit function theorem,
``dt*/dp = -(df/dp) / f'(t*)``, so spike times are differentiable in every parameter and
in the state at the interval start. At a grazing crossing ``f'(t*) -> 0``: the slope is
floored at ``SLOPE_FLOOR * max(|theta|, 1) / tau_mem`` so derivatives stay finite.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from .._validate import check_values
from ..neuron import PLAIN_KERNEL_GAP, du_dt, extremum_time, plain_kernel_apart, propagate

SLOPE_FLOOR = 1e-6


def bracket(u0, i0, theta, tau_mem, tau_syn, horizon, smooth: bool = True):
    """Whether ``u`` (starting below ``theta``) reaches it within ``[0, horizon]``, and a
    bracket of the first crossing: ``(found, lo, hi, f(lo), f(hi))`` with
    ``f = u - theta``, ``f(lo) < 0 <= f(hi)`` where found. Closed form, no iteration.
    `smooth`: the form of the PSP kernel (`eventsnn.neuron.kernel`)."""

    def f(t):
        return propagate(u0, i0, t, tau_mem, tau_syn, smooth)[0] - theta

    t_e = jnp.clip(extremum_time(u0, i0, tau_mem, tau_syn), 0.0, horizon)
    f_e, f_end = f(t_e), f(horizon)
    rising = f_e >= 0
    found = (rising | (f_end >= 0)) & (horizon >= 0)
    lo = jnp.where(rising, 0.0, t_e)
    hi = jnp.where(rising, t_e, horizon)
    f_lo = jnp.where(rising, -theta + u0, f_e)
    f_hi = jnp.where(rising, f_e, f_end)
    return found, lo, hi, f_lo, f_hi


class SpikeTimeSolver(eqx.Module):
    """Finds the first time in ``[0, horizon]`` at which ``u`` reaches ``theta`` from below.

    Subclasses implement `root`; they are called through `first_crossing`.

    ``smooth``: the form of the PSP kernel in everything the event engine computes with this
    solver (`eventsnn.neuron.kernel`). ``False`` takes the plain difference of exponentials,
    several times cheaper, for time constants at least 10% apart (`simulate` checks concrete
    ones; with traced ones, e.g. trained time constants, keep the default).
    """

    smooth: bool = eqx.field(static=True, default=True, kw_only=True)

    @abc.abstractmethod
    def root(self, u0, i0, theta, tau_mem, tau_syn, horizon):
        """Crossing time (s) from the interval start, +inf if none, all arrays ``[n]``.

        Callers guarantee ``u0 < theta``. Values only: not differentiated.
        """

    def crosses(self, u0, i0, theta, tau_mem, tau_syn, horizon):
        """Whether ``u`` reaches ``theta`` within ``[0, horizon]`` (bool, no root found):
        where a layer has many intervals per neuron, test them all and solve one."""
        found = bracket(u0, i0, theta, tau_mem, tau_syn, horizon, self.smooth)[0]
        return found | ((u0 >= theta) & (horizon >= 0))

    def check(self, tau_mem, tau_syn, name: str) -> None:
        """Raise ValueError if this solver cannot handle these time constants."""
        if not self.smooth:
            check_values(
                f"{name}.tau_syn",
                tau_syn,
                plain_kernel_apart(tau_mem, tau_syn),
                f"must differ from tau_mem by at least {PLAIN_KERNEL_GAP:.0%} for a solver "
                "with smooth=False (the plain PSP kernel); use smooth=True",
            )


class NewtonSolver(SpikeTimeSolver):
    """Any ``tau_mem/tau_syn`` ratio: bracket by the extremum, then safeguarded Newton.

    Each iteration takes the Newton step from the current point when it stays inside the
    bracket, else bisects, and shrinks the bracket by the sign of ``f``. Stops when every
    neuron's step is below a few ulps of the time or ``f`` below its rounding error, or
    after `max_steps`.
    """

    max_steps: int = eqx.field(static=True, default=32)

    def root(self, u0, i0, theta, tau_mem, tau_syn, horizon):
        found, lo, hi, f_lo, f_hi = bracket(u0, i0, theta, tau_mem, tau_syn, horizon, self.smooth)
        # Start from the secant point: already close for nearly linear stretches.
        width = hi - lo
        frac = jnp.where(
            found & (f_hi > f_lo), -f_lo / jnp.where(f_hi > f_lo, f_hi - f_lo, 1), 0.5
        )
        x0 = lo + jnp.clip(frac, 0.0, 1.0) * width
        eps = jnp.finfo(x0.dtype).eps
        tol = 4 * eps * jnp.maximum(jnp.abs(horizon), tau_mem)
        # |f| below its own rounding error: further steps only chase noise.
        f_tol = 8 * eps * (jnp.abs(theta) + jnp.abs(u0) + jnp.abs(i0))

        def body(carry):
            k, lo, hi, x, _ = carry
            u, i = propagate(u0, i0, x, tau_mem, tau_syn, self.smooth)
            fx = u - theta
            lo = jnp.where(fx < 0, x, lo)
            hi = jnp.where(fx > 0, x, hi)
            slope = du_dt(u, i, tau_mem)  # >= 0 on the rising branch
            newton = x - fx / jnp.where(slope > 0, slope, 1.0)
            inside = (slope > 0) & (newton >= lo) & (newton <= hi)
            x_new = jnp.where(fx == 0, x, jnp.where(inside, newton, 0.5 * (lo + hi)))
            moving = found & (jnp.abs(x_new - x) > tol) & (hi - lo > tol) & (jnp.abs(fx) > f_tol)
            return k + 1, lo, hi, jnp.where(found, x_new, x), moving

        def cond(carry):
            k, *_, moving = carry
            return (k < self.max_steps) & jnp.any(moving)

        _, _, _, x, _ = jax.lax.while_loop(cond, body, (0, lo, hi, x0, found))
        return jnp.where(found, x, jnp.inf)


class QuadraticSolver(SpikeTimeSolver):
    """Closed form for ``tau_mem = 2 tau_syn``: with ``x = exp(-t/tau_mem)``,
    ``u = (u0 + I0) x - I0 x^2`` and the crossing is the largest root ``x`` in
    ``[exp(-T/tau_mem), 1]``. Refuses networks with another ratio.
    """

    def check(self, tau_mem, tau_syn, name: str) -> None:
        super().check(tau_mem, tau_syn, name)
        check_values(
            f"{name}.tau_syn",
            tau_syn,
            jnp.abs(tau_mem - 2 * tau_syn) <= 1e-9 * tau_mem,
            "must be exactly tau_mem / 2 for QuadraticSolver; use NewtonSolver for other ratios",
        )

    def crosses(self, u0, i0, theta, tau_mem, tau_syn, horizon):
        # u(x) on x in [x_min, 1]: at x_min, or at the vertex of the parabola when it is a
        # maximum (I0 > 0) inside the range. Products and comparisons only.
        x_min = jnp.exp(-jnp.maximum(horizon, 0.0) / tau_mem)
        b = u0 + i0
        at_end = (b - i0 * x_min) * x_min >= theta
        peak = (i0 > 0) & (b >= 2 * i0 * x_min) & (b <= 2 * i0) & (b * b >= 4 * i0 * theta)
        return (horizon >= 0) & ((u0 >= theta) | at_end | peak)

    def root(self, u0, i0, theta, tau_mem, tau_syn, horizon):
        a, b, c = -i0, u0 + i0, -theta  # a x^2 + b x + c = 0
        disc = b * b - 4 * a * c
        sq = jnp.sqrt(jnp.maximum(disc, 0.0))
        q = -0.5 * (b + jnp.where(b >= 0, sq, -sq))
        q_safe = jnp.where(q == 0, 1.0, q)
        a_safe = jnp.where(a == 0, 1.0, a)
        roots = jnp.stack(
            [jnp.where(a == 0, -jnp.inf, q / a_safe), jnp.where(q == 0, -jnp.inf, c / q_safe)]
        )
        x_min = jnp.exp(-jnp.maximum(horizon, 0.0) / tau_mem)
        valid = (disc >= 0) & (roots <= 1.0) & (roots >= x_min) & (roots > 0) & (horizon >= 0)
        x = jnp.max(jnp.where(valid, roots, -jnp.inf), axis=0)
        x_safe = jnp.where(x > 0, x, 1.0)
        return jnp.where(x > 0, jnp.maximum(-tau_mem * jnp.log(x_safe), 0.0), jnp.inf)


def first_crossing(
    solver: SpikeTimeSolver, u0, i0, theta, tau_mem, tau_syn, horizon, differentiable=True
):
    """First time (s, from the interval start) at which ``u`` reaches ``theta``; +inf if
    none within ``horizon``; 0 if ``u0 >= theta`` already.

    Differentiable: the value comes from `solver` without gradients, the derivative from
    the implicit function theorem at the crossing. With ``differentiable=False`` only the
    value is computed (for callers with their own backward pass).
    """
    at_once = u0 >= theta
    args = jax.lax.stop_gradient((u0, i0, theta, tau_mem, tau_syn, horizon))
    u_below = jnp.where(at_once, args[2] - 1.0, args[0])  # keep the solver's premise
    t_star = solver.root(u_below, *args[1:])
    t_star = jnp.where(at_once, 0.0, t_star)
    if not differentiable:
        return t_star
    spikes = jnp.isfinite(t_star) & ~at_once
    t_safe = jnp.where(spikes, t_star, 0.0)
    u, i = propagate(u0, i0, t_safe, tau_mem, tau_syn, solver.smooth)
    return t_star + jnp.where(spikes, crossing_derivative(u, i, theta, tau_mem), 0.0)


def crossing_derivative(u, i, theta, tau_mem):
    """Zero in value; in derivative, the shift of a threshold crossing whose state is
    ``(u, I)``: ``-(du - dtheta) / u'`` (implicit function theorem), with ``u'`` floored
    at ``SLOPE_FLOOR * max(|theta|, 1) / tau_mem``. Add it to a crossing time's value."""
    slope = jax.lax.stop_gradient(du_dt(u, i, tau_mem))
    floor = jax.lax.stop_gradient(SLOPE_FLOOR * jnp.maximum(jnp.abs(theta), 1.0) / tau_mem)
    shift = -(u - theta) / jnp.maximum(slope, floor)
    return shift - jax.lax.stop_gradient(shift)
