"""Calibration: per-neuron settings that bring measured parameters to targets.

Everything is measured through the experiment interface (`Backend.run` with membrane
traces), as on a real chip: this module uses `Backend`'s methods only (the nominal
setting of a target value included) and never looks inside a mock. Each parameter's
physical value grows with its setting, so every neuron's setting is found by integer
bisection, all neurons at once (10 experiments per parameter for 10-bit settings). The
order follows the dependencies of the measurements: leak, threshold, reset, tau_mem,
refractory time, tau_syn, synaptic gain.

The membrane ADC records `Limits.adc_channels` neurons per run, so one experiment is a
batch of identical runs, run b tracing the next `adc_channels` neurons: more runs, not
more channels.

Experiments (the calibrated neurons as one layer fed by one input channel):

* rest: threshold at its maximum, no input: the trace's mean is the leak.
* tonic: leak well above threshold: the neuron fires at once (t = 0), is held at reset for
  the refractory time, then rises as ``v_l - (v_l - v_r) exp(-t/tau_mem)`` to threshold.
  The trace gives the threshold (its maximum), the reset (the refractory plateau), tau_mem
  (a line fit of ``log(v_l - v)`` on the rise) and the refractory time (when the rise
  leaves the plateau, corrected by the known rise).
* psp: one input spike of a known weight: the trace is ``v_l + q g k(t - t_in)``;
  a least-squares fit of the shape gives tau_syn (given tau_mem) and the gain g.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .backend import PARAMETERS, Backend, ChipConfig, ChipIdentity


@dataclass(frozen=True)
class Targets:
    """Calibration targets in chip units (mV, us, mV per weight step)."""

    v_leak: float = 80.0
    v_reset: float = 60.0
    v_th: float = 120.0
    tau_mem: float = 12.0
    tau_syn: float = 6.0
    t_refrac: float = 30.0
    synapse_gain: float = 4.0

    def __post_init__(self):
        for name in ("tau_mem", "tau_syn", "t_refrac", "synapse_gain"):
            if not getattr(self, name) > 0:
                raise ValueError(f"target {name} must be > 0, got {getattr(self, name)!r}.")
        if not self.v_reset < self.v_th:
            raise ValueError(f"target v_reset ({self.v_reset}) must be below v_th ({self.v_th}).")
        if not self.v_leak < self.v_th:
            raise ValueError(f"target v_leak ({self.v_leak}) must be below v_th ({self.v_th}).")

    def with_weight_scale(self, weight_scale: float) -> "Targets":
        """These targets with the synaptic gain of `weight_scale` integer steps per model
        weight unit: a unit weight is one threshold swing, ``(v_th - v_leak) / weight_scale``
        mV per step."""
        if not weight_scale > 0:
            raise ValueError(f"weight_scale must be > 0, got {weight_scale!r}.")
        return replace(self, synapse_gain=(self.v_th - self.v_leak) / weight_scale)

    def scale(self, name: str) -> float:
        """What a residual is relative to: the target, or the threshold swing for voltages."""
        return self.v_th - self.v_leak if name.startswith("v_") else getattr(self, name)


class CalibrationMismatchError(ValueError):
    """A calibration file used on a chip other than the one it was measured on."""


class _PerNeuron:
    """Targets as arrays over the calibrated neurons (groups may differ): attributes and
    `scale` like `Targets`."""

    def __init__(self, groups):
        for name in PARAMETERS:
            setattr(
                self, name, np.concatenate([np.full(len(n), getattr(t, name)) for n, t in groups])
            )

    def scale(self, name: str) -> np.ndarray:
        return self.v_th - self.v_leak if name.startswith("v_") else getattr(self, name)


@dataclass
class Calibration:
    """Per-neuron settings for targets, with the residual errors measured afterwards.

    Attributes:
        backend, chip: the `ChipIdentity` of the chip it was measured on.
        groups: ``((neurons, Targets), ...)``: which chip neurons were calibrated to which
            targets (chip units); usually one group, every neuron.
        settings: ``{parameter: int array [chip neurons]}``; neurons not calibrated keep
            the chip's default settings.
        residuals: ``{parameter: {"median", "worst"}}`` measured after calibration, over
            all calibrated neurons, relative to each neuron's own target.
    """

    backend: str
    chip: str
    groups: tuple
    settings: dict
    residuals: dict = field(default_factory=dict)

    @property
    def identity(self) -> ChipIdentity:
        return ChipIdentity(self.backend, self.chip)

    @property
    def neurons(self) -> np.ndarray:
        """The calibrated chip neurons (a deployment places its layers on them)."""
        return np.concatenate([np.asarray(n) for n, _ in self.groups])

    @property
    def targets(self) -> Targets:
        """The first group's targets (the only group's, usually)."""
        return self.groups[0][1]

    def targets_of(self, neurons) -> Targets:
        """The targets of `neurons`, which must be calibrated, all in one group."""
        neurons = np.asarray(neurons)
        for members, targets in self.groups:
            if np.isin(neurons, members).all():
                return targets
        raise ValueError(
            f"neurons {neurons.tolist()[:8]}... are not calibrated to one set of targets: "
            "place each layer on the neurons of one calibration group."
        )

    def check_chip(self, backend: Backend, force: bool = False) -> None:
        """Refuse (`CalibrationMismatchError`) to use this calibration on another chip
        than the one it was measured on, unless `force`."""
        here = backend.identity()
        if here != self.identity and not force:
            raise CalibrationMismatchError(
                f"this calibration was measured on {self.identity}, not on {here}: every "
                "chip differs, so calibrate this one (python -m calib) or pass --force to "
                "use it anyway."
            )
        n = backend.limits.neurons
        if any(np.asarray(v).shape != (n,) for v in self.settings.values()):
            raise CalibrationMismatchError(
                f"this calibration has settings for {len(self.settings['v_th'])} neurons but "
                f"{here} has {n}."
            )

    def save(self, path, overwrite: bool = False) -> None:
        """Write the file atomically; an existing file is kept (`FileExistsError`)
        unless `overwrite`."""
        from ..netfile import write_json_atomic

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --force (overwrite=True) to replace it.")
        data = {
            "backend": self.backend,
            "chip": self.chip,
            "groups": [
                {"neurons": np.asarray(n).tolist(), "targets": asdict(t)} for n, t in self.groups
            ],
            "settings": {k: np.asarray(v).tolist() for k, v in self.settings.items()},
            "residuals": self.residuals,
        }
        write_json_atomic(path, data)

    @classmethod
    def load(cls, path) -> Calibration:
        try:
            data = json.loads(Path(path).read_text())
            settings = {k: np.asarray(data["settings"][k], dtype=np.int32) for k in PARAMETERS}
            groups = tuple(
                (np.asarray(g["neurons"], dtype=np.int64), Targets(**g["targets"]))
                for g in data["groups"]
            )
            return cls(
                str(data["backend"]), str(data["chip"]), groups, settings, data["residuals"]
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path}: not a calibration file ({type(e).__name__}: {e}); write one with "
                "`python -m calib`."
            ) from e


# -- experiments ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """Durations and sampling of the calibration experiments (us)."""

    trace_period: float = 0.04
    rest_duration: float = 20.0
    tonic_duration: float = 80.0
    psp_duration: float = 60.0
    psp_input_time: float = 5.0
    psp_weight: int = 1  # per synapse row
    psp_rows: int = 96  # rows the PSP's input is routed to: their gains average out
    leak_margin: float = 40.0  # mV above the threshold target: the leak in tonic runs


def _run(chip: Backend, neurons, settings: dict, duration, protocol: Protocol, weight=0,
         t_in=np.inf, rows=1):  # fmt: skip
    """Traces ``[S]`` times and ``[len(neurons), S]`` membranes of `neurons` placed as one
    layer fed by one input routed to `rows` synapse rows of `weight`, and whether each
    neuron spiked: a batch of identical runs, each tracing as many neurons as the ADC
    takes."""
    n = len(neurons)
    config = ChipConfig(
        settings={k: np.asarray(v, dtype=np.int32) for k, v in settings.items()},
        placement=(np.asarray(neurons),),
        weights=(np.full((rows, n), weight, dtype=np.int32),),
        n_inputs=1,
        routing=np.zeros(rows, dtype=np.int64),
    )
    chip.configure(config)
    per_run = chip.limits.adc_channels
    runs = -(-n // per_run)
    order = np.resize(np.asarray(neurons), runs * per_run).reshape(runs, per_run)
    rec = chip.run(
        np.full((runs, 1), t_in),
        np.zeros((runs, 1), dtype=np.int64),
        duration,
        record_traces=order,
        trace_period=protocol.trace_period,
    )
    spiked = np.isin(np.arange(n), np.asarray(rec.indices[0]))
    return rec.trace_times, rec.traces.reshape(runs * per_run, -1)[:n], spiked


def _with(settings: dict, **changes) -> dict:
    out = dict(settings)
    for k, v in changes.items():
        out[k] = np.broadcast_to(np.asarray(v, dtype=np.int32), out[k].shape).copy()
    return out


def measure_leak(chip, neurons, settings, protocol: Protocol) -> np.ndarray:
    """The resting potential of `neurons` (threshold out of reach, no input)."""
    top = chip.limits.setting_max
    _, v, _ = _run(chip, neurons, _with(settings, v_th=top), protocol.rest_duration, protocol)
    return v.mean(axis=1)


def measure_tonic(chip, neurons, settings, targets: Targets, protocol: Protocol) -> dict:
    """Threshold, reset, tau_mem and refractory time of `neurons` from tonic firing."""
    high = chip.nominal_setting("v_leak", targets.v_th + protocol.leak_margin)
    tonic = _set(settings, "v_leak", neurons, high)
    v_l = measure_leak(chip, neurons, tonic, protocol)  # the (high) leak the rise aims at
    t, v, _ = _run(chip, neurons, tonic, protocol.tonic_duration, protocol)
    v_th = v.max(axis=1)
    low = np.sort(v, axis=1)[:, : v.shape[1] // 5]
    v_r = np.median(low, axis=1)  # the refractory plateau fills far more than 1/5
    out = {"v_th": v_th, "v_reset": v_r, "tau_mem": np.empty(len(v)), "t_refrac": np.empty(len(v))}
    for j, trace in enumerate(v):
        gap = v_th[j] - v_r[j]
        lo, hi = v_r[j] + 0.15 * gap, v_th[j] - 0.15 * gap
        above = np.nonzero(trace > v_r[j] + 1.0)[0]
        if gap < 2.0 or above.size == 0:  # no rise to see
            out["tau_mem"][j] = out["t_refrac"][j] = np.inf
            continue
        start = above[0]
        reset_again = np.nonzero(np.diff(trace[start:]) < -0.5 * gap)[0]  # the next spike
        stop = start + (reset_again[0] + 1 if reset_again.size else trace.size - start)
        seg = slice(start, stop)
        sel = (trace[seg] > lo) & (trace[seg] < hi) & (v_l[j] - trace[seg] > 0)
        if sel.sum() < 3:
            out["tau_mem"][j] = np.inf if stop - start > 3 else 0.0
        else:
            slope = np.polyfit(t[seg][sel], np.log(v_l[j] - trace[seg][sel]), 1)[0]
            out["tau_mem"][j] = -1.0 / slope if slope < 0 else np.inf
        # The rise leaves the plateau at t_refrac and passes v_r + 1 mV this much later:
        lag = out["tau_mem"][j] * np.log((v_l[j] - v_r[j]) / max(v_l[j] - v_r[j] - 1.0, 1e-9))
        out["t_refrac"][j] = t[start] - (lag if np.isfinite(lag) else 0.0)
    return out


def _psp_shape(t, tau_mem, tau_syn):
    from ..neuron import kernel

    t, tau_mem, tau_syn = (jnp.asarray(x) for x in (np.maximum(t, 0.0), tau_mem, tau_syn))
    return np.asarray(kernel(t, jnp.clip(tau_mem, 1e-3, 1e4), jnp.clip(tau_syn, 1e-3, 1e4)))


def measure_psp(chip, neurons, settings, tau_mem, protocol: Protocol) -> dict:
    """tau_syn and the synaptic gain of `neurons` from one PSP (tau_mem measured). The
    input reaches every neuron through `psp_rows` synapses (as many as the row budget
    allows), so the gain is their mean: one synapse's own mismatch would bias it. A neuron
    whose PSP reached even the highest threshold spiked, and its trace is no PSP: both
    values are reported as inf (too large: the PSP grows with either), which steers a
    bisection down."""
    n_rows = min(protocol.psp_rows, chip.limits.rows_per_hemisphere // 2)
    t, v, spiked = _run(
        chip,
        neurons,
        _with(settings, v_th=chip.limits.setting_max),
        protocol.psp_duration,
        protocol,
        weight=protocol.psp_weight,
        t_in=protocol.psp_input_time,
        rows=n_rows,
    )
    every = max(1, int(round(0.16 / protocol.trace_period)))  # fit on ~0.16 us steps
    lag = (t - protocol.psp_input_time)[::every]
    v = v[:, ::every]
    tm = np.asarray(tau_mem, dtype=float)[:, None, None]
    # Least squares of v = a k(lag; tau_mem, tau_syn) + b over a grid of tau_syn, refined
    # four times around the best point of every neuron.
    grid = np.broadcast_to(np.geomspace(0.2, 200.0, 32), (len(v), 32))
    for _ in range(5):
        k = _psp_shape(lag[None, None, :], tm, grid[:, :, None])  # [n, G, S]
        a, b, sse = _fit_affine(k, v[:, None, :])
        i = np.argmin(sse, axis=1)
        rows = np.arange(len(v))
        best_tau, best_amp = grid[rows, i], a[rows, i]
        lo = grid[rows, np.maximum(i - 1, 0)]
        hi = grid[rows, np.minimum(i + 1, grid.shape[1] - 1)]
        grid = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, 16)[None, :]
    gain = best_amp / (protocol.psp_weight * n_rows)
    return {
        "tau_syn": np.where(spiked, np.inf, best_tau),
        "synapse_gain": np.where(spiked, np.inf, gain),
    }


def _fit_affine(k, v):
    """Least squares ``v ~ a k + b`` along the last axis: returns a, b, sum of squares."""
    km, vm = k.mean(-1, keepdims=True), v.mean(-1, keepdims=True)
    dk, dv = k - km, v - vm
    a = np.sum(dk * dv, -1) / np.maximum(np.sum(dk * dk, -1), 1e-30)
    b = vm[..., 0] - a * km[..., 0]
    sse = np.sum((dv - a[..., None] * dk) ** 2, -1)
    return a, b, sse


# -- the search ----------------------------------------------------------------------------
def _set(settings: dict, name: str, neurons, values) -> dict:
    """`settings` with `name`'s setting of `neurons` replaced by `values`."""
    out = dict(settings)
    out[name] = np.array(settings[name], dtype=np.int32)
    out[name][neurons] = values
    return out


def _bisect(measure, settings, name, target, neurons, top: int, progress=None) -> np.ndarray:
    """Per-neuron integer bisection in ``[0, top]`` of `name`'s setting of `neurons` so
    that ``measure(settings)`` (one value per neuron, increasing in the setting) comes
    closest to `target`. Returns the chosen settings ``[len(neurons)]``."""
    n = len(neurons)
    lo = np.zeros(n, dtype=np.int64)
    hi = np.full(n, top, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        below = measure(_set(settings, name, neurons, mid)) < target
        lo = np.where(below & (lo < hi), mid + 1, lo)
        hi = np.where(~below & (lo < hi), mid, hi)
        if progress:
            progress()
    # The crossing lies between lo - 1 and lo: keep the closer of the two.
    candidates = [np.maximum(lo - 1, 0), lo]
    errors = [np.abs(measure(_set(settings, name, neurons, c)) - target) for c in candidates]
    if progress:
        progress(2)
    return np.where(errors[0] < errors[1], candidates[0], candidates[1]).astype(np.int32)


ORDER = ("v_leak", "v_th", "v_reset", "tau_mem", "t_refrac", "tau_syn", "synapse_gain")


def measure_all(chip, settings, targets: Targets, protocol: Protocol = Protocol(),
                neurons=None) -> dict:  # fmt: skip
    """Every parameter of `neurons` (default: all), measured at `settings`."""
    neurons = np.arange(chip.limits.neurons) if neurons is None else np.asarray(neurons)
    out = {"v_leak": measure_leak(chip, neurons, settings, protocol)}
    out.update(measure_tonic(chip, neurons, settings, targets, protocol))
    out.update(measure_psp(chip, neurons, settings, out["tau_mem"], protocol))
    return out


def residuals(measured: dict, targets) -> dict:
    """``{parameter: {"median", "worst"}}`` of ``|measured - target| / scale``."""
    out = {}
    for name in ORDER:
        err = np.abs(measured[name] - getattr(targets, name)) / targets.scale(name)
        out[name] = {"median": float(np.median(err)), "worst": float(np.max(err))}
    return out


class _Bar:
    """Progress on stderr: experiments done out of the expected total (a bar redrawn in
    place on a terminal, one line per parameter otherwise)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.done, self.total, self.stream, self.label = 0, total, stream, ""
        self.tty = stream.isatty()

    def start(self, label: str) -> None:
        self.label = label
        if not self.tty:
            self.stream.write(f"calibrating {label} ({self.done}/{self.total} experiments)\n")
            self.stream.flush()

    def __call__(self, k: int = 1) -> None:
        self.done += k
        if not self.tty:
            return
        width = 30
        filled = int(width * min(self.done, self.total) / self.total)
        self.stream.write(
            f"\rcalibrating {self.label:<13} [{'#' * filled}{'-' * (width - filled)}] "
            f"{self.done}/{self.total}"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def calibrate(
    chip: Backend,
    targets=Targets(),
    protocol: Protocol = Protocol(),
    *,
    neurons=None,
    progress: bool = False,
) -> Calibration:
    """Search the settings of `neurons` (default: every neuron of the chip) for `targets`;
    returns a `Calibration` with the residuals measured at the final settings. `targets`
    may also be groups ``[(neurons, Targets), ...]`` (disjoint; then `neurons` is None):
    e.g. an output layer's neurons at a smaller synaptic gain. Uses `Backend`'s methods
    only."""
    limits = chip.limits
    if isinstance(targets, Targets):
        neurons = np.arange(limits.neurons) if neurons is None else np.asarray(neurons)
        groups = ((neurons, targets),)
    elif neurons is not None:
        raise ValueError("give neurons inside the target groups, not as well as them.")
    else:
        groups = tuple((np.asarray(n), t) for n, t in targets)
        if not groups or not all(isinstance(t, Targets) for _, t in groups):
            raise TypeError("targets must be a Targets or a sequence of (neurons, Targets).")
        neurons = np.concatenate([n for n, _ in groups])
    if neurons.ndim != 1 or neurons.size == 0 or not np.issubdtype(neurons.dtype, np.integer):
        raise ValueError("neurons must be a non-empty 1-D array of chip neuron indices.")
    out_of_range = neurons.min() < 0 or neurons.max() >= limits.neurons
    if out_of_range or np.unique(neurons).size < neurons.size:
        raise ValueError(
            f"neurons must be distinct chip neuron indices in 0..{limits.neurons - 1}."
        )
    goal = _PerNeuron(groups)
    settings = chip.default_settings()
    measured_tau_mem = None

    def measure(name):
        def f(s):
            if name == "v_leak":
                return measure_leak(chip, neurons, s, protocol)
            if name in ("v_th", "v_reset", "tau_mem", "t_refrac"):
                return measure_tonic(chip, neurons, s, goal, protocol)[name]
            return measure_psp(chip, neurons, s, measured_tau_mem, protocol)[name]

        return f

    steps = int(np.ceil(np.log2(limits.setting_max + 1))) + 2
    bar = _Bar(steps * len(ORDER)) if progress else None
    for name in ORDER:
        if bar:
            bar.start(name)
        if name == "tau_syn":
            measured_tau_mem = measure_tonic(chip, neurons, settings, goal, protocol)["tau_mem"]
        found = _bisect(
            measure(name), settings, name, getattr(goal, name), neurons,
            limits.setting_max, bar,
        )  # fmt: skip
        settings = _set(settings, name, neurons, found)
    if bar:
        bar.close()
    final = measure_all(chip, settings, goal, protocol, neurons)
    who = chip.identity()
    return Calibration(who.backend, who.chip, groups, settings, residuals(final, goal))


def residual_table(res: dict) -> str:
    """The residuals as a text table (percent of the target; voltages: of the swing)."""
    lines = [f"{'parameter':<14}{'median %':>10}{'worst %':>10}"]
    for name, r in res.items():
        lines.append(f"{name:<14}{100 * r['median']:>10.2f}{100 * r['worst']:>10.2f}")
    return "\n".join(lines)
