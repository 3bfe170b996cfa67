"""A conformance suite any backend can run: ``run_conformance(backend)``.

It checks what calibration and training in the loop rely on, through `Backend`'s methods
only: the interface's types; settings and their nominal mapping; a configure/run/recording
round trip with spikes where strong excitation drives them and none where nothing or
inhibition does; time in us (shifted inputs shift the spikes by as much); causality
between layers; membrane traces in mV at the requested sampling; every limit refused with
a `ChipConfigError` that names it; and, for a `Reproducible` backend, identical recordings
when the run counter is set back. It needs a chip with at least 8 neurons and uses default
settings (the uncalibrated operating point), so it runs before any calibration.

    from eventsnn.hardware.testing import run_conformance
    report = run_conformance(my_backend)   # raises ConformanceError listing what failed
    print(report)                          # {check: "ok" | "skipped: why"}
"""

from __future__ import annotations

import numpy as np

from .backend import (
    PARAMETERS,
    Backend,
    ChipConfig,
    ChipConfigError,
    ChipIdentity,
    Limits,
    Recording,
    Reproducible,
)

T_IN = 5.0  # us: input spike time of the round trip
DURATION = 50.0  # us
SHIFT = 10.0  # us: the time-shift check


class ConformanceError(AssertionError):
    """One line per failed check."""


class _Skip(Exception):
    pass


def run_conformance(backend: Backend) -> dict:
    """Run every check on `backend`; returns ``{check: "ok" | "skipped: reason"}`` or
    raises `ConformanceError` naming each failed check and why."""
    report, failures = {}, []
    for name, check in CHECKS:
        try:
            check(backend)
            report[name] = "ok"
        except _Skip as e:
            report[name] = f"skipped: {e}"
        except Exception as e:  # a conformance failure is any error a check meets
            failures.append(f"{name}: {type(e).__name__}: {e}")
    if failures:
        raise ConformanceError(
            f"{type(backend).__name__} fails {len(failures)} conformance check(s):\n"
            + "\n".join(failures)
        )
    return report


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(message)


# -- checks --------------------------------------------------------------------------------
def check_interface(b: Backend) -> None:
    _expect(isinstance(b, Backend), "not a eventsnn.hardware.Backend")
    _expect(isinstance(b.limits, Limits), "limits is not a Limits")
    _expect(b.limits.neurons >= 8, f"the suite needs >= 8 neurons, chip has {b.limits.neurons}")
    who = b.identity()
    _expect(isinstance(who, ChipIdentity), "identity() must return a ChipIdentity")
    _expect(bool(who.backend) and bool(who.chip), f"identity() has an empty field: {who!r}")
    _expect(b.identity() == who, "identity() changes between calls")


def check_settings(b: Backend) -> None:
    lim = b.limits
    s = b.default_settings()
    _expect(set(s) == set(PARAMETERS), f"default_settings() keys {sorted(s)} != {PARAMETERS}")
    for name in PARAMETERS:
        v = np.asarray(s[name])
        _expect(v.shape == (lim.neurons,), f"default_settings()[{name!r}] shape {v.shape}")
        _expect(np.issubdtype(v.dtype, np.integer), f"default_settings()[{name!r}] not ints")
        _expect(0 <= v.min() and v.max() <= lim.setting_max, f"{name} default out of range")
        base = {"v_leak": 80.0, "v_reset": 60.0, "v_th": 120.0}.get(name)
        values = base + np.linspace(-30, 30, 7) if base else np.geomspace(0.5, 2, 7) * {
            "tau_mem": 12.0, "tau_syn": 6.0, "t_refrac": 30.0, "synapse_gain": 4.0
        }[name]  # fmt: skip
        got = np.asarray(b.nominal_setting(name, values))
        _expect(got.shape == values.shape, f"nominal_setting({name!r}, [7 values]) shape")
        _expect(np.issubdtype(got.dtype, np.integer), f"nominal_setting({name!r}) not ints")
        _expect(np.all(np.diff(got) >= 0), f"nominal_setting({name!r}) decreases: {got}")
        _expect(got[-1] > got[0], f"nominal_setting({name!r}) is constant over {values}")
        _expect(0 <= got.min() and got.max() <= lim.setting_max, f"{name}: setting out of range")


def _two_layers(b: Backend, scale: float = 1.0) -> ChipConfig:
    """Inputs 0, 1 -> layer 0 (neurons 0..3: two excited, one unconnected, one inhibited)
    -> layer 1 (neurons 4, 5, both excited by layer 0's excited neurons)."""
    m = b.limits.weight_max
    w0 = np.array([[m, m, 0, -m], [m, m, 0, -m]]) * scale
    w1 = np.array([[m, m], [m, m], [0, 0], [0, 0]]) * scale
    return ChipConfig(
        b.default_settings(),
        (np.arange(4), np.array([4, 5])),
        (w0.astype(np.int32), w1.astype(np.int32)),
        n_inputs=2,
    )


def _inputs(shift: float = 0.0):
    """Sample 0: both channels at T_IN (+shift); sample 1: no input."""
    t = np.array([[T_IN + shift, T_IN + shift], [np.inf, np.inf]])
    return t, np.array([[0, 1], [-1, -1]])


def _first(rec: Recording, layer: int, n: int) -> np.ndarray:
    """``[batch, n]`` first spike time per neuron (inf: silent)."""
    t, i = np.asarray(rec.times[layer]), np.asarray(rec.indices[layer])
    out = np.full((t.shape[0], n), np.inf)
    for b in range(t.shape[0]):
        real = i[b] >= 0
        np.minimum.at(out[b], i[b][real], t[b][real])
    return out


def check_round_trip(b: Backend) -> None:
    b.configure(_two_layers(b))
    rec = b.run(*_inputs(), DURATION)
    _expect(isinstance(rec, Recording), "run() must return a Recording")
    _expect(len(rec.times) == len(rec.indices) == 2, "one times/indices array per layer")
    for k, n in enumerate((4, 2)):
        t, i = np.asarray(rec.times[k]), np.asarray(rec.indices[k])
        _expect(t.ndim == 2 and t.shape == i.shape and t.shape[0] == 2, f"layer {k} shapes")
        _expect(np.array_equal(np.isinf(t), i < 0), f"layer {k}: inf padding != -1 padding")
        _expect(np.all((i >= -1) & (i < n)), f"layer {k}: index outside the layer")
        real = t[np.isfinite(t)]
        _expect(np.all((real >= 0) & (real <= DURATION + 1)), f"layer {k}: time outside run")
        _expect(np.all(np.diff(np.where(np.isfinite(t), t, 1e30), axis=1) >= 0), "not sorted")
    overflow = np.asarray(rec.overflow)
    _expect(overflow.shape == (2,) and overflow.dtype == bool, "overflow must be [batch] bool")
    f0, f1 = _first(rec, 0, 4), _first(rec, 1, 2)
    _expect(np.isfinite(f0[0, :2]).all(), f"strongly excited neurons silent: {f0[0]}")
    _expect(np.isinf(f0[0, 2:]).all(), f"unconnected/inhibited neurons spiked: {f0[0]}")
    _expect(np.isinf(f0[1]).all() and np.isinf(f1[1]).all(), "spikes without input")
    _expect(np.all(f0[0, :2] > T_IN - 0.5), f"spikes before their input at {T_IN} us")
    _expect(np.isfinite(f1[0]).all(), f"layer 1 silent under strong excitation: {f1[0]}")
    _expect(f1[0].min() > f0[0, :2].min(), "layer 1 spiked before layer 0 (causality)")
    # Time is in us: inputs later by SHIFT us move every first spike by SHIFT us.
    later = b.run(*_inputs(SHIFT), DURATION)
    moved = _first(later, 0, 4)[0, :2] - f0[0, :2]
    _expect(np.all(np.abs(moved - SHIFT) < 1.0), f"a {SHIFT} us shift moved spikes {moved}")


def check_traces(b: Backend) -> None:
    lim = b.limits
    b.configure(_two_layers(b, 0.3))
    period = max(lim.min_trace_period, 0.1)
    j = min(lim.adc_channels, 2)
    neurons = np.array([0, 3])[:j]
    rec = b.run(*_inputs(), DURATION, record_traces=neurons, trace_period=period)
    t, v = np.asarray(rec.trace_times), np.asarray(rec.traces)
    _expect(t.ndim == 1 and t.size >= DURATION / period - 1, f"trace_times shape {t.shape}")
    _expect(np.allclose(np.diff(t), period, rtol=1e-6), "trace_times not at trace_period")
    _expect(t[0] >= 0 and t[-1] <= DURATION, "trace_times outside the run")
    _expect(v.shape == (2, j, t.size), f"traces shape {v.shape}, want {(2, j, t.size)}")
    _expect(np.isfinite(v).all(), "traces not finite")
    before = t < T_IN
    after = (t > T_IN) & (t < T_IN + 20)
    rest = v[0, :, before].mean(axis=0)
    _expect(v[0, 0, after].max() - rest[0] > 5.0, "excitation raises the membrane < 5 mV")
    if j > 1:
        _expect(v[0, 1, after].min() - rest[1] < -1.0, "inhibition lowers the membrane < 1 mV")
        # Per-sample channel selection: sample 1 traces the neurons in the other order.
        per_sample = np.array([neurons, neurons[::-1]])
        rec2 = b.run(*_inputs(), DURATION, record_traces=per_sample, trace_period=period)
        v2 = np.asarray(rec2.traces)
        _expect(v2.shape == v.shape, "per-sample record_traces: traces shape")
        _expect(np.abs(v2[1, 0, before].mean() - rest[1]) < 10.0, "per-sample selection")


def _refuses(b: Backend, what: str, needle: str, action) -> None:
    try:
        action()
    except ChipConfigError as e:
        _expect(needle in str(e), f"{what}: error does not name the limit {needle}: {e}")
        return
    except Exception as e:
        raise AssertionError(f"{what}: raised {type(e).__name__}, not ChipConfigError: {e}") from e
    raise AssertionError(f"{what}: accepted")


def _one_layer(b: Backend, n: int = 1, q: int = 1, n_inputs: int = 1, routing=None):
    rows = n_inputs if routing is None else len(routing)
    return ChipConfig(
        b.default_settings(),
        (np.arange(n),),
        (np.full((rows, n), q, np.int32),),
        n_inputs=n_inputs,
        routing=routing,
    )


def check_limits(b: Backend) -> None:
    lim = b.limits
    cfg = _one_layer(b)
    beyond = ChipConfig(cfg.settings, (np.array([lim.neurons]),), cfg.weights, 1)
    _refuses(b, "neuron index beyond the chip", str(lim.neurons - 1), lambda: b.configure(beyond))
    heavy = _one_layer(b, q=lim.weight_max + 1)
    _refuses(b, "weight beyond the bits", str(lim.weight_max), lambda: b.configure(heavy))
    wide = _one_layer(b, n_inputs=lim.input_channels + 1)
    _refuses(b, "too many inputs", str(lim.input_channels), lambda: b.configure(wide))
    rows = _one_layer(b, routing=np.zeros(lim.rows_per_hemisphere // 2 + 1, dtype=np.int64))
    _refuses(b, "row budget", str(lim.rows_per_hemisphere), lambda: b.configure(rows))
    bad = dict(cfg.settings, v_th=np.full(lim.neurons, lim.setting_max + 1, np.int32))
    high = ChipConfig(bad, cfg.placement, cfg.weights, 1)
    _refuses(b, "setting beyond its range", str(lim.setting_max), lambda: b.configure(high))
    n = lim.adc_channels + 1
    b.configure(_one_layer(b, n=n))
    x = np.array([[1.0]]), np.array([[0]])
    ok_period = 0.1 + lim.min_trace_period
    _refuses(
        b,
        "more traces than ADC channels",
        str(lim.adc_channels),
        lambda: b.run(*x, 10.0, record_traces=np.arange(n), trace_period=ok_period),
    )
    _refuses(
        b,
        "trace period below the ADC's",
        "trace_period",
        lambda: b.run(*x, 10.0, record_traces=[0], trace_period=lim.min_trace_period / 2),
    )
    # After refusals the chip still works.
    rec = b.run(*x, 10.0)
    _expect(len(rec.times) == 1, "run after refused requests failed")


def check_determinism(b: Backend) -> None:
    if not isinstance(b, Reproducible):
        raise _Skip("not Reproducible (physical noise)")
    b.configure(_two_layers(b, 0.3))
    start = b.run_count
    a = b.run(*_inputs(), DURATION, record_traces=[0], trace_period=0.2)
    _expect(b.run_count == start + 1, "run_count must grow by one per run")
    b.run_count = start
    again = b.run(*_inputs(), DURATION, record_traces=[0], trace_period=0.2)
    for x, y in zip(
        (*a.times, *a.indices, a.traces), (*again.times, *again.indices, again.traces)
    ):
        _expect(np.array_equal(np.asarray(x), np.asarray(y)), "same run_count, other recording")


CHECKS = (
    ("interface", check_interface),
    ("settings", check_settings),
    ("round_trip", check_round_trip),
    ("traces", check_traces),
    ("limits", check_limits),
    ("determinism", check_determinism),
)
