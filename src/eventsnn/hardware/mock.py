"""A software BrainScaleS-2-style chip: the event core with a chip's imperfections.

A chip is a seed. From it come fixed-pattern mismatch of every neuron's parameters (gain
and offset of each setting's mapping to the physical value), and the chip's readout
offset; from it and a run counter come the trial-to-trial spike-time jitter. The forward
dynamics are exactly the event core's, run with the physical (perturbed) parameters in
chip units (us, mV). What a real chip adds on the way out is modelled too: jitter, the
systematic readout offset, the finite readout resolution (coincident spikes), a bounded
spike buffer (overflow reported) and a sampled, noisy, quantised membrane ADC.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..event.simulate import simulate
from ..event.spike_time import NewtonSolver
from ..network import Layer, Network, Spikes
from ..neuron import LIFParams, kernel
from .backend import PARAMETERS, SETTING_MAX, Backend, ChipConfig, ChipConfigError, Recording

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
#: The operating point the uncalibrated default settings aim at (chip units).
TYPICAL = {
    "v_leak": 80.0,
    "v_reset": 60.0,
    "v_th": 120.0,
    "tau_mem": 12.0,
    "tau_syn": 6.0,
    "t_refrac": 30.0,
    "synapse_gain": 4.0,
}
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
    kind, lo, hi = MAPPINGS[name]
    v = np.asarray(value, dtype=float)
    x = (v - lo) / (hi - lo) if kind == "linear" else np.log(v / lo) / np.log(hi / lo)
    return np.clip(np.rint(x * SETTING_MAX), 0, SETTING_MAX).astype(np.int32)


@dataclass(frozen=True)
class MockSpec:
    """The physics of a mock chip (chip units). Defaults follow BrainScaleS-2."""

    n_neurons: int = 512
    max_input_channels: int = 256
    mismatch: float = 0.15  # relative spread of every parameter before calibration
    jitter: float = 0.1  # us, trial-to-trial spike-time noise (std)
    resolution: float = 0.008  # us, readout clock (125 MHz)
    offset: float = 0.05  # us, mean of the chip's systematic readout delay
    buffer: int = 8192  # spikes recorded per run and sample
    adc_noise: float = 0.1  # mV, membrane readout noise (std)
    adc_step: float = 0.25  # mV, membrane readout resolution


class MockChip(Backend):
    """A chip drawn from `seed`: same seed, same chip, same recordings for the same runs."""

    def __init__(self, seed: int, spec: MockSpec = MockSpec()):
        self.seed, self.spec = int(seed), spec
        self.n_neurons = spec.n_neurons
        self.max_input_channels = spec.max_input_channels
        rng = np.random.default_rng([self.seed, 0x5EED])
        n = spec.n_neurons
        # Fixed pattern: voltages get an offset, everything else a gain (lognormal).
        self._offset = {p: rng.normal(0.0, spec.mismatch * SWING, n) for p in VOLTAGES}
        self._gain = {
            p: np.exp(rng.normal(0.0, spec.mismatch, n)) for p in PARAMETERS if p not in VOLTAGES
        }
        self.readout_offset = float(spec.offset * rng.uniform(0.5, 1.5))
        self._key = jax.random.PRNGKey(self.seed)
        self.run_count = 0  # runs so far: the trial index of the next run's noise
        self._config: ChipConfig | None = None
        self._built = None

    # -- the chip's physics ---------------------------------------------------------------
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

    def default_settings(self) -> dict:
        return {p: np.full(self.n_neurons, nominal_setting(p, TYPICAL[p])) for p in PARAMETERS}

    # -- the experiment interface ---------------------------------------------------------
    def configure(self, config: ChipConfig) -> None:
        if config.n_inputs > self.max_input_channels:
            raise ChipConfigError(
                f"n_inputs is {config.n_inputs} but this chip has "
                f"{self.max_input_channels} input channels."
            )
        config.validate(self.n_neurons)
        self._config = config
        self._built = None  # (duration, Network) of this configuration, built on first run

    def run(self, input_times, input_channels, duration, *, record_traces=None, trace_period=0.05):
        cfg = self._config
        if cfg is None:
            raise ChipConfigError("run before configure: load a ChipConfig first.")
        times = np.atleast_2d(np.asarray(input_times, dtype=float))
        channels = np.atleast_2d(np.asarray(input_channels))
        if times.shape != channels.shape:
            raise ValueError(
                f"input_times {times.shape} and input_channels {channels.shape} must match."
            )
        if np.isnan(times).any() or (times < 0).any():
            raise ValueError("input_times must be >= 0 and not NaN (pad with inf).")
        real = np.isfinite(times)
        if (real & ((channels < 0) | (channels >= cfg.n_inputs))).any():
            raise ValueError(f"input_channels must lie in [0, {cfg.n_inputs}) for real spikes.")
        if not (np.isfinite(duration) and duration > 0):
            raise ValueError(f"duration must be a positive number of us, got {duration!r}.")

        if self._built is None or self._built[0] != float(duration):
            network = self._network(cfg, self.physical(cfg.settings), duration)
            self._built = (float(duration), network)
        network = self._built[1]
        inputs = Spikes(jnp.asarray(times), jnp.asarray(np.where(real, channels, -1)))
        # Fixed budgets (one compilation per configuration shape); what exceeds them is
        # reported as overflow like a full buffer.
        budgets = tuple(
            min(self.spec.buffer, len(p) * (1 if layer.single_spike else SPIKES_PER_NEURON))
            for p, layer in zip(cfg.placement, network.layers)
        )
        result = simulate(
            network,
            inputs,
            t_max=float(duration),
            max_spikes=budgets,
            solver=NewtonSolver(),
            check_overflow=False,
        )
        key = jax.random.fold_in(self._key, self.run_count)
        self.run_count += 1
        rec_t, rec_i, overflow = _readout(
            result, key, self.readout_offset, self.spec, float(duration)
        )
        overflow = np.asarray(overflow) | np.asarray(jnp.any(result.overflow, axis=-1))
        trace_times = traces = None
        if record_traces is not None:
            trace_times = np.arange(0.0, duration, trace_period)
            traces = self._traces(
                cfg,
                network,
                inputs,
                result,
                np.asarray(record_traces),
                trace_times,
                jax.random.fold_in(key, 1),
            )
        return Recording(
            tuple(np.asarray(t) for t in rec_t),
            tuple(np.asarray(i) for i in rec_i),
            overflow,
            trace_times,
            traces,
        )

    # -- internals ------------------------------------------------------------------------
    def _network(self, cfg: ChipConfig, phys: dict, duration: float) -> Network:
        layers = []
        for k, (neurons, q) in enumerate(zip(cfg.placement, cfg.weights)):
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
            w = np.asarray(q, dtype=float) * p["synapse_gain"][None, :]
            if k == 0:  # rows driven by the same input channel act as one summed weight
                summed = np.zeros((cfg.n_inputs, idx.size))
                np.add.at(summed, cfg.rows(), w)
                w = summed
            w = jnp.asarray(w)
            # Refractory for the whole run: a neuron spikes at most once, exactly, so the
            # parallel first-spike path gives the same spikes as the event loop.
            single = bool(np.min(p["t_refrac"]) >= duration)
            layers.append(Layer(w, params, single_spike=single))
        return Network(layers)

    def _traces(self, cfg, network, inputs, result, neurons, sample_times, key):
        where = {}
        for k, placed in enumerate(cfg.placement):
            for j, n in enumerate(np.asarray(placed)):
                where[int(n)] = (k, j)
        missing = [int(n) for n in neurons if int(n) not in where]
        if missing:
            raise ChipConfigError(
                f"record_traces names neuron {missing[0]}, which no layer of the "
                "configuration places."
            )
        t = jnp.asarray(sample_times)
        rows = {}
        for k, layer in enumerate(network.layers):
            local = np.array([where[int(n)][1] for n in neurons if where[int(n)][0] == k])
            if local.size == 0:
                continue
            pre = inputs if k == 0 else result.layers[k - 1]
            own = _own_spikes(result.layers[k], jnp.asarray(local), SPIKES_PER_NEURON)
            p = layer.params
            v = _membrane(
                p.tau_mem[local],
                p.tau_syn[local],
                p.v_reset[local],
                p.v_leak[local],
                p.t_refrac[local],
                layer.weights[:, local].T,
                pre.times,
                pre.indices,
                own,
                t,
            )  # [batch, len(local), samples]
            for j, n in enumerate(n for n in neurons if where[int(n)][0] == k):
                rows[int(n)] = v[:, j]
        v = jnp.stack([rows[int(n)] for n in neurons], axis=1)  # [batch, neurons, samples]
        v = v + self.spec.adc_noise * jax.random.normal(key, v.shape, v.dtype)
        return np.asarray(jnp.round(v / self.spec.adc_step) * self.spec.adc_step)


def _own_spikes(spikes: Spikes, local, m: int):
    """``[batch, len(local), m]``: the first `m` spike times of each listed neuron."""
    mine = spikes.indices[..., None, :] == local[:, None]  # [batch, n, C]
    t = jnp.where(mine, spikes.times[..., None, :], jnp.inf)
    return jnp.sort(t, axis=-1)[..., :m]


@jax.jit
def _membrane(tau_mem, tau_syn, v_reset, v_leak, t_refrac, w, pre_t, pre_i, own_t, t):
    """Exact membrane potential at sample times ``t [S]``: neuron parameters ``[n]``, their
    input weights ``w [n, n_pre]``, presynaptic spikes ``pre_t/pre_i [B, A]``, own spikes
    ``own_t [B, n, m]`` (inf padding). Returns ``[B, n, S]`` (mV)."""

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

    over_neurons = jax.vmap(neuron, in_axes=(0, 0, 0, 0, 0, 0, None, None, 0))
    return jax.vmap(over_neurons, in_axes=(None,) * 6 + (0, 0, 0))(
        tau_mem, tau_syn, v_reset, v_leak, t_refrac, w, pre_t, pre_i, own_t
    )


def _readout(result, key, offset, spec: MockSpec, duration):
    """Jitter, offset and quantise the recorded times; keep the earliest `buffer` spikes of
    each sample over all layers. Returns per-layer times, indices and the overflow flag."""
    layers = result.layers
    keys = jax.random.split(key, len(layers))
    times = []
    for k, sp in enumerate(layers):
        noise = spec.jitter * jax.random.normal(keys[k], sp.times.shape, sp.times.dtype)
        t = jnp.floor((sp.times + offset + noise) / spec.resolution) * spec.resolution
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
