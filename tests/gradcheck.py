"""Finite-difference checks for spike-time gradients (float64).

Directions and tolerances are in the parameters' own scale: an entry ``p`` of a parameter
moves by ``h d |p|`` (by ``h d`` where ``p == 0``), so every parameter, whatever its unit,
changes by the same relative amount, and ``g |p|`` is the change of the loss (s) per
relative change of ``p``.
"""

from __future__ import annotations

from dataclasses import fields

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from reference import reference_simulate

import eventsnn as es

FD_RTOL = 1e-6  # both methods vs central differences
METHOD_RTOL = 1e-8  # EventProp vs analytic, entry by entry
#: Absolute floor (s) of the method comparison, on ``|g| * scale``: the loss (~1e-2 s)
#: rounds at ~1e-18 s and each event adds a few roundings; 1e-15 s is far below any
#: real gradient entry (a parameter whose change moves a spike by 1e-13 of its value).
METHOD_ATOL = 1e-15
INPUT_TIMES = "times"  # `only=` value that selects the input times
TIME_SCALE = 1e-3  # s: the unit of a change of an input time (some inputs are at t = 0)


@eqx.filter_jit
def _loss(net, times, indices, c, t_max, method, max_spikes, hidden_weight, smooth, fast_ttfs):
    res = es.simulate(
        net,
        es.Spikes(times, indices),
        t_max=t_max,
        max_spikes=max_spikes,
        method=method,
        solver=es.NewtonSolver(smooth=smooth),
        fast_ttfs=fast_ttfs,
        check_overflow=False,
    )
    out = es.linear_spike_time_loss(res.output, c)
    hidden = sum(
        es.linear_spike_time_loss(r, jnp.ones(layer.size, c.dtype), first_spike=False)
        for r, layer in zip(res.layers[:-1], net.layers[:-1])
    )
    return jnp.sum(out + hidden_weight * hidden), res


def reference_loss(net, inputs, coefficients, t_max, hidden_weight=0.3):
    """The loss of `loss_fn` on the spikes of the independent reference (`reference.py`,
    float64, solve_ivp): ``sum_j c_j`` (first spike of output j) plus `hidden_weight` times
    every hidden spike time. A single-spike layer gets a refractory period longer than the
    run. Returns ``(value, spikes)`` with ``spikes`` as `reference_simulate` gives them."""
    layers = []
    for layer in net.layers:
        p = {f.name: np.asarray(getattr(layer.params, f.name)) for f in fields(layer.params)}
        if layer.single_spike:
            p["t_refrac"] = np.full(layer.size, 10.0 * t_max)
        rec = layer.recurrent_weights
        layers.append(
            dict(
                weights=np.asarray(layer.weights),
                recurrent_weights=None if rec is None else np.asarray(rec),
                delay=layer.delay,
                **p,
            )
        )
    times, indices = np.asarray(inputs.times), np.asarray(inputs.indices)
    spikes, _ = reference_simulate(layers, times, indices, t_max)
    *hidden, (t_out, i_out) = spikes
    value = sum(
        c * t_out[i_out == j].min() for j, c in enumerate(coefficients) if np.any(i_out == j)
    )
    return value + hidden_weight * sum(float(np.sum(t)) for t, _ in hidden), spikes


@eqx.filter_jit
def _grad(net, times, indices, c, t_max, method, max_spikes, hidden_weight, smooth, fast_ttfs):
    def f(n, t):
        return _loss(
            n, t, indices, c, t_max, method, max_spikes, hidden_weight, smooth, fast_ttfs
        )[0]

    return jax.grad(f, argnums=(0, 1))(net, times)


def _coefficients(net, coefficients):
    return jnp.asarray(coefficients, net.layers[0].weights.dtype)


def loss_fn(
    method, coefficients, t_max, max_spikes, hidden_weight=0.3, smooth=True, fast_ttfs=True
):
    """Loss on output first-spike times plus all hidden spike times (exercises every layer).

    Returns ``loss(net, times, indices) -> (value, SimulationResult)``, jit-compiled once
    per shape and setting. `smooth`: the solver's PSP kernel form.
    """
    c = jnp.asarray(coefficients, float)

    def loss(net, times, indices):
        return _loss(
            net, times, indices, c.astype(times.dtype), t_max, method, max_spikes,
            hidden_weight, smooth, fast_ttfs,
        )  # fmt: skip

    return loss


def gradients(net, inputs, coefficients, t_max, max_spikes=32, smooth=True, fast_ttfs=True):
    """Gradients of both methods w.r.t. (network, input times), in the network's dtype."""
    c = _coefficients(net, coefficients)
    args = (t_max, max_spikes, 0.3, smooth, fast_ttfs)
    return {
        method: _grad(net, inputs.times, inputs.indices, c, args[0], method, *args[1:])
        for method in ("eventprop", "analytic")
    }


def scale_of(point):
    """The unit of a change of each entry of ``point = (net, times)``: ``|p|`` for a
    parameter (where ``p == 0``: `TIME_SCALE` for ``t_refrac``, else 1), `TIME_SCALE` for
    an input time."""
    net, times = point

    def one(path, p):
        p = np.asarray(p)
        zero = TIME_SCALE if "t_refrac" in jax.tree_util.keystr(path) else 1.0
        return np.where(p != 0, np.abs(p), zero)

    return jax.tree_util.tree_map_with_path(one, net), np.full(np.shape(times), TIME_SCALE)


def _selected(path, only):
    name = jax.tree_util.keystr(path)
    if only == INPUT_TIMES:
        return name.startswith("[1]")
    return name.startswith("[0]") and (only is None or f".{only}" in name)


def random_direction(net, inputs, seed, only=None):
    """A random direction ``(d_net, d_times)`` in the parameters' scale (module docstring).

    `only`: None (everything), a field name (``"weights"``, ``"t_refrac"``, ...: that leaf
    in every layer) or ``INPUT_TIMES``. ``t_refrac = 0`` is a kink (one-sided): a random
    direction leaves it alone unless `only` asks for it. Input times at 0 stay (times
    are >= 0), padding too.
    """
    rng = np.random.default_rng(seed)
    real = np.isfinite(np.asarray(inputs.times))

    def one(path, leaf, scale):
        d = rng.normal(size=scale.shape) * scale
        if not _selected(path, only):
            return np.zeros_like(d)
        if only is None and "t_refrac" in jax.tree_util.keystr(path) and np.all(leaf == 0):
            return np.zeros_like(d)
        return d

    point = (net, inputs.times)
    d_net, d_t = jax.tree_util.tree_map_with_path(one, point, scale_of(point))
    return d_net, np.where(real & (np.asarray(inputs.times) > 0), d_t, 0.0)


def _dot(a, b):
    return sum(float(jnp.sum(x * y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _record(res):
    return [np.asarray(r.indices) for r in res.layers], bool(np.asarray(res.overflow).any())


def _counts(res):
    return [np.bincount(i[i >= 0], minlength=1) for i in _record(res)[0]]


def _same(records):
    first, over = records[0]
    return not over and all(
        len(x) == len(first) and all(np.array_equal(a, b) for a, b in zip(x, first)) and not o
        for x, o in records[1:]
    )


def fd_check(
    net,
    inputs,
    coefficients,
    t_max,
    *,
    seeds=(0,),
    only=None,
    directions=None,
    side=0,
    keep_order=False,
    eps=1e-6,
    max_spikes=32,
    smooth=True,
    fast_ttfs=True,
) -> int:
    """Compare both methods with finite differences along directions; return how many
    directions were checked (every checked one is asserted).

    Directions: `directions` (a list of ``(d_net, d_times)``), else one `random_direction`
    per seed (with `only`). ``side = 0``: central differences; ``+1``/``-1``: one-sided
    second-order differences ``(-3 L(0) + 4 L(h) - L(2h)) / 2h`` with ``h = side * eps``
    (kinks: ``t_refrac = 0``, ties, where only one side is smooth). `keep_order`: a
    one-sided step must also keep the order of the point's spike records (at a tie with
    zero-delay recurrence, the side that keeps the recorded order is the one the
    gradients follow).

    A direction is skipped, not checked, where a spike appears, vanishes or changes order
    within the steps (for one-sided differences: between the steps, and spike counts
    against the point), or where the differences at ``eps`` and ``eps / 4`` disagree by
    more than the tolerance (a near-grazing crossing curves the loss too much to check).
    Callers assert a minimum of checked directions.
    """
    loss = loss_fn("analytic", coefficients, t_max, max_spikes, smooth=smooth, fast_ttfs=fast_ttfs)
    if directions is None:
        directions = [random_direction(net, inputs, s, only) for s in seeds]
    l0, r0 = loss(net, inputs.times, inputs.indices)
    if bool(np.asarray(r0.overflow).any()):
        return 0
    grads = gradients(net, inputs, coefficients, t_max, max_spikes, smooth, fast_ttfs)
    assert_methods_agree(grads, (net, inputs.times))
    checked = 0
    for d_net, d_t in directions:

        def at(h, d_net=d_net, d_t=d_t):
            n = jax.tree.map(lambda p, d: p + h * d, net, d_net)
            return loss(n, inputs.times + h * d_t, inputs.indices)

        def difference(h, side=side):
            if side == 0:
                (lp, rp), (lm, rm) = at(h), at(-h)
                return (float(lp) - float(lm)) / (2 * h), [_record(r0), _record(rp), _record(rm)]
            (l1, r1), (l2, r2) = at(side * h), at(2 * side * h)
            fd = (-3 * float(l0) + 4 * float(l1) - float(l2)) / (2 * side * h)
            kept = all(
                np.array_equal(a, b) for r in (r1, r2) for a, b in zip(_counts(r), _counts(r0))
            )
            records = [_record(r0)] if keep_order else []
            return fd, (records + [_record(r1), _record(r2)]) if kept else [(None, True)]

        fd, rec = difference(eps)
        fd_small, rec_small = difference(eps / 4)
        if not _same(rec + rec_small):
            continue
        scale = max(abs(fd), 1e-3 * max(abs(float(l0)), 1e-6))
        if abs(fd - fd_small) > FD_RTOL * scale:
            continue
        for method, (g_net, g_t) in grads.items():
            directional = _dot(g_net, d_net) + float(jnp.sum(g_t * d_t))
            assert abs(directional - fd) <= FD_RTOL * scale, (method, directional, fd, side)
        checked += 1
    return checked


def assert_methods_agree(grads, point, rtol=METHOD_RTOL, atol=METHOD_ATOL):
    """EventProp and analytic gradients agree entry by entry: ``|e - a| * scale <=
    rtol * max(|e|, |a|) * scale + atol``, with `point` ``(net, times)`` giving each entry's
    scale (module docstring) and `atol` in seconds of loss."""
    ev, an = grads["eventprop"], grads["analytic"]
    scales = scale_of(point)
    for path, a in jax.tree_util.tree_leaves_with_path(an):
        e, s = _leaf(ev, path), _leaf(scales, path)
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        name = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(e)), name
        bound = rtol * np.maximum(np.abs(a), np.abs(e)) * s + atol
        worst = np.abs(e - a) * s - bound
        assert np.all(worst <= 0), (
            f"{name}: eventprop {e.ravel()[np.argmax(worst)]!r} vs analytic "
            f"{a.ravel()[np.argmax(worst)]!r}"
        )


def _leaf(tree, path):
    for key in path:
        tree = tree[key.idx] if hasattr(key, "idx") else getattr(tree, key.name)
    return tree
