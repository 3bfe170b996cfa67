"""Network description shared by every engine: layers of CuBa-LIF neurons and spike records."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._validate import check_shape, check_values, is_concrete
from .neuron import LIFParams


class Spikes(eqx.Module):
    """A spike record: parallel arrays padded with ``time = inf``, ``index = -1``.

    Attributes:
        times: spike times (s), shape ``[..., k]``.
        indices: neuron (or input channel) of each spike, shape ``[..., k]``, int32.
    """

    times: Float[Array, "... k"]
    indices: Int[Array, "... k"]

    def __init__(self, times, indices, dtype=None):
        times = jnp.asarray(times, dtype=dtype)
        if not jnp.issubdtype(times.dtype, jnp.floating):  # lists of ints, int arrays
            times = times.astype(float)
        self.times = times
        self.indices = jnp.asarray(indices, dtype=jnp.int32)
        if self.times.shape != self.indices.shape:
            raise ValueError(
                f"spike times and indices must have the same shape, got "
                f"{tuple(self.times.shape)} and {tuple(self.indices.shape)}."
            )

    @property
    def capacity(self) -> int:
        return self.times.shape[-1]

    def first_times(self, n: int) -> Float[Array, "... n"]:
        """Earliest spike time of each of ``n`` neurons, +inf for silent ones.

        Differentiable: the gradient flows to the earliest spike of each neuron.
        """

        def one(times, indices):  # a scatter-min: O(k), not the O(n k) of a comparison
            idx = jnp.where(indices >= 0, indices, n)  # padding: out of range, dropped
            return jnp.full((n,), jnp.inf, times.dtype).at[idx].min(times, mode="drop")

        for _ in range(self.times.ndim - 1):
            one = jax.vmap(one)
        return one(self.times, self.indices)

    def validate(self, n_channels: int, name: str = "inputs") -> None:
        """Check concrete values: finite or +inf (padding), >= 0, indices in range."""
        t, idx = self.times, self.indices
        check_values(f"{name}.times", t, ~jnp.isnan(t), "must not contain NaN")
        check_values(f"{name}.times", t, t >= 0, "must be >= 0 seconds")
        real = jnp.isfinite(t)
        ok = ~real | ((idx >= 0) & (idx < n_channels))
        check_values(f"{name}.indices", idx, ok, f"must be in [0, {n_channels - 1}]")


class Layer(eqx.Module):
    """A population of CuBa-LIF neurons and the synapses into it.

    Attributes:
        weights: ``[n_in, n]``, row = presynaptic source (jump of ``I`` per spike).
        params: the neurons' `LIFParams` (each ``[n]``).
        recurrent_weights: ``[n, n]`` or None, row = source within the layer.
        delay: synaptic delay (s) of every connection into the layer, >= 0 (static).
        single_spike: each neuron spikes at most once (time-to-first-spike coding: the
            refractory period after a spike lasts forever; ``t_refrac`` is unused). Static.
            Feed-forward single-spike layers run on the parallel TTFS path.
    """

    weights: Float[Array, "n_in n"]
    params: LIFParams
    recurrent_weights: Float[Array, "n n"] | None = None
    delay: float = eqx.field(static=True, default=0.0)
    single_spike: bool = eqx.field(static=True, default=False)

    @property
    def size(self) -> int:
        return self.weights.shape[1]

    @property
    def input_size(self) -> int:
        return self.weights.shape[0]

    def validate(self, name: str = "layer") -> None:
        if self.weights.ndim != 2:
            raise ValueError(
                f"{name}.weights must be 2-D [inputs, size], got shape {self.weights.shape}."
            )
        check_shape(
            f"{name}.params.tau_mem", self.params.tau_mem, (self.size,), "One value per neuron."
        )
        check_values(f"{name}.weights", self.weights, jnp.isfinite(self.weights), "must be finite")
        if self.recurrent_weights is not None:
            check_shape(
                f"{name}.recurrent_weights",
                self.recurrent_weights,
                (self.size, self.size),
                "Rows are sources, columns targets within the layer.",
            )
            check_values(
                f"{name}.recurrent_weights",
                self.recurrent_weights,
                jnp.isfinite(self.recurrent_weights),
                "must be finite",
            )
        if not (np.isfinite(self.delay) and self.delay >= 0):
            raise ValueError(
                f"{name}.delay must be a finite number of seconds >= 0, got {self.delay!r}."
            )


class Network(eqx.Module):
    """Feed-forward stack of layers; each layer may also be recurrent.

    Layer ``k`` receives the spikes of layer ``k-1`` (layer 0: the input channels).
    """

    layers: tuple[Layer, ...]

    def __init__(self, layers):
        self.layers = tuple(layers)
        if not self.layers:
            raise ValueError("a Network needs at least one layer.")
        for k, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{k}] must be a Layer, got {type(layer).__name__}.")
            layer.validate(f"layers[{k}]")
            if k and layer.input_size != self.layers[k - 1].size:
                raise ValueError(
                    f"layers[{k}].weights must have {self.layers[k - 1].size} rows (the size of "
                    f"layers[{k - 1}]), got shape {tuple(layer.weights.shape)}."
                )

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(layer.size for layer in self.layers)


def dense_layer(
    weights, *, recurrent_weights=None, delay: float = 0.0, single_spike: bool = False, **params
) -> Layer:
    """Build a `Layer` from a weight matrix ``[n_in, n]`` and `LIFParams` keywords. The
    layer takes the dtype of floating `weights` unless ``dtype`` is given."""
    dtype = params.pop("dtype", None)
    if dtype is None:
        given = getattr(weights, "dtype", None)
        dtype = given if given is not None and jnp.issubdtype(given, jnp.floating) else float
    weights = jnp.asarray(weights, dtype=dtype)
    if weights.ndim != 2:
        raise ValueError(f"weights must be 2-D [inputs, size], got shape {tuple(weights.shape)}.")
    lif = LIFParams(weights.shape[1], dtype=weights.dtype, **params)
    rec = None if recurrent_weights is None else jnp.asarray(recurrent_weights, weights.dtype)
    if not is_concrete(delay):
        raise TypeError("delay is a static setting: pass a Python float, not a traced array.")
    return Layer(weights, lif, rec, float(delay), bool(single_spike))
