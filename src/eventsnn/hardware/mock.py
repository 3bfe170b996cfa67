"""A software BrainScaleS-2-style chip: the event core with a chip's limits and flaws.

A chip is a seed. From it come the fixed pattern of every neuron's parameters (gain and
offset of each setting's mapping to the physical value), of every synapse's gain, and the
chip's readout offset; from it and a run counter come the trial-to-trial noise. The
dynamics are the event core's, run layer by layer with the physical parameters in chip
units (us, mV). What the chip adds, with the source of each number (Pehle et al. 2022,
Front. Neurosci. 16:795876, "The BrainScaleS-2 accelerated neuromorphic system with hybrid
plasticity"; Billaudelle et al. 2020, "Versatile emulation of spiking neural networks on
an accelerated neuromorphic substrate", ISCAS; Weis et al. 2020, "Inference with
artificial neural networks on analog neuromorphic hardware", for synapse mismatch):

* limits (`Limits`): 512 neurons in two hemispheres, 256 synapse rows per hemisphere with
  the sign set per row by its synapse driver, 6-bit weights, 10-bit parameter settings, a
  membrane ADC (the MADC) recording 2 neurons per run at ~30 MHz, a bounded spike buffer;
* per-neuron fixed-pattern mismatch (10-20% before calibration);
* per-synapse gain mismatch (~10%, a fixed pattern of the physical synapse: it moves with
  the row a source is routed to) and saturation of the synaptic input (a large event
  delivers less than its linear share: ``s tanh(jump / s)``);
* spike-time noise at emission (it reaches the next layer, not only the readout), a
  systematic readout offset and the 8 ns readout clock (coincident spikes), overflow of
  the spike buffer, a noisy quantised ADC.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np

from ..event.simulate import simulate
from ..event.spike_time import NewtonSolver
from ..network import Layer, Network, Spikes
from ..neuron import LIFParams, kernel
from .backend import (
    OPERATING_POINT,
    PARAMETERS,
    SETTING_MAX,
    Backend,
    ChipConfig,
    ChipIdentity,
    Limits,
    Recording,
    Reproducible,
)

#: How each parameter's setting maps to its nominal value: (kind, low, high); "linear" is
#: ``low + (high - low) s / SETTING_MAX``, "log" is ``low (high / low) ** (s / SETTING_MAX)``.
MAPPINGS = {
    "v_leak": ("linear", 0.0, 300.0),  # mV
    "v_reset": ("linear", 0.0, 300.0),
    "v_th": ("linear", 0.0, 300.0),
    "tau_mem": ("log", 1.0, 100.0),  # us
    "tau_syn": ("log", 1.0, 100.0),
    "t_refrac": ("linear", 0.0, 100.0),
    "synapse_gain": ("log", 0.05, 20.0),  # mV jump of I per weight step
}
VOLTAGES = ("v_leak", "v_reset", "v_th")
TYPICAL = OPERATING_POINT
SPIKES_PER_NEURON = 16  # per run: the budget of the event loop and of traces
SWING = TYPICAL["v_th"] - TYPICAL["v_leak"]  # mV: the scale of voltage mismatch


def nominal(name: str, setting):
    """The value a setting gives on a perfect chip."""
    kind, lo, hi = MAPPINGS[name]
    x = np.asarray(setting, dtype=float) / SETTING_MAX
    return lo + (hi - lo) * x if kind == "linear" else lo * (hi / lo) ** x


def nominal_setting(name: str, value) -> np.ndarray:
    """The setting whose nominal value is closest to `value` (what a user without a
    calibration would pick)."""
    if name not in MAPPINGS:
        raise ValueError(f"unknown parameter {name!r}; known: {PARAMETERS}.")
    kind, lo, hi = MAPPINGS[name]
    v = np.asarray(value, dtype=float)
    if kind == "log":
        x = np.log(np.maximum(v, 1e-300) / lo) / np.log(hi / lo)
    else:
        x = (v - lo) / (hi - lo)
    return np.clip(np.rint(x * SETTING_MAX), 0, SETTING_MAX).astype(np.int32)


_INTS = ("n_neurons", "hemispheres", "rows_per_hemisphere", "input_channels")
_INTS += ("adc_channels", "weight_bits", "buffer")


@dataclass(frozen=True)
class MockSpec:
    """The physics of a mock chip (chip units: us, mV). Defaults follow BrainScaleS-2;
    see the module docstring for sources. Checked on construction.

    Attributes:
        n_neurons, hemispheres, rows_per_hemisphere, input_channels, adc_channels,
            min_trace_period, weight_bits, buffer: the `Limits` (``buffer`` is the spike
            buffer per run and sample).
        mismatch: relative spread of every neuron parameter before calibration.
        synapse_mismatch: relative spread of the synapses' gains (fixed pattern).
        saturation: jump of ``I`` (mV) at which one event's synaptic input saturates:
            a synapse delivers ``saturation * tanh(jump / saturation)``; inf: linear.
        jitter: trial-to-trial spike-time noise (std, us), at emission.
        resolution: readout clock period (us; 125 MHz).
        offset: mean systematic readout delay (us); each chip draws its own.
        adc_noise: membrane readout noise (std, mV); adc_step: its resolution (mV).
    """

    n_neurons: int = 512
    hemispheres: int = 2
    rows_per_hemisphere: int = 256
    input_channels: int = 256
    adc_channels: int = 2
    min_trace_period: float = 1 / 30
    weight_bits: int = 6
    buffer: int = 8192
    mismatch: float = 0.15
    synapse_mismatch: float = 0.1
    saturation: float = 450.0
    jitter: float = 0.1
    resolution: float = 0.008
    offset: float = 0.05
    adc_noise: float = 0.1
    adc_step: float = 0.25

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _INTS:
                if not (isinstance(value, (int, np.integer)) and value >= 1):
                    raise ValueError(
                        f"MockSpec.{f.name} must be a positive integer, got {value!r}."
                    )
            elif not (isinstance(value, (int, float)) and value >= 0 and not np.isnan(value)):
                raise ValueError(f"MockSpec.{f.name} must be a number >= 0, got {value!r}.")
        for name in ("resolution", "min_trace_period", "adc_step", "saturation"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MockSpec.{name} must be > 0, got {getattr(self, name)!r}.")
        if self.n_neurons % self.hemispheres:
            raise ValueError(
                f"MockSpec.n_neurons ({self.n_neurons}) must split evenly into "
                f"hemispheres={self.hemispheres}."
            )
        if self.weight_bits > 16:
            raise ValueError(f"MockSpec.weight_bits must be at most 16, got {self.weight_bits}.")
        for name in ("jitter", "offset", "resolution", "min_trace_period"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"MockSpec.{name} must be finite, got {getattr(self, name)!r}.")

    @property
    def limits(self) -> Limits:
        return Limits(
            neurons=self.n_neurons,
            hemispheres=self.hemispheres,
            rows_per_hemisphere=self.rows_per_hemisphere,
            input_channels=self.input_channels,
            adc_channels=self.adc_channels,
            min_trace_period=self.min_trace_period,
            weight_bits=self.weight_bits,
            setting_max=SETTING_MAX,
            spike_buffer=self.buffer,
        )


class MockChip(Backend, Reproducible):
    """A chip drawn from `seed`: same seed, same chip, same recordings for the same runs
    (counting runs: `run_count`)."""

    def __init__(self, seed: int, spec: MockSpec = MockSpec()):
        if not isinstance(spec, MockSpec):
            raise TypeError(f"spec must be a MockSpec, got {type(spec).__name__}.")
        self.seed, self.spec = int(seed), spec
        self._limits = spec.limits
        rng = np.random.default_rng([self.seed, 0x5EED])
        n = spec.n_neurons
        # Fixed pattern: voltages get an offset, everything else a gain (lognormal).
        self._offset = {p: rng.normal(0.0, spec.mismatch * SWING, n) for p in VOLTAGES}
        self._gain = {
            p: np.exp(rng.normal(0.0, spec.mismatch, n)) for p in PARAMETERS if p not in VOLTAGES
        }
        self.readout_offset = float(spec.offset * rng.uniform(0.5, 1.5))
        per_half = n // spec.hemispheres
        # One gain per physical synapse [hemisphere, row, column], mean 1.
        rows = (spec.hemispheres, spec.rows_per_hemisphere, per_half)
        self.synapse_pattern = np.exp(
            rng.normal(0.0, spec.synapse_mismatch, rows) - spec.synapse_mismatch**2 / 2
        )
        self._key = jax.random.PRNGKey(self.seed)
        self._run_count = 0
        self._config: ChipConfig | None = None
        self._built = None

    # -- Backend ---------------------------------------------------------------------------
    @property
    def limits(self) -> Limits:
        return self._limits

    def identity(self) -> ChipIdentity:
        size = "" if self.spec.n_neurons == 512 else f"-n{self.spec.n_neurons}"
        return ChipIdentity("mock", f"{self.seed}{size}")

    def nominal_setting(self, parameter: str, value) -> np.ndarray:
        return nominal_setting(parameter, value)

    @property
    def run_count(self) -> int:
        return self._run_count

    @run_count.setter
    def run_count(self, value: int) -> None:
        self._run_count = int(value)

    # -- the chip's physics (hidden truth: tests and benchmarks only) ---------------------
    def physical(self, settings: dict) -> dict:
        """Physical parameter values ``{name: [n_neurons]}`` of the given settings."""
        out = {}
        for name in PARAMETERS:
            value = nominal(name, settings[name])
            if name in VOLTAGES:
                out[name] = value + self._offset[name]
            else:
                out[name] = value * self._gain[name]
        return out

    def true_parameters(self, settings: dict) -> dict:
        """What a calibration should measure: `physical`, with the synaptic gain of each
        neuron averaged over all synapses of its column (the row pattern's mean)."""
        out = self.physical(settings)
        lim = self._limits
        n = np.arange(lim.neurons)
        column_mean = self.synapse_pattern.mean(axis=1)  # [hemisphere, column]
        per_half = lim.neurons // lim.hemispheres
        out["synapse_gain"] = out["synapse_gain"] * column_mean[lim.hemisphere(n), n % per_half]
        return out

    def synaptic_jumps(self, config: ChipConfig) -> tuple:
        """Per layer, the physical jump of ``I`` (mV) each presynaptic source's spike gives
        each neuron ``[n_pre, n_post]`` (layer 0: per input channel, routed rows summed):
        calibrated gain, the synapse's own gain in the row the deployment routes the
        weight's sign to, saturation."""
        phys = self.physical(config.settings)
        lim, spec = self._limits, self.spec
        per_half = lim.neurons // lim.hemispheres
        next_row = np.zeros(lim.hemispheres, dtype=np.int64)
        out = []
        for k, (neurons, q) in enumerate(zip(config.placement, config.weights)):
            neurons = np.asarray(neurons)
            q = np.asarray(q, dtype=float)
            n_pre = q.shape[0]
            half, col = lim.hemisphere(neurons), neurons % per_half
            # Source j's excitatory row is base + j, its inhibitory row base + n_pre + j,
            # in every hemisphere the layer occupies (the budget `synapse_rows` counts).
            base = next_row[half]  # [n_post]
            pre = np.arange(n_pre)[:, None]
            row = np.where(q >= 0, base[None, :] + pre, base[None, :] + n_pre + pre)
            for h in np.unique(half):
                next_row[h] += 2 * n_pre
            gain = self.synapse_pattern[half[None, :], row, col[None, :]]
            jump = q * phys["synapse_gain"][neurons][None, :] * gain
            jump = spec.saturation * np.tanh(jump / spec.saturation)
            if k == 0:  # rows driven by the same input channel act as one summed weight
                summed = np.zeros((config.n_inputs, neurons.size))
                np.add.at(summed, config.rows(), jump)
                jump = summed
            out.append(jump)
        return tuple(out)

    # -- the experiment interface ---------------------------------------------------------
    def configure(self, config: ChipConfig) -> None:
        config.validate(self._limits)
        self._config = config
        self._built = None  # (duration, layers) of this configuration, built on first run

    def run(self, input_times, input_channels, duration, *, record_traces=None, trace_period=0.05):
        cfg = self._config
        req = self.check_run(cfg, input_times, input_channels, duration, record_traces,
                             trace_period)  # fmt: skip
        if self._built is None or self._built[0] != req.duration:
            self._built = (req.duration, self._layers(cfg, req.duration))
        layers = self._built[1]
        key = jax.random.fold_in(self._key, self._run_count)
        self._run_count += 1
        keys = jax.random.split(key, len(layers) + 1)
        spikes = Spikes(jnp.asarray(req.times), jnp.asarray(req.channels))
        inputs, crossings, emitted, lost = [], [], [], jnp.zeros(req.times.shape[0], bool)
        for k, layer in enumerate(layers):
            inputs.append(spikes)
            budget = min(
                self.spec.buffer, layer.size * (1 if layer.single_spike else SPIKES_PER_NEURON)
            )
            res = _simulate_distinct(layer, spikes, req.duration, budget)
            crossings.append(res.output)
            lost = lost | res.overflow[..., 0]
            # Spike-time noise at emission: the next layer and the readout see it.
            spikes = _emit(res.output, keys[k], self.spec.jitter, req.duration)
            emitted.append(spikes)
        rec_t, rec_i, full = _readout(emitted, self.readout_offset, self.spec)
        trace_times = traces = None
        if req.traces is not None:
            trace_times = np.arange(0.0, req.duration, req.trace_period)
            traces = self._traces(cfg, layers, inputs, crossings, req.traces, trace_times,
                                  keys[-1])  # fmt: skip
        return Recording(
            tuple(np.asarray(t) for t in rec_t),
            tuple(np.asarray(i) for i in rec_i),
            np.asarray(full | lost),
            trace_times,
            traces,
        )

    # -- internals ------------------------------------------------------------------------
    def _layers(self, cfg: ChipConfig, duration: float) -> list:
        phys = self.physical(cfg.settings)
        layers = []
        for neurons, jump in zip(cfg.placement, self.synaptic_jumps(cfg)):
            idx = np.asarray(neurons)
            p = {k: v[idx] for k, v in phys.items()}
            # A reset at or above threshold makes the chip fire again right after the
            # refractory time; the model needs it (just) below.
            p["v_reset"] = np.minimum(p["v_reset"], p["v_th"] - 1e-3 * SWING)
            params = LIFParams(
                idx.size,
                tau_mem=p["tau_mem"],
                tau_syn=p["tau_syn"],
                v_th=p["v_th"],
                v_reset=p["v_reset"],
                v_leak=p["v_leak"],
                t_refrac=p["t_refrac"],
            )
            # Refractory for the whole run: a neuron spikes at most once, exactly, so the
            # parallel first-spike path gives the same spikes as the event loop.
            single = bool(np.min(p["t_refrac"]) >= duration)
            layers.append(Layer(jnp.asarray(jump), params, single_spike=single))
        return layers

    def _traces(self, cfg, layers, inputs, crossings, neurons, sample_times, key):
        """``[batch, j, samples]`` ADC readings of the chip neurons ``neurons [batch, j]``."""
        where = {}
        for k, placed in enumerate(cfg.placement):
            for j, n in enumerate(np.asarray(placed)):
                where[int(n)] = (k, j)
        layer_of = np.vectorize(lambda n: where[int(n)][0])(neurons)
        local = np.vectorize(lambda n: where[int(n)][1])(neurons)
        t = jnp.asarray(sample_times)
        v = jnp.zeros((*neurons.shape, t.size))
        for k, layer in enumerate(layers):
            mine = layer_of == k
            if not mine.any():
                continue
            j = jnp.asarray(np.where(mine, local, 0))  # [batch, c]
            p = layer.params
            own = _own_spikes(crossings[k], j, SPIKES_PER_NEURON)
            vk = _membrane(
                p.tau_mem[j],
                p.tau_syn[j],
                p.v_reset[j],
                p.v_leak[j],
                p.t_refrac[j],
                jnp.moveaxis(layer.weights[:, j], 0, -1),  # [batch, c, n_pre]
                inputs[k].times,
                inputs[k].indices,
                own,
                t,
            )
            v = jnp.where(jnp.asarray(mine)[..., None], vk, v)
        v = v + self.spec.adc_noise * jax.random.normal(key, v.shape, v.dtype)
        return np.asarray(jnp.round(v / self.spec.adc_step) * self.spec.adc_step)


def open_mock(chip=0, n_neurons: int | None = None, **spec) -> MockChip:
    """The entry point registered as backend ``mock``: chip `chip` (a seed), optionally
    with fewer neurons or other `MockSpec` fields."""
    try:
        seed = int(chip)
    except (TypeError, ValueError):
        raise ValueError(f"mock: chip must be an integer seed, got {chip!r}.") from None
    if n_neurons is not None:
        spec["n_neurons"] = n_neurons
    known = {f.name for f in fields(MockSpec)}
    unknown = sorted(set(spec) - known)
    if unknown:
        names = ", ".join(sorted(known))
        raise ValueError(f"mock: unknown option {unknown[0]!r}; known: {names}.")
    return MockChip(seed, MockSpec(**spec))


def _simulate_distinct(layer: Layer, spikes: Spikes, duration: float, budget: int):
    """`simulate` one layer on a batch, each distinct input row once (a layer's dynamics
    are deterministic: the noise is added at emission), so a batch of identical runs, as
    calibration sends, costs one. The distinct rows are padded to a power of two so that
    the batch shapes, and compilations, stay few."""
    rows = np.concatenate([np.asarray(spikes.times), np.asarray(spikes.indices)], axis=1)
    distinct, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    size = min(len(rows), 1 << int(np.ceil(np.log2(len(distinct)))))
    pick = np.resize(first, size) if size > len(first) else first
    if size == len(rows):  # nothing to save
        pick, inverse = np.arange(len(rows)), np.arange(len(rows))
    res = simulate(
        Network([layer]),
        Spikes(spikes.times[pick], spikes.indices[pick]),
        t_max=duration,
        max_spikes=budget,
        solver=NewtonSolver(),
        check_overflow=False,
    )
    return jax.tree.map(lambda x: x[jnp.asarray(inverse.reshape(-1))], res)


def _emit(spikes: Spikes, key, jitter: float, duration: float) -> Spikes:
    """The emitted events: crossing times plus jitter (>= 0), re-sorted; those pushed past
    the end of the run are lost."""
    noise = jitter * jax.random.normal(key, spikes.times.shape, spikes.times.dtype)
    t = jnp.maximum(spikes.times + noise, 0.0)
    keep = jnp.isfinite(spikes.times) & (t <= duration)
    t = jnp.where(keep, t, jnp.inf)
    order = jnp.argsort(t, axis=-1)
    idx = jnp.where(keep, spikes.indices, -1)
    return Spikes(jnp.take_along_axis(t, order, -1), jnp.take_along_axis(idx, order, -1))


def _own_spikes(spikes: Spikes, local, m: int):
    """``[batch, c, m]``: the first `m` spike times of neuron ``local [batch, c]``."""
    mine = spikes.indices[:, None, :] == local[..., None]  # [batch, c, C]
    t = jnp.where(mine, spikes.times[:, None, :], jnp.inf)
    return jnp.sort(t, axis=-1)[..., :m]


@jax.jit
def _membrane(tau_mem, tau_syn, v_reset, v_leak, t_refrac, w, pre_t, pre_i, own_t, t):
    """Exact membrane potential at sample times ``t [S]`` of one neuron per (sample,
    channel): parameters ``[B, c]``, input weights ``w [B, c, n_pre]``, presynaptic events
    ``pre_t/pre_i [B, A]``, own threshold crossings ``own_t [B, c, m]`` (inf padding).
    Returns ``[B, c, S]`` (mV)."""

    def neuron(tm, ts, vr, vl, tr, w, pre_t, pre_i, own_t):
        last = jnp.max(jnp.where(own_t[None, :] <= t[:, None], own_t[None, :], -jnp.inf), -1)
        spiked = jnp.isfinite(last)
        t0 = jnp.where(spiked, last + tr, 0.0)  # start of free evolution, [S]
        u0 = jnp.where(spiked, vr - vl, 0.0)
        real = jnp.isfinite(pre_t) & (pre_i >= 0)
        wa = jnp.where(real, w[jnp.where(real, pre_i, 0)], 0.0)[None, :]  # [1, A]
        ta = jnp.where(real, pre_t, 0.0)[None, :]
        before = real[None, :] & (ta <= t0[:, None])  # arrived by the start: in I(t0)
        decay = jnp.exp(-jnp.where(before, t0[:, None] - ta, 0.0) / ts)
        i0 = jnp.sum(jnp.where(before, wa * decay, 0.0), -1)
        free = jnp.maximum(t - t0, 0.0)
        after = real[None, :] & (ta > t0[:, None]) & (ta <= t[:, None])
        lag = jnp.where(after, t[:, None] - ta, 0.0)
        u = u0 * jnp.exp(-free / tm) + i0 * kernel(free, tm, ts)
        u = u + jnp.sum(jnp.where(after, wa * kernel(lag, tm, ts), 0.0), -1)
        return jnp.where(t < t0, vr, vl + u)

    over_channels = jax.vmap(neuron, in_axes=(0, 0, 0, 0, 0, 0, None, None, 0))
    return jax.vmap(over_channels)(
        tau_mem, tau_syn, v_reset, v_leak, t_refrac, w, pre_t, pre_i, own_t
    )


def _readout(layers, offset, spec: MockSpec):
    """Offset and quantise the emitted times; keep the earliest `buffer` spikes of each
    sample over all layers. Returns per-layer times, indices and the overflow flag."""
    times = []
    for sp in layers:
        t = jnp.floor((sp.times + offset) / spec.resolution) * spec.resolution
        times.append(jnp.where(jnp.isfinite(sp.times), jnp.maximum(t, 0.0), jnp.inf))
    # The buffer fills in time order across layers.
    every = jnp.concatenate(times, axis=-1)
    n_real = jnp.sum(jnp.isfinite(every), axis=-1)
    cutoff = jnp.sort(every, axis=-1)[..., min(spec.buffer, every.shape[-1]) - 1]
    if every.shape[-1] <= spec.buffer:
        cutoff = jnp.full_like(cutoff, jnp.inf)
    out_t, out_i = [], []
    for t, sp in zip(times, layers):
        keep = jnp.isfinite(t) & (t <= cutoff[..., None])
        t = jnp.where(keep, t, jnp.inf)
        order = jnp.argsort(t, axis=-1)
        out_t.append(jnp.take_along_axis(t, order, -1))
        out_i.append(jnp.take_along_axis(jnp.where(keep, sp.indices, -1), order, -1))
    return out_t, out_i, n_real > spec.buffer
