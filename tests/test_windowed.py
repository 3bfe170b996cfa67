"""The windowed engine for sparse delayed networks against the general event core.

Both engines simulate the same network (the event core with the dense weights of the
sparse synapses); they must emit the same spikes: same count per neuron, times within
1e-9 s in float64. Networks mix excitation and inhibition, tonic drive (``v_leak`` above
threshold) and silent neurons, leak, reset below rest, refractoriness shorter and longer
than the delay (several spikes of one neuron in one window).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from budget import examples
from hypothesis import given, note, settings
from hypothesis import strategies as st

import eventsnn as es
from eventsnn.sparse import Synapses, balanced_ei

NO_INPUT = es.Spikes(jnp.array([jnp.inf]), jnp.array([0]))


def random_network(seed, n, k, delay, t_refrac, ratio=4.0, v_reset=0.0):
    rng = np.random.default_rng(seed)
    sources = np.stack([rng.choice(n, k, replace=False) for _ in range(n)])
    weights = np.where(rng.random((n, k)) < 0.8, rng.uniform(0.1, 0.4, (n, k)), -1.0)
    params = dict(
        tau_mem=20e-3,
        tau_syn=20e-3 / ratio,
        v_th=1.0,
        v_reset=v_reset,
        v_leak=rng.uniform(0.8, 1.4, n),  # some neurons only fire when driven
        t_refrac=t_refrac,
    )
    syn = Synapses.from_in_degree(sources, weights, n, dtype=jnp.float64)
    return syn, params


def assert_same_spikes(syn, params, delay, t_end, spikes_per_window=None, push_chunk=None):
    n = syn.n_targets
    net = es.SparseNetwork(syn, delay=delay, **params)
    got = es.simulate_windowed(
        net,
        t_end,
        max_spikes=20 * n,
        spikes_per_window=spikes_per_window,
        candidate_chunk=16,
        push_chunk=push_chunk,
    )
    layer = es.dense_layer(
        jnp.zeros((1, n)), recurrent_weights=syn.to_dense(), delay=delay, **params
    )
    ref = es.simulate(es.Network([layer]), NO_INPUT, t_max=t_end, max_spikes=20 * n)
    a_t, a_i = np.asarray(got.spikes.times), np.asarray(got.spikes.indices)
    b_t, b_i = np.asarray(ref.output.times), np.asarray(ref.output.indices)
    assert int(got.count) == int(ref.counts[0]) > 0
    np.testing.assert_array_equal(
        np.asarray(got.spike_counts), np.bincount(b_i[b_i >= 0], minlength=n)
    )
    for j in range(n):
        np.testing.assert_allclose(
            np.sort(a_t[a_i == j]),
            np.sort(b_t[b_i == j]),
            rtol=0,
            atol=1e-9,
            err_msg=f"neuron {j}",
        )
    return got


def test_matches_event_core_refractory_longer_than_delay():
    syn, params = random_network(0, 300, 20, 1e-3, t_refrac=2e-3)
    got = assert_same_spikes(syn, params, 1e-3, 0.08)
    assert int(got.count) > 300  # a real workload: most neurons fire repeatedly


def test_matches_event_core_spikes_pushed_across_chunks():
    # Out-degrees around 40 fill two synapse blocks of 32 per source, and the push takes 3
    # blocks per step: most spikes' blocks are split between two steps.
    syn, params = random_network(3, 150, 40, 1e-3, t_refrac=2e-3)
    assert syn.targets.shape[1] == 32 and np.mean(np.diff(np.asarray(syn.first_block)) >= 2) > 0.8
    got = assert_same_spikes(syn, params, 1e-3, 0.05, push_chunk=3)
    assert int(got.count) > 150


def test_matches_event_core_several_spikes_per_window():
    # t_refrac 0.4 ms < delay 1 ms: up to three spikes of one neuron per window.
    syn, params = random_network(1, 120, 12, 1e-3, t_refrac=0.4e-3, v_reset=-0.2)
    params["v_leak"] = np.full(120, 1.6)  # fast tonic firing
    assert_same_spikes(syn, params, 1e-3, 0.04)


def test_matches_event_core_per_neuron_time_constants():
    syn, params = random_network(2, 100, 10, 1e-3, t_refrac=1e-3)
    rng = np.random.default_rng(5)
    params["tau_mem"] = rng.uniform(8e-3, 30e-3, 100)
    params["tau_syn"] = rng.uniform(2e-3, 12e-3, 100)
    assert_same_spikes(syn, params, 1e-3, 0.05)


def test_kernel_form_follows_the_time_constants():
    """The windowed engine takes the plain PSP kernel where the time constants allow it and
    the smooth one where they are equal or close (both paths are checked against the event
    core by the tests around this one: ratio 4 and per-neuron constants, and ratio 1)."""
    from eventsnn.event.windowed import _budgets

    def smooth(ratio, **over):
        syn, params = random_network(0, 20, 4, 1e-3, 1e-3, ratio=ratio)
        net = es.SparseNetwork(syn, delay=1e-3, **{**params, **over})
        return _budgets(net, 0.01, 10, 32, None, None, None)[-1]

    assert not smooth(4.0) and not smooth(0.5)
    assert smooth(1.0) and smooth(1.05)
    assert smooth(4.0, tau_syn=np.r_[np.full(19, 5e-3), 20e-3])  # one neuron at ratio 1


@settings(max_examples=6)
@given(
    seed=st.integers(0, 2**31 - 1),
    delay=st.sampled_from([0.5e-3, 2e-3]),
    ratio=st.sampled_from([1.0, 2.0, 3.7]),
    t_refrac=st.sampled_from([1e-3, 3e-3]),
)
def test_random_networks(seed, delay, ratio, t_refrac):
    note(f"seed={seed} delay={delay} ratio={ratio} t_refrac={t_refrac}")
    syn, params = random_network(seed, 48, 8, delay, t_refrac, ratio=ratio)
    assert_same_spikes(syn, params, delay, 0.05, spikes_per_window=3)


@settings(max_examples=examples(40, ci=20), deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    ratio=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    rest=st.floats(0.0, 1.2),  # refractory end, in windows (past 1: held throughout)
    d=st.sampled_from([1e-3, 20e-3]),  # a window shorter and longer than the PSP's rise
)
def test_spike_bound_holds(seed, ratio, rest, d):
    """The candidate bound of one window (the top of the motion without arrivals plus each
    excitatory arrival's most) is at least the highest u of the exact motion on a fine
    grid: u held until the refractory end, then free from the current then, plus every
    later arrival's PSP (written out here in NumPy)."""
    from eventsnn.event.bound import excitation_bound, free_peak, psp_peak

    rng = np.random.default_rng(seed)
    tm, ts = 10e-3, 10e-3 / ratio

    def psp(x):  # unit PSP, 0 before the arrival
        x = np.maximum(x, 0.0)
        if tm == ts:
            return x / tm * np.exp(-x / tm)
        return ts / (tm - ts) * (np.exp(-x / tm) - np.exp(-x / ts))

    u0, i0 = rng.uniform(-1.0, 1.0), rng.uniform(-2.0, 3.0)
    rho = min(rest * d, d)  # V held at u0 until rho
    ta = np.sort(rng.uniform(0.0, d, 6))
    w = rng.normal(0.3, 1.0, 6)
    held = ta <= rho
    i_free = i0 * np.exp(-rho / ts) + np.sum(w[held] * np.exp(-(rho - ta[held]) / ts))
    s = np.concatenate([np.arange(rho, d, d / 1e4), [d]])
    free = u0 * np.exp(-(s - rho) / tm) + i_free * psp(s - rho)
    u = free + sum(w_a * psp(s - t_a) for t_a, w_a in zip(ta[~held], w[~held]))

    top = float(free_peak(u0, i_free, d - rho, tm, ts, free[-1]))
    # The engine's PSP peak (closed form) against the PSP's top on a 0.1 us grid.
    peak_time, peak = (float(x) for x in psp_peak(tm, ts))
    t_grid = np.arange(0.0, 5 * tm, 1e-7)
    assert abs(peak_time - t_grid[np.argmax(psp(t_grid))]) <= 1e-7
    np.testing.assert_allclose(peak, psp(t_grid).max(), rtol=1e-9)
    lag = d - ta[~held]
    excite = excitation_bound(w[~held], lag, psp(lag), peak_time, peak)
    assert u.max() <= top + float(np.sum(excite)) + 1e-12
    # Each excitatory arrival's term is the top of its own PSP within the window.
    own_top = [max(w_a, 0.0) * psp(s - t_a).max() for t_a, w_a in zip(ta[~held], w[~held])]
    np.testing.assert_allclose(excite, own_top, rtol=1e-4, atol=1e-12)
    # The free part is the top of its motion, not more (up to the grid's resolution).
    assert free.max() <= top + 1e-12 and top <= free.max() + 1e-5


@pytest.mark.parametrize("most", [3, 8, 11, 16, 23, 40])
def test_pull_gives_each_candidates_earliest_arrivals_in_time_order(most):
    """The pulled arrivals of each candidate against NumPy: its sources' spikes shifted by
    the delay, the earliest ``max_arrivals`` in stable time order, then padding. `most`
    arrivals for the busiest row picks the partial sort's size (every size is reached)."""
    from eventsnn.event.windowed import _pull_arrivals

    rng = np.random.default_rng(most)
    n, k, a_max, d = 64, 48, 32, 1e-3
    syn, params = random_network(most, n, k, d, 2e-3)
    last = np.full((n + 1, 1), np.inf)
    spiking = rng.choice(n, most, replace=False)
    last[spiking, 0] = rng.uniform(0, d, most).round(5)  # some equal times
    cand = np.concatenate([rng.choice(n, 10, replace=False), [n, n]])  # two padding rows
    # The busiest candidate hears all the spiking neurons.
    srcs = np.asarray(syn.sources).copy()
    others = np.setdiff1d(np.arange(n), spiking)
    srcs[cand[0]] = np.concatenate([spiking, rng.choice(others, k - most, replace=False)])
    syn = Synapses.from_in_degree(srcs, np.asarray(syn.source_weights), n, dtype=jnp.float64)
    net = es.SparseNetwork(syn, delay=d, **params)
    srcs, weights = np.asarray(syn.sources), np.asarray(syn.source_weights)  # stored order
    t, w, count = (np.asarray(x) for x in _pull_arrivals(net, jnp.asarray(cand), last, a_max))
    assert t.shape == w.shape == (len(cand), a_max + 1)
    for row, j in enumerate(cand):
        if j == n:
            assert count[row] == 0 and np.all(np.isinf(t[row])) and np.all(w[row] == 0)
            continue
        times = np.append(last[:, 0], np.inf)[srcs[j]] + d  # padding reads source n
        order = np.argsort(times, kind="stable")
        finite = order[np.isfinite(times[order])]
        assert count[row] == len(finite)
        keep = finite[:a_max]
        np.testing.assert_array_equal(t[row, : len(keep)], times[keep])
        np.testing.assert_array_equal(w[row, : len(keep)], weights[j, keep])
        assert np.all(np.isinf(t[row, len(keep) :])) and np.all(w[row, len(keep) :] == 0)
    assert count[0] == most


def test_zero_delay_is_refused():
    syn, params = random_network(0, 20, 4, 0.0, 1e-3)
    net = es.SparseNetwork(syn, delay=0.0, **params)
    with pytest.raises(ValueError, match="delay > 0"):
        es.simulate_windowed(net, 0.01, max_spikes=10)


def test_overflow_is_reported():
    syn, params = random_network(0, 60, 6, 1e-3, 2e-3)
    net = es.SparseNetwork(syn, delay=1e-3, **params)
    res = es.simulate_windowed(net, 0.05, max_spikes=5, check_overflow=False)
    assert bool(res.overflow[0]) and int(res.count) > 5
    assert int(np.sum(res.spike_counts)) == int(res.count)  # counts stay complete
    with pytest.raises(RuntimeError, match="max_spikes"):
        res.raise_if_overflow()
    with pytest.raises(RuntimeError, match="max_arrivals"):
        es.simulate_windowed(net, 0.05, max_spikes=1000, max_arrivals=1)


def test_synapse_layouts_agree():
    rng = np.random.default_rng(3)
    dense = np.where(rng.random((7, 5)) < 0.4, rng.normal(size=(7, 5)), 0.0)
    by_dense = Synapses.from_dense(dense)
    rows, cols = np.nonzero(dense)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=7))])
    by_csr = Synapses.from_csr(indptr, cols, dense[rows, cols], 5)
    np.testing.assert_allclose(by_dense.to_dense(), dense)
    np.testing.assert_allclose(by_csr.to_dense(), dense)
    # The by-target rows hold the same synapses.
    pulled = np.zeros((8, 5))
    for j in range(5):
        np.add.at(
            pulled[:, j], np.asarray(by_csr.sources[j]), np.asarray(by_csr.source_weights[j])
        )
    np.testing.assert_allclose(pulled[:7], dense)
    # A repeated pair is one synapse with the summed weight.
    twice = Synapses.from_csr([0, 2], [1, 1], [0.5, 0.25], 3)
    assert twice.n_synapses == 1
    np.testing.assert_allclose(twice.to_dense(), [[0.0, 0.75, 0.0]])


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda: Synapses.from_csr([0, 2], [0, 5], 1.0, 3), "indices"),
        (lambda: Synapses.from_csr([0, 3], [0, 1], 1.0, 3), "indices must have shape"),
        (lambda: Synapses.from_csr([1, 2], [0], 1.0, 3), "indptr"),
        (lambda: Synapses.from_in_degree([[0, 9]], 1.0, 3), "sources"),
        (lambda: Synapses.from_dense([[0.0, np.nan]]), "weights"),
    ],
)
def test_bad_synapses(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_balanced_ei_follows_the_workload():
    sources, weights, v_leak = balanced_ei(500, seed=1)
    n_e = 400
    assert sources.shape == (500, 100) and v_leak.min() >= 1.05 and v_leak.max() <= 1.5
    for j in range(500):
        e, i = sources[j, :80], sources[j, 80:]
        assert len(set(e)) == 80 and len(set(i)) == 20 and j not in sources[j]
        assert e.max() < n_e and i.min() >= n_e
    assert set(np.unique(weights)) == {0.2, -0.8}
