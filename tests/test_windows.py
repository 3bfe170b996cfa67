"""The windowed layer engine (`simulate(..., windows=Windows())`): the same spikes as the
event loop on random networks, the same EventProp gradients, and every budget cut handled
(a window too full is run again shorter, never truncated)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from budget import examples
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_event_core import MAX_SPIKES, T_MAX, build, cases

import eventsnn as es
from eventsnn.event.windows import Windows

# Small budgets, so that random networks exercise chunks of candidates, windows cut by the
# arrival budget, windows cut and run again for too many spikes, and zero-length windows.
TIGHT = Windows(arrivals=3, recurrent_arrivals=2, spikes=2, window_spikes=3, chunk=3)
ROOMY = Windows(arrivals=16, recurrent_arrivals=16, spikes=4, window_spikes=16, chunk=8)


def run(net, inputs, windows=None, **kw):
    return es.simulate(
        net, inputs, t_max=T_MAX, max_spikes=MAX_SPIKES, windows=windows, check_overflow=False,
        **kw,
    )  # fmt: skip


def assert_same_records(a, b, atol=1e-12):
    np.testing.assert_array_equal(np.asarray(a.counts), np.asarray(b.counts))
    for k, (x, y) in enumerate(zip(a.layers, b.layers)):
        np.testing.assert_array_equal(np.asarray(x.indices), np.asarray(y.indices), f"layer {k}")
        np.testing.assert_allclose(
            np.asarray(x.times), np.asarray(y.times), rtol=0, atol=atol, err_msg=f"layer {k}"
        )


@settings(max_examples=examples(60, ci=6))
@given(case=cases(), tight=st.booleans())
def test_same_spikes_as_the_event_loop(case, tight):
    net, inputs = build(case)
    loop = run(net, inputs)
    assume(not bool(np.asarray(loop.overflow).any()))
    windowed = run(net, inputs, TIGHT if tight else ROOMY)
    assert_same_records(loop, windowed)


def _loss(net, times, indices, windows, hidden_weight=0.3):
    """Output first-spike times plus every hidden spike time: every layer gets gradients."""
    res = run(net, es.Spikes(times, indices), windows)
    c = jnp.linspace(1.0, -0.5, net.layers[-1].size)
    out = es.linear_spike_time_loss(res.output, c)
    hidden = sum(
        es.linear_spike_time_loss(r, jnp.ones(layer.size), first_spike=False)
        for r, layer in zip(res.layers[:-1], net.layers[:-1])
    )
    return jnp.sum(out + hidden_weight * hidden), res


# One compile per engine gives the loss, its gradients and the record (the forward alone
# would be a second compile, and compiles are most of these tests' time).
_value_and_grad = eqx.filter_jit(
    lambda net, times, indices, windows: jax.value_and_grad(
        lambda n, t: _loss(n, t, indices, windows), argnums=(0, 1), has_aux=True
    )(net, times)
)


def _grad(net, times, indices, windows):
    """``((d loss / d net, d loss / d times), record)``."""
    (_, res), grads = _value_and_grad(net, times, indices, windows)
    return grads, res


def assert_close_trees(a, b, rtol):
    """Elementwise, relative to each leaf's largest entry, with an absolute floor."""
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(y)), jax.tree_util.keystr(path)
        tol = rtol * max(np.max(np.abs(x), initial=0.0), 1e-9)
        np.testing.assert_allclose(y, x, rtol=0, atol=tol, err_msg=jax.tree_util.keystr(path))


@settings(max_examples=examples(30, ci=3))
@given(case=cases(), tight=st.booleans())
def test_same_gradients_as_the_event_loop(case, tight):
    """EventProp over the windows (forward and backward) against EventProp over the event
    loop: every parameter and input time, to 1e-9 of each array's scale (float64)."""
    net, inputs = build(case)
    g_loop, loop = _grad(net, inputs.times, inputs.indices, None)
    assume(not bool(np.asarray(loop.overflow).any()))
    assume(int(np.asarray(loop.counts).sum()) > 0)
    g_win, windowed = _grad(net, inputs.times, inputs.indices, TIGHT if tight else ROOMY)
    assert_same_records(loop, windowed)
    assert_close_trees(g_loop, g_win, 1e-9)


def _named(kind):
    """Recurrent multi-spike networks the windows must differentiate exactly."""
    rng = np.random.default_rng(7)
    lif = dict(tau_mem=0.01, tau_syn=0.004)
    settings = {
        "recurrent": ((3, 6, 2), 0.6, {}, {}),
        "recurrent_delay_refractory": (
            (3, 6, 2),
            0.6,
            dict(delay=0.7e-3, t_refrac=1.5e-3),
            dict(delay=0.3e-3),
        ),
        "leak_reset_tonic": (
            (3, 5, 2),
            0.4,
            dict(v_leak=np.linspace(0.2, 1.3, 5), v_reset=-0.4, delay=1e-3),
            {},
        ),
    }
    (n_in, n, n_out), rec_std, hidden, output = settings[kind]
    w_in = rng.normal(0.5 if kind == "leak_reset_tonic" else 1.2, 0.6, (n_in, n))
    rec = rng.normal(0, rec_std, (n, n))
    return es.Network(
        [
            es.dense_layer(w_in, recurrent_weights=rec, **lif, **hidden),
            es.dense_layer(rng.normal(1.0, 0.6, (n, n_out)), **lif, **output),
        ]
    )


def _direction(net, rng):
    """A random direction scaled like each parameter (t_refrac left alone: a kink at 0)."""
    d = jax.tree.map(lambda x: rng.normal(size=x.shape) * np.where(x != 0, np.abs(x), 1.0), net)
    return eqx.tree_at(
        lambda n: [layer.params.t_refrac for layer in n.layers],
        d,
        [np.zeros(layer.size) for layer in net.layers],
    )


@pytest.mark.parametrize("kind", ["recurrent", "recurrent_delay_refractory", "leak_reset_tonic"])
def test_gradients_match_finite_differences(kind):
    """Central differences (float64) of the simulated loss along random directions against
    the windowed EventProp gradient, on named recurrent networks whose neurons spike
    several times."""
    net = _named(kind)
    rng = np.random.default_rng(3)
    times = jnp.asarray(np.sort(rng.uniform(0, 0.015, 9)))
    indices = jnp.asarray(rng.integers(0, 3, 9))
    (g_net, g_t), res = _grad(net, times, indices, ROOMY)
    counts = np.bincount(np.asarray(res.layers[0].indices)[: int(res.counts[0])], minlength=5)
    assert counts.max() >= 2 and int(res.counts[-1]) > 0, counts

    def f(n, t):  # the loss and record (the compiled gradient's: no second compile)
        (value, record), _ = _value_and_grad(n, t, indices, ROOMY)
        return value, record

    checked = 0
    for _ in range(4):
        d_net, d_t = _direction(net, rng), rng.normal(size=times.shape) * 1e-3
        eps = 1e-7
        (lp, rp), (lm, rm) = (
            f(jax.tree.map(lambda x, dx, h=h: x + h * dx, net, d_net), times + h * d_t)
            for h in (eps, -eps)
        )
        same = all(
            np.array_equal(np.asarray(a.indices), np.asarray(b.indices))
            for a, b in zip(rp.layers, rm.layers)
        )
        if not same:
            continue
        fd = (float(lp) - float(lm)) / (2 * eps)
        directional = sum(
            float(jnp.sum(g * dx)) for g, dx in zip(jax.tree.leaves(g_net), jax.tree.leaves(d_net))
        ) + float(jnp.sum(g_t * d_t))
        assert abs(directional - fd) <= 1e-6 * max(abs(fd), 1e-3), (directional, fd)
        checked += 1
    assert checked >= 3, checked


# Without a delay: the random-network tests cover it in CI; this case runs in thorough runs.
@pytest.mark.parametrize("delay", [pytest.param(0.0, marks=pytest.mark.slow), 0.8e-3])
def test_batch_gradients_sum_the_samples(delay):
    """A batch runs as one (its windows in one loop, the layer's gradients summed as they
    come): the same records and gradients as the event loop sample by sample, with
    samples of different lengths (one ends early) and a second layer narrower than a
    chunk."""
    rng = np.random.default_rng(5)
    net = es.Network(
        [
            es.dense_layer(
                rng.normal(0.7, 0.8, (4, 6)), recurrent_weights=rng.normal(0, 0.5, (6, 6)),
                delay=delay, tau_mem=0.01, tau_syn=0.005, t_refrac=1e-3,
            ),
            es.dense_layer(rng.normal(0.8, 0.5, (6, 2)), tau_mem=0.01, tau_syn=0.005),
        ]
    )  # fmt: skip
    times = rng.uniform(0, 0.02, (4, 24))
    times[1, 12:] = np.inf
    inputs = es.Spikes(jnp.asarray(times), jnp.asarray(rng.integers(0, 4, (4, 24))))
    g_loop, loop = _grad(net, inputs.times, inputs.indices, None)
    g_win, windowed = _grad(net, inputs.times, inputs.indices, TIGHT)
    assert_same_records(loop, windowed)
    assert int(np.min(np.asarray(loop.counts))) > 0
    assert_close_trees(g_loop, g_win, 1e-9)


def test_between_adjacent_floats_keeps_the_earlier():
    """The cut between two adjacent float32 times is the kept one (the midpoint would round
    to the excluded one, and the window would run again with the same end)."""
    from eventsnn.event.windows import between

    kept = jnp.float32(0.0123)
    excluded = jnp.nextafter(kept, jnp.float32(1.0))
    cut = between(kept, excluded)
    assert kept <= cut < excluded
    assert float(between(jnp.float32(1.0), jnp.float32(3.0))) == 2.0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_spikes_tied_at_a_window_cut(dtype):
    """Twin neurons (identical inputs) spike at the same instant, and the window is full
    right before them: the window must end before the pair (not at it, which ran the same
    window again forever) and give the event loop's spikes."""
    w = np.array([[6.0, 5.0, 5.0]])  # neuron 0 first, then two twins at one time
    net = es.Network([es.dense_layer(w, tau_mem=0.01, tau_syn=0.005, dtype=dtype)])
    inputs = es.Spikes(np.array([1e-3, 2e-3]), np.array([0, 0]), dtype=dtype)
    small = Windows(arrivals=4, spikes=2, window_spikes=2, chunk=4)
    loop = run(net, inputs)
    windowed = run(net, inputs, small)
    t = np.asarray(loop.layers[0].times)
    i = np.asarray(loop.layers[0].indices)
    assert np.sum(np.isfinite(t)) >= 3 and i[0] == 0  # neuron 0 first, then the twins
    assert t[1] == t[2]
    assert not bool(np.asarray(windowed.overflow).any())
    assert_same_records(loop, windowed, atol=1e-6 if dtype == jnp.float32 else 1e-12)


def test_more_tied_spikes_than_a_window_holds_overflow():
    """Three twins at one instant cannot fit a two-spike window: the run ends flagged as
    overflow instead of looping."""
    w = np.array([[5.0, 5.0, 5.0]])
    net = es.Network([es.dense_layer(w, tau_mem=0.01, tau_syn=0.005)])
    inputs = es.Spikes(np.array([1e-3]), np.array([0]))
    out = run(net, inputs, Windows(arrivals=4, spikes=2, window_spikes=2, chunk=4))
    assert bool(np.asarray(out.overflow).any())


def test_spike_at_t_max_gives_finite_gradients():
    """A neuron that spikes exactly at ``t_max`` (no refractoriness): the end of its
    zero-length refractory period lies at ``t_max`` too, where the forward records no
    current (NaN): the backward pass must not read it. It did, and a single such sample
    turned a whole batch's gradient into NaN during the digits training (float32)."""
    dtype = jnp.float32
    rng = np.random.default_rng(0)
    w, rec = rng.normal(1.5, 0.5, (3, 4)), rng.normal(0, 0.3, (4, 4))
    inputs = es.Spikes(np.array([1e-3, 2e-3, 4e-3, 6e-3]), np.array([0, 1, 2, 0]), dtype=dtype)

    def net(w, rec):
        return es.Network([
            es.dense_layer(w, recurrent_weights=rec, tau_mem=0.02, tau_syn=0.005, delay=1e-3,
                           dtype=dtype)
        ])  # fmt: skip

    first = es.simulate(net(w, rec), inputs, t_max=0.05, max_spikes=64, windows=Windows())
    times = np.asarray(first.layers[0].times)
    t_end = float(np.sort(times[np.isfinite(times)])[1])  # a spike time as the run's end

    def loss(w, rec, windows):
        out = es.simulate(net(w, rec), inputs, t_max=t_end, max_spikes=64, windows=windows)
        t = out.layers[0].times
        return jnp.sum(jnp.where(jnp.isfinite(t), t, 0.0) ** 2)

    end = es.simulate(net(w, rec), inputs, t_max=t_end, max_spikes=64, windows=Windows())
    assert np.any(np.asarray(end.layers[0].times) == np.float32(t_end))  # the case itself
    g_windows = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(w, rec, Windows())
    g_loop = jax.grad(loss, argnums=(0, 1))(w, rec, None)
    for a, b in zip(g_windows, g_loop):
        assert np.all(np.isfinite(np.asarray(a)))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-8)
