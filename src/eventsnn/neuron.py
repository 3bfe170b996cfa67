"""CuBa-LIF neuron parameters and the closed-form solution between events.

The model, per neuron, with ``u = V - v_leak`` (dimensionless potentials, time in s)::

    tau_syn dI/dt = -I                  presynaptic spike j: I += W[j, i]
    tau_mem du/dt = -u + I              V reaches v_th: spike, V = v_reset,
                                        held for t_refrac (I keeps decaying)

Between events::

    I(t) = I0 exp(-t/tau_syn)
    u(t) = u0 exp(-t/tau_mem) + I0 k(t)
    k(t) = tau_syn/(tau_mem - tau_syn) (exp(-t/tau_mem) - exp(-t/tau_syn))

`k` is evaluated without the removable singularity (see `kernel`): exact at
``tau_mem == tau_syn``, free of cancellation for nearly equal time constants, smooth in
both, and free of overflow for any ratio.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._validate import check_values, is_concrete

_PARAM_FIELDS = ("tau_mem", "tau_syn", "v_th", "v_reset", "v_leak", "t_refrac")


class LIFParams(eqx.Module):
    """Parameters of a population of CuBa-LIF neurons, one entry per neuron.

    Every field has shape ``[n]``. Scalars given to the constructor are broadcast.

    Attributes:
        tau_mem: membrane time constant (s), > 0.
        tau_syn: synaptic time constant (s), > 0. Any ratio to ``tau_mem``, equality included.
        v_th: threshold potential.
        v_reset: potential after a spike, < ``v_th``.
        v_leak: resting potential; above ``v_th`` the neuron fires tonically.
        t_refrac: refractory time (s), >= 0: ``V`` is held at ``v_reset``, ``I`` still decays.
    """

    tau_mem: Float[Array, " n"]
    tau_syn: Float[Array, " n"]
    v_th: Float[Array, " n"]
    v_reset: Float[Array, " n"]
    v_leak: Float[Array, " n"]
    t_refrac: Float[Array, " n"]

    def __init__(
        self,
        size: int,
        *,
        tau_mem,
        tau_syn,
        v_th=1.0,
        v_reset=0.0,
        v_leak=0.0,
        t_refrac=0.0,
        dtype=None,
        name: str = "params",
    ):
        """Broadcast and validate. `name` prefixes field names in error messages."""
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"{name}: size must be a positive integer, got {size!r}.")
        given = dict(
            tau_mem=tau_mem,
            tau_syn=tau_syn,
            v_th=v_th,
            v_reset=v_reset,
            v_leak=v_leak,
            t_refrac=t_refrac,
        )
        for field, value in given.items():
            arr = jnp.asarray(value, dtype=dtype if dtype is not None else float)
            if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != size):
                raise ValueError(
                    f"{name}.{field} must be a scalar or have shape ({size},) "
                    f"(one value per neuron), got shape {tuple(arr.shape)}."
                )
            setattr(self, field, jnp.broadcast_to(arr, (size,)))
        validate_params(self, name)

    @property
    def size(self) -> int:
        return self.tau_mem.shape[0]


def validate_params(p: LIFParams, name: str = "params") -> None:
    """Raise ValueError naming the field when a parameter value is invalid."""
    for field in _PARAM_FIELDS:
        x = getattr(p, field)
        check_values(f"{name}.{field}", x, jnp.isfinite(x), "must be finite (no NaN or inf)")
    check_values(f"{name}.tau_mem", p.tau_mem, p.tau_mem > 0, "must be > 0 seconds")
    check_values(f"{name}.tau_syn", p.tau_syn, p.tau_syn > 0, "must be > 0 seconds")
    check_values(f"{name}.t_refrac", p.t_refrac, p.t_refrac >= 0, "must be >= 0 seconds")
    check_values(
        f"{name}.v_reset",
        p.v_reset,
        p.v_reset < p.v_th,
        "must be below v_th, or the neuron would spike again at once after each reset",
    )


def _series_or(x, small, series, direct):
    """`series(x)` where `small`, else `direct(x)`; both branches stay NaN-free under grad."""
    safe = jnp.where(small, jnp.ones_like(x), x)
    return jnp.where(small, series(x), direct(safe))


def phi(x):
    """(1 - exp(-x)) / x for x >= 0, with phi(0) = 1, accurate near 0."""
    return _series_or(
        x,
        jnp.abs(x) < 1e-3,
        lambda x: 1.0 - x / 2.0 + x * x / 6.0 - x * x * x / 24.0,
        lambda x: -jnp.expm1(-x) / x,
    )


def log1p_ratio(w):
    """log(1 + w) / w for w > -1, with value 1 at w = 0, accurate near 0."""
    return _series_or(
        w,
        jnp.abs(w) < 1e-3,
        lambda w: 1.0 - w / 2.0 + w * w / 3.0 - w * w * w / 4.0,
        lambda w: jnp.log1p(w) / w,
    )


def sinhc(x):
    """sinh(x) / x, with value 1 at 0, accurate near 0."""
    return _series_or(
        x,
        jnp.abs(x) < 1e-3,
        lambda x: 1.0 + x * x / 6.0 + x**4 / 120.0,
        lambda x: jnp.sinh(x) / x,
    )


def kernel(t, tau_mem, tau_syn, smooth: bool = True):
    """k(t): the potential at time t (s) caused by a unit synaptic current at t = 0.

    With rates ``a = 1/tau_mem``, ``b = 1/tau_syn``, mean ``m`` and half-gap ``h``:
    ``k = (t/tau_mem) exp(-m t) sinhc(h t)``, smooth (and differentiable in both time
    constants) through ``tau_mem == tau_syn``. Where ``|h t| >= 1`` the equivalent
    ``exp(-min(a, b) t) phi(2 |h| t)`` is used instead, which cannot overflow.

    ``smooth=False``: the plain difference ``tau_syn/(tau_mem - tau_syn) (exp(-a t) -
    exp(-b t))``, about four times cheaper and sharing its exponentials with `propagate`;
    for simulation without derivatives in the time constants, and only where they differ
    by at least `PLAIN_KERNEL_GAP` (relative; `plain_kernel_ok`), where the difference's
    rounding error stays within about ``2 (1 + 1/PLAIN_KERNEL_GAP)`` ulps of 1.
    """
    if not smooth:
        return tau_syn / (tau_mem - tau_syn) * (jnp.exp(-t / tau_mem) - jnp.exp(-t / tau_syn))
    a, b = 1.0 / tau_mem, 1.0 / tau_syn
    m, h = 0.5 * (a + b), 0.5 * (b - a)
    near = jnp.abs(h * t) < 1.0
    ht_near = jnp.where(near, h * t, 0.0)
    gap_far = jnp.where(near, 1.0, 2.0 * jnp.abs(h) * t)
    shape = jnp.where(
        near,
        jnp.exp(-m * t) * sinhc(ht_near),
        jnp.exp(-jnp.minimum(a, b) * t) * phi(gap_far),
    )
    return (t / tau_mem) * shape


PLAIN_KERNEL_GAP = 0.1


def plain_kernel_apart(tau_mem, tau_syn):
    """Elementwise: time constants at least `PLAIN_KERNEL_GAP` of the smaller apart, where
    `kernel`'s ``smooth=False`` form applies."""
    return jnp.abs(tau_mem - tau_syn) >= PLAIN_KERNEL_GAP * jnp.minimum(tau_mem, tau_syn)


def plain_kernel_ok(tau_mem, tau_syn) -> bool:
    """Whether `kernel`'s ``smooth=False`` form applies everywhere: concrete time constants,
    all `plain_kernel_apart` (False for traced ones, which cannot be checked)."""
    if not (is_concrete(tau_mem) and is_concrete(tau_syn)):
        return False
    with jax.ensure_compile_time_eval():  # concrete values: a Python bool, also in a trace
        apart = plain_kernel_apart(np.asarray(tau_mem, float), np.asarray(tau_syn, float))
        return bool(np.all(np.asarray(apart)))


def propagate(u0, i0, t, tau_mem, tau_syn, smooth: bool = True):
    """Advance ``(u, I)`` by ``t`` seconds without events. Returns ``(u(t), I(t))``.

    All arguments broadcast; `u0` is the potential relative to ``v_leak``. `smooth`: the
    form of `kernel`.
    """
    u = u0 * jnp.exp(-t / tau_mem) + i0 * kernel(t, tau_mem, tau_syn, smooth)
    return u, i0 * jnp.exp(-t / tau_syn)


def du_dt(u, i, tau_mem):
    """Time derivative of u (1/s) at a state, straight from the ODE."""
    return (i - u) / tau_mem


def extremum_time(u0, i0, tau_mem, tau_syn):
    """Time (s) of the single extremum of u(t) after t = 0, or +inf if there is none.

    ``du/dt = 0`` where ``I(t) = u(t)``, which gives
    ``t_e = tau_mem psi(w) (I0 - u0) / (I0 r)``, ``r = tau_mem/tau_syn``,
    ``w = (r - 1)(u0 - I0)/(I0 r)``, ``psi(w) = log(1 + w)/w``: exact at ``r = 1`` and
    without cancellation near it.
    """
    r = tau_mem / tau_syn
    nonzero = i0 != 0
    i_safe = jnp.where(nonzero, i0, jnp.ones_like(i0))
    w = (r - 1.0) * (u0 - i0) / (i_safe * r)
    exists = nonzero & (w > -1.0)
    w_safe = jnp.where(exists, w, jnp.zeros_like(w))
    t = tau_mem * log1p_ratio(w_safe) * (i0 - u0) / (i_safe * r)
    return jnp.where(exists & (t > 0), t, jnp.inf)
