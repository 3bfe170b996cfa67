"""The hardware package: mock chip, experiment interface, calibration, training in the loop.

Calibration quality is checked against the mock's true physical parameters (which the
calibration itself never sees: it measures through the experiment interface only).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eventsnn import classify, hardware
from eventsnn.event.simulate import simulate
from eventsnn.hardware import Backend, ChipConfig, ChipConfigError, ChipUnits, Targets
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
    ra, rb, rc = (_run(x, _config(x, 40), record_traces=[0, 1]) for x in (a, b, c))
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


def _first(rec, layer=0, n=N):
    t, i = rec.times[layer], rec.indices[layer]
    return np.asarray(Spikes(jnp.asarray(t), jnp.asarray(i)).first_times(n))[0]


def test_uncalibrated_mismatch_spread_is_10_to_20_percent():
    chip = hardware.mock_chip(1)  # the full 512-neuron chip
    targets = Targets()
    phys = chip.physical(chip.default_settings())
    for name in hardware.PARAMETERS:
        spread = np.std(phys[name]) / targets.scale(name)
        assert 0.10 <= spread <= 0.20, (name, spread)
    # Every synapse has its own gain: ~10% spread, a fixed pattern of the seed.
    pattern = chip.synapse_pattern
    assert pattern.shape == (2, 256, 256)
    assert 0.09 < np.std(np.log(pattern)) < 0.11
    np.testing.assert_array_equal(pattern, hardware.mock_chip(1).synapse_pattern)
    assert not np.allclose(pattern, hardware.mock_chip(2).synapse_pattern)


def test_readout_resolution_offset_and_coincident_spikes():
    chip = hardware.mock_chip(2, N, jitter=0.0)
    cfg = _config(chip, 63)
    rec = _run(chip, cfg)
    t = rec.times[0][np.isfinite(rec.times[0])]
    steps = t / chip.spec.resolution
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
    # Without jitter the readout is the exact spike time plus the offset, floored.
    phys = chip.physical(chip.default_settings())
    exact = _exact_first_spikes(phys, chip.synaptic_jumps(cfg)[0], [1.0, 2.5], 60.0)
    first = _first(rec)
    fired = np.isfinite(exact)
    assert fired.sum() > N // 2
    err = np.asarray(first)[fired] - exact[fired] - chip.readout_offset
    assert np.all((err <= 1e-6) & (err > -chip.spec.resolution - 1e-6))


def _exact_first_spikes(phys, jumps, in_times, duration):
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
    net = Network([Layer(jnp.asarray(jumps), p)])
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


def _psp(chip, cfg, neurons, period=0.1):
    """Traces of `neurons` (two per run: a batch of identical runs) after inputs at 1 and
    2.5 us: ``[len(neurons), samples]``."""
    chip.configure(cfg)
    pairs = np.asarray(neurons).reshape(-1, 2)
    times = np.tile([1.0, 2.5], (len(pairs), 1))
    rec = chip.run(times, np.zeros_like(times, int), 60.0, record_traces=pairs,
                   trace_period=period)  # fmt: skip
    return rec.trace_times, rec.traces.reshape(len(neurons), -1)


def test_traces_follow_the_closed_form():
    chip = hardware.mock_chip(4, N, adc_noise=0.0, adc_step=1e-6)
    cfg = _config(chip, 10)
    t, traces = _psp(chip, cfg, np.arange(4))
    phys = chip.physical(chip.default_settings())
    jump = chip.synaptic_jumps(cfg)[0][0]
    from eventsnn.neuron import kernel

    for j in range(4):  # below threshold: the sum of two PSPs on the leak
        psp = sum(
            jump[j]
            * np.where(
                t > t0,
                np.asarray(kernel(np.maximum(t - t0, 0), phys["tau_mem"][j], phys["tau_syn"][j])),
                0.0,
            )
            for t0 in (1.0, 2.5)
        )
        np.testing.assert_allclose(traces[j], phys["v_leak"][j] + psp, atol=1e-4)


def test_synapses_differ_by_row_and_saturate():
    """A PSP's size follows the physical synapse a weight is routed to (its row) and
    grows less than linearly with the weight (saturation of the synaptic input)."""
    chip = hardware.mock_chip(4, N, adc_noise=0.0, adc_step=1e-6)
    settings = {**chip.default_settings(), "v_th": np.full(N, 1023, np.int32)}  # no spikes

    def amplitude(q, row):  # one input routed to rows 0 and 1, weight q on `row` only
        w = np.zeros((2, N), np.int32)
        w[row] = q
        cfg = ChipConfig(settings, (np.arange(N),), (w,), 1, np.zeros(2, np.int64))
        _, v = _psp(chip, cfg, [0, 1])
        return (v - v[:, :1]).max(axis=1)

    small0, small1 = amplitude(4, 0), amplitude(4, 1)
    np.testing.assert_allclose(
        small1 / small0, chip.synapse_pattern[0, 1, :2] / chip.synapse_pattern[0, 0, :2], rtol=1e-3
    )
    big = amplitude(60, 0)
    jump = 60 * chip.physical(settings)["synapse_gain"][:2] * chip.synapse_pattern[0, 0, :2]
    s = chip.spec.saturation
    expected = np.tanh(jump / s) * s / (jump / 15)  # saturated big jump / linear small
    np.testing.assert_allclose(big / small0, expected, rtol=2e-3)
    assert np.all(big / small0 < 15 * 0.97)  # visibly sublinear


def test_spike_noise_reaches_the_next_layer():
    """The jitter is in the emitted spike, so the next layer inherits it: its spike times
    follow the previous layer's recorded ones (correlation ~ 1/sqrt(2) for equal jitter
    per layer; zero if the noise were added at the readout only)."""
    chip = hardware.mock_chip(5, N)
    cfg = ChipConfig(
        chip.default_settings(),
        (np.array([0]), np.array([N - 1])),  # two hemispheres
        (np.full((1, 1), 63, np.int32), np.full((1, 1), 63, np.int32)),
        n_inputs=1,
    )
    chip.configure(cfg)
    batch = 300
    rec = chip.run(np.full((batch, 1), 2.0), np.zeros((batch, 1), int), 40.0)
    t0, t1 = rec.times[0][:, 0], rec.times[1][:, 0]
    assert np.isfinite(t0).all() and np.isfinite(t1).all() and (t1 > t0).all()
    assert 0.5 < np.corrcoef(t0, t1)[0, 1] < 0.9
    assert 1.2 < np.std(t1) / np.std(t0) < 1.7  # two independent draws against one


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(weights=(np.full((1, N), 64, np.int32),)), "weights\\[0\\] must lie in"),
        (dict(weights=(np.full((1, N), 1.5),)), "must be integers"),
        (dict(weights=(np.ones((2, N), np.int32),)), "must have shape"),
        (dict(placement=(np.arange(N) + 1000,)), "unknown neuron 1000.*Limits.neurons = 24"),
        (dict(placement=(np.zeros(N, np.int32),)), "neuron twice"),
        (dict(routing=np.array([3])), "routing names input channel 3"),
        (dict(n_inputs=257), "n_inputs is 257.*0..256 input channels"),
        (
            dict(routing=np.zeros(129, np.int64), weights=(np.ones((129, N), np.int32),)),
            "needs 258 synapse rows in hemisphere 0 but a hemisphere has 256",
        ),
    ],
)
def test_interface_refuses_bad_configurations(change, match):
    chip = hardware.mock_chip(0, N)
    base = _config(chip)
    cfg = ChipConfig(**{**base.__dict__, **change})
    with pytest.raises(ChipConfigError, match=match):
        chip.configure(cfg)


def test_yinyang_network_fits_the_row_budget_only_across_hemispheres():
    """5 inputs x 5 rows -> 120 hidden -> 3 outputs: the outputs' 240 rows fit a
    hemisphere of 256 beside nothing else; in the hidden layer's hemisphere they would
    need 50 + 240 rows."""
    chip = hardware.mock_chip(0)
    settings = chip.default_settings()
    weights = (np.ones((25, 120), np.int32), np.ones((120, 3), np.int32))
    routing = np.repeat(np.arange(5), 5)
    split = ChipConfig(settings, (np.arange(120), np.arange(256, 259)), weights, 5, routing)
    chip.configure(split)
    np.testing.assert_array_equal(hardware.synapse_rows(split, chip.limits), [50, 240])
    same = ChipConfig(settings, (np.arange(120), np.arange(120, 123)), weights, 5, routing)
    with pytest.raises(ChipConfigError, match="needs 290 synapse rows in hemisphere 0"):
        chip.configure(same)


def test_interface_refuses_bad_settings_and_inputs():
    chip = hardware.mock_chip(0, N)
    settings = chip.default_settings()
    with pytest.raises(ChipConfigError, match="tau_mem.*\\[0, 1023\\]"):
        chip.configure(_config(chip, settings={**settings, "tau_mem": settings["tau_mem"] + 2000}))
    with pytest.raises(ChipConfigError, match="settings\\['v_th'\\] is missing"):
        chip.configure(_config(chip, settings={k: v for k, v in settings.items() if k != "v_th"}))
    with pytest.raises(ChipConfigError, match="record_traces names neuron 100"):
        _run(chip, _config(chip, n=4), record_traces=[100])
    with pytest.raises(
        ChipConfigError, match="asks for 3 membranes per run but the ADC records 2"
    ):
        _run(chip, _config(chip), record_traces=[0, 1, 2])
    with pytest.raises(ChipConfigError, match="below the ADC's minimum sampling period 0.03333"):
        _run(chip, _config(chip), record_traces=[0], trace_period=0.02)
    chip.configure(_config(chip))
    with pytest.raises(ValueError, match="not NaN"):
        chip.run(np.array([[np.nan]]), np.array([[0]]), 10.0)
    with pytest.raises(ValueError, match="input_channels"):
        chip.run(np.array([[1.0]]), np.array([[5]]), 10.0)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("n_neurons", 0, "MockSpec.n_neurons must be a positive integer, got 0"),
        ("n_neurons", 25, "n_neurons \\(25\\) must split evenly into hemispheres=2"),
        ("weight_bits", 2.5, "MockSpec.weight_bits must be a positive integer"),
        ("weight_bits", 40, "weight_bits must be at most 16"),
        ("resolution", 0.0, "MockSpec.resolution must be > 0"),
        ("min_trace_period", -1.0, "MockSpec.min_trace_period must be a number >= 0"),
        ("jitter", float("nan"), "MockSpec.jitter must be a number >= 0"),
        ("adc_channels", 0, "MockSpec.adc_channels must be a positive integer"),
    ],
)
def test_mock_spec_is_validated(field, value, match):
    with pytest.raises(ValueError, match=match):
        hardware.MockSpec(**{field: value})


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


def interface_only(chip) -> Backend:
    """A proxy exposing nothing of `chip` but `Backend`'s methods (the chip itself is out
    of reach in a closure); records the batch size of every `run` call and the most
    membranes traced in one run."""

    class Proxy(Backend):
        traced = 0
        batches: list = []

        @property
        def limits(self):
            return chip.limits

        def identity(self):
            return chip.identity()

        def nominal_setting(self, parameter, value):
            return chip.nominal_setting(parameter, value)

        def configure(self, config):
            chip.configure(config)

        def run(self, *args, **kw):
            rec = chip.run(*args, **kw)
            Proxy.batches.append(len(rec.overflow))  # every sample is a run
            Proxy.traced = max(Proxy.traced, 0 if rec.traces is None else rec.traces.shape[1])
            return rec

    return Proxy()


CAL_MARGIN = 0.025  # measured against true residuals: 2.5 percentage points


@pytest.fixture(scope="module")
def calibrated():
    """Chip 7 with 64 neurons through the interface: hemisphere 0 at the operating point,
    hemisphere 1 (an output layer's) at half the synaptic gain (finer weight steps)."""
    chip = hardware.mock_chip(7, 64)
    proxy = interface_only(chip)
    groups = [(np.arange(32), Targets()), (np.arange(32, 64), Targets(synapse_gain=2.0))]
    cal = hardware.calibrate(proxy, groups)
    return chip, cal, proxy


def test_calibration_through_the_interface_hits_targets(calibrated):
    chip, cal, proxy = calibrated
    assert proxy.traced == 2 and sum(proxy.batches) > 1000  # 2 ADC channels: many runs
    truth = chip.true_parameters(cal.settings)  # hidden from calibration: evaluation only
    for name in hardware.PARAMETERS:
        err = np.concatenate(
            [np.abs(truth[name][n] - getattr(t, name)) / t.scale(name) for n, t in cal.groups]
        )
        assert np.median(err) < 0.02, (name, np.median(err))
        assert np.max(err) < 0.05, (name, np.max(err))
        # The residuals calibration measured agree with the true ones.
        for stat, value in (("median", np.median(err)), ("worst", np.max(err))):
            assert abs(cal.residuals[name][stat] - value) < CAL_MARGIN, (name, stat)
    assert (cal.backend, cal.chip) == ("mock", "7-n64")
    np.testing.assert_array_equal(cal.neurons, np.arange(64))
    assert cal.targets_of([40, 41]).synapse_gain == 2.0 and cal.targets.synapse_gain == 4.0
    with pytest.raises(ValueError, match="not calibrated to one set of targets"):
        cal.targets_of([30, 33])


def test_psp_measurement_reports_a_spiking_neuron_as_too_large():
    """A PSP big enough to cross even the highest threshold is no PSP: the measurement
    says inf (too large), so a bisection steers down rather than trusting the fit."""
    from eventsnn.hardware.calibrate import Protocol, measure_psp

    chip = hardware.mock_chip(1, N)
    settings = chip.default_settings()
    settings["synapse_gain"][:2] = 1023  # 20 mV per step through 96 rows
    tau_mem = chip.physical(settings)["tau_mem"][:4]  # as if measured
    out = measure_psp(chip, np.arange(4), settings, tau_mem, Protocol())
    assert np.isinf(out["synapse_gain"][:2]).all() and np.isinf(out["tau_syn"][:2]).all()
    assert np.isfinite(out["synapse_gain"][2:]).all()
    np.testing.assert_allclose(
        out["tau_syn"][2:], chip.physical(settings)["tau_syn"][2:4], rtol=0.02
    )


def test_calibration_file_round_trip_identity_and_errors(calibrated, tmp_path):
    chip, cal, _ = calibrated
    path = tmp_path / "cal.json"
    cal.save(path)
    back = hardware.Calibration.load(path)
    for name in hardware.PARAMETERS:
        np.testing.assert_array_equal(back.settings[name], cal.settings[name])
    assert back.identity == chip.identity()
    for (n, t), (n2, t2) in zip(back.groups, cal.groups):
        np.testing.assert_array_equal(n, n2)
        assert t == t2
    back.check_chip(chip)
    other = hardware.mock_chip(8, 64)
    with pytest.raises(hardware.CalibrationMismatchError, match="measured on mock:7-n64, not"):
        back.check_chip(other)
    back.check_chip(other, force=True)
    with pytest.raises(FileExistsError, match="exists; pass --force"):
        cal.save(path)
    cal.save(path, overwrite=True)
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

    setup, cfg = _small_network(cal)
    splits = load_splits("linear", train_samples=512)
    params = classify.init_params(jax.random.PRNGKey(0), cfg)
    train = TrainConfig(epochs=epochs, batch_size=32, learning_rate=3e-3, seed=0)
    params, history = train_in_the_loop(
        chip, cal, setup, params, splits, cfg, train, checkpoint_dir=tmp_path, **kw
    )
    return setup, cfg, splits, params, history


class _WeakOutputSynapses(hardware.MockChip):
    """The calibrated chip with a systematic error software training cannot see: the
    synapses onto the second layer's first neuron deliver half of what they should."""

    def synaptic_jumps(self, config):
        jumps = super().synaptic_jumps(config)
        if len(jumps) < 2:
            return jumps
        out = np.array(jumps[1])
        out[:, 0] *= 0.5
        return (jumps[0], out)


def test_training_in_the_loop_recovers_a_systematic_error(calibrated, tmp_path):
    """Software training on the calibrated model, deployed on a chip whose class-0 output
    synapses are weak, loses accuracy; training in the loop (one chip run per batch)
    recovers it."""
    from eventsnn.hardware.in_the_loop import chip_accuracy, train_in_the_loop
    from eventsnn.tasks import load_splits, run_point_task
    from eventsnn.train import TrainConfig

    chip, cal, _ = calibrated
    faulty = _WeakOutputSynapses(chip.seed, chip.spec)  # the same chip, as far as it says
    setup, cfg = _small_network(cal)
    splits = load_splits("linear", train_samples=512)
    software = run_point_task(
        "linear", cfg, TrainConfig(epochs=100, batch_size=32, learning_rate=1e-2),
        train_samples=512,
    )  # fmt: skip
    params = software["weights"]
    good = chip_accuracy(setup, chip, cal, params, *splits["test"], cfg)
    deployed = chip_accuracy(setup, faulty, cal, params, *splits["test"], cfg)
    assert software["test_accuracy"] > 0.85 and good > 0.7, (software["test_accuracy"], good)
    assert deployed < good - 0.2, (good, deployed)  # the error costs accuracy

    proxy = interface_only(faulty)
    train = TrainConfig(epochs=4, batch_size=32, learning_rate=1e-2, seed=0)
    params, history = train_in_the_loop(proxy, cal, setup, params, splits, cfg, train)
    # Once per training batch (32 samples), plus the validation set in batches of 500.
    per_epoch = [32] * (512 // 32) + [500]
    assert proxy.batches == per_epoch * train.epochs
    after = chip_accuracy(setup, faulty, cal, params, *splits["test"], cfg)
    assert after >= deployed + 0.25 and after >= 0.75, (deployed, after)


def _small_network(cal):
    """A 5-16-2 network on the calibrated chip (two synapse rows per input)."""
    setup = HardwareSetup.from_calibration(cal, input_repeat=2)
    base = classify.ClassifierConfig(
        grad="analytic", hidden=16, n_classes=2, t_late=14e-3, t_max=28e-3
    )
    return setup, setup.model_config(cal, base)


def test_saturation_is_part_of_the_straight_through_weight_path(calibrated):
    _, cal, _ = calibrated
    setup, cfg = _small_network(cal)
    params = (jnp.full((cfg.n_in, cfg.hidden), 1.0), jnp.full((cfg.hidden, cfg.n_out), 1.0))
    params = (params[0].at[0, 0].set(1e3), params[1].at[0, 0].set(-1e3))
    w1, w2 = setup.deployed_weights(params, cfg)
    s1, s2 = setup.scales
    assert (s1, s2) == (10.0, 20.0)  # the output neurons' gain is half the hidden ones'
    assert float(w1[0, 0]) == pytest.approx(2 * 63 / s1)  # clipped
    assert float(w2[0, 0]) == pytest.approx(-63 / s2)
    q1, q2 = setup.integer_weights(params, cfg)
    np.testing.assert_allclose(np.asarray(w2), q2 / s2)  # what the chip realises
    np.testing.assert_allclose(np.asarray(w1), q1.reshape(cfg.n_in, 2, -1).sum(1) / s1)
    hidden, outputs = setup.placement(cfg, cal, hardware.mock_chip(7, 64).limits)
    np.testing.assert_array_equal(outputs, [32, 33])  # on the finer group
    # The software model of the deployed network (quantisation-aware training) is the same.
    qcfg = setup.quantised_config(cfg)
    for a, b in zip(classify.weights_of(params, qcfg), (w1, w2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="weight_step must be two numbers >= 0"):
        dataclasses.replace(cfg, weight_step=(-0.1, 0.0)).check()
    g1, g2 = jax.grad(lambda p: sum(jnp.sum(w) for w in setup.deployed_weights(p, cfg)))(params)
    assert float(g1[0, 0]) == 0.0 and float(g2[0, 0]) == 0.0  # no push beyond the clip
    assert float(g1[1, 1]) > 0 and float(g2[1, 1]) > 0  # straight through inside


def test_training_in_the_loop_resumes_exactly(calibrated, tmp_path):
    chip, cal, _ = calibrated
    *_, whole, _ = _loop(chip, cal, tmp_path / "a", epochs=2)
    _loop(chip, cal, tmp_path / "b", epochs=2, stop_after=1)
    *_, resumed, history = _loop(chip, cal, tmp_path / "b", epochs=2, resume=True)
    assert len(history.epochs) == 2
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_calibration_cli(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "mock-3.json"
    cmd = [sys.executable, "-m", "calib", "--chip", "3", "--neurons", "4", "--tau-mem", "10e-6"]

    def calib(*extra, timeout=600):
        return subprocess.run(
            cmd + list(extra), capture_output=True, text=True, cwd=_repo(), timeout=timeout
        )

    done = calib("--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "tau_mem" in done.stdout and "worst %" in done.stdout
    assert "mock:3, 4 neurons" in done.stdout
    assert "calibrating tau_syn" in done.stderr  # progress
    cal = hardware.Calibration.load(out)
    assert cal.targets.tau_mem == pytest.approx(10.0)
    assert cal.identity == hardware.ChipIdentity("mock", "3")
    np.testing.assert_array_equal(cal.neurons, np.arange(4))
    again = calib("--out", str(out), timeout=120)  # refused before any measurement
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    bad = calib("--tau-syn", "-1", "--out", str(tmp_path / "x.json"), timeout=120)
    assert bad.returncode == 2 and "--tau-syn: must be > 0" in bad.stderr


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_targets_with_weight_scale_give_one_swing_per_unit_weight():
    """A model weight of 1 is one threshold swing: ``weight_scale`` steps of the gain."""
    t = Targets(v_leak=80.0, v_th=120.0).with_weight_scale(40.0)
    assert t.synapse_gain == 1.0 and t.v_th == 120.0 and t.tau_mem == Targets().tau_mem
    for bad in (0.0, -2.0):
        with pytest.raises(ValueError, match="weight_scale"):
            Targets().with_weight_scale(bad)
