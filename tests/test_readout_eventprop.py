"""Multi-spike training losses end to end through EventProp: a recurrent multi-spike
hidden layer (windowed engine, exact EventProp) read by a leaky-integrator readout (its
maximum or its integral) or by spiking outputs (weighted spike counts), plus the
firing-rate penalty on the hidden spikes. Gradients against central finite differences
(float64) and against EventProp over the event loop (``windows=None``)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eventsnn as es
from eventsnn import loss as L
from eventsnn.readout import LIReadout, integral, peak

MS = 1e-3
T_MAX = 25 * MS
N_IN, HIDDEN, N_OUT = 3, 6, 3
WINDOWS = es.Windows(arrivals=16, recurrent_arrivals=16, spikes=4, window_spikes=16, chunk=8)
LABELS = jnp.array([0, 2])
BAND = dict(lower=0.75, upper=2.6)  # spikes per run: some hidden neurons outside on each side


def model():
    """``(hidden network, readout)``: the hidden layer's neurons differ in every parameter;
    the readout's weights and time constants also serve the spiking outputs of ``count``."""
    rng = np.random.default_rng(11)
    hidden = es.dense_layer(
        rng.normal(1.3, 0.7, (N_IN, HIDDEN)),
        recurrent_weights=rng.normal(0.0, 0.5, (HIDDEN, HIDDEN)),
        tau_mem=np.linspace(9, 12, HIDDEN) * MS,
        tau_syn=np.linspace(4, 6, HIDDEN) * MS,
        v_th=np.linspace(0.9, 1.1, HIDDEN),
        delay=0.5 * MS,
    )
    w_out = rng.normal(0.4, 1.0, (HIDDEN, N_OUT))
    ro = LIReadout(w_out, tau_mem=np.array([10, 8, 12]) * MS, tau_syn=np.array([5, 8, 3]) * MS)
    return es.Network([hidden]), ro


def inputs():
    rng = np.random.default_rng(12)
    times = rng.uniform(0, 15 * MS, (2, 10))
    return es.Spikes(times, rng.integers(0, N_IN, (2, 10)))


def _simulate(net, x, windows):
    return es.simulate(
        net, x, t_max=T_MAX, max_spikes=32, windows=windows, method="eventprop",
        check_overflow=False,
    )  # fmt: skip


TERMS = ("max", "integral", "count", "rate")


def loss(params, times, indices, c, windows):
    """``sum_k c[k] term_k`` over `TERMS`: the voltage cross-entropy of the readout's
    maximum and of its mean, the count cross-entropy of spiking outputs (the readout's
    weights and time constants), the hidden firing-rate penalty. Returns the loss and the
    simulation results (hidden, outputs)."""
    net, ro = params
    res = _simulate(net, es.Spikes(times, indices), windows)
    hidden = res.layers[0]
    ce_max = L.voltage_cross_entropy(peak(ro, hidden, T_MAX, presorted=True)[0], LABELS)
    mean = jax.vmap(lambda h: integral(ro, h, T_MAX))(hidden) / (2 * MS)
    ce_integral = L.voltage_cross_entropy(mean, LABELS)
    lif = es.LIFParams(N_OUT, tau_mem=ro.tau_mem, tau_syn=ro.tau_syn)
    # The output layer on the event loop: it compiles several times faster than windows.
    res_out = _simulate(es.Network([es.Layer(3.0 * ro.weights, lif)]), hidden, None)
    ce_count = L.spike_count_cross_entropy(
        res_out.output, LABELS, n_classes=N_OUT, t_max=T_MAX, scale=2.0
    )
    rate = L.firing_rate_penalty(hidden, HIDDEN, t_max=T_MAX, **BAND)
    terms = jnp.stack([ce_max, ce_integral, ce_count, rate])
    return jnp.sum(c * terms), (res, res_out)


# One compile per engine serves every term (c is traced) and the finite differences.
value_and_grad = eqx.filter_jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))


def _leaves(net, ro):
    layer = net.layers[0]
    return {
        "weights": layer.weights,
        "recurrent_weights": layer.recurrent_weights,
        "tau_mem": layer.params.tau_mem,
        "tau_syn": layer.params.tau_syn,
        "v_th": layer.params.v_th,
        "readout.weights": ro.weights,
        "readout.tau_mem": ro.tau_mem,
        "readout.tau_syn": ro.tau_syn,
    }


def _replace(params, name, value):
    net, ro = params
    if name.startswith("readout."):
        return net, eqx.tree_at(lambda r: getattr(r, name[8:]), ro, value)
    where = {
        "weights": lambda n: n.layers[0].weights,
        "recurrent_weights": lambda n: n.layers[0].recurrent_weights,
    }.get(name, lambda n: getattr(n.layers[0].params, name))
    return eqx.tree_at(where, net, value), ro


def _records(records):
    return [np.asarray(r.layers[k].indices) for r in records for k in range(len(r.layers))]


def _unit(k):
    return np.eye(len(TERMS))[k]


def test_the_case_exercises_every_term():
    """Several spikes per hidden neuron, hidden counts on both sides of the penalty's
    band, output spikes to count; the windowed record is sorted as peak(presorted=True)
    (used in the loss) needs."""
    params, x = model(), inputs()
    _, (res, res_out) = value_and_grad(params, x.times, x.indices, _unit(0), WINDOWS)[0]
    assert not bool(np.asarray(res.overflow).any() | np.asarray(res_out.overflow).any())
    hidden = res.layers[0]
    per_neuron = np.asarray(L.weighted_spike_counts(hidden, HIDDEN, T_MAX))
    idx = np.asarray(hidden.indices)
    assert max(np.sum(row == j) for row in idx for j in range(HIDDEN)) >= 4
    assert np.any(per_neuron > BAND["upper"]) and np.any(per_neuron < BAND["lower"])
    assert int(np.asarray(res_out.counts).sum()) >= 2
    np.testing.assert_array_equal(
        peak(params[1], hidden, T_MAX, presorted=True)[0], peak(params[1], hidden, T_MAX)[0]
    )


@pytest.mark.parametrize("k", range(len(TERMS)), ids=TERMS)
def test_gradients_match_finite_differences(k):
    """One term alone (the others weighted 0): the windowed EventProp gradient w.r.t. the
    hidden weights, recurrent weights, tau_mem, tau_syn, v_th, the readout's parameters
    and the input times against central differences along random directions of one
    parameter at a time (in its scale), skipped as in `gradcheck.fd_check` where a step
    changes the spikes or curves the loss too much; most must be checked."""
    params, x = model(), inputs()
    times, c = jnp.asarray(x.times), _unit(k)
    (value, records), (g_params, g_t) = value_and_grad(params, times, x.indices, c, WINDOWS)
    grads, point = _leaves(*g_params), _leaves(*params)
    rng = np.random.default_rng(3 + k)
    checked = total = 0
    for name in [*point, "times"]:
        for _ in range(2):
            total += 1
            if name == "times":
                d_t, d = rng.normal(size=times.shape) * MS, None
            else:
                p = np.asarray(point[name])
                d_t, d = np.zeros(times.shape), rng.normal(size=p.shape) * np.abs(p)
            eps = 1e-6

            def at(h, name=name, d=d, d_t=d_t):
                moved = params if d is None else _replace(params, name, point[name] + h * d)
                (value, records), _ = value_and_grad(moved, times + h * d_t, x.indices, c, WINDOWS)
                return float(value), _records(records)

            fd, fd_small, records_moved = [], [], []
            for h, out in ((eps, fd), (eps / 4, fd_small)):
                (lp, rp), (lm, rm) = at(h), at(-h)
                out.append((lp - lm) / (2 * h))
                records_moved += [rp, rm]
            same = all(
                np.array_equal(a, b) for r in records_moved for a, b in zip(r, _records(records))
            )
            fd, fd_small = fd[0], fd_small[0]
            bound = 1e-6 * max(abs(fd), 1e-3 * abs(float(value)))
            # Skipped: a spike appears, vanishes or swaps within the step, or the loss
            # curves too much for the step (a near-grazing crossing: fd(eps) != fd(eps/4)).
            if not same or abs(fd - fd_small) > bound:
                continue
            directional = float(jnp.sum(g_t * d_t))
            if d is not None:
                directional += float(jnp.sum(grads[name] * d))
            assert abs(directional - fd) <= bound, (name, directional, fd)
            checked += 1
    assert checked >= total - 3, (checked, total)
    if TERMS[k] != "rate":  # the penalty does not see the readout
        assert np.any(np.asarray(grads["readout.weights"]) != 0)


@pytest.mark.slow
def test_same_gradients_as_the_event_loop():
    """EventProp over the windows and over the event loop (``windows=None``): the same
    loss and gradients, every term alone, to 1e-9 of each array's largest entry."""
    params, x = model(), inputs()
    for k, term in enumerate(TERMS):
        (value, _), (g_params, g_t) = value_and_grad(params, x.times, x.indices, _unit(k), WINDOWS)
        (loop_value, _), (g_loop, g_loop_t) = value_and_grad(
            params, x.times, x.indices, _unit(k), None
        )
        np.testing.assert_allclose(float(loop_value), float(value), rtol=1e-12, err_msg=term)
        grads = {**_leaves(*g_params), "times": g_t}
        for name, gl in {**_leaves(*g_loop), "times": g_loop_t}.items():
            g, gl = np.asarray(grads[name]), np.asarray(gl)
            tol = 1e-9 * max(np.max(np.abs(gl)), 1e-12)
            np.testing.assert_allclose(g, gl, rtol=0, atol=tol, err_msg=f"{term} {name}")
