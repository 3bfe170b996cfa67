"""The bounded event loop: layers one after another, recurrence within a layer."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from .._validate import is_concrete
from ..network import Layer, Network, Spikes
from .eventprop import eventprop_layer, windowed_layer
from .order import time_order
from .spike_time import NewtonSolver, QuadraticSolver, SpikeTimeSolver
from .step import Arrivals, finish, initial_state, step
from .ttfs import ttfs_layer
from .windows import Windows, never_held, uniform_time_constants


class SimulationResult(eqx.Module):
    """Spikes of every layer with the status of the run.

    Attributes:
        layers: one `Spikes` per layer, ``[..., max_spikes]``, sorted by time (ties by
            index), padded with ``inf`` / ``-1``.
        counts: spikes emitted per layer, ``[..., n_layers]``. Where a budget overflowed it
            equals the budget: the simulation of that layer stopped there.
        overflow: ``[..., n_layers]``, True where a layer reached its spike budget and a
            further spike was due before ``t_max``.
    """

    layers: tuple[Spikes, ...]
    counts: Int[Array, "... layers"]
    overflow: Bool[Array, "... layers"]

    @property
    def output(self) -> Spikes:
        return self.layers[-1]

    def raise_if_overflow(self, max_spikes: Sequence[int]) -> None:
        """Raise RuntimeError naming the layer when a spike budget was exceeded."""
        if not is_concrete(self.overflow):
            return
        over = np.asarray(self.overflow).reshape(-1, len(self.layers)).any(axis=0)
        if over.any():
            k = int(np.argmax(over))
            raise RuntimeError(
                f"layer {k} emitted more than max_spikes={max_spikes[k]} spikes before t_max; "
                f"its simulation stopped there. Increase max_spikes (e.g. to {4 * max_spikes[k]})."
            )


def layer_arrivals(inputs: Spikes, delay: float, presorted: bool = False) -> Arrivals:
    """Sort one sample's presynaptic spikes by time (ties by source) and add the delay.
    `presorted`: the spikes come from a layer's record, already in that order."""
    if presorted:
        return Arrivals(inputs.times + delay, inputs.indices)
    order = time_order(inputs.times, inputs.indices)
    return Arrivals(inputs.times[order] + delay, inputs.indices[order])


METHODS = ("eventprop", "analytic")


def simulate_layer(
    layer: Layer,
    inputs: Spikes,
    t_max,
    max_spikes: int,
    solver,
    method: str,
    fast_ttfs: bool,
    presorted: bool = False,
):
    """Run one layer of one sample to ``t_max`` (or until its spike budget overflows).

    ``method`` picks how gradients flow: ``"eventprop"`` (custom VJP, adjoint over the
    recorded events) or ``"analytic"`` (reverse-mode through a fixed-length scan of events,
    each spike time carrying its implicit-function derivative). Values are identical.
    Feed-forward single-spike layers take the parallel TTFS path when ``fast_ttfs``
    (exact), with EventProp's backward pass in closed form (``"eventprop"``) or autodiff
    through the parallel forward pass (``"analytic"``).

    Returns ``(Spikes [max_spikes], count, overflow)``.
    """
    arrivals = layer_arrivals(inputs, layer.delay, presorted)
    if fast_ttfs and layer.single_spike and layer.recurrent_weights is None:
        return ttfs_layer(layer, arrivals, t_max, max_spikes, solver, method == "eventprop")
    if method == "eventprop":
        final = eventprop_layer(layer, arrivals.times, arrivals.sources, t_max, max_spikes, solver)
    else:
        # Every input arrival, spike and delayed recurrent arrival is one step; one more
        # sees the overflow, if any.
        delayed = layer.recurrent_weights is not None and layer.delay > 0
        n_steps = arrivals.times.shape[0] + max_spikes * (2 if delayed else 1) + 1
        state = initial_state(layer, max_spikes, arrivals.times.dtype)
        state, _ = jax.lax.scan(
            lambda s, _: (step(layer, arrivals, s, t_max, solver), None), state, length=n_steps
        )
        final = finish(layer, state, t_max)
    return Spikes(final.out_times, final.out_indices), final.count, final.overflow


def _simulate_sample(network: Network, inputs: Spikes, t_max, budgets, solver, method, fast):
    records, counts, overflow = [], [], []
    for k, (layer, budget) in enumerate(zip(network.layers, budgets)):
        # A layer's record is sorted by time, ties by index: the next layer needs no sort.
        inputs, count, over = simulate_layer(
            layer, inputs, t_max, budget, solver, method, fast, presorted=k > 0
        )
        records.append(inputs)
        counts.append(count)
        overflow.append(over)
    return SimulationResult(tuple(records), jnp.stack(counts), jnp.stack(overflow))


def _simulate_windows(network: Network, inputs: Spikes, t_max, budgets, solver, fast, windows):
    """A batch ``[batch, k]`` layer by layer, each multi-spike or recurrent layer window by
    window for the whole batch at once (`windowed_layer`); feed-forward single-spike layers
    on the parallel TTFS path per sample."""
    records, counts, overflow = [], [], []
    for k, (layer, budget) in enumerate(zip(network.layers, budgets)):
        if fast and layer.single_spike and layer.recurrent_weights is None:
            inputs, count, over = jax.vmap(
                lambda x, layer=layer, budget=budget, k=k: simulate_layer(
                    layer, x, t_max, budget, solver, "eventprop", True, presorted=k > 0
                )
            )(inputs)
        else:
            arrivals = jax.vmap(lambda x, layer=layer, k=k: layer_arrivals(x, layer.delay, k > 0))(
                inputs
            )
            final = windowed_layer(
                layer, arrivals.times, arrivals.sources, t_max, budget, solver, windows[k]
            )
            inputs = Spikes(final.out_times, final.out_indices)
            count, over = final.count, final.overflow
        records.append(inputs)
        counts.append(count)
        overflow.append(over)
    return SimulationResult(tuple(records), jnp.stack(counts, -1), jnp.stack(overflow, -1))


@eqx.filter_jit
def _simulate_batch(network: Network, inputs: Spikes, t_max, budgets, solver, method, fast,
                    windows):  # fmt: skip
    if windows is not None:
        single = inputs.times.ndim == 1
        batch = Spikes(inputs.times[None], inputs.indices[None]) if single else inputs
        res = _simulate_windows(network, batch, t_max, budgets, solver, fast, windows)
        return jax.tree.map(lambda x: x[0], res) if single else res

    def one(x):
        return _simulate_sample(network, x, t_max, budgets, solver, method, fast)

    return jax.vmap(one)(inputs) if inputs.times.ndim == 2 else one(inputs)


def _budgets(max_spikes, n_layers: int) -> tuple[int, ...]:
    if isinstance(max_spikes, (int, np.integer)):
        max_spikes = (int(max_spikes),) * n_layers
    max_spikes = tuple(max_spikes)
    if len(max_spikes) != n_layers or not all(
        isinstance(m, (int, np.integer)) and m >= 1 for m in max_spikes
    ):
        raise ValueError(
            f"max_spikes must be a positive int or one positive int per layer ({n_layers}), "
            f"got {max_spikes!r}."
        )
    return tuple(int(m) for m in max_spikes)


def default_solver(network: Network) -> SpikeTimeSolver:
    """`QuadraticSolver` when every neuron has ``tau_mem == 2 tau_syn`` exactly (it is
    several times faster and gives the same spikes), else `NewtonSolver`. Traced parameters
    (inside a user's jit) always get `NewtonSolver`."""
    for layer in network.layers:
        tm, ts = layer.params.tau_mem, layer.params.tau_syn
        if not (is_concrete(tm) and is_concrete(ts)) or not np.all(
            np.asarray(tm) == 2 * np.asarray(ts)
        ):
            return NewtonSolver()
    return QuadraticSolver()


def simulate(
    network: Network,
    inputs: Spikes,
    *,
    t_max: float,
    max_spikes: int | Sequence[int] = 64,
    solver: SpikeTimeSolver | None = None,
    method: str = "eventprop",
    fast_ttfs: bool = True,
    check_overflow: bool = True,
    windows: Windows | None = None,
) -> SimulationResult:
    """Simulate a network exactly, from event to event.

    Args:
        network: the layers to run.
        inputs: input spikes, ``times`` (s) and channel ``indices`` of shape ``[k]`` for one
            sample or ``[batch, k]`` for a batch (vmapped). Unsorted is fine; pad with
            ``time = inf``. Times must be >= 0 and not NaN.
        t_max: simulation horizon (s). Spikes after it are not emitted.
        max_spikes: spike budget per layer and sample (int, or one per layer).
        solver: the threshold-crossing solver: `NewtonSolver` (any ratio) or
            `QuadraticSolver` (``tau_mem = 2 tau_syn``). Default: `default_solver`.
        method: how gradients are computed: ``"eventprop"`` (adjoint over the recorded
            events; memory O(events)) or ``"analytic"`` (autodiff through the event sequence
            with exact spike-time derivatives). Both are exact and agree to rounding.
        fast_ttfs: run feed-forward single-spike layers (``Layer.single_spike``) on the
            parallel TTFS path (same spikes, exact gradients, much faster).
        check_overflow: raise RuntimeError when a budget was exceeded (only outside jit;
            inside, inspect ``result.overflow``).
        windows: advance multi-spike and recurrent layers window by window, every neuron in
            parallel (`Windows`: the engine's budgets), instead of one event at a time: the
            same spikes, much faster on many inputs; EventProp only.

    Returns:
        A `SimulationResult` with leading batch dimension where the inputs had one.
    """
    budgets = _budgets(max_spikes, len(network.layers))
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if windows is not None and method != "eventprop":
        raise ValueError(
            "windows (the windowed engine) is differentiated by EventProp only: pass "
            "method='eventprop', or windows=None for the analytic method."
        )
    if inputs.times.ndim not in (1, 2):
        raise ValueError(
            f"inputs.times must have shape [k] or [batch, k], got {tuple(inputs.times.shape)}."
        )
    inputs.validate(network.input_size)
    if is_concrete(t_max) and not (np.isfinite(t_max) and t_max > 0):
        raise ValueError(f"t_max must be a finite positive number of seconds, got {t_max!r}.")
    solver = default_solver(network) if solver is None else solver
    for k, layer in enumerate(network.layers):
        solver.check(layer.params.tau_mem, layer.params.tau_syn, f"layers[{k}]")

    dtype = network.layers[0].weights.dtype
    inputs = Spikes(inputs.times.astype(dtype), inputs.indices)
    t_max = jnp.asarray(t_max, dtype)
    if windows is not None:  # per layer: shared time constants where they are uniform
        for k, layer in enumerate(network.layers):
            if windows.shared_time_constants and is_concrete(layer.params.tau_mem):
                if not uniform_time_constants(layer):
                    raise ValueError(
                        f"layers[{k}]: Windows(shared_time_constants=True) but its neurons "
                        "have different tau_mem or tau_syn; set shared_time_constants=False."
                    )
        windows = tuple(
            dataclasses.replace(
                windows,
                shared_time_constants=windows.shared_time_constants
                or uniform_time_constants(layer),
                refractory=windows.refractory and not never_held(layer),
            )
            for layer in network.layers
        )
    result = _simulate_batch(network, inputs, t_max, budgets, solver, method, fast_ttfs, windows)
    if check_overflow:
        result.raise_if_overflow(budgets)
    return result
