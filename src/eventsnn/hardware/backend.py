"""The experiment interface a chip driver implements (the mock chip is one).

An experiment: `Backend.configure` a `ChipConfig` (per-neuron parameter settings, the
placement of each layer on chip neurons, integer weights), then `Backend.run` input spikes
for a duration and read back a `Recording` (spike times per layer, optionally membrane
traces of at most `Limits.adc_channels` neurons). Everything here is in chip units (us,
mV, integer settings and weights); the conversion to model units lives in
`units.ChipUnits`. A backend states what it can take in `Backend.limits`; `ChipConfig.validate`
and `Backend.check_run` refuse anything beyond them with an error naming the limit.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

#: Per-neuron analog parameters a calibration sets, each through one integer setting.
PARAMETERS = ("v_leak", "v_reset", "v_th", "tau_mem", "tau_syn", "t_refrac", "synapse_gain")
SETTING_MAX = 1023  # 10-bit parameter settings (DAC-like)
#: BrainScaleS-2's usual operating point (mV, us, mV of I per weight step): what default
#: settings aim at and calibration targets by default.
OPERATING_POINT = {
    "v_leak": 80.0,
    "v_reset": 60.0,
    "v_th": 120.0,
    "tau_mem": 12.0,
    "tau_syn": 6.0,
    "t_refrac": 30.0,
    "synapse_gain": 4.0,
}


class ChipConfigError(ValueError):
    """A configuration or run the chip cannot take; the message names the limit and the fix."""


@dataclass(frozen=True)
class Limits:
    """What a chip can take. Defaults: BrainScaleS-2 (HICANN-X; Pehle et al. 2022,
    Front. Neurosci. 16:795876; Billaudelle et al. 2020, ISCAS).

    Attributes:
        neurons: neuron circuits (512: two hemispheres of 256).
        hemispheres: halves of the chip, each with its own synapse array; neuron ``i``
            lies in hemisphere ``i // (neurons / hemispheres)``.
        rows_per_hemisphere: synapse rows of each hemisphere's array (256). A row's synapse
            driver is excitatory or inhibitory, so a presynaptic source with signed weights
            takes two rows in every hemisphere its targets occupy.
        input_channels: external input channels (event addresses) a run can send.
        adc_channels: membranes the ADC records in one run (BrainScaleS-2's MADC: 2).
        min_trace_period: shortest membrane sampling period (us; the MADC samples at about
            30 MHz).
        weight_bits: magnitude bits of a synapse weight (6: 0..63, the sign from the row).
        setting_max: largest parameter setting (10-bit DACs: 1023).
        spike_buffer: spikes recorded per run and sample (more are lost: overflow).
    """

    neurons: int = 512
    hemispheres: int = 2
    rows_per_hemisphere: int = 256
    input_channels: int = 256
    adc_channels: int = 2
    min_trace_period: float = 1 / 30
    weight_bits: int = 6
    setting_max: int = SETTING_MAX
    spike_buffer: int = 8192

    def __post_init__(self):
        for name in (
            "neurons",
            "hemispheres",
            "rows_per_hemisphere",
            "input_channels",
            "adc_channels",
            "weight_bits",
            "setting_max",
            "spike_buffer",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and value >= 1):
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}.")
        if self.neurons % self.hemispheres:
            raise ValueError(
                f"Limits.neurons ({self.neurons}) must split evenly into "
                f"{self.hemispheres} hemispheres."
            )
        if not (np.isfinite(self.min_trace_period) and self.min_trace_period > 0):
            raise ValueError(
                f"Limits.min_trace_period must be a positive number of us, got "
                f"{self.min_trace_period!r}."
            )

    @property
    def weight_max(self) -> int:
        """Largest weight magnitude (63 for 6 bits)."""
        return 2**self.weight_bits - 1

    def hemisphere(self, neurons) -> np.ndarray:
        """The hemisphere of each chip neuron index."""
        return np.asarray(neurons) // (self.neurons // self.hemispheres)


@dataclass(frozen=True)
class ChipIdentity:
    """Which chip: the backend's registered name and the chip's own id (serial, seed)."""

    backend: str
    chip: str

    def __str__(self) -> str:
        return f"{self.backend}:{self.chip}"


@dataclass(frozen=True)
class ChipConfig:
    """What to load onto a chip.

    Attributes:
        settings: ``{parameter: int array [neurons]}`` in ``[0, setting_max]`` for every
            name in `PARAMETERS` (usually from a calibration file).
        placement: per layer, the chip neuron indices of its neurons (distinct, in range).
        weights: per layer, signed integers ``[n_pre, n_post]`` within the weight bits;
            layer 0's presynaptic side is the routed input rows (see `routing`), layer k's
            is layer k-1. The chip routes every presynaptic source to an excitatory and an
            inhibitory synapse row (`synapse_rows` counts them).
        n_inputs: number of external input channels.
        routing: ``[rows]`` the input channel that drives each presynaptic row of layer 0
            (the event router sends one input spike to several rows, so one input can reach
            a neuron through several 6-bit weights); default: row i = channel i.
    """

    settings: dict
    placement: tuple = ()
    weights: tuple = ()
    n_inputs: int = field(default=0)
    routing: np.ndarray | None = None

    def rows(self) -> np.ndarray:
        """The routing table (row -> input channel)."""
        return np.arange(self.n_inputs) if self.routing is None else np.asarray(self.routing)

    def validate(self, limits: Limits) -> None:
        """Raise `ChipConfigError` for anything `limits` rule out."""
        _check_settings(self.settings, limits)
        if len(self.placement) != len(self.weights):
            raise ChipConfigError(
                f"placement has {len(self.placement)} layers but weights has "
                f"{len(self.weights)}: give one of each per layer."
            )
        if not 0 <= self.n_inputs <= limits.input_channels:
            raise ChipConfigError(
                f"n_inputs is {self.n_inputs} but the chip takes 0..{limits.input_channels} "
                "input channels (Limits.input_channels)."
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
            bad = neurons[(neurons < 0) | (neurons >= limits.neurons)]
            if bad.size:
                raise ChipConfigError(
                    f"placement[{k}] names unknown neuron {int(bad[0])}: this chip has "
                    f"neurons 0..{limits.neurons - 1} (Limits.neurons = {limits.neurons})."
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
            if np.abs(w).max(initial=0) > limits.weight_max:
                raise ChipConfigError(
                    f"weights[{k}] must lie in [-{limits.weight_max}, {limits.weight_max}] "
                    f"({limits.weight_bits} bits and a sign), got {int(np.abs(w).max())}; "
                    "lower ChipUnits.weight_scale."
                )
            n_pre = neurons.size
        if len(set(used)) != len(used):
            raise ChipConfigError("placement uses a chip neuron twice: every neuron once.")
        usage = synapse_rows(self, limits)
        h = int(np.argmax(usage))
        if usage[h] > limits.rows_per_hemisphere:
            raise ChipConfigError(
                f"the configuration needs {int(usage[h])} synapse rows in hemisphere {h} but "
                f"a hemisphere has {limits.rows_per_hemisphere} (Limits.rows_per_hemisphere; "
                "every presynaptic source takes an excitatory and an inhibitory row in each "
                "hemisphere its targets occupy): use fewer sources per layer (input repeat, "
                "layer width) or place layers in different hemispheres."
            )


def synapse_rows(config: ChipConfig, limits: Limits) -> np.ndarray:
    """``[hemispheres]`` synapse rows the configuration occupies: two (excitatory and
    inhibitory) per presynaptic source of a layer in every hemisphere that layer's neurons
    occupy. Deployment routes the positive part of a signed weight matrix through the
    excitatory rows and the negative part through the inhibitory ones."""
    usage = np.zeros(limits.hemispheres, dtype=np.int64)
    n_pre = config.rows().size
    for neurons in config.placement:
        neurons = np.asarray(neurons)
        for h in np.unique(limits.hemisphere(neurons)):
            usage[h] += 2 * n_pre
        n_pre = neurons.size
    return usage


def _check_settings(settings: dict, limits: Limits) -> None:
    for name in PARAMETERS:
        if name not in settings:
            raise ChipConfigError(
                f"settings[{name!r}] is missing: give one integer per chip neuron "
                "(load a calibration file or use the chip's default_settings())."
            )
        s = np.asarray(settings[name])
        if s.shape != (limits.neurons,) or not np.issubdtype(s.dtype, np.integer):
            raise ChipConfigError(
                f"settings[{name!r}] must be {limits.neurons} integers, got dtype {s.dtype} "
                f"shape {s.shape}."
            )
        if s.min() < 0 or s.max() > limits.setting_max:
            raise ChipConfigError(
                f"settings[{name!r}] must lie in [0, {limits.setting_max}], got range "
                f"[{s.min()}, {s.max()}]."
            )
    unknown = set(settings) - set(PARAMETERS)
    if unknown:
        raise ChipConfigError(
            f"settings has unknown parameters {sorted(unknown)}; known: {PARAMETERS}."
        )


@dataclass(frozen=True)
class Recording:
    """What a run returns, chip units.

    Attributes:
        times: per layer, spike times (us) ``[batch, capacity]``, inf padding, sorted.
        indices: per layer, the neuron (position in the layer's placement) of each spike,
            -1 padding.
        overflow: ``[batch]`` bool, True where the spike buffer was full and spikes lost.
        trace_times: ``[samples]`` (us) where traces were asked for, else None.
        traces: ``[batch, k, samples]`` membrane potential (mV) of the recorded neurons
            (``record_traces``, in its order), else None.
    """

    times: tuple
    indices: tuple
    overflow: np.ndarray
    trace_times: np.ndarray | None = None
    traces: np.ndarray | None = None


@dataclass(frozen=True)
class RunRequest:
    """The arguments of `Backend.run`, checked (see `Backend.check_run`).

    Attributes:
        times: ``[batch, k]`` input spike times (us), inf padding.
        channels: ``[batch, k]`` input channel of each spike, -1 at padding.
        duration: run length (us).
        traces: ``[batch, j]`` chip neurons whose membranes are recorded in each sample
            (``j <= adc_channels``), or None.
        trace_period: sampling period (us).
    """

    times: np.ndarray
    channels: np.ndarray
    duration: float
    traces: np.ndarray | None
    trace_period: float


class Backend(abc.ABC):
    """A chip (or a model of one) that runs experiments, in chip units.

    A backend package registers a factory under the entry-point group
    ``eventsnn.backends`` (see `registry`); calibration and training in the loop use
    nothing but the methods below.
    """

    @property
    @abc.abstractmethod
    def limits(self) -> Limits:
        """What this chip can take."""

    @abc.abstractmethod
    def identity(self) -> ChipIdentity:
        """Which chip this is (calibration files record it and refuse other chips)."""

    @abc.abstractmethod
    def nominal_setting(self, parameter: str, value) -> np.ndarray:
        """The integer setting(s) whose nominal value (the design's mapping, before any
        calibration) is closest to `value` (chip units), clipped to the setting range.
        Calibration starts from it and uses it for experiment conditions."""

    @abc.abstractmethod
    def configure(self, config: ChipConfig) -> None:
        """Load a configuration; raises `ChipConfigError` for one the chip cannot take
        (`ChipConfig.validate` checks the `limits`)."""

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
        """Send input spikes and record; every sample of the batch is one run from rest.

        Args:
            input_times: ``[batch, k]`` spike times (us), inf padding.
            input_channels: ``[batch, k]`` input channel of each spike, -1 padding.
            duration: run length (us).
            record_traces: chip neuron indices whose membranes are sampled: ``[j]`` (the
                same in every sample) or ``[batch, j]``, ``j <= limits.adc_channels``; or
                None. Neurons must be placed by the configuration.
            trace_period: sampling period of the traces (us), ``>= limits.min_trace_period``.
        """

    # -- provided -------------------------------------------------------------------------
    @property
    def n_neurons(self) -> int:
        return self.limits.neurons

    def default_settings(self) -> dict:
        """Uncalibrated settings: the nominal setting of the operating point, every neuron."""
        n = self.limits.neurons
        return {
            p: np.broadcast_to(
                np.asarray(self.nominal_setting(p, OPERATING_POINT[p]), np.int32), (n,)
            ).copy()
            for p in PARAMETERS
        }

    def check_run(
        self,
        config: ChipConfig | None,
        input_times,
        input_channels,
        duration,
        record_traces=None,
        trace_period: float = 0.05,
    ) -> RunRequest:
        """Check `run`'s arguments against the loaded `config` and the `limits`; raise
        `ValueError` (bad values) or `ChipConfigError` (beyond the chip) naming the
        argument. Returns the arguments as arrays."""
        if config is None:
            raise ChipConfigError("run before configure: load a ChipConfig first.")
        times = np.atleast_2d(np.asarray(input_times, dtype=float))
        channels = np.atleast_2d(np.asarray(input_channels))
        if times.shape != channels.shape or times.ndim != 2:
            raise ValueError(
                f"input_times {times.shape} and input_channels {channels.shape} must both "
                "be [batch, k]."
            )
        if np.isnan(times).any() or (times < 0).any():
            raise ValueError("input_times must be >= 0 and not NaN (pad with inf).")
        real = np.isfinite(times)
        if (real & ((channels < 0) | (channels >= config.n_inputs))).any():
            raise ValueError(
                f"input_channels must lie in [0, {config.n_inputs}) for real spikes "
                "(n_inputs of the configuration)."
            )
        if not (np.isfinite(duration) and duration > 0):
            raise ValueError(f"duration must be a positive number of us, got {duration!r}.")
        traces = None
        if record_traces is not None:
            traces = np.asarray(record_traces)
            if traces.ndim == 1:
                traces = np.broadcast_to(traces, (times.shape[0], traces.size))
            if traces.ndim != 2 or traces.shape[0] != times.shape[0]:
                raise ValueError(
                    f"record_traces must be [j] or [batch={times.shape[0]}, j] neuron "
                    f"indices, got shape {np.shape(record_traces)}."
                )
            if not np.issubdtype(traces.dtype, np.integer):
                raise ValueError("record_traces must be integer chip neuron indices.")
            if traces.shape[1] > self.limits.adc_channels:
                raise ChipConfigError(
                    f"record_traces asks for {traces.shape[1]} membranes per run but the ADC "
                    f"records {self.limits.adc_channels} (Limits.adc_channels): trace the "
                    "others in further runs (or further samples of the batch)."
                )
            placed = np.concatenate([np.asarray(p) for p in config.placement] or [[]])
            missing = np.setdiff1d(traces, placed)
            if missing.size:
                raise ChipConfigError(
                    f"record_traces names neuron {int(missing[0])}, which no layer of the "
                    "configuration places."
                )
            if not trace_period >= self.limits.min_trace_period:
                raise ChipConfigError(
                    f"trace_period {trace_period!r} us is below the ADC's minimum sampling "
                    f"period {self.limits.min_trace_period:.4g} us (Limits.min_trace_period)."
                )
        return RunRequest(
            times, np.where(real, channels, -1), float(duration), traces, float(trace_period)
        )


class Reproducible(abc.ABC):
    """A backend whose recordings are a function of its configuration, the inputs and a
    run counter: setting `run_count` back replays the same noise, so the same runs give
    the same recordings exactly (a mock; a physical chip's noise is physical). Training in
    the loop saves and restores the counter, so a resumed run equals an uninterrupted one;
    the conformance suite checks the promise."""

    @property
    @abc.abstractmethod
    def run_count(self) -> int:
        """Runs so far (calls of `run`): the trial index of the next run's noise."""

    @run_count.setter
    @abc.abstractmethod
    def run_count(self, value: int) -> None: ...
