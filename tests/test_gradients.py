"""Exact gradients: EventProp and the analytic method against central finite differences
(float64) and against each other, on every kind of network the event core simulates."""

import collections
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from budget import examples
from gradcheck import (
    FD_RTOL,
    INPUT_TIMES,
    assert_methods_agree,
    fd_check,
    gradients,
    loss_fn,
    random_direction,
    reference_loss,
    scale_of,
)
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from test_event_core import PARAMS, STRUCTURES, build, cases, reference
from test_event_core import T_MAX as CASE_T_MAX

import eventsnn as es
from eventsnn.neuron import kernel, plain_kernel_ok

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


def fields_of(net):
    """The leaves a per-parameter FD check can move both ways: all but a ``t_refrac`` that
    is 0 somewhere (a kink, checked one-sided)."""
    fields = ["weights", *PARAMS, INPUT_TIMES]
    if any(layer.recurrent_weights is not None for layer in net.layers):
        fields.append("recurrent_weights")
    if any(np.any(np.asarray(layer.params.t_refrac) == 0) for layer in net.layers):
        fields.remove("t_refrac")
    return fields


def check(net, inputs=INPUTS, seeds=(0, 1), max_spikes=64, smooth=True, fast_ttfs=True):
    """FD along random directions (all parameters at once) and along each parameter alone
    (every layer's entries of it), both methods; the network must spike in every layer and
    every direction must be checkable."""
    c = [1.0, -0.5]
    loss = loss_fn("analytic", c, T_MAX, max_spikes, smooth=smooth, fast_ttfs=fast_ttfs)
    counts = np.asarray(loss(net, inputs.times, inputs.indices)[1].counts)
    assert np.all(counts > 0), f"every layer must spike, got {counts}"
    directions = [random_direction(net, inputs, s) for s in seeds]
    directions += [random_direction(net, inputs, 0, only=f) for f in fields_of(net)]
    kw = dict(max_spikes=max_spikes, smooth=smooth, fast_ttfs=fast_ttfs)
    assert fd_check(net, inputs, c, T_MAX, directions=directions, **kw) == len(directions)


def recurrent_with_delay():
    layers = list(net_of(np.random.default_rng(1), (3, 6, 2), rec_layer=0).layers)
    layers[0] = es.Layer(layers[0].weights, layers[0].params, layers[0].recurrent_weights, 1e-3)
    layers[1] = es.Layer(layers[1].weights, layers[1].params, None, 5e-4)
    return es.Network(layers)


def single_spike_recurrent():
    """Single-spike layers, the first recurrent (it never takes the TTFS path)."""
    base = net_of(np.random.default_rng(13), (3, 6, 2), rec_layer=0)
    layers = [
        es.Layer(x.weights, x.params, x.recurrent_weights, single_spike=True) for x in base.layers
    ]
    return es.Network(layers)


# Named networks (fast_ttfs of each): checked against FD of the project's forward pass and
# against FD of the independent reference (`test_gradients_match_reference_differences`).
NAMED = {
    "three_layers": (lambda: net_of(np.random.default_rng(0), (3, 6, 5, 2)), True),
    "recurrent": (lambda: net_of(np.random.default_rng(1), (3, 6, 2), rec_layer=0), True),
    "recurrent_with_delay": (recurrent_with_delay, True),
    "v_leak_half": (lambda: net_of(np.random.default_rng(2), (3, 6, 2), v_leak=0.5), True),
    "v_reset_negative": (lambda: net_of(np.random.default_rng(3), (3, 6, 2), v_reset=-0.5), True),
    "refractory_period": (
        lambda: net_of(np.random.default_rng(4), (3, 6, 2), t_refrac=2e-3, rec_layer=0),
        True,
    ),
    "single_spike_event_loop": (single_spike_recurrent, False),
}


def test_three_layers():
    check(NAMED["three_layers"][0]())


def test_recurrent():
    check(NAMED["recurrent"][0]())


def test_recurrent_with_delay():
    check(NAMED["recurrent_with_delay"][0]())


def test_v_leak_half():
    check(NAMED["v_leak_half"][0]())


def test_v_reset_negative():
    check(NAMED["v_reset_negative"][0]())


def test_refractory_period():
    """Includes the t_refrac derivative alone (every t_refrac > 0: two-sided)."""
    net = NAMED["refractory_period"][0]()
    assert "t_refrac" in fields_of(net)
    check(net)


def test_single_spike_layers_in_the_event_loop():
    """A single-spike neuron that fired rests forever; its time constants must still get
    finite, exact gradients from both methods (the analytic one gave NaN in tau_syn: the
    derivative of exp(-(rest end - t) / tau_syn) at rest end = inf). Every parameter alone."""
    check(NAMED["single_spike_event_loop"][0](), fast_ttfs=False)


def test_events_tied_in_time():
    """Hidden neuron 0 fires tonically from t = 0, together with an input spike at t = 0;
    its recurrent spike (delay 1 ms) arrives together with that input (delayed 1 ms too).
    Each event keeps the derivative of its own time (the analytic method split it between
    tied events: the derivative of jnp.minimum at a tie)."""
    hidden, out = recurrent_with_delay().layers
    hidden = eqx.tree_at(lambda x: x.params.v_leak, hidden, hidden.params.v_leak.at[0].set(1.3))
    net = es.Network([hidden, out])
    inputs = inputs_of([0.0, 0.003, 0.002, 0.006, 0.0045], [0, 1, 2, 0, 1])
    res = loss_fn("analytic", [1.0, -0.5], T_MAX, 64)(net, inputs.times, inputs.indices)[1]
    assert float(res.layers[0].times[0]) == 0.0 and int(res.layers[0].indices[0]) == 0
    check(net, inputs)


def test_refractory_period_zero_is_right_sided():
    """At t_refrac = 0 a refractory period cannot shrink: the gradients give the
    right-sided derivative, checked by one-sided differences with t_refrac moving up."""
    net = NAMED["recurrent"][0]()
    assert np.all(np.asarray(net.layers[0].params.t_refrac) == 0)
    c = [1.0, -0.5]
    grads = gradients(net, INPUTS, c, T_MAX, max_spikes=64)
    for g_net, _ in grads.values():  # neurons spike more than once: t_refrac matters
        assert np.any(np.abs(np.asarray(g_net.layers[0].params.t_refrac)) > 1e-3)
    directions = [
        jax.tree.map(np.abs, random_direction(net, INPUTS, s, only="t_refrac")) for s in (0, 1)
    ]
    assert fd_check(net, INPUTS, c, T_MAX, directions=directions, side=1, max_spikes=64) == 2


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


def _moved(net, inputs, direction, h):
    d_net, d_t = direction
    moved = jax.tree.map(lambda p, d: p + h * d, net, d_net)
    return moved, es.Spikes(inputs.times + h * d_t, inputs.indices)


@pytest.mark.parametrize("name", list(NAMED))
def test_gradients_match_reference_differences(name):
    """Central differences of the independent reference (`reference.py`: solve_ivp, DOP853
    at rtol = atol = 1e-13, float64) along random directions against both methods: an
    error in eventsnn's forward pass shows here, where FD of that forward pass cannot see
    it. The reference's spike times carry ~1e-15 s of noise: at steps 2e-6 and 1e-6 (in the
    parameters' scale) the differences agree with each other and with both methods to
    `FD_RTOL` (measured: a few 1e-9). The spike pattern must not change within the steps."""
    build_net, fast_ttfs = NAMED[name]
    net, c = build_net(), [1.0, -0.5]
    grads = gradients(net, INPUTS, c, T_MAX, max_spikes=64, fast_ttfs=fast_ttfs)
    value, spikes = reference_loss(net, INPUTS, c, T_MAX)
    assert all(len(t) > 0 for t, _ in spikes)
    for seed in (0, 1):
        direction = random_direction(net, INPUTS, seed)
        fd = []
        for h in (2e-6, 1e-6):
            (up, s_up), (down, s_down) = (
                reference_loss(*_moved(net, INPUTS, direction, x), c, T_MAX) for x in (h, -h)
            )
            for a, b, ref in zip(s_up, s_down, spikes):
                np.testing.assert_array_equal(a[1], ref[1])
                np.testing.assert_array_equal(b[1], ref[1])
            fd.append((up - down) / (2 * h))
        scale = max(abs(fd[1]), 1e-3 * abs(value))
        assert abs(fd[0] - fd[1]) <= FD_RTOL * scale, fd
        for method, (g_net, g_t) in grads.items():
            directional = sum(
                float(jnp.sum(g * d))
                for g, d in zip(jax.tree.leaves((g_net, g_t)), jax.tree.leaves(direction))
            )
            assert abs(directional - fd[1]) <= FD_RTOL * scale, (method, directional, fd)


def twins(recurrent: bool):
    """Hidden neurons 0 and 1 identical (same inputs, parameters and, when recurrent, same
    recurrent inputs), so they cross threshold at exactly the same times; their outgoing
    weights differ, so their gradients do. Recurrent: t_refrac > 0, so that a twin's
    refractory period does not end at the tie itself (a kink of its own)."""
    rng = np.random.default_rng(1 if recurrent else 0)
    kw = dict(rec_layer=0, t_refrac=2e-3) if recurrent else {}
    hidden, out = net_of(rng, (3, 6, 2), **kw).layers
    w = np.asarray(hidden.weights).copy()
    w[:, 1] = w[:, 0]
    rec = None
    if recurrent:
        rec = np.asarray(hidden.recurrent_weights).copy()
        rec[:, 1] = rec[:, 0]  # the twins' spikes reach both twins alike
    w_out = np.asarray(out.weights).copy()
    w_out[1] = 0.4 * w_out[0] + 0.3
    hidden = es.dense_layer(w, recurrent_weights=rec, **_params(hidden))
    return es.Network([hidden, es.Layer(jnp.asarray(w_out), out.params)])


def _params(layer):
    return {f: getattr(layer.params, f) for f in PARAMS}


def _one_entry(net, inputs, leaf, entry):
    """A direction moving one entry of ``leaf(net)`` by its own scale."""
    zero = jax.tree.map(np.zeros_like, net)
    value = np.asarray(leaf(net))
    d = np.zeros(value.shape)
    d[entry] = np.where(value[entry] != 0, np.abs(value[entry]), 1.0)
    return eqx.tree_at(leaf, zero, d), np.zeros(inputs.times.shape)


@pytest.mark.parametrize("recurrent", [False, True])
def test_twin_neurons_tie(recurrent):
    """Two identical neurons spike at exactly the same times; each keeps its own
    derivative. One-sided differences moving one twin (its input weights, tau_syn or
    threshold) must match both methods: feed-forward, on both sides (the loss is smooth,
    only the record order flips); with zero-delay recurrence the twins' jumps make the tie a
    kink, and the gradients are the one-sided derivative that keeps the recorded order
    (twin 0 first): exactly one side per direction is checked."""
    net, c = twins(recurrent), [1.0, -0.5]
    res = loss_fn("analytic", c, T_MAX, 64)(net, INPUTS.times, INPUTS.indices)[1]
    t, i = np.asarray(res.layers[0].times), np.asarray(res.layers[0].indices)
    np.testing.assert_array_equal(t[i == 0], t[i == 1])  # exact ties
    assert np.sum(i == 0) >= 1 and np.all(np.asarray(res.counts) > 0)
    layer = lambda n: n.layers[0]  # noqa: E731
    leaves = [
        (lambda n: layer(n).weights, lambda k: (slice(None), k)),
        (lambda n: layer(n).params.tau_syn, lambda k: k),
        (lambda n: layer(n).params.v_th, lambda k: k),
    ]
    directions = [_one_entry(net, INPUTS, leaf, at(k)) for leaf, at in leaves for k in (0, 1)]
    checked = [
        fd_check(
            net, INPUTS, c, T_MAX, directions=[d], side=side, keep_order=recurrent, max_spikes=64
        )
        for d in directions
        for side in (1, -1)
    ]
    if recurrent:
        per_direction = [up + down for up, down in zip(checked[::2], checked[1::2])]
        assert per_direction == [1] * len(directions), checked
    else:
        assert checked == [1] * len(checked), checked


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
    """Gradients w.r.t. tau_mem, tau_syn and v_th are non-zero in every layer, agree across
    methods entry by entry and match FD along each parameter alone."""
    net, c = net_of(np.random.default_rng(12), (3, 6, 2)), [1.0, -0.5]
    grads = gradients(net, INPUTS, c, T_MAX, max_spikes=64)
    assert_methods_agree(grads, (net, INPUTS.times))
    fields = ("tau_mem", "tau_syn", "v_th")
    for g_net, _ in grads.values():
        for layer, field in itertools.product(g_net.layers, fields):
            assert np.any(np.abs(np.asarray(getattr(layer.params, field))) > 0), field
    directions = [random_direction(net, INPUTS, s, only=f) for f in fields for s in (0, 1)]
    assert fd_check(net, INPUTS, c, T_MAX, directions=directions, max_spikes=64) == 6


# Random networks as in the event-core tests: both methods against central differences
# along random directions and along each parameter alone, and against each other. A
# direction is not checkable where a spike appears, vanishes or reorders within the step,
# or the loss is too curved (near-grazing crossings, ties): the tests count the checked
# directions and require most of them.


def test_gradients_on_random_networks():
    tally = collections.Counter()

    @settings(max_examples=examples(16, ci=3))
    @given(case=cases(structures=STRUCTURES[1::2]))
    def one(case):
        net, inputs = build(case)
        c = np.linspace(1.0, -0.5, net.layers[-1].size)
        res = loss_fn("analytic", c, CASE_T_MAX, 64)(net, inputs.times, inputs.indices)[1]
        assume(not bool(np.asarray(res.overflow).any()))
        assume(int(np.asarray(res.counts)[-1]) > 0)  # the loss must see output spikes
        directions = [random_direction(net, inputs, s) for s in (0, 1)]
        directions += [random_direction(net, inputs, 0, only=f) for f in fields_of(net)]
        tally["directions"] += len(directions)
        tally["checked"] += fd_check(
            net, inputs, c, CASE_T_MAX, directions=directions, max_spikes=64
        )

    one()
    assert tally["checked"] >= 0.9 * tally["directions"], tally


def test_ttfs_eventprop_matches_analytic_and_finite_differences():
    """Single-spike feed-forward layers run on the parallel TTFS path; method="eventprop"
    gives them EventProp's closed-form adjoint (a custom VJP), "analytic" autodiff. Every
    gradient (weights, neuron parameters, input times) must agree, and match FD; with
    either form of the PSP kernel (the plain one only for time constants apart)."""
    tally = collections.Counter()

    @settings(max_examples=examples(25, ci=12))
    @given(
        seed=st.integers(0, 10_000),
        ratio=st.sampled_from([1.0, 2.0, 0.7, 3.3]),
        v_leak=st.sampled_from([0.0, 0.3]),
        smooth=st.booleans(),
    )
    def one(seed, ratio, v_leak, smooth):
        smooth = smooth or ratio == 1.0
        rng = np.random.default_rng(seed)
        net = net_of(rng, (3, 8, 3), ratio=ratio, v_leak=v_leak)
        net = es.Network([es.Layer(x.weights, x.params, single_spike=True) for x in net.layers])
        times = jnp.asarray(rng.uniform(0, 8e-3, 5))
        inputs = inputs_of(times, rng.integers(0, 3, 5))
        c = [1.0, -0.5, 0.3]
        res = loss_fn("analytic", c, T_MAX, 8, smooth=smooth)(net, inputs.times, inputs.indices)
        assume(np.all(np.asarray(res[1].counts) > 0))
        directions = [random_direction(net, inputs, seed)]
        directions += [random_direction(net, inputs, seed, only=f) for f in fields_of(net)]
        tally["directions"] += len(directions)
        tally["checked"] += fd_check(
            net, inputs, c, T_MAX, directions=directions, max_spikes=8, smooth=smooth
        )

    one()
    assert tally["checked"] >= 0.9 * tally["directions"], tally


# float32, the training default, against float64 on random networks. Gradients in float32
# are exact up to rounding amplified by the conditioning of the spike times: the relative
# error of a crossing's slope is ~eps32 (|I| + |u|) / (tau_mem u'), at most ~1e2 eps32
# for the draws kept (the reference's diagnostics, as in the float32 forward test: slope
# > 10 / s, margin > 1e-3, end gap > 1e-5 s), and chains of spikes through the layers and
# the recurrence add about one more order: FLOAT32_RTOL = 1e3 eps32 = 1.2e-4 of the
# gradient's scale (its largest entry times that entry's parameter scale; measured at most
# 3e-5). The plain PSP kernel in float32 is compared with the smooth one in float64 (the
# same model; in float64 the two agree to rounding, `test_plain_kernel_recurrent_refractory`).
FLOAT32_RTOL = 1e3 * float(jnp.finfo(jnp.float32).eps)
FLOAT32_STRUCTURE = STRUCTURES[7]  # 3 layers, the middle one recurrent, delays


@settings(max_examples=examples(10, ci=2))
@given(
    st.booleans().flatmap(
        lambda smooth: st.tuples(
            st.just(smooth),
            cases(
                structures=(FLOAT32_STRUCTURE,),
                ratio_modes=("1", "2", "uniform", "near1") if smooth else ("2", "uniform"),
            ),
        )
    )
)
def test_float32_gradients_match_float64(drawn):
    smooth, case = drawn
    event("PSP kernel: " + ("smooth" if smooth else "plain"))
    _, diag = reference(case)
    assume(diag["margin"] > 1e-3 and diag["min_slope"] > 10.0 and diag["end_gap"] > 1e-5)
    assume(not diag["overflow"] and max(diag["n_spikes"]) < 64 and diag["n_spikes"][-1] > 0)
    net, inputs = build(case)
    net32, inputs32 = build(case, jnp.float32)
    assume(smooth or all(plain_kernel_ok(x.params.tau_mem, x.params.tau_syn) for x in net.layers))
    c = np.linspace(1.0, -0.5, net.layers[-1].size)
    g64 = gradients(net, inputs, c, CASE_T_MAX, max_spikes=64)
    g32 = gradients(net32, inputs32, c, CASE_T_MAX, max_spikes=64, smooth=smooth)
    scales = jax.tree.leaves(scale_of((net, inputs.times)))
    for method in g64:
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(g32[method])), method
        exact = [np.asarray(g) * s for g, s in zip(jax.tree.leaves(g64[method]), scales)]
        rounded = [
            np.asarray(g, np.float64) * s for g, s in zip(jax.tree.leaves(g32[method]), scales)
        ]
        size = max(np.max(np.abs(x)) for x in exact)
        error = max(np.max(np.abs(x - y)) for x, y in zip(exact, rounded))
        assert error <= FLOAT32_RTOL * size, (method, error / size)
