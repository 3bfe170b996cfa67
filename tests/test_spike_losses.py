"""Losses of multi-spike training (`eventsnn.loss`): the weighted spike counts and the
count cross-entropy on them, the firing-rate penalty of loss shaping and the voltage
cross-entropy, on hand-checkable records."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eventsnn as es
from eventsnn import loss as L

MS = 1e-3
T_MAX = 10 * MS

# Sample 0: neuron 0 at 2 and 5 ms, neuron 1 at t_max, neuron 2 after t_max; padding as
# inf/-1, as an index -1 with a finite time, and as an inf time with a real index.
# Sample 1: neuron 2 at 0 and 9 ms.
TIMES = np.array(
    [
        [2 * MS, np.inf, 5 * MS, T_MAX, 3 * MS, 11 * MS, np.inf],
        [0.0, 9 * MS, np.inf, np.inf, np.inf, np.inf, np.inf],
    ]
)
INDICES = np.array([[0, -1, 0, 1, -1, 2, 3], [2, 2, -1, -1, -1, -1, -1]])
# (t_max - t) / t_max per real spike inside the run.
COUNTS = np.array([[0.8 + 0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0 + 0.1, 0.0]])


def test_weighted_spike_counts_by_hand():
    spikes = es.Spikes(TIMES, INDICES)
    np.testing.assert_allclose(L.weighted_spike_counts(spikes, 4, T_MAX), COUNTS, rtol=1e-14)
    # One sample, and the same records shuffled: the same counts.
    one = es.Spikes(TIMES[0], INDICES[0])
    np.testing.assert_allclose(L.weighted_spike_counts(one, 4, T_MAX), COUNTS[0], rtol=1e-14)
    perm = np.random.default_rng(0).permutation(TIMES.shape[1])
    shuffled = es.Spikes(TIMES[:, perm], INDICES[:, perm])
    np.testing.assert_allclose(L.weighted_spike_counts(shuffled, 4, T_MAX), COUNTS, rtol=1e-14)


def test_weighted_spike_counts_gradient():
    """Every spike inside the run has derivative ``-1 / t_max`` into its neuron's count;
    padding, a spike at ``t_max`` (it leaves the run continuously) and later ones: 0."""

    def total(t):
        c = L.weighted_spike_counts(es.Spikes(t, INDICES), 4, T_MAX)
        return jnp.sum(c * jnp.arange(1.0, 5.0))  # neuron j weighs j + 1

    g = np.asarray(jax.grad(total)(jnp.asarray(TIMES)))
    want = np.zeros_like(TIMES)
    want[0, [0, 2]] = -1.0 / T_MAX  # neuron 0
    want[1, [0, 1]] = -3.0 / T_MAX  # neuron 2
    want[0, 3] = -2.0 / T_MAX  # the spike at t_max: one-sided, the left derivative
    np.testing.assert_allclose(g, want, rtol=1e-14)
    assert np.all(np.isfinite(g))


def test_spike_count_cross_entropy_by_hand():
    spikes = es.Spikes(TIMES, INDICES)
    labels = jnp.array([0, 2])
    got = L.spike_count_cross_entropy(spikes, labels, n_classes=4, t_max=T_MAX, scale=3.0)
    logits = 3.0 * COUNTS
    log_p = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    np.testing.assert_allclose(got, -np.mean(log_p[[0, 1], [0, 2]]), rtol=1e-14)
    # Its gradient moves the label neuron's spikes earlier and the others' later.
    labels = jnp.array([1, 2])
    g = np.asarray(
        jax.grad(
            lambda t: L.spike_count_cross_entropy(
                es.Spikes(t, INDICES), labels, n_classes=4, t_max=T_MAX
            )
        )(jnp.asarray(TIMES))
    )
    assert np.all(g[0, [0, 2]] < 0)  # neuron 0, not sample 0's label: later
    assert np.all(g[1, [0, 1]] > 0)  # neuron 2, sample 1's label: earlier


def test_voltage_cross_entropy_by_hand():
    v = np.array([[0.3, 1.2, -0.4], [2.0, 0.1, 0.5]])
    labels = jnp.array([1, 0])
    log_p = v - np.log(np.sum(np.exp(v), axis=1, keepdims=True))
    got = L.voltage_cross_entropy(jnp.asarray(v), labels)
    np.testing.assert_allclose(got, -np.mean(log_p[[0, 1], [1, 0]]), rtol=1e-14)
    g = np.asarray(jax.grad(L.voltage_cross_entropy)(jnp.asarray(v), labels))
    p = np.exp(log_p)
    p[[0, 1], [1, 0]] -= 1.0
    np.testing.assert_allclose(g, p / 2, rtol=1e-13)


@pytest.mark.parametrize("lower, upper", [(0.0, 2.0), (0.5, 1.2), (1.2, 1.5)])
def test_firing_rate_penalty_by_hand(lower, upper):
    spikes = es.Spikes(TIMES, INDICES)
    got = L.firing_rate_penalty(spikes, 4, t_max=T_MAX, upper=upper, lower=lower)
    c = COUNTS
    want = np.mean(np.maximum(c - upper, 0) ** 2 + np.maximum(lower - c, 0) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    inside = np.all((c >= lower) & (c <= upper))
    assert (float(got) == 0.0) == inside


def test_firing_rate_penalty_zero_inside_the_band():
    """Every neuron's count inside ``[lower, upper]``: no penalty and no gradient."""
    spikes = es.Spikes(TIMES, INDICES)
    assert float(L.firing_rate_penalty(spikes, 4, t_max=T_MAX, upper=1.5, lower=0.0)) == 0.0
    g = jax.grad(
        lambda t: L.firing_rate_penalty(es.Spikes(t, INDICES), 4, t_max=T_MAX, upper=1.5)
    )(jnp.asarray(TIMES))
    assert np.all(np.asarray(g) == 0.0)


def test_firing_rate_penalty_pushes_busy_spikes_later_and_quiet_ones_earlier():
    """Band [1.2, 1.25]: neuron 0 of sample 0 (1.3) is too busy, neuron 2 of sample 1 (1.1)
    too quiet. Descent moves the busy neuron's spikes later and the quiet one's earlier;
    one small step lowers the penalty; silent neurons (count 0 < lower) get nothing."""

    def penalty(t):
        return L.firing_rate_penalty(es.Spikes(t, INDICES), 4, t_max=T_MAX, upper=1.25, lower=1.2)

    t = jnp.asarray(TIMES)
    p0, g = jax.value_and_grad(penalty)(t)
    g = np.asarray(g)
    assert float(p0) > 0
    assert np.all(g[0, [0, 2]] < 0)  # busy: -grad is later
    assert np.all(g[1, [0, 1]] > 0)  # quiet: -grad is earlier
    np.testing.assert_allclose(g[0, [0, 2]], 2 * (1.3 - 1.25) * (-1 / T_MAX) / 8, rtol=1e-12)
    # Neuron 1's spike at t_max counts 0 (too quiet) but is there: pulled into the run.
    assert g[0, 3] == pytest.approx(2 * 1.2 / T_MAX / 8, rel=1e-12)
    mask = np.zeros_like(TIMES, bool)
    mask[0, [0, 2, 3]] = mask[1, [0, 1]] = True
    assert np.all(g[~mask] == 0)
    step = np.where(mask & np.isfinite(TIMES), -1e-9 * np.sign(g) * T_MAX, 0.0)
    assert float(penalty(t + step)) < float(p0)
