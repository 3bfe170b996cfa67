"""The leaky-integrator readout (`eventsnn.readout`): its voltage against an independent
numerical integration of the readout ODE (scipy ``solve_ivp``), its maximum against dense
traces of that solution, its time integral against the solution's own quadrature, and the
gradients of both against central finite differences (float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import eventsnn as es
from eventsnn import readout
from eventsnn.readout import LIReadout

# Compiled once per shape (op by op, the readout's scan is slow); t_max traced.
_peak, _integral = eqx.filter_jit(readout.peak), eqx.filter_jit(readout.integral)
trace = eqx.filter_jit(readout.trace)


def peak(ro, spikes, t_max, **kw):
    return _peak(ro, spikes, jnp.asarray(t_max), **kw)


def integral(ro, spikes, t_max, **kw):
    return _integral(ro, spikes, jnp.asarray(t_max), **kw)


MS = 1e-3
# (tau_mem, tau_syn) in s: ratio 2, 1 (equal), 0.4 (< 1) and nearly equal.
TAUS = [(10 * MS, 5 * MS), (5 * MS, 5 * MS), (4 * MS, 10 * MS), (8 * MS, 7.99 * MS)]


def ode_readout(weights, tau_mem, tau_syn, delay, times, indices, t_max):
    """Dense solution of ``tau_syn dI/dt = -I``, ``tau_mem dV/dt = -V + I``,
    ``dQ/dt = V`` (Q: the running integral), ``I += W[i]`` at each arrival ``t + delay``,
    integrated numerically piece by piece between arrivals (DOP853, tight tolerances).
    Written from the model only. Returns ``f(t [m]) -> (V [m, n], Q [m, n])``."""
    w = np.asarray(weights, float)
    n = w.shape[1]
    tm = np.broadcast_to(np.asarray(tau_mem, float), (n,))
    ts = np.broadcast_to(np.asarray(tau_syn, float), (n,))
    times, indices = np.asarray(times, float), np.asarray(indices)
    real = np.isfinite(times) & (indices >= 0)
    arrivals = sorted(zip(times[real] + delay, indices[real]))

    def rhs(_, y):
        v, i = y[:n], y[n : 2 * n]
        return np.concatenate([(i - v) / tm, -i / ts, v])

    y = np.zeros(3 * n)
    pieces, start, k = [], 0.0, 0
    while start < t_max:
        while k < len(arrivals) and arrivals[k][0] <= start:
            y[n + np.arange(n)] += w[arrivals[k][1]]
            k += 1
        end = min(arrivals[k][0], t_max) if k < len(arrivals) else t_max
        if end > start:
            sol = solve_ivp(
                rhs, (start, end), y, method="DOP853", rtol=1e-12, atol=1e-14, dense_output=True
            )
            pieces.append((start, end, sol.sol))
            y = sol.y[:, -1].copy()
        start = end

    def at(t):
        t = np.atleast_1d(np.asarray(t, float))
        out = np.zeros((t.size, 3 * n))
        for a, b, sol in pieces:
            sel = (t >= a) & (t <= b)
            if np.any(sel):
                out[sel] = sol(t[sel]).T
        return out[:, :n], out[:, 2 * n :]

    return at


def random_case(seed, n_in=4, n=3, k=14, t_max=25 * MS, padding=3):
    """Weights of both signs and unsorted input spikes over ``[0, t_max]``, with padding
    (inf times) mixed in."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0.3, 1.0, (n_in, n))
    t = rng.uniform(0, t_max, k)
    i = rng.integers(0, n_in, k)
    t[rng.choice(k, padding, replace=False)] = np.inf
    return w, es.Spikes(t, np.where(np.isfinite(t), i, -1))


def readout_of(w, tau_mem, tau_syn, delay=0.0):
    return LIReadout(jnp.asarray(w), tau_mem=tau_mem, tau_syn=tau_syn, delay=delay)


def reference_of(ro: LIReadout, spikes, t_max):
    return ode_readout(
        ro.weights, ro.tau_mem, ro.tau_syn, ro.delay, spikes.times, spikes.indices, t_max
    )


@pytest.mark.parametrize("delay", [0.0, 0.7 * MS])
@pytest.mark.parametrize("taus", TAUS, ids=lambda x: f"ratio{x[0] / x[1]:.4g}")
def test_trace_matches_the_ode(taus, delay):
    t_max = 30 * MS
    w, spikes = random_case(1)
    ro = readout_of(w, *taus, delay=delay)
    at = np.random.default_rng(2).uniform(0, t_max, 40)
    want, _ = reference_of(ro, spikes, t_max)(at)
    got = np.asarray(trace(ro, spikes, at))
    assert np.max(np.abs(want)) > 0.1  # a real signal
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.max(np.abs(want)))


def test_trace_per_neuron_time_constants():
    """One readout with a different ratio per neuron (2, 1, 0.4)."""
    t_max = 30 * MS
    w, spikes = random_case(3)
    ro = readout_of(w, [10 * MS, 5 * MS, 4 * MS], [5 * MS, 5 * MS, 10 * MS])
    at = np.linspace(0, t_max, 37)
    want, _ = reference_of(ro, spikes, t_max)(at)
    np.testing.assert_allclose(
        np.asarray(trace(ro, spikes, at)), want, rtol=0, atol=1e-9 * np.max(np.abs(want))
    )


def assert_peak_on_dense_grid(ro, spikes, t_max, value, time):
    """The dense grid's maximum is at most the peak, and below it by no more than the
    voltage can rise within one grid step; the voltage at the returned time is the peak."""
    ref = reference_of(ro, spikes, t_max)
    grid = np.linspace(0, t_max, 30001)
    v, _ = ref(grid)
    slope = np.max(np.abs(np.diff(v, axis=0)), axis=0)  # per grid step
    grid_max = np.maximum(np.max(v, axis=0), 0.0)
    value, time = np.asarray(value), np.asarray(time)
    assert np.all(value >= grid_max - 1e-10), (value, grid_max)
    assert np.all(value <= grid_max + slope + 1e-10), (value, grid_max, slope)
    at_time = np.array([ref(time[j])[0][0, j] for j in range(ro.size)])
    np.testing.assert_allclose(value, at_time, rtol=0, atol=1e-9 * max(np.max(value), 1.0))


@pytest.mark.parametrize("taus", TAUS, ids=lambda x: f"ratio{x[0] / x[1]:.4g}")
def test_peak_is_the_maximum_of_a_dense_trace(taus):
    t_max = 25 * MS
    for seed in range(3):
        w, spikes = random_case(10 + seed)
        ro = readout_of(w, *taus, delay=0.4 * MS)
        value, time = peak(ro, spikes, t_max)
        assert_peak_on_dense_grid(ro, spikes, t_max, value, time)


def psp_peak_time(tau_mem, tau_syn):
    """Time (s) of the PSP maximum after one arrival: where ``dV/dt = 0``."""
    if tau_mem == tau_syn:
        return tau_mem
    return np.log(tau_mem / tau_syn) / (1 / tau_syn - 1 / tau_mem)


# One input spike per case, neuron by neuron, each built so that the maximum has one kind:
#   interior: an excitatory spike at 1 ms, long run: the PSP's own maximum;
#   t_max:    the same spike, a run that ends while V still rises;
#   arrival:  an inhibitory spike at 3 ms (while V rises) turns V down at once;
#   zero:     only inhibition: V <= 0, the maximum is V(0) = 0 at t = 0.
KIND_INPUTS = es.Spikes(np.array([1 * MS, 3 * MS, np.inf]), np.array([0, 1, -1]))
KIND_WEIGHTS = np.array([[2.0, 2.0, 2.0, -1.0], [0.0, 0.0, -3.0, -1.0]])


@pytest.mark.parametrize("taus", TAUS, ids=lambda x: f"ratio{x[0] / x[1]:.4g}")
@pytest.mark.parametrize("delay", [0.0, 0.5 * MS])
def test_peak_kinds(taus, delay):
    """Interior extremum, ``t_max``, arrival and ``t = 0``, with the time of each."""
    tm, ts = taus
    t_long, t_short = 30 * MS, 1 * MS + delay + 0.5 * psp_peak_time(tm, ts)
    ro = readout_of(KIND_WEIGHTS, tm, ts, delay=delay)
    value, time = (np.asarray(x) for x in peak(ro, KIND_INPUTS, t_long))
    np.testing.assert_allclose(time[0], 1 * MS + delay + psp_peak_time(tm, ts), rtol=1e-9)
    assert time[2] == 3 * MS + delay  # the inhibitory arrival
    assert time[3] == 0.0 and value[3] == 0.0
    assert value[0] > value[2] > 0
    assert_peak_on_dense_grid(ro, KIND_INPUTS, t_long, value, time)
    value, time = (np.asarray(x) for x in peak(ro, KIND_INPUTS, t_short))
    np.testing.assert_allclose(time[[0, 1]], t_short, rtol=1e-12)  # still rising at t_max
    assert_peak_on_dense_grid(ro, KIND_INPUTS, t_short, value, time)


@pytest.mark.parametrize("taus", TAUS[:3], ids=lambda x: f"ratio{x[0] / x[1]:.4g}")
def test_integral_matches_the_odes_quadrature(taus):
    """Arrivals before and after ``t_max`` (the later ones add nothing)."""
    for t_max in (12 * MS, 25 * MS):
        w, spikes = random_case(20)
        ro = readout_of(w, *taus, delay=0.3 * MS)
        _, q = reference_of(ro, spikes, t_max)(t_max)
        got = np.asarray(integral(ro, spikes, t_max))
        np.testing.assert_allclose(got, q[0], rtol=0, atol=1e-10 * np.max(np.abs(q)))


def test_plain_kernel_gives_the_same_values():
    """``smooth=False`` (time constants apart) only changes how the kernel is evaluated."""
    w, spikes = random_case(4)
    ro = readout_of(w, 10 * MS, 5 * MS)
    for smooth_f in (
        lambda s: peak(ro, spikes, 25 * MS, smooth=s)[0],
        lambda s: integral(ro, spikes, 25 * MS, smooth=s),
    ):
        np.testing.assert_allclose(smooth_f(False), smooth_f(True), rtol=1e-12, atol=1e-15)


def test_peak_of_an_empty_record_is_rest():
    """No spikes at all (capacity 0, one sample or a batch): V stays at rest, so the
    maximum is 0 at time 0, and its gradient is zero, not an error."""
    ro = readout_of(np.ones((4, 3)), 10 * MS, 5 * MS)
    for shape in ((0,), (2, 0)):
        empty = es.Spikes(np.zeros(shape), np.zeros(shape, int))
        value, time = peak(ro, empty, 25 * MS)
        assert value.shape == time.shape == shape[:-1] + (3,)
        np.testing.assert_array_equal(value, 0.0)
        np.testing.assert_array_equal(time, 0.0)
    g = jax.grad(lambda r: jnp.sum(peak(r, empty, 25 * MS)[0]))(ro)
    np.testing.assert_array_equal(g.weights, 0.0)


def test_peak_batch_presorted_and_padding():
    """A batch is its samples one by one (records of different lengths); a sorted record
    gives the same with ``presorted=True``; padding anywhere (an inf time, or an index -1
    with any time) adds nothing."""
    rng = np.random.default_rng(5)
    w = rng.normal(0.3, 1.0, (4, 3))
    ro = readout_of(w, 10 * MS, 5 * MS)
    t = rng.uniform(0, 20 * MS, (3, 12))
    idx = rng.integers(0, 4, t.shape)
    t[1, 5:] = np.inf
    t[2, 0] = np.inf
    idx[2, 7] = -1  # padding by its index, its time finite (amid the real spikes)
    idx = np.where(np.isfinite(t), idx, -1)
    value, time = peak(ro, es.Spikes(t, idx), 25 * MS)
    for b in range(3):
        v1, t1 = peak(ro, es.Spikes(t[b], idx[b]), 25 * MS)
        np.testing.assert_allclose(value[b], v1, rtol=1e-13)
        np.testing.assert_allclose(time[b], t1, rtol=1e-13)
    real = np.isfinite(t) & (idx >= 0)
    order = np.argsort(np.where(real, t, np.inf), axis=1, kind="stable")
    sorted_ = es.Spikes(np.take_along_axis(t, order, 1), np.take_along_axis(idx, order, 1))
    v2, _ = peak(ro, sorted_, 25 * MS, presorted=True)
    np.testing.assert_allclose(v2, value, rtol=1e-13)
    # Only the real spikes, padding at the end: the same maximum, on the dense grid too.
    n_real = int(real[2].sum())
    t_real = np.concatenate([t[2][real[2]], np.full(12 - n_real, np.inf)])
    i_real = np.concatenate([idx[2][real[2]], np.full(12 - n_real, -1)])
    v3, _ = peak(ro, es.Spikes(t_real, i_real), 25 * MS)
    np.testing.assert_allclose(value[2], v3, rtol=1e-13)
    assert_peak_on_dense_grid(ro, es.Spikes(t[2], idx[2]), 25 * MS, value[2], time[2])


# --- gradients against central finite differences ------------------------------------------


def _objective(ro, times, indices, t_max, c, kind):
    spikes = es.Spikes(times, indices)
    if kind == "peak":
        return jnp.sum(c * readout.peak(ro, spikes, t_max)[0])
    return jnp.sum(c * readout.integral(ro, spikes, t_max))


_objective_value = eqx.filter_jit(_objective)
_objective_grad = eqx.filter_jit(jax.grad(_objective, argnums=(0, 1)))


def fd_compare(kind, ro, spikes, t_max, c, rtol=1e-6, eps=1e-6):
    """Every entry of the gradient of ``sum(c * peak or integral)`` w.r.t. weights,
    tau_mem, tau_syn and input times against central differences with a step relative to
    each entry's scale (|p|, 1 ms for times), elementwise to `rtol` with an absolute floor
    of `rtol` times the largest scaled entry."""
    times, t_max, c = jnp.asarray(spikes.times), jnp.asarray(t_max), jnp.asarray(c)
    g_ro, g_t = _objective_grad(ro, times, spikes.indices, t_max, c, kind)
    grads = [np.asarray(x) for x in (g_ro.weights, g_ro.tau_mem, g_ro.tau_syn, g_t)]
    point = [np.asarray(x) for x in (ro.weights, ro.tau_mem, ro.tau_syn, times)]
    scales = [np.where(p != 0, np.abs(p), 1.0) for p in point[:3]]
    scales.append(np.where(np.isfinite(point[3]), MS, 0.0))
    floor = rtol * max(np.max(np.abs(g * s)) for g, s in zip(grads, scales))
    assert floor > 0
    for k, name in enumerate(("weights", "tau_mem", "tau_syn", "times")):
        for j in np.ndindex(point[k].shape):
            if scales[k][j] == 0:
                assert grads[k][j] == 0  # padding
                continue
            h = eps * scales[k][j]

            def moved(sign, k=k, j=j, h=h):
                p = [x.copy() for x in point]
                p[k][j] += sign * h
                r = eqx.tree_at(
                    lambda r: (r.weights, r.tau_mem, r.tau_syn), ro, tuple(map(jnp.asarray, p[:3]))
                )
                value = _objective_value(r, jnp.asarray(p[3]), spikes.indices, t_max, c, kind)
                return float(value)

            fd = (moved(1) - moved(-1)) / (2 * h) * scales[k][j]
            g = grads[k][j] * scales[k][j]
            assert abs(g - fd) <= rtol * abs(fd) + floor, (name, j, g, fd)


# Inputs for the gradient cases: excitatory spikes on channels 0 and 1, inhibitory on 2.
GRAD_INPUTS = es.Spikes(
    np.array([1.0, 2.5, 4.0, 6.0, np.inf, 9.0]) * MS, np.array([0, 1, 2, 0, -1, 1])
)
GRAD_WEIGHTS = np.array([[1.5, 1.0], [0.8, 1.2], [-0.2, -4.0]])


@pytest.mark.parametrize("taus", TAUS[:3], ids=lambda x: f"ratio{x[0] / x[1]:.4g}")
@pytest.mark.parametrize("where", ["interior", "t_max", "arrival"])
def test_peak_gradients_match_finite_differences(taus, where):
    """Neuron 0's maximum is where the case says; neuron 1 (a strong inhibitory input at
    4 ms, while it rises) peaks on that arrival in the long runs."""
    tm, ts = taus
    t_max = {"interior": 30 * MS, "t_max": 3.2 * MS, "arrival": 30 * MS}[where]
    w = GRAD_WEIGHTS.copy()
    if where == "arrival":
        w[2, 0] = -3.0
    ro = readout_of(w, [tm, 0.9 * tm], [ts, 1.1 * ts], delay=0.2 * MS)
    value, time = (np.asarray(x) for x in peak(ro, GRAD_INPUTS, t_max))
    arrivals = np.asarray(GRAD_INPUTS.times) + ro.delay
    on_arrival = np.isclose(time[:, None], arrivals[None, :], rtol=0, atol=1e-15).any(axis=1)
    if where == "t_max":
        assert time[0] == t_max and time[1] == t_max
    elif where == "interior":
        assert 0 < time[0] < t_max and not on_arrival[0]
    else:
        assert on_arrival[0] and time[0] == 4 * MS + ro.delay
    if where != "t_max":
        assert on_arrival[1] and time[1] == 4 * MS + ro.delay
    fd_compare("peak", ro, GRAD_INPUTS, t_max, [1.0, -0.7])


@pytest.mark.parametrize("taus", TAUS[:3], ids=lambda x: f"ratio{x[0] / x[1]:.4g}")
@pytest.mark.parametrize("t_max", [5 * MS, 30 * MS])
def test_integral_gradients_match_finite_differences(taus, t_max):
    ro = readout_of(GRAD_WEIGHTS, [taus[0], 0.9 * taus[0]], [taus[1], 1.1 * taus[1]], 0.2 * MS)
    fd_compare("integral", ro, GRAD_INPUTS, t_max, [1.0, -0.7])


# --- properties ------------------------------------------------------------------------------


@jax.jit
def _properties(w, w2, tm, ts, times, indices, at):
    spikes = es.Spikes(times, indices)
    ro = LIReadout(w, tau_mem=tm, tau_syn=ts)
    value, _ = peak(ro, spikes, 20 * MS)
    v_at = trace(ro, spikes, at)
    linear = integral(LIReadout(w + 2.5 * w2, tau_mem=tm, tau_syn=ts), spikes, 20 * MS)
    parts = integral(ro, spikes, 20 * MS) + 2.5 * integral(
        LIReadout(w2, tau_mem=tm, tau_syn=ts), spikes, 20 * MS
    )
    return value, v_at, linear, parts


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**32 - 1),
    ratio=st.sampled_from([0.3, 1.0, 2.0, 5.0]),
    k=st.integers(0, 10),
)
def test_peak_bounds_the_trace_and_integral_is_linear(seed, ratio, k):
    rng = np.random.default_rng(seed)
    w, w2 = rng.normal(0, 1.5, (2, 3, 2))
    times = np.full(10, np.inf)
    times[:k] = rng.uniform(0, 22 * MS, k)
    indices = np.where(np.isfinite(times), rng.integers(0, 3, 10), -1)
    at = rng.uniform(0, 20 * MS, 64)
    tm = 8 * MS
    value, v_at, linear, parts = (
        np.asarray(x) for x in _properties(w, w2, tm, tm / ratio, times, indices, at)
    )
    assert np.all(value >= 0)
    assert np.all(value[None, :] >= v_at - 1e-12)
    np.testing.assert_allclose(linear, parts, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weights=np.ones(3)), "weights must be 2-D"),
        (dict(tau_mem=np.ones(2) * MS), r"tau_mem must be a scalar or have shape \(3,\)"),
        (dict(tau_syn=0.0), r"LIReadout.tau_syn must be > 0 seconds"),
        (dict(weights=np.full((2, 3), np.nan)), "LIReadout.weights must be finite"),
        (dict(delay=-1e-3), "delay must be a number of seconds >= 0"),
    ],
)
def test_readout_refuses_bad_parameters(kwargs, message):
    args = dict(weights=np.ones((2, 3)), tau_mem=10 * MS, tau_syn=5 * MS) | kwargs
    with pytest.raises(ValueError, match=message):
        LIReadout(args.pop("weights"), **args)
