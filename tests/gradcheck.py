"""Finite-difference checks for spike-time gradients (float64)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import eventsnn as es

FD_RTOL = 1e-6  # both methods vs central differences
METHOD_RTOL = 1e-8  # EventProp vs analytic


@eqx.filter_jit
def _loss(net, times, indices, c, t_max, method, max_spikes, hidden_weight, smooth=True):
    res = es.simulate(
        net,
        es.Spikes(times, indices),
        t_max=t_max,
        max_spikes=max_spikes,
        method=method,
        solver=es.NewtonSolver(smooth=smooth),
        check_overflow=False,
    )
    out = es.linear_spike_time_loss(res.output, c)
    hidden = sum(
        es.linear_spike_time_loss(r, jnp.ones(layer.size), first_spike=False)
        for r, layer in zip(res.layers[:-1], net.layers[:-1])
    )
    return jnp.sum(out + hidden_weight * hidden), res


@eqx.filter_jit
def _grad(net, times, indices, c, t_max, method, max_spikes, hidden_weight, smooth=True):
    def f(n, t):
        return _loss(n, t, indices, c, t_max, method, max_spikes, hidden_weight, smooth)[0]

    return jax.grad(f, argnums=(0, 1))(net, times)


def loss_fn(method, coefficients, t_max, max_spikes, hidden_weight=0.3, smooth=True):
    """Loss on output first-spike times plus all hidden spike times (exercises every layer).

    Returns ``loss(net, times, indices) -> (value, SimulationResult)``, jit-compiled once
    per shape and setting. `smooth`: the solver's PSP kernel form.
    """
    c = jnp.asarray(coefficients, float)

    def loss(net, times, indices):
        return _loss(net, times, indices, c, t_max, method, max_spikes, hidden_weight, smooth)

    return loss


def _direction(tree, rng):
    """Random direction scaled like each parameter; t_refrac = 0 is a kink, left alone."""

    def one(path, leaf):
        leaf = np.asarray(leaf)
        scale = np.where(leaf != 0, np.abs(leaf), 1.0)
        d = rng.normal(size=leaf.shape) * scale
        if "t_refrac" in jax.tree_util.keystr(path) and np.all(leaf == 0):
            d = np.zeros_like(d)
        return d

    return jax.tree_util.tree_map_with_path(one, tree)


def _dot(a, b):
    return sum(float(jnp.sum(x * y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def gradients(net, inputs, coefficients, t_max, max_spikes=32, smooth=True):
    """Gradients of both methods w.r.t. (network, input times)."""
    c = jnp.asarray(coefficients, float)
    return {
        method: _grad(net, inputs.times, inputs.indices, c, t_max, method, max_spikes, 0.3, smooth)
        for method in ("eventprop", "analytic")
    }


def fd_check(
    net,
    inputs,
    coefficients,
    t_max,
    *,
    seed=0,
    eps=1e-6,
    max_spikes=32,
    require=True,
    smooth=True,
):
    """Compare both methods with central differences along a random direction.

    Returns None when a spike appears or vanishes within the step (the draw is not
    differentiable there); otherwise asserts and returns the directional derivatives.
    """
    rng = np.random.default_rng(seed)
    loss = loss_fn("analytic", coefficients, t_max, max_spikes, smooth=smooth)
    d_net = _direction(net, rng)
    real = np.isfinite(np.asarray(inputs.times))
    d_t = np.where(real, rng.normal(size=inputs.times.shape) * 1e-3, 0.0)

    def at(h):
        n = jax.tree.map(lambda p, d: p + h * d, net, d_net)
        return loss(n, inputs.times + h * d_t, inputs.indices)

    (lp, rp), (lm, rm), (_, r0) = at(eps), at(-eps), at(0.0)
    same = all(
        np.array_equal(np.asarray(a.indices), np.asarray(b.indices))
        for x in (rp, rm)
        for a, b in zip(x.layers, r0.layers)
    )
    if not same or bool(np.asarray(r0.overflow).any()):
        assert not require, "a spike appears or vanishes within the finite-difference step"
        return None
    fd = (float(lp) - float(lm)) / (2 * eps)
    # A near-grazing crossing makes the loss so curved that central differences themselves
    # disagree between step sizes: such a draw cannot check anything (a few percent do).
    fd_small = (float(at(eps / 4)[0]) - float(at(-eps / 4)[0])) / (eps / 2)
    scale = max(abs(fd), 1e-3 * max(abs(float(lp)), 1e-6))
    if abs(fd - fd_small) > FD_RTOL * scale:
        assert not require, f"ill-conditioned: central differences {fd} vs {fd_small}"
        return None
    grads = gradients(net, inputs, coefficients, t_max, max_spikes, smooth)
    directional = {}
    for method, (g_net, g_t) in grads.items():
        directional[method] = _dot(g_net, d_net) + float(jnp.sum(g_t * d_t))
        assert abs(directional[method] - fd) <= FD_RTOL * scale, (method, directional[method], fd)
    assert_methods_agree(grads)
    return directional


def assert_methods_agree(grads):
    ev, an = grads["eventprop"], grads["analytic"]
    largest = max(float(np.max(np.abs(np.asarray(x)), initial=0.0)) for x in jax.tree.leaves(an))
    for path_a, a in jax.tree_util.tree_leaves_with_path(an):
        e = _leaf(ev, path_a)
        a, e = np.asarray(a), np.asarray(e)
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(e)), jax.tree_util.keystr(path_a)
        # Relative to the leaf; leaves that are rounding noise compare to the largest.
        tol = METHOD_RTOL * np.max(np.abs(a), initial=0.0) + 1e-12 * largest
        np.testing.assert_allclose(e, a, rtol=0, atol=tol, err_msg=jax.tree_util.keystr(path_a))


def _leaf(tree, path):
    for key in path:
        tree = tree[key.idx] if hasattr(key, "idx") else getattr(tree, key.name)
    return tree
