"""The discrete engine: encoders/decoders, surrogates, and convergence to the event core."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from budget import THOROUGH

import eventsnn as es


def _net(rng, **params):
    return es.Network(
        [
            es.dense_layer(
                rng.normal(2.0, 1.0, (3, 8)),
                tau_mem=0.01,
                tau_syn=0.005,
                t_refrac=1e-3,
                v_leak=0.1,
                v_reset=-0.2,
                recurrent_weights=rng.normal(0, 0.3, (8, 8)),
                delay=5e-4,
                **params,
            ),
            es.dense_layer(rng.normal(1.0, 0.5, (8, 2)), tau_mem=0.01, tau_syn=0.004),
        ]
    )


INPUTS = es.Spikes(jnp.array([[0.001, 0.002, 0.0035, 0.006]]), jnp.array([[0, 1, 2, 0]]))


def spike_errors(net, inputs, dt, t_max=0.03, rule=None):
    """Fraction of neurons with the same spike count in both engines, and the errors
    |t_discrete - t_event| of their spikes."""
    ev = es.simulate(net, inputs, t_max=t_max, max_spikes=128)
    rule = es.ForwardEuler() if rule is None else rule
    d = es.simulate_discrete(net, inputs, dt=dt, t_max=t_max, record_voltages=False, rule=rule)
    same, total, errors = 0, 0, []
    for k, layer in enumerate(net.layers):
        rec, _ = es.trains_to_spikes(d.trains[k], dt, 128)
        for b in range(inputs.times.shape[0]):
            for i in range(layer.size):
                te = np.asarray(ev.layers[k].times[b])[np.asarray(ev.layers[k].indices[b]) == i]
                td = np.asarray(rec.times[b])[np.asarray(rec.indices[b]) == i]
                total += 1
                if len(te) == len(td):
                    same += 1
                    errors.extend(np.abs(np.sort(te) - np.sort(td)))
    return same / total, np.array(errors)


def test_converges_to_event_core_first_order():
    net = _net(np.random.default_rng(1))
    mean_error = {}
    for dt in (1e-4, 1e-5, 1e-6):
        frac, errors = spike_errors(net, INPUTS, dt)
        assert frac == 1.0
        mean_error[dt] = errors.mean()
    # Error roughly proportional to dt: a 10x smaller step, a 5-20x smaller mean error.
    assert 5 < mean_error[1e-4] / mean_error[1e-5] < 20
    assert 5 < mean_error[1e-5] / mean_error[1e-6] < 20


# Each network compiles anew (unpadded): CI runs one per structure, a thorough run two.
SEEDS_PER_STRUCTURE = 2 if THOROUGH else 1


def _random_cases():
    """Unpadded random networks of the event-core tests: every structure, ratio mode and
    leak mode, refractoriness on and off, input ties."""
    from test_event_core import STRUCTURES, Case

    out = []
    for k, structure in enumerate(STRUCTURES):
        for seed in range(SEEDS_PER_STRUCTURE):
            n = structure[0]
            out.append(
                Case(
                    structure=structure,
                    n_in=3 + seed,
                    sizes=(6, 4, 3)[:n],
                    ratio_modes=(("1", "2", "uniform")[(k + seed) % 3],) * n,
                    leak_modes=(("zero", "below", "tonic")[(k + 2 * seed) % 3],) * n,
                    refrac=((k + seed) % 2 == 0,) * n,
                    n_spikes=12,
                    ties=("none", "some")[seed],
                    seed=100 * k + seed,
                    padded=False,
                )
            )
    return out


@pytest.mark.parametrize(
    "rule", [es.ForwardEuler(), es.ExactStep()], ids=lambda r: type(r).__name__
)
def test_convergence_on_random_networks_at_10us(rule):
    """The event-core tests' random networks at dt = 10 us: >= 95% of neurons with the same
    spike count; where every count matches, >= 95% of the spikes within 3 dt. (Where a
    near-grazing spike appears or vanishes upstream, everything downstream shifts: those
    networks are ill-conditioned at any dt and only count towards the first criterion.)"""
    from test_event_core import T_MAX, build

    dt, same, total, errors = 1e-5, 0.0, 0, []
    for case in _random_cases():
        net, inputs = build(case)
        inputs = es.Spikes(inputs.times[None], inputs.indices[None])
        frac, err = spike_errors(net, inputs, dt, t_max=T_MAX, rule=rule)
        n = sum(case.sizes)
        same, total = same + frac * n, total + n
        if frac == 1.0:
            errors.extend(err)
    errors = np.array(errors)
    assert same / total >= 0.95
    assert len(errors) > 75 * SEEDS_PER_STRUCTURE
    assert np.mean(errors <= 3 * dt) >= 0.95


def test_li_readout_integrates_without_spiking():
    net = es.Network([es.dense_layer([[3.0]], tau_mem=0.01, tau_syn=0.005)])
    inputs = es.Spikes(jnp.array([0.0]), jnp.array([0]))
    dt = 1e-5
    d = es.simulate_discrete(net, inputs, dt=dt, t_max=0.03, li_readout=True)
    assert float(jnp.sum(d.trains[-1])) == 0.0
    # Peak of the PSP 3 k(t): for tau_mem = 2 tau_syn, max k = 1/4 at t = tau_mem ln 2.
    v = np.asarray(d.output_voltage)[:, 0]
    assert abs(v.max() - 0.75) < 1e-3
    assert abs((np.argmax(v) + 1) * dt - 0.01 * np.log(2)) < 2e-4


def test_spikes_to_train_bins_by_step():
    spikes = es.Spikes(
        jnp.array([0.0, 0.00149, 0.0015, 0.01, jnp.inf]), jnp.array([0, 1, 1, 0, -1])
    )
    train = np.asarray(es.spikes_to_train(spikes, 2, 1e-3, 5))
    assert train.shape == (5, 2)
    assert train[0, 0] == 1 and train[1, 1] == 2 and train.sum() == 3  # 10 ms is past the end
    # A batch [2, 3, k] is each record binned alone.
    times = np.random.default_rng(0).uniform(0, 6e-3, (2, 3, 7))
    indices = np.random.default_rng(1).integers(-1, 2, (2, 3, 7))
    batch = np.asarray(es.spikes_to_train(es.Spikes(times, indices), 2, 1e-3, 5))
    assert batch.shape == (2, 3, 5, 2)
    for a, b in np.ndindex(2, 3):
        one = es.spikes_to_train(es.Spikes(times[a, b], indices[a, b]), 2, 1e-3, 5)
        np.testing.assert_array_equal(batch[a, b], np.asarray(one))


def test_decoders():
    train = jnp.zeros((4, 3)).at[1, 0].set(1).at[3, 0].set(1).at[2, 2].set(1)
    np.testing.assert_allclose(es.first_spike_time(train, 0.5), [1.0, np.inf, 1.5])
    np.testing.assert_allclose(es.spike_count(train), [2, 0, 1])
    np.testing.assert_allclose(es.max_voltage(train * 2.0), [2, 0, 2])


def test_latency_and_rate_encoders():
    s = es.latency_encode(jnp.array([[0.0, 0.5, 1.0]]), 0.0, 0.02, bias_time=0.001)
    np.testing.assert_allclose(s.times, [[0.0, 0.01, 0.02, 0.001]])
    np.testing.assert_array_equal(s.indices, [[0, 1, 2, 3]])
    r = es.rate_encode(jax.random.PRNGKey(0), jnp.array([0.0, 1.0]), 4000, max_prob=0.5)
    assert r.shape == (4000, 2)
    assert float(r[:, 0].sum()) == 0.0 and abs(float(r[:, 1].mean()) - 0.5) < 0.03


@pytest.mark.parametrize(
    ("surrogate", "at_zero"),
    [(es.SuperSpike(25.0), 1.0), (es.Sigmoid(10.0), 2.5), (es.ArcTan(2.0), 1.0)],
)
def test_surrogates_step_forward_smooth_backward(surrogate, at_zero):
    x = jnp.array([-0.1, 0.0, 0.1])
    np.testing.assert_array_equal(surrogate(x), [0.0, 1.0, 1.0])
    g = jax.vmap(jax.grad(surrogate))(x)
    np.testing.assert_allclose(g, surrogate.derivative(x))
    assert abs(float(g[1]) - at_zero) < 1e-12
    assert float(g[0]) < float(g[1]) and float(g[2]) < float(g[1])


def test_surrogate_gradient_trains_a_weight():
    """The loss on the output voltage depends on the hidden spikes only through the
    surrogate: its gradient w.r.t. the input weights must be non-zero and finite."""
    net = _net(np.random.default_rng(3))

    def loss(n):
        d = es.simulate_discrete(n, INPUTS, dt=5e-4, t_max=0.03, li_readout=True)
        return jnp.sum(es.max_voltage(d.output_voltage))

    g = jax.grad(loss)(net)
    w = np.asarray(g.layers[0].weights)
    assert np.all(np.isfinite(w)) and np.any(w != 0)


def test_bad_step_is_refused():
    net = _net(np.random.default_rng(0))
    with pytest.raises(ValueError, match="dt"):
        es.simulate_discrete(net, INPUTS, dt=-1e-4, t_max=0.03)
    with pytest.raises(ValueError, match="inputs must have shape"):
        es.simulate_discrete(net, jnp.zeros((1, 10, 3)), dt=1e-3, t_max=0.03)


def test_cli_discrete_engine_matches_event_engine(tmp_path):
    from test_cli import NET

    path = tmp_path / "net.json"
    path.write_text(json.dumps(NET))

    def run(*args):
        p = subprocess.run(
            [sys.executable, "-m", "eventsnn", "simulate", str(path), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    ev, di = run(), run("--engine", "discrete", "--dt", "1e-6")  # a shallow crossing at 11 ms
    for se, sd in zip(ev["samples"], di["samples"]):
        for le, ld in zip(se["layers"], sd["layers"]):
            assert le["indices"] == ld["indices"]
            np.testing.assert_allclose(ld["times"], le["times"], atol=3e-5)


def _spyx_reference(w1, w2, x, alpha, beta):
    """Spyx's CuBaLIF -> LI step rule written out in NumPy (time-major input ``[T, B, n]``):
    spike from the previous V, subtract the threshold, I = alpha I + x, V = beta V + I;
    readout V = beta V + x. Returns the readout voltages ``[T, B, n_out]`` in the dtype of
    `w1`."""
    t_steps, batch, _ = x.shape
    v = np.zeros((batch, w1.shape[1]), w1.dtype)
    i = np.zeros_like(v)
    v_out = np.zeros((batch, w2.shape[1]), w1.dtype)
    trace = []
    for t in range(t_steps):
        s = (v - 1.0 >= 0).astype(float)
        v = v - s
        i = alpha * i + x[t] @ w1
        v = beta * v + i
        v_out = beta * v_out + s @ w2
        trace.append(v_out.copy())
    return np.stack(trace)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_spyx_step_rule_reproduces_spyx_readout_traces(dtype, atol):
    """float32: the decay factors rounded once from float64, as Spyx takes them from the
    host; a float32 factor off by one ulp drifts the traces past 1e-5 within 60 steps."""
    rng = np.random.default_rng(0)
    dt, steps, batch = 0.5e-3, 60, 16
    w1 = rng.normal(0.3, 0.5, (5, 120)).astype(dtype)
    w2 = rng.normal(0.0, 0.3, (120, 3)).astype(dtype)
    train = np.zeros((batch, steps, 5), dtype)
    for b in range(batch):  # each channel spikes once, at a random step
        train[b, rng.integers(0, steps, 5), np.arange(5)] = 1.0
    net = es.Network(
        [
            es.dense_layer(jnp.asarray(w1), tau_mem=10e-3, tau_syn=5e-3),
            es.dense_layer(jnp.asarray(w2), tau_mem=10e-3, tau_syn=5e-3),
        ]
    )
    res = es.simulate_discrete(
        net, jnp.asarray(train), dt=dt, t_max=steps * dt, rule=es.SpyxStep(), li_readout=True
    )
    alpha, beta = (dtype(np.exp(-dt / tau)) for tau in (5e-3, 10e-3))
    ref = _spyx_reference(w1, w2, np.swapaxes(train, 0, 1), alpha, beta)
    got = np.swapaxes(np.asarray(res.output_voltage), 0, 1)
    assert got.dtype == dtype
    assert np.abs(ref).max() > 0.5 and np.asarray(res.trains[0]).sum() > batch  # activity
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


@pytest.mark.parametrize("rule, delay", [(es.SpyxStep(), 0.0), (es.ForwardEuler(), 1e-3)])
def test_li_readout_value_and_gradient_match_the_split_computation(rule, delay):
    """The LI readout runs inside the scan when not differentiated and after it (one matrix
    product) for gradients: both orders give the same voltages and the same gradients."""
    from eventsnn.discrete.simulate import _split_outputs

    rng = np.random.default_rng(0)
    weights = (
        jnp.asarray(rng.normal(0.5, 0.5, (4, 20))),
        jnp.asarray(rng.normal(0, 0.5, (20, 3))),
    )
    train = jnp.asarray((rng.random((8, 40, 4)) < 0.1).astype(float))

    def net_of(w):
        return es.Network(
            [
                es.dense_layer(w[0], tau_mem=10e-3, tau_syn=5e-3),
                es.dense_layer(w[1], tau_mem=10e-3, tau_syn=5e-3, delay=delay),
            ]
        )

    def readout(w, split):
        if split:
            outs = _split_outputs(
                (net_of(w), jnp.swapaxes(train, 0, 1)), 0.5e-3, rule, es.SuperSpike()
            )
            return jnp.swapaxes(outs[-1][1], 0, 1)
        res = es.simulate_discrete(
            net_of(w), train, dt=0.5e-3, t_max=20e-3, rule=rule, li_readout=True
        )
        return res.output_voltage

    def loss(w, split):
        v = readout(w, split)
        return jnp.sum(jnp.max(v, axis=1) * jnp.arange(3)) + 1e-3 * jnp.sum(v**2)

    np.testing.assert_allclose(readout(weights, False), readout(weights, True), atol=1e-12)
    assert float(jnp.max(jnp.abs(readout(weights, False)))) > 0.5  # the readout moves
    for a, b in zip(jax.grad(loss)(weights, False), jax.grad(loss)(weights, True)):
        assert float(jnp.max(jnp.abs(a))) > 0
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
