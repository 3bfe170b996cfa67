"""The experiment interface a chip driver implements (the mock chip is one).

An experiment: `Backend.configure` a `ChipConfig` (per-neuron parameter settings, the
placement of each layer on chip neurons, integer weights), then `Backend.run` input spikes
for a duration and read back a `Recording` (spike times per layer, optionally membrane
traces). Everything here is in chip units (us, mV, integer settings and weights); the
conversion to model units lives in `units.ChipUnits`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from .units import WEIGHT_MAX

#: Per-neuron analog parameters a calibration sets, each through one integer setting.
PARAMETERS = ("v_leak", "v_reset", "v_th", "tau_mem", "tau_syn", "t_refrac", "synapse_gain")
SETTING_MAX = 1023  # 10-bit parameter settings (DAC-like)


class ChipConfigError(ValueError):
    """A configuration the chip cannot take; the message names the field and the fix."""


@dataclass(frozen=True)
class ChipConfig:
    """What to load onto a chip.

    Attributes:
        settings: ``{parameter: int array [n_neurons]}`` in ``[0, SETTING_MAX]`` for every
            name in `PARAMETERS` (usually from a calibration file).
        placement: per layer, the chip neuron indices of its neurons (distinct, in range).
        weights: per layer, integers ``[n_pre, n_post]`` in ``[-63, 63]``; layer 0's
            presynaptic side is the synapse rows of the external inputs, layer k's is
            layer k-1.
        n_inputs: number of external input channels.
        routing: ``[rows]`` the input channel that drives each synapse row of layer 0 (the
            event router sends one input spike to several rows, so one input can reach a
            neuron through several 6-bit weights); default: row i = channel i.
    """

    settings: dict
    placement: tuple = ()
    weights: tuple = ()
    n_inputs: int = field(default=0)
    routing: np.ndarray | None = None

    def rows(self) -> np.ndarray:
        """The routing table (row -> input channel)."""
        return np.arange(self.n_inputs) if self.routing is None else np.asarray(self.routing)

    def validate(self, n_neurons: int) -> None:
        for name in PARAMETERS:
            if name not in self.settings:
                raise ChipConfigError(
                    f"settings[{name!r}] is missing: give one integer per chip neuron "
                    "(load a calibration file or use the chip's defaults)."
                )
            s = np.asarray(self.settings[name])
            if s.shape != (n_neurons,) or not np.issubdtype(s.dtype, np.integer):
                raise ChipConfigError(
                    f"settings[{name!r}] must be {n_neurons} integers, got dtype {s.dtype} "
                    f"shape {s.shape}."
                )
            if s.min() < 0 or s.max() > SETTING_MAX:
                raise ChipConfigError(
                    f"settings[{name!r}] must lie in [0, {SETTING_MAX}], got range "
                    f"[{s.min()}, {s.max()}]."
                )
        unknown = set(self.settings) - set(PARAMETERS)
        if unknown:
            raise ChipConfigError(
                f"settings has unknown parameters {sorted(unknown)}; known: {PARAMETERS}."
            )
        if len(self.placement) != len(self.weights):
            raise ChipConfigError(
                f"placement has {len(self.placement)} layers but weights has "
                f"{len(self.weights)}: give one of each per layer."
            )
        rows = self.rows()
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ChipConfigError("routing must be a 1-D array of input channel indices.")
        bad = rows[(rows < 0) | (rows >= self.n_inputs)]
        if bad.size:
            raise ChipConfigError(
                f"routing names input channel {int(bad[0])} but the chip is given "
                f"n_inputs={self.n_inputs} (channels 0..{self.n_inputs - 1})."
            )
        used = []
        n_pre = rows.size
        for k, (neurons, w) in enumerate(zip(self.placement, self.weights)):
            neurons = np.asarray(neurons)
            if neurons.ndim != 1 or not np.issubdtype(neurons.dtype, np.integer):
                raise ChipConfigError(f"placement[{k}] must be a 1-D array of neuron indices.")
            bad = neurons[(neurons < 0) | (neurons >= n_neurons)]
            if bad.size:
                raise ChipConfigError(
                    f"placement[{k}] names unknown neuron {int(bad[0])}: this chip has "
                    f"neurons 0..{n_neurons - 1}."
                )
            used.extend(neurons.tolist())
            w = np.asarray(w)
            if w.shape != (n_pre, neurons.size):
                raise ChipConfigError(
                    f"weights[{k}] must have shape [{n_pre}, {neurons.size}] (presynaptic, "
                    f"neurons of placement[{k}]), got {w.shape}."
                )
            if not np.issubdtype(w.dtype, np.integer):
                raise ChipConfigError(
                    f"weights[{k}] must be integers (use ChipUnits.weights_to_chip), got "
                    f"{w.dtype}."
                )
            if np.abs(w).max(initial=0) > WEIGHT_MAX:
                raise ChipConfigError(
                    f"weights[{k}] must lie in [-{WEIGHT_MAX}, {WEIGHT_MAX}] (6 bits and a "
                    f"sign), got {int(np.abs(w).max())}; lower ChipUnits.weight_scale."
                )
            n_pre = neurons.size
        if len(set(used)) != len(used):
            raise ChipConfigError("placement uses a chip neuron twice: every neuron once.")


@dataclass(frozen=True)
class Recording:
    """What a run returns, chip units.

    Attributes:
        times: per layer, spike times (us) ``[batch, capacity]``, inf padding, sorted.
        indices: per layer, the neuron (position in the layer's placement) of each spike,
            -1 padding.
        overflow: ``[batch]`` bool, True where the spike buffer was full and spikes lost.
        trace_times: ``[samples]`` (us) where traces were asked for, else None.
        traces: ``[batch, neurons, samples]`` membrane potential (mV) of the recorded
            neurons, else None.
    """

    times: tuple
    indices: tuple
    overflow: np.ndarray
    trace_times: np.ndarray | None = None
    traces: np.ndarray | None = None


class Backend(abc.ABC):
    """A chip (or a model of one) that runs experiments."""

    n_neurons: int
    max_input_channels: int

    @abc.abstractmethod
    def default_settings(self) -> dict:
        """Uncalibrated settings: the nominal setting of each parameter's typical value."""

    @abc.abstractmethod
    def configure(self, config: ChipConfig) -> None:
        """Load a configuration; raises `ChipConfigError` for one the chip cannot take."""

    @abc.abstractmethod
    def run(
        self,
        input_times,
        input_channels,
        duration: float,
        *,
        record_traces=None,
        trace_period: float = 0.05,
    ) -> Recording:
        """Send input spikes and record.

        Args:
            input_times: ``[batch, k]`` spike times (us), inf padding.
            input_channels: ``[batch, k]`` input channel of each spike, -1 padding.
            duration: run length (us).
            record_traces: chip neuron indices whose membrane is sampled, or None.
            trace_period: sampling period of the traces (us).
        """
