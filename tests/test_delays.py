"""Synaptic delays: in a feed-forward chain a delay only shifts spike times.

With delays ``d_1, d_2, ...`` on the layers of a feed-forward network, layer ``k`` emits
exactly the spikes of the undelayed network shifted by ``d_1 + ... + d_k``, and any loss
of the (shifted) spike times has the same weight gradient. Checked for both exact gradient
methods, the parallel TTFS path and the discrete engine (shifted by whole steps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eventsnn as es

DELAYS = (0.5e-3, 1.25e-3, 0.25e-3)
SIZES = (4, 10, 6, 3)
T_MAX = 0.06


def chain(delays, single_spike, seed=4):
    rng = np.random.default_rng(seed)
    layers = []
    for k, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        gain = (2.0 if k == 0 else 1.0) * (2.5 if single_spike else 1.0)
        w = rng.normal(0.5, 0.6, (n_in, n_out)) * gain
        layers.append(
            es.dense_layer(
                jnp.asarray(w),
                delay=delays[k],
                single_spike=single_spike,
                tau_mem=10e-3,
                tau_syn=5e-3,
                t_refrac=1e-3,
            )
        )
    return es.Network(layers)


def inputs(seed=5):
    rng = np.random.default_rng(seed)
    return es.Spikes(jnp.asarray(rng.uniform(0, 10e-3, 8)), jnp.asarray(rng.integers(0, 4, 8)))


@pytest.mark.parametrize(
    "method, single_spike",
    [("eventprop", False), ("analytic", False), ("eventprop", True)],
)
def test_delays_shift_spikes_and_keep_gradients(method, single_spike):
    x = inputs()
    shift = np.cumsum(DELAYS)

    def run(delays, t_max):
        def loss(net):
            res = es.simulate(net, x, t_max=t_max, max_spikes=48, method=method)
            first = res.output.first_times(SIZES[-1])
            return jnp.sum(jnp.where(jnp.isfinite(first), first, 0.0)), res

        net = chain(delays, single_spike)
        (value, res), grads = jax.value_and_grad(loss, has_aux=True)(net)
        return value, res, grads

    v0, r0, g0 = run((0.0, 0.0, 0.0), T_MAX)
    v1, r1, g1 = run(DELAYS, T_MAX + shift[-1])
    for k in range(len(DELAYS)):
        a, b = r0.layers[k], r1.layers[k]
        n = int(r0.counts[k])
        assert n > 0 and int(r1.counts[k]) == n, f"layer {k}"
        np.testing.assert_array_equal(np.asarray(a.indices[:n]), np.asarray(b.indices[:n]))
        np.testing.assert_allclose(
            np.asarray(b.times[:n]), np.asarray(a.times[:n]) + shift[k], atol=1e-12
        )
    n_out = int(jnp.sum(jnp.isfinite(r0.output.first_times(SIZES[-1]))))
    assert n_out > 0
    np.testing.assert_allclose(float(v1), float(v0) + n_out * shift[-1], atol=1e-12)
    for l0, l1 in zip(g0.layers, g1.layers):
        assert float(jnp.max(jnp.abs(l0.weights))) > 0
        np.testing.assert_allclose(
            np.asarray(l1.weights), np.asarray(l0.weights), rtol=1e-7, atol=1e-9
        )


def test_discrete_delays_shift_trains_by_whole_steps():
    dt = 0.25e-3
    steps = np.round(np.asarray(DELAYS) / dt).astype(int)
    x = inputs()
    r0 = es.simulate_discrete(chain((0.0, 0.0, 0.0), False), x, dt=dt, t_max=T_MAX)
    r1 = es.simulate_discrete(chain(DELAYS, False), x, dt=dt, t_max=T_MAX)
    for k, s in enumerate(np.cumsum(steps)):
        a, b = np.asarray(r0.trains[k]), np.asarray(r1.trains[k])
        assert a.sum() > 0
        np.testing.assert_array_equal(b[s:], a[: a.shape[0] - s], err_msg=f"layer {k}")
        assert b[:s].sum() == 0
