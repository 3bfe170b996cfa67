"""The discrete engine: fixed-step simulation of the same networks as the event core.

Layers run one after another, each as one `lax.scan` over time steps with the batch in
every step (matrix products, not per-sample loops). A spike emitted in step ``k`` (at time
``(k+1) dt``) reaches the next layer, or the layer itself through recurrent weights, in
step ``k + 1 + round(delay/dt)``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._validate import is_concrete
from ..encode import spikes_to_train
from ..network import Layer, Network, Spikes
from .rules import ForwardEuler, StepRule
from .surrogate import SuperSpike, Surrogate


class DiscreteResult(eqx.Module):
    """Outputs of a discrete run (batch-major).

    Attributes:
        trains: per layer ``[batch, steps, n]`` spikes per step (surrogate-differentiable).
            For a non-spiking readout (``li_readout``) the last entry is all zeros.
        voltages: per layer ``[batch, steps, n]`` membrane potential at the end of each step
            (before reset), or None per layer when not recorded.
        dt: the step (s).
    """

    trains: tuple[Float[Array, "batch steps n"], ...]
    voltages: tuple
    dt: float = eqx.field(static=True)

    @property
    def output_voltage(self):
        return self.voltages[-1]


def _delay_steps(delay: float, dt: float, rule: StepRule) -> int:
    return rule.lag + int(round(delay / dt))


def _shift(train, steps: int):
    """Delay a ``[steps_total, batch, n]`` train by ``steps`` steps (zeros shifted in)."""
    if steps == 0:
        return train
    return jnp.concatenate([jnp.zeros_like(train[:steps]), train[:-steps]], axis=0)


def _run_layer(layer: Layer, current, dt, rule: StepRule, surrogate, spiking: bool):
    """``current`` ``[T, B, n]`` -> spikes and voltages ``[T, B, n]``."""
    p = layer.params
    batch, n = current.shape[1], layer.size
    zeros = jnp.zeros((batch, n), current.dtype)
    state = (
        jnp.broadcast_to(p.v_leak, (batch, n)).astype(current.dtype),
        zeros,
        jnp.zeros((batch, n), jnp.int32),
    )
    rec = layer.recurrent_weights
    lag = max(_delay_steps(layer.delay, dt, rule), 1)  # a spike cannot reach itself at once
    # Own spikes still in flight (recurrent layers only: no per-step copy otherwise).
    buffer = None if rec is None else jnp.zeros((lag, batch, n), current.dtype)

    def step(carry, x):
        state, buffer = carry
        if rec is not None:
            x = x + buffer[0] @ rec
        if spiking:
            state, spikes, v = rule.lif(p, state, x, dt, surrogate)
        else:
            state, v = rule.li(p, state, x, dt)
            spikes = None
        if rec is not None:
            buffer = jnp.concatenate([buffer[1:], spikes[None]], axis=0)
        return (state, buffer), (spikes, v)

    _, (spikes, v) = jax.lax.scan(step, (state, buffer), current)
    return (jnp.zeros_like(v) if spikes is None else spikes), v


@eqx.filter_jit
def _simulate(network, train, dt, rule, surrogate, li_readout, record_voltages):
    train = jnp.swapaxes(train, 0, 1)  # time-major inside
    trains, voltages = [], []
    for k, layer in enumerate(network.layers):
        if k:
            train = _shift(train, _delay_steps(layer.delay, dt, rule))
        current = train @ layer.weights
        spiking = not (li_readout and k == len(network.layers) - 1)
        train, v = _run_layer(layer, current, dt, rule, surrogate, spiking)
        trains.append(jnp.swapaxes(train, 0, 1))
        voltages.append(jnp.swapaxes(v, 0, 1) if record_voltages else None)
    return DiscreteResult(tuple(trains), tuple(voltages), dt)


def simulate_discrete(
    network: Network,
    inputs: Spikes | Float[Array, "batch steps n_in"],
    *,
    dt: float,
    t_max: float,
    surrogate: Surrogate = SuperSpike(),
    rule: StepRule = ForwardEuler(),
    li_readout: bool = False,
    record_voltages: bool = True,
) -> DiscreteResult:
    """Simulate a network with a fixed time step, differentiable by surrogate gradients.

    Args:
        network: the same `Network` the event core runs (recurrence, delays, refractoriness,
            ``v_leak``, ``v_reset`` included).
        inputs: input `Spikes` ``[batch, k]`` (or ``[k]``), binned into steps (a spike at
            ``t`` plus the first layer's delay lands in step ``floor(t/dt)``), or an already
            dense train ``[batch, steps, n_in]`` of spike counts (delay not applied).
        dt: step (s). t_max: horizon (s); ``steps = round(t_max/dt)``.
        surrogate: pseudo-derivative of the spike (`SuperSpike`, `Sigmoid`, `ArcTan`).
        rule: the step rule (`ForwardEuler`).
        li_readout: make the last layer a non-spiking leaky integrator (read its voltage).
        record_voltages: keep ``[batch, steps, n]`` voltages of every layer.
    """
    if not (is_concrete(dt) and float(dt) > 0 and np.isfinite(dt)):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}.")
    if not (np.isfinite(t_max) and t_max > 0):
        raise ValueError(f"t_max must be a finite positive number of seconds, got {t_max!r}.")
    n_steps = int(round(t_max / dt))
    if n_steps < 1:
        raise ValueError(f"t_max/dt must give at least one step, got {t_max}/{dt}.")
    dtype = network.layers[0].weights.dtype
    if isinstance(inputs, Spikes):
        inputs.validate(network.input_size)
        unbatched = inputs.times.ndim == 1
        if unbatched:
            inputs = Spikes(inputs.times[None], inputs.indices[None])
        train = spikes_to_train(
            Spikes(inputs.times.astype(dtype), inputs.indices),
            network.input_size,
            dt,
            n_steps,
            delay=network.layers[0].delay,
        )
    else:
        train = jnp.asarray(inputs, dtype)
        unbatched = train.ndim == 2
        train = train[None] if unbatched else train
        if train.shape[1:] != (n_steps, network.input_size):
            raise ValueError(
                f"inputs must have shape [batch, {n_steps}, {network.input_size}] "
                f"(steps = t_max/dt), got {tuple(train.shape)}."
            )
    result = _simulate(network, train, float(dt), rule, surrogate, li_readout, record_voltages)
    if unbatched:
        result = jax.tree.map(lambda x: x[0], result)
    return result


def trains_to_spikes(train, dt: float, max_spikes: int):
    """A ``[..., steps, n]`` train to a `Spikes` record of at most ``max_spikes`` spikes
    (sorted by time, ties by index; times are step ends ``(k+1) dt``) and an overflow flag."""
    steps, n = train.shape[-2:]
    flat = train.reshape(train.shape[:-2] + (steps * n,)) > 0
    order = jnp.argsort(~flat, axis=-1, stable=True)[..., :max_spikes]  # fired first, in order
    fired = jnp.take_along_axis(flat, order, axis=-1)
    times = jnp.where(fired, (order // n + 1) * dt, jnp.inf)
    indices = jnp.where(fired, order % n, -1)
    overflow = jnp.sum(flat, axis=-1) > max_spikes
    return Spikes(times, indices, dtype=train.dtype), overflow
