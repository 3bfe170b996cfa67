"""The hardware package: mock chip, experiment interface, calibration, training in the loop.

Calibration quality is checked against the mock's true physical parameters (which the
calibration itself never sees: it measures through the experiment interface only).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eventsnn import classify, hardware
from eventsnn.event.simulate import simulate
from eventsnn.hardware import ChipConfig, ChipConfigError, ChipUnits, Targets
from eventsnn.hardware.in_the_loop import HardwareSetup, pinned_first_spikes
from eventsnn.network import Layer, Network, Spikes
from eventsnn.neuron import LIFParams

N = 24  # neurons of the small test chips


def _config(chip, weights=20, n=N, settings=None):
    return ChipConfig(
        settings or chip.default_settings(),
        (np.arange(n),),
        (np.full((1, n), weights, dtype=np.int32),),
        n_inputs=1,
    )


def _run(chip, cfg, **kw):
    chip.configure(cfg)
    return chip.run(np.array([[1.0, 2.5]]), np.array([[0, 0]]), 60.0, **kw)


def test_mock_is_deterministic_per_seed_and_differs_between_seeds():
    a, b, c = (hardware.mock_chip(s, N) for s in (5, 5, 6))
    ra, rb, rc = (_run(x, _config(x, 40), record_traces=np.arange(3)) for x in (a, b, c))
    np.testing.assert_array_equal(ra.times[0], rb.times[0])
    np.testing.assert_array_equal(ra.traces, rb.traces)
    assert np.isfinite(ra.times[0]).sum() > 0
    pa, pc = a.physical(a.default_settings()), c.physical(c.default_settings())
    assert not np.allclose(pa["tau_mem"], pc["tau_mem"])
    # Trial-to-trial jitter: the next run of the same chip differs, by about the jitter.
    first, again = _first(ra), _first(_run(a, _config(a, 40)))
    both = np.isfinite(first) & np.isfinite(again)
    assert both.sum() > 5
    diff = again[both] - first[both]
    assert 0.03 < np.std(diff) < 0.3  # two draws of 0.1 us jitter: std ~0.14 us


def _first(rec):
    t, i = rec.times[0][0], rec.indices[0][0]
    return np.asarray(Spikes(jnp.asarray(t), jnp.asarray(i)).first_times(N))


def test_uncalibrated_mismatch_spread_is_10_to_20_percent():
    chip = hardware.mock_chip(1)  # the full 512-neuron chip
    targets = Targets()
    phys = chip.physical(chip.default_settings())
    for name in hardware.PARAMETERS:
        spread = np.std(phys[name]) / targets.scale(name)
        assert 0.10 <= spread <= 0.20, (name, spread)


def test_readout_resolution_offset_and_coincident_spikes():
    chip = hardware.mock_chip(2, N, jitter=0.0)
    rec = _run(chip, _config(chip, 63))
    t = rec.times[0][np.isfinite(rec.times[0])]
    steps = t / chip.spec.resolution
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
    # Without jitter the readout is the exact spike time plus the offset, floored.
    phys = chip.physical(chip.default_settings())
    exact = _exact_first_spikes(phys, 63, [1.0, 2.5], 60.0)
    first = _first(rec)
    fired = np.isfinite(exact)
    assert fired.sum() > N // 2
    err = np.asarray(first)[fired] - exact[fired] - chip.readout_offset
    assert np.all((err <= 1e-6) & (err > -chip.spec.resolution - 1e-6))


def _exact_first_spikes(phys, q, in_times, duration):
    p = LIFParams(
        N,
        tau_mem=phys["tau_mem"][:N],
        tau_syn=phys["tau_syn"][:N],
        v_th=phys["v_th"][:N],
        v_reset=np.minimum(phys["v_reset"][:N], phys["v_th"][:N] - 0.04),
        v_leak=phys["v_leak"][:N],
        t_refrac=phys["t_refrac"][:N],
        dtype=jnp.float64,
    )
    w = jnp.asarray(q * phys["synapse_gain"][None, :N])
    net = Network([Layer(w, p)])
    x = Spikes(jnp.asarray(in_times), jnp.zeros(len(in_times), jnp.int32))
    res = simulate(net, x, t_max=duration, max_spikes=16 * N)
    return np.asarray(res.output.first_times(N))


def test_spike_buffer_overflow_is_reported():
    chip = hardware.mock_chip(3, N, buffer=10)
    rec = _run(chip, _config(chip, 63))
    assert rec.overflow.all()
    assert np.isfinite(rec.times[0]).sum() == 10
    roomy = hardware.mock_chip(3, N)
    assert not _run(roomy, _config(roomy, 63)).overflow.any()


def test_traces_follow_the_closed_form():
    chip = hardware.mock_chip(4, N, adc_noise=0.0, adc_step=1e-6)
    rec = _run(chip, _config(chip, 10), record_traces=np.arange(N), trace_period=0.1)
    phys = chip.physical(chip.default_settings())
    from eventsnn.neuron import kernel

    t = rec.trace_times
    for j in range(3):  # below threshold: the sum of two PSPs on the leak
        psp = sum(
            10
            * phys["synapse_gain"][j]
            * np.where(
                t > t0,
                np.asarray(kernel(np.maximum(t - t0, 0), phys["tau_mem"][j], phys["tau_syn"][j])),
                0.0,
            )
            for t0 in (1.0, 2.5)
        )
        np.testing.assert_allclose(rec.traces[0, j], phys["v_leak"][j] + psp, atol=1e-4)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(weights=(np.full((1, N), 64, np.int32),)), "weights\\[0\\] must lie in"),
        (dict(weights=(np.full((1, N), 1.5),)), "must be integers"),
        (dict(weights=(np.ones((2, N), np.int32),)), "must have shape"),
        (dict(placement=(np.arange(N) + 1000,)), "unknown neuron 1000"),
        (dict(placement=(np.zeros(N, np.int32),)), "neuron twice"),
        (dict(routing=np.array([3])), "routing names input channel 3"),
    ],
)
def test_interface_refuses_bad_configurations(change, match):
    chip = hardware.mock_chip(0, N)
    base = _config(chip)
    cfg = ChipConfig(**{**base.__dict__, **change})
    with pytest.raises(ChipConfigError, match=match):
        chip.configure(cfg)


def test_interface_refuses_bad_settings_and_inputs():
    chip = hardware.mock_chip(0, N)
    settings = chip.default_settings()
    with pytest.raises(ChipConfigError, match="tau_mem.*\\[0, 1023\\]"):
        chip.configure(_config(chip, settings={**settings, "tau_mem": settings["tau_mem"] + 2000}))
    with pytest.raises(ChipConfigError, match="settings\\['v_th'\\] is missing"):
        chip.configure(_config(chip, settings={k: v for k, v in settings.items() if k != "v_th"}))
    with pytest.raises(ChipConfigError, match="record_traces names neuron 100"):
        _run(chip, _config(chip, n=4), record_traces=[100])
    chip.configure(_config(chip))
    with pytest.raises(ValueError, match="not NaN"):
        chip.run(np.array([[np.nan]]), np.array([[0]]), 10.0)
    with pytest.raises(ValueError, match="input_channels"):
        chip.run(np.array([[1.0]]), np.array([[5]]), 10.0)


def test_weight_conversion_round_trips():
    units = ChipUnits(weight_scale=20.0)
    q = np.arange(-63, 64, dtype=np.int32)
    np.testing.assert_array_equal(units.weights_to_chip(units.weights_to_model(q)), q)
    w = np.random.default_rng(0).uniform(-3, 3, 1000)
    back = units.weights_to_model(units.weights_to_chip(w))
    np.testing.assert_allclose(back, w, atol=0.5 / 20 + 1e-12)
    assert units.weights_to_chip([100.0, -100.0]).tolist() == [63, -63]  # saturation
    t = np.array([0.0, 1e-3, 12e-3])
    np.testing.assert_allclose(units.time_to_model(units.time_to_chip(t)), t)
    np.testing.assert_allclose(units.time_to_chip(12e-3), 12.0)
    with pytest.raises(ValueError, match="weight_scale"):
        ChipUnits(weight_scale=0.0)


def test_input_repeat_spreads_weights_exactly():
    units = ChipUnits(weight_scale=20.0)
    setup = HardwareSetup(units, input_repeat=5)
    cfg = classify.ClassifierConfig(grad="analytic")
    params = classify.init_params(jax.random.PRNGKey(0), cfg)
    params = (params[0] * 3, params[1])
    q1, _ = setup.integer_weights(params, cfg)
    assert np.abs(q1).max() <= 63
    w1 = np.asarray(classify.weights_of(params, cfg)[0])
    total = q1.reshape(5, 5, -1).sum(axis=1)
    expected = np.rint(np.clip(w1 * 20, -315, 315))
    np.testing.assert_array_equal(total, expected)


@pytest.fixture(scope="module")
def calibrated():
    chip = hardware.mock_chip(7, 64)
    cal = hardware.calibrate(chip, backend_name="mock:7")
    return chip, cal


def test_calibration_hits_targets(calibrated):
    chip, cal = calibrated
    targets = cal.targets
    phys = chip.physical(cal.settings)  # the truth, which calibration never saw
    for name in hardware.PARAMETERS:
        err = np.abs(phys[name] - getattr(targets, name)) / targets.scale(name)
        assert np.median(err) < 0.02, (name, np.median(err))
        assert np.max(err) < 0.05, (name, np.max(err))
        # The reported residuals are measured, and agree with the truth's size.
        assert cal.residuals[name]["worst"] < 0.05


def test_calibration_file_round_trip_and_errors(calibrated, tmp_path):
    _, cal = calibrated
    path = tmp_path / "cal.json"
    cal.save(path)
    back = hardware.Calibration.load(path)
    for name in hardware.PARAMETERS:
        np.testing.assert_array_equal(back.settings[name], cal.settings[name])
    assert back.targets == cal.targets
    path.write_text(json.dumps({"settings": {}}))
    with pytest.raises(ValueError, match="not a calibration file"):
        hardware.Calibration.load(path)


def test_pinned_times_have_the_implicit_function_gradient():
    """At the simulated spike times, pinned times equal them and have autodiff's gradient
    through the event core (the implicit-function derivative)."""
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.uniform(1.5, 3.0, (4, 6)))
    t_in = jnp.asarray(rng.uniform(0, 5e-3, (2, 4)))
    p = LIFParams(6, tau_mem=10e-3, tau_syn=5e-3, dtype=jnp.float64)

    def simulated(w, t_in):
        x = Spikes(t_in, jnp.broadcast_to(jnp.arange(4), t_in.shape))
        net = Network([Layer(w, p, single_spike=True)])
        res = simulate(net, x, t_max=0.05, max_spikes=6, check_overflow=False)
        return res.output.first_times(6)

    t_sim = simulated(w, t_in)
    assert np.isfinite(t_sim).all()

    def pinned(w, t_in):
        return pinned_first_spikes(t_sim, w, t_in, 10e-3, 5e-3, 1e-9)

    np.testing.assert_allclose(pinned(w, t_in), t_sim, rtol=0, atol=0)
    for argnum in (0, 1):
        g_sim = jax.jacobian(lambda *a: simulated(*a).sum(), argnum)(w, t_in)
        g_pin = jax.jacobian(lambda *a: pinned(*a).sum(), argnum)(w, t_in)
        np.testing.assert_allclose(g_pin, g_sim, rtol=1e-8, atol=1e-12)


def _loop(chip, cal, tmp_path, epochs=15, **kw):
    from eventsnn.hardware.in_the_loop import train_in_the_loop
    from eventsnn.tasks import load_splits
    from eventsnn.train import TrainConfig

    setup = HardwareSetup.from_calibration(cal, input_repeat=2)
    base = classify.ClassifierConfig(
        grad="analytic", hidden=16, n_classes=2, t_late=14e-3, t_max=28e-3
    )
    cfg = setup.model_config(cal, base)
    splits = load_splits("linear", train_samples=512)
    params = classify.init_params(jax.random.PRNGKey(0), cfg)
    train = TrainConfig(epochs=epochs, batch_size=32, learning_rate=3e-3, seed=0)
    params, history = train_in_the_loop(
        chip, cal, setup, params, splits, cfg, train, checkpoint_dir=tmp_path, **kw
    )
    return setup, cfg, splits, params, history


def test_training_in_the_loop_learns(calibrated, tmp_path):
    from eventsnn.hardware.in_the_loop import chip_accuracy

    chip, cal = calibrated
    setup, cfg, splits, params, history = _loop(chip, cal, tmp_path)
    untrained = classify.init_params(jax.random.PRNGKey(0), cfg)
    before = chip_accuracy(setup, chip, cal, untrained, *splits["test"], cfg)
    after = chip_accuracy(setup, chip, cal, params, *splits["test"], cfg)
    # Chance is 0.5 on this two-class task.
    assert after >= 0.7 and after >= before + 0.15, (before, after)


def test_training_in_the_loop_resumes_exactly(calibrated, tmp_path):
    chip, cal = calibrated
    *_, whole, _ = _loop(chip, cal, tmp_path / "a", epochs=2)
    _loop(chip, cal, tmp_path / "b", epochs=2, stop_after=1)
    *_, resumed, history = _loop(chip, cal, tmp_path / "b", epochs=2, resume=True)
    assert len(history.epochs) == 2
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_calibration_cli(tmp_path, capsys):
    import subprocess
    import sys

    out = tmp_path / "mock-3.json"
    cmd = [
        sys.executable,
        "-m",
        "calib",
        "--chip-seed",
        "3",
        "--neurons",
        "16",
        "--tau-mem",
        "10e-6",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=_repo(), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "tau_mem" in done.stdout and "worst %" in done.stdout
    assert "calibrating tau_syn" in done.stderr  # progress
    cal = hardware.Calibration.load(out)
    assert cal.targets.tau_mem == pytest.approx(10.0)
    bad = subprocess.run(
        cmd[:-2] + ["--tau-syn", "-1", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=_repo(),
        timeout=120,
    )
    assert bad.returncode == 2 and "tau_syn must be > 0" in bad.stderr


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]
