"""The discrete engine: fixed-step simulation of the same networks as the event core.

All layers advance together in one `lax.scan` over time steps with the batch in every
step (matrix products, not per-sample loops). A spike emitted in step ``k`` (at time
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
from ..network import Network, Spikes
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


def _rest_state(layer, batch: int, dtype):
    """``(V, I, refractory steps)`` ``[batch, n]`` of a layer at rest."""
    n = layer.size
    return (
        jnp.broadcast_to(layer.params.v_leak, (batch, n)).astype(dtype),
        jnp.zeros((batch, n), dtype),
        jnp.zeros((batch, n), jnp.int32),
    )


def _run(layers, current, dt, rule: StepRule, surrogate, li_readout: bool = False):
    """The layers in one `lax.scan` over time (one loop, not one per layer); with
    `li_readout` the last one is a non-spiking leaky integrator.

    ``current`` ``[T, B, n_0]`` is the first layer's input current for every step (one
    matrix product outside the loop). Returns per layer spikes and voltages ``[T, B, n]``.
    Currents into later layers, and a layer's own spikes through recurrent weights, wait in
    per-layer buffers for their lag in steps (``rule.lag`` plus the delay).
    """
    batch, dtype = current.shape[1], current.dtype
    last = len(layers) - 1

    def buffer(steps, n):
        return jnp.zeros((steps, batch, n), dtype) if steps > 0 else None

    states, inbox, own = [], [], []
    for k, layer in enumerate(layers):
        n = layer.size
        states.append(_rest_state(layer, batch, dtype))
        inbox.append(buffer(_delay_steps(layer.delay, dt, rule), n) if k else None)
        # A spike cannot reach its own neuron within its step.
        own_lag = max(_delay_steps(layer.delay, dt, rule), 1)
        own.append(buffer(own_lag, n) if layer.recurrent_weights is not None else None)

    def push(buf, x):
        return jnp.concatenate([buf[1:], x[None]], axis=0)

    def step(carry, x):
        states, inbox, own = carry
        states, inbox, own = list(states), list(inbox), list(own)
        outs = []
        for k, layer in enumerate(layers):
            if k:
                arriving = outs[-1][0] @ layer.weights
                if inbox[k] is None:
                    x = arriving
                else:
                    x, inbox[k] = inbox[k][0], push(inbox[k], arriving)
            if own[k] is not None:
                x = x + own[k][0] @ layer.recurrent_weights
            if li_readout and k == last:
                states[k], v = rule.li(layer.params, states[k], x, dt)
                spikes = jnp.zeros_like(v)
            else:
                states[k], spikes, v = rule.lif(layer.params, states[k], x, dt, surrogate)
            if own[k] is not None:
                own[k] = push(own[k], spikes)
            outs.append((spikes, v))
        return (tuple(states), tuple(inbox), tuple(own)), tuple(outs)

    carry = (tuple(states), tuple(inbox), tuple(own))
    _, outs = jax.lax.scan(step, carry, current)
    return outs


def _project(x, weights):
    """``x @ weights`` for ``x`` ``[T, B, n]``, as one 2-D matrix product: XLA's CPU dot
    handles the 3-D contraction, and its transposes in the backward, much more slowly."""
    return (x.reshape(-1, x.shape[-1]) @ weights).reshape(*x.shape[:-1], weights.shape[-1])


def _leaky_readout(layer, current, dt, rule: StepRule):
    """A non-spiking readout ``[T, B, n]`` from its input current for every step. It feeds
    nothing back, so it runs after the spiking layers, with its input as one matrix
    product rather than one per step, in a scan that carries only its own state."""
    state = _rest_state(layer, current.shape[1], current.dtype)
    _, v = jax.lax.scan(lambda st, x: rule.li(layer.params, st, x, dt), state, current)
    return v


def _shift(x, steps: int):
    """``x`` ``[T, ...]`` delayed by `steps` steps along time (zeros enter)."""
    if steps == 0:
        return x
    return jnp.concatenate([jnp.zeros_like(x[:steps]), x[:-steps]])[: x.shape[0]]


def _split_outputs(network_and_train, dt, rule: StepRule, surrogate):
    """Spikes and voltages ``[T, B, n]`` per layer, the LI readout (last layer) computed
    after the spiking layers' scan."""
    network, train = network_and_train
    layers = network.layers
    current = _project(train, layers[0].weights)
    spiking, readout = layers[:-1], layers[-1]
    outs = _run(spiking, current, dt, rule, surrogate) if spiking else ()
    if spiking:
        current = _shift(
            _project(outs[-1][0], readout.weights), _delay_steps(readout.delay, dt, rule)
        )
    v = _leaky_readout(readout, current, dt, rule)
    return (*outs, (jnp.zeros_like(v), v))


@eqx.filter_custom_vjp
def _readout_outputs(network_and_train, dt, rule: StepRule, surrogate):
    """`_split_outputs`, evaluated with the readout inside the scan when not differentiated:
    the fastest order differs. Forward, one loop beats storing every step's spikes for a
    matrix product afterwards; backward, per-step products with a 3-wide readout inside
    the reversed loop cost more than one large product outside it."""
    network, train = network_and_train
    current = _project(train, network.layers[0].weights)
    return _run(network.layers, current, dt, rule, surrogate, li_readout=True)


@_readout_outputs.def_fwd
def _readout_outputs_fwd(perturbed, network_and_train, dt, rule, surrogate):
    del perturbed
    outs, pullback = eqx.filter_vjp(
        lambda d: _split_outputs(d, dt, rule, surrogate), network_and_train
    )
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), outs)
    return outs, (pullback, shapes)


@_readout_outputs.def_bwd
def _readout_outputs_bwd(residuals, cotangent, perturbed, network_and_train, dt, rule, surrogate):
    del perturbed, network_and_train, dt, rule, surrogate
    pullback, shapes = residuals
    # Outputs the caller does not use arrive as None: zeros for the pullback.
    cotangent = jax.tree.map(
        lambda c, s: jnp.zeros(s.shape, s.dtype) if c is None else c,
        cotangent,
        shapes,
        is_leaf=lambda c: c is None,
    )
    return pullback(cotangent)[0]


@eqx.filter_jit
def _simulate(network, train, dt, rule, surrogate, li_readout, record_voltages):
    train = jnp.swapaxes(train, 0, 1)  # time-major inside
    if li_readout:
        outs = _readout_outputs((network, train), dt, rule, surrogate)
    else:
        outs = _run(
            network.layers, _project(train, network.layers[0].weights), dt, rule, surrogate
        )
    trains = tuple(jnp.swapaxes(s, 0, 1) for s, _ in outs)
    voltages = tuple(jnp.swapaxes(v, 0, 1) if record_voltages else None for _, v in outs)
    return DiscreteResult(trains, voltages, dt)


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
