"""Exact gradients: EventProp and the analytic method against central finite differences
(float64) and against each other, on every kind of network the event core simulates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gradcheck import fd_check, gradients, loss_fn
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_event_core import STRUCTURES, build, cases
from test_event_core import T_MAX as CASE_T_MAX

import eventsnn as es
from eventsnn.neuron import kernel

T_MAX = 0.04


def psp_peak(tau_mem, tau_syn):
    t = np.linspace(0, 10 * max(tau_mem, tau_syn), 20001)
    return float(np.max(kernel(t, tau_mem, tau_syn)))


def net_of(rng, sizes, *, ratio=2.0, tau_mem=0.01, rec_layer=None, rec_scale=0.4, **params):
    """Random layers; weights scaled by the PSP peak so activity is alike for any ratio."""
    scale = 0.25 / psp_peak(tau_mem, tau_mem / ratio)
    layers = []
    for k, (n_in, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = scale * rng.normal(1.6 if k == 0 else 1.0, 0.8, (n_in, n))
        rec = rng.normal(0, rec_scale, (n, n)) if k == rec_layer else None
        layers.append(
            es.dense_layer(
                w, recurrent_weights=rec, tau_mem=tau_mem, tau_syn=tau_mem / ratio, **params
            )
        )
    return es.Network(layers)


def inputs_of(times, channels):
    return es.Spikes(jnp.asarray(times, float), jnp.asarray(channels))


INPUTS = inputs_of([0.001, 0.003, 0.002, 0.006, 0.0045], [0, 1, 2, 0, 1])


def check(net, inputs=INPUTS, seeds=(0, 1), max_spikes=64, smooth=True):
    """FD along a few directions; the network must spike in every layer."""
    res = es.simulate(net, inputs, t_max=T_MAX, max_spikes=max_spikes)
    assert np.all(np.asarray(res.counts) > 0), f"every layer must spike, got {res.counts}"
    checked = [
        fd_check(net, inputs, [1.0, -0.5], T_MAX, seed=s, max_spikes=max_spikes, smooth=smooth)
        for s in seeds
    ]
    assert all(c is not None for c in checked)


def test_three_layers():
    check(net_of(np.random.default_rng(0), (3, 6, 5, 2)))


def test_recurrent():
    check(net_of(np.random.default_rng(1), (3, 6, 2), rec_layer=0))


def test_recurrent_with_delay():
    rng = np.random.default_rng(1)
    layers = list(net_of(rng, (3, 6, 2), rec_layer=0).layers)
    layers[0] = es.Layer(layers[0].weights, layers[0].params, layers[0].recurrent_weights, 1e-3)
    layers[1] = es.Layer(layers[1].weights, layers[1].params, None, 5e-4)
    check(es.Network(layers))


def test_v_leak_half():
    check(net_of(np.random.default_rng(2), (3, 6, 2), v_leak=0.5))


def test_v_reset_negative():
    check(net_of(np.random.default_rng(3), (3, 6, 2), v_reset=-0.5))


def test_refractory_period():
    check(net_of(np.random.default_rng(4), (3, 6, 2), t_refrac=2e-3, rec_layer=0))


def test_equal_time_constants():
    check(net_of(np.random.default_rng(5), (3, 6, 2), ratio=1.0))


def test_ratio_3_7():
    check(net_of(np.random.default_rng(6), (3, 6, 2), ratio=3.7))


def test_ratio_below_one():
    check(net_of(np.random.default_rng(7), (3, 6, 2), ratio=0.4, tau_mem=0.004))


def test_plain_kernel_recurrent_refractory():
    """The plain PSP kernel (`NewtonSolver(smooth=False)`) through the event core and both
    backward passes: same spikes as the smooth form, gradients that match FD."""
    net = net_of(np.random.default_rng(4), (3, 6, 2), ratio=3.7, t_refrac=2e-3, rec_layer=0)
    runs = [
        es.simulate(net, INPUTS, t_max=T_MAX, max_spikes=64, solver=es.NewtonSolver(smooth=s))
        for s in (True, False)
    ]
    for a, b in zip(runs[0].layers, runs[1].layers):
        np.testing.assert_array_equal(np.asarray(a.indices), np.asarray(b.indices))
        np.testing.assert_allclose(np.asarray(a.times), np.asarray(b.times), rtol=0, atol=1e-12)
    check(net, smooth=False)


def test_plain_kernel_is_refused_for_close_time_constants():
    net = net_of(np.random.default_rng(5), (3, 6, 2), ratio=1.05)
    with pytest.raises(ValueError, match=r"layers\[0\]\.tau_syn.*smooth=True"):
        es.simulate(net, INPUTS, t_max=T_MAX, max_spikes=64, solver=es.NewtonSolver(smooth=False))


def test_two_simultaneous_input_spikes():
    inputs = inputs_of([0.002, 0.002, 0.005], [0, 1, 2])
    net = net_of(np.random.default_rng(9), (3, 5, 2))
    check(net, inputs)


def test_neuron_spiking_three_times():
    net = es.Network(
        [
            es.dense_layer([[9.0], [4.0]], tau_mem=0.01, tau_syn=0.005, t_refrac=5e-4),
            es.dense_layer([[2.5, 1.5]], tau_mem=0.01, tau_syn=0.005),
        ]
    )
    inputs = inputs_of([0.001, 0.004], [0, 1])
    res = es.simulate(net, inputs, t_max=T_MAX, max_spikes=16)
    assert int(res.counts[0]) >= 3
    check(net, inputs)


def test_input_time_gradient_matches_shift_identity():
    """Shifting every input by s shifts every spike by s (no leak-free offsets): for a loss
    sum_j c_j t_j the sum of input-time gradients is sum_j c_j over spiking outputs."""
    net = net_of(np.random.default_rng(9), (3, 6, 2))
    c = jnp.array([1.0, -0.5])
    res = es.simulate(net, INPUTS, t_max=T_MAX, max_spikes=32)
    firing = np.isfinite(np.asarray(res.output.first_times(2)))
    for method in ("eventprop", "analytic"):
        loss = loss_fn(method, c, T_MAX, 32, hidden_weight=0.0)
        g_t = jax.grad(lambda t, loss=loss: loss(net, t, INPUTS.indices)[0])(INPUTS.times)
        np.testing.assert_allclose(
            float(jnp.sum(g_t)), float(np.sum(np.asarray(c)[firing])), rtol=1e-9
        )


@pytest.mark.parametrize("method", ["eventprop", "analytic"])
def test_grazing_and_silent_neurons_give_finite_gradients(method):
    """Weight 4 * (1 + 1e-12): the PSP peak touches threshold (du/dt ~ 0 at the crossing);
    the second neuron never spikes."""
    w_crit = 4.0  # ratio 2: peak of a unit PSP is 1/4
    net = es.Network([es.dense_layer([[w_crit * (1 + 1e-12), 0.5]], tau_mem=0.01, tau_syn=0.005)])
    inputs = inputs_of([0.001], [0])
    res = es.simulate(net, inputs, t_max=T_MAX, max_spikes=4)
    assert int(res.counts[0]) == 1
    loss = loss_fn(method, jnp.array([1.0, 1.0]), T_MAX, 4)
    g_net, g_t = jax.grad(lambda n, t: loss(n, t, inputs.indices)[0], argnums=(0, 1))(
        net, inputs.times
    )
    for leaf in jax.tree.leaves((g_net, g_t)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert float(g_net.layers[0].weights[0, 1]) == 0.0  # silent neuron: no gradient


def test_check_grads_reverse_mode():
    """jax.test_util.check_grads on a small network, w.r.t. weights and input times."""
    from jax.test_util import check_grads

    net = net_of(np.random.default_rng(11), (2, 4, 2))
    inputs = inputs_of([0.001, 0.003, 0.002], [0, 1, 0])
    res = es.simulate(net, inputs, t_max=T_MAX, max_spikes=16)
    assert np.all(np.asarray(res.counts) > 0)
    for method in ("eventprop", "analytic"):
        loss = loss_fn(method, jnp.array([1.0, 0.5]), T_MAX, 16)

        def f(w0, w1, times, loss=loss):
            layers = (
                es.Layer(w0, net.layers[0].params),
                es.Layer(w1, net.layers[1].params),
            )
            return loss(es.Network(layers), times, inputs.indices)[0]

        args = (net.layers[0].weights, net.layers[1].weights, inputs.times)
        check_grads(f, args, order=1, modes=["rev"], eps=1e-6, atol=1e-7, rtol=1e-6)


def test_jit_vmap_grad_compose():
    """grad(vmap), vmap(grad) and jit agree with the per-sample gradients."""
    net = net_of(np.random.default_rng(11), (3, 5, 2))
    batch = es.Spikes(
        jnp.array([[0.001, 0.003, 0.002], [0.002, 0.001, 0.004]]), jnp.array([[0, 1, 2]] * 2)
    )
    c = jnp.array([1.0, -0.5])

    def sample_loss(n, times, idx):
        res = es.simulate(
            n, es.Spikes(times, idx), t_max=T_MAX, max_spikes=32, check_overflow=False
        )
        return es.linear_spike_time_loss(res.output, c)

    per_sample = [jax.grad(sample_loss)(net, batch.times[b], batch.indices[b]) for b in range(2)]
    summed = jax.tree.map(lambda a, b: a + b, *per_sample)
    g_of_vmap = jax.jit(
        jax.grad(
            lambda n: jnp.sum(jax.vmap(sample_loss, (None, 0, 0))(n, batch.times, batch.indices))
        )
    )(net)
    vmap_of_g = jax.vmap(jax.grad(sample_loss), (None, 0, 0))(net, batch.times, batch.indices)
    for a, b, v in zip(
        jax.tree.leaves(summed), jax.tree.leaves(g_of_vmap), jax.tree.leaves(vmap_of_g)
    ):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(jnp.sum(v, 0), a, rtol=1e-10, atol=1e-14)


def test_time_constants_are_trainable():
    """Gradients w.r.t. tau_mem, tau_syn and v_th are non-zero and agree across methods."""
    net = net_of(np.random.default_rng(12), (3, 6, 2))
    grads = gradients(net, INPUTS, [1.0, -0.5], T_MAX)
    for field in ("tau_mem", "tau_syn", "v_th"):
        g = np.asarray(getattr(grads["eventprop"][0].layers[0].params, field))
        assert np.any(np.abs(g) > 0), field


# Random networks as in the event-core tests: both methods against central differences
# along random directions, and against each other.


@settings(max_examples=16)
@given(case=cases(structures=STRUCTURES[1::2]))
def test_gradients_on_random_networks(case):
    net, inputs = build(case)
    res = es.simulate(net, inputs, t_max=CASE_T_MAX, max_spikes=64, check_overflow=False)
    assume(not bool(np.asarray(res.overflow).any()))
    assume(int(np.asarray(res.counts)[-1]) > 0)  # the loss must see output spikes
    coefficients = np.linspace(1.0, -0.5, net.layers[-1].size)
    for seed in (0, 1):
        assume(
            fd_check(
                net, inputs, coefficients, CASE_T_MAX, seed=seed, max_spikes=64, require=False
            )
            is not None
        )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    ratio=st.sampled_from([1.0, 2.0, 0.7, 3.3]),
    v_leak=st.sampled_from([0.0, 0.3]),
    smooth=st.booleans(),
)
def test_ttfs_eventprop_matches_analytic_and_finite_differences(seed, ratio, v_leak, smooth):
    """Single-spike feed-forward layers run on the parallel TTFS path; method="eventprop"
    gives them EventProp's closed-form adjoint (a custom VJP), "analytic" autodiff. Every
    gradient (weights, neuron parameters, input times) must agree, and match FD; with
    either form of the PSP kernel (the plain one only for time constants apart)."""
    smooth = smooth or ratio == 1.0
    rng = np.random.default_rng(seed)
    net = net_of(rng, (3, 8, 3), ratio=ratio, v_leak=v_leak)
    net = es.Network([es.Layer(x.weights, x.params, single_spike=True) for x in net.layers])
    times = jnp.asarray(rng.uniform(0, 8e-3, 5))
    inputs = inputs_of(times, rng.integers(0, 3, 5))
    res = es.simulate(net, inputs, t_max=T_MAX, max_spikes=8)
    assume(np.all(np.asarray(res.counts) > 0))
    g = gradients(net, inputs, [1.0, -0.5, 0.3], T_MAX, max_spikes=8, smooth=smooth)
    for a, b in zip(jax.tree.leaves(g["eventprop"]), jax.tree.leaves(g["analytic"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-12)
    fd_check(
        net, inputs, [1.0, -0.5, 0.3], T_MAX, seed=seed, max_spikes=8, require=False, smooth=smooth
    )
