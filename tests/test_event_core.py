"""The exact event core against an independent `solve_ivp` reference and hand-derived cases.

Random networks come from hypothesis: the discrete choices (structure, sizes, time-constant
ratio, leak, refractoriness, input ties) are drawn by hypothesis, the continuous values from
a numpy generator seeded by a drawn integer, so a failing example prints a short,
exactly reproducible `Case`.

Most random networks are padded to a few fixed shapes (extra input channels and neurons
with zero weights in and out, which never spike), so jit compiles once per structure.

Ill-conditioned draws are assumed away with the reference's diagnostics, never by loosening
the time tolerance: a PSP maximum within `margin` of threshold (a spike that nearly appears
or vanishes), a crossing slower than `slope` (1/s), a spike or near-crossing within
`end_gap` of t_max, or a runaway network that exceeds the spike budget.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, event, given, note, settings
from hypothesis import strategies as st
from reference import reference_simulate

import eventsnn as es

T_MAX = 0.03
N_IN_PAD, SIZE_PAD, INPUT_CAP, MAX_SPIKES = 5, 8, 24, 256
PARAMS = ("tau_mem", "tau_syn", "v_th", "v_reset", "v_leak", "t_refrac")
PAD_PARAMS = dict(tau_mem=10e-3, tau_syn=5e-3, v_th=1.0, v_reset=0.0, v_leak=0.0, t_refrac=0.0)

# (layers, recurrent layer or None, delay of each layer): a few fixed jit structures
STRUCTURES = (
    (1, None, (0.0,)),
    (1, 0, (0.0,)),
    (1, 0, (1.1e-3,)),
    (2, None, (0.0, 0.6e-3)),
    (2, 1, (0.2e-3, 0.0)),
    (2, 0, (0.0, 2e-3)),
    (3, None, (0.4e-3, 0.0, 1.5e-3)),
    (3, 1, (0.0, 0.9e-3, 0.0)),
)


# --------------------------------------------------------------------------------------
# Hand-derived closed forms (single neuron, single input), independent of eventsnn.
#
# From rest with a current jump w at t = 0:  u(t) = V - v_leak = w k(t),
#   k(t) = tau_s/(tau_m - tau_s) (exp(-t/tau_m) - exp(-t/tau_s))     (tau_m != tau_s)
#   k(t) = (t/tau) exp(-t/tau)                                        (tau_m == tau_s)
# k'(t) = 0 at t* = ln(tau_m/tau_s) tau_m tau_s/(tau_m - tau_s)  (t* = tau when equal).
# --------------------------------------------------------------------------------------


def psp(t, tau_mem, tau_syn):
    if tau_mem == tau_syn:
        return t / tau_mem * math.exp(-t / tau_mem)
    return tau_syn / (tau_mem - tau_syn) * (math.exp(-t / tau_mem) - math.exp(-t / tau_syn))


def psp_peak(tau_mem, tau_syn):
    """(t*, k(t*)) of the unit PSP."""
    if tau_mem == tau_syn:
        return tau_mem, 1.0 / math.e
    t_star = math.log(tau_mem / tau_syn) * tau_mem * tau_syn / (tau_mem - tau_syn)
    return t_star, psp(t_star, tau_mem, tau_syn)


def psp_peak_vec(tau_mem, tau_syn):
    return np.array([psp_peak(float(a), float(b))[1] for a, b in zip(tau_mem, tau_syn)])


def bisect(f, lo, hi, iters=200):
    """Root of increasing f on [lo, hi] (f(lo) < 0 <= f(hi)) to the last bit."""
    assert f(lo) < 0 <= f(hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return hi


# --------------------------------------------------------------------------------------
# Random networks
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """A random network and its inputs: discrete choices plus a seed for the values."""

    structure: tuple
    n_in: int
    sizes: tuple
    ratio_modes: tuple  # per layer: "1", "2", "uniform" or "near1"
    leak_modes: tuple  # per layer: "zero", "below" or "tonic"
    refrac: tuple  # per layer: bool
    n_spikes: int
    ties: str  # "none", "some" or "grid"
    seed: int
    padded: bool = True

    @functools.cached_property
    def data(self):
        return make_network(self)


def make_network(c: Case):
    rng = np.random.default_rng(c.seed)
    n_layers, rec_layer, delays = c.structure
    layers, n_prev = [], c.n_in
    for k in range(n_layers):
        n = c.sizes[k]
        tau_mem = rng.uniform(3e-3, 20e-3, n)
        if c.ratio_modes[k] == "1":
            tau_syn = tau_mem.copy()
        elif c.ratio_modes[k] == "2":
            tau_syn = tau_mem / 2
        elif c.ratio_modes[k] == "near1":  # the cancellation-prone regime of the closed form
            tau_syn = tau_mem * (1 + rng.choice([-1, 1], n) * 10 ** rng.uniform(-12, -4, n))
        else:
            tau_syn = tau_mem / rng.uniform(0.3, 4.0, n)
        v_th = rng.uniform(0.5, 1.5, n)
        v_reset = v_th - rng.uniform(0.3, 2.0, n)
        v_reset[np.abs(v_reset) < 1e-3] = -0.05  # v_reset != 0
        if c.leak_modes[k] == "zero":
            v_leak = np.zeros(n)
        else:
            v_leak = v_th - rng.uniform(0.2, 1.5, n)
            if c.leak_modes[k] == "tonic":
                tonic = rng.random(n) < 0.4
                v_leak[tonic] = (v_th + rng.uniform(0.1, 0.8, n))[tonic]
        t_refrac = rng.uniform(0.5e-3, 3e-3, n) if c.refrac[k] else np.zeros(n)
        # weights in units of "one input alone brings V from rest to threshold"
        gap = np.where(v_leak < v_th, v_th - v_leak, v_th - v_reset)
        unit = gap / psp_peak_vec(tau_mem, tau_syn)
        gain = rng.uniform(0.4, 1.2) / max(1.0, n_prev / 2) ** 0.5
        weights = np.clip(rng.normal(0.3, 0.6, (n_prev, n)), -1.5, 2.0) * gain * unit
        rec = None
        if rec_layer == k:
            rec = rng.normal(0.0, 0.25, (n, n)) * unit / max(1.0, n / 2) ** 0.5
        layers.append(
            dict(
                weights=weights,
                recurrent_weights=rec,
                tau_mem=tau_mem,
                tau_syn=tau_syn,
                v_th=v_th,
                v_reset=v_reset,
                v_leak=v_leak,
                t_refrac=t_refrac,
                delay=delays[k],
            )
        )
        n_prev = n
    times = rng.uniform(0.0, 25e-3, c.n_spikes)
    indices = rng.integers(0, c.n_in, c.n_spikes)
    if c.ties == "some" and c.n_spikes > 1:
        copy = rng.random(c.n_spikes) < 0.4
        copy[0] = False
        src = rng.integers(0, np.arange(1, c.n_spikes + 1))  # an earlier (or same) spike
        times = np.where(copy, times[np.minimum(src, np.arange(c.n_spikes))], times)
    elif c.ties == "grid":
        times = np.round(times / 2e-3) * 2e-3  # many ties, also at t = 0
    return layers, times, indices


@st.composite
def cases(draw, structures=STRUCTURES, ratio_modes=("1", "2", "uniform", "near1"), padded=True):
    structure = draw(st.sampled_from(structures))
    n_layers = structure[0]
    if not padded:  # arbitrary (static) delays: each example compiles anew
        delays = tuple(
            draw(st.one_of(st.just(0.0), st.floats(0.2e-3, 2e-3))) for _ in range(n_layers)
        )
        structure = (n_layers, structure[1], delays)
    return Case(
        structure=structure,
        n_in=draw(st.integers(1, N_IN_PAD)),
        sizes=tuple(draw(st.integers(1, SIZE_PAD)) for _ in range(n_layers)),
        ratio_modes=tuple(draw(st.sampled_from(ratio_modes)) for _ in range(n_layers)),
        leak_modes=tuple(
            draw(st.sampled_from(["zero", "below", "below", "tonic"])) for _ in range(n_layers)
        ),
        refrac=tuple(draw(st.booleans()) for _ in range(n_layers)),
        n_spikes=draw(st.sampled_from([0, *range(6, INPUT_CAP + 1)])),
        ties=draw(st.sampled_from(["none", "some", "grid"])),
        seed=draw(st.integers(0, 2**32 - 1)),
        padded=padded,
    )


def _pad_vec(x, n, value):
    return np.concatenate([np.asarray(x, float), np.full(n - len(x), value)])


def build(case: Case, dtype=None):
    """The eventsnn network and inputs of a case (padded to the fixed shapes if asked)."""
    layers, times, indices = case.data
    out, n_prev_pad = [], (N_IN_PAD if case.padded else case.n_in)
    for layer in layers:
        w = layer["weights"]
        n = w.shape[1]
        n_pad = SIZE_PAD if case.padded else n
        wp = np.zeros((n_prev_pad, n_pad))
        wp[: w.shape[0], :n] = w
        rec = layer["recurrent_weights"]
        if rec is not None:
            rp = np.zeros((n_pad, n_pad))
            rp[:n, :n] = rec
            rec = rp
        params = {p: _pad_vec(layer[p], n_pad, PAD_PARAMS[p]) for p in PARAMS}
        out.append(
            es.dense_layer(wp, recurrent_weights=rec, delay=layer["delay"], dtype=dtype, **params)
        )
        n_prev_pad = n_pad
    cap = INPUT_CAP if case.padded else max(len(times), 1)
    t = np.full(cap, np.inf)
    i = np.full(cap, -1)
    # unsorted on purpose: eventsnn sorts its inputs
    t[: len(times)], i[: len(times)] = times[::-1], indices[::-1]
    return es.Network(out), es.Spikes(t, i, dtype=dtype)


def reference(case: Case):
    layers, times, indices = case.data
    return reference_simulate(layers, times, indices, T_MAX, max_spikes=MAX_SPIKES)


def assert_spikes_match(res, ref_spikes, sizes, tol):
    """Same spikes per layer and neuron (count and order), times within `tol` seconds."""
    for k, (ref_t, ref_i) in enumerate(ref_spikes):
        times = np.asarray(res.layers[k].times, np.float64)
        idx = np.asarray(res.layers[k].indices)
        count = int(res.counts[k])
        assert not bool(res.overflow[k])
        got_t, got_i = times[:count], idx[:count]
        # record format: sorted by time, ties by index, padded with inf / -1
        assert np.all(np.isinf(times[count:])) and np.all(idx[count:] == -1)
        assert np.all(np.isfinite(got_t)) and np.all((got_i >= 0) & (got_i < sizes[k]))
        assert np.array_equal(np.lexsort((got_i, got_t)), np.arange(count)), (
            f"layer {k}: record not sorted by (time, index)"
        )
        for j in range(sizes[k]):
            a, b = ref_t[ref_i == j], got_t[got_i == j]
            msg = f"layer {k} neuron {j}:\n reference {a.tolist()}\n eventsnn  {b.tolist()}"
            assert len(a) == len(b), "spike count differs, " + msg
            if len(a):
                err = np.max(np.abs(a - b))
                assert err < tol, f"|dt| = {err:.3g} s, " + msg


def check_against_reference(case, dtype, tol, margin, slope, end_gap, solver=None):
    ref_spikes, diag = reference(case)
    note(f"reference diagnostics: {diag}")
    assume(diag["margin"] > margin and diag["min_slope"] > slope and diag["end_gap"] > end_gap)
    assume(not diag["overflow"] and max(diag["n_spikes"]) < MAX_SPIKES)
    total = sum(diag["n_spikes"])
    event("spikes: " + ("none" if total == 0 else "1-9" if total < 10 else ">= 10"))
    event("last layer spikes: " + ("yes" if diag["n_spikes"][-1] else "no"))
    net, inputs = build(case, dtype)
    kw = {} if solver is None else dict(solver=solver)
    res = es.simulate(net, inputs, t_max=T_MAX, max_spikes=MAX_SPIKES, **kw)
    assert_spikes_match(res, ref_spikes, case.sizes, tol)
    return res, ref_spikes


# --------------------------------------------------------------------------------------
# Random networks against the reference
# --------------------------------------------------------------------------------------


@settings(max_examples=150)
@given(case=cases())
def test_float64_matches_reference(case):
    check_against_reference(case, None, tol=1e-9, margin=1e-7, slope=1e-1, end_gap=1e-8)


@settings(max_examples=8)
@given(case=cases(padded=False))
def test_float64_matches_reference_exact_shapes(case):
    """Unpadded sizes and arbitrary delays (one compile per example)."""
    check_against_reference(case, None, tol=1e-9, margin=1e-7, slope=1e-1, end_gap=1e-8)


@settings(max_examples=30)
@given(case=cases(structures=STRUCTURES[1::2]))
def test_float32_matches_reference(case):
    """float32 layers (checked without x64 too: errors there are ~1e-8 s, max 4e-8 s)."""
    check_against_reference(case, jnp.float32, tol=1e-5, margin=1e-3, slope=10.0, end_gap=1e-5)


@settings(max_examples=30)
@given(case=cases(structures=STRUCTURES[:6], ratio_modes=("2",)))
def test_quadratic_solver_agrees_with_newton(case):
    """tau_mem = 2 tau_syn everywhere: the closed-form solver gives the Newton spikes."""
    res_q, ref_spikes = check_against_reference(
        case, None, tol=1e-9, margin=1e-7, slope=1e-1, end_gap=1e-8, solver=es.QuadraticSolver()
    )
    net, inputs = build(case)
    res_n = es.simulate(net, inputs, t_max=T_MAX, max_spikes=MAX_SPIKES, solver=es.NewtonSolver())
    for k in range(len(ref_spikes)):
        np.testing.assert_array_equal(res_q.layers[k].indices, res_n.layers[k].indices)
        np.testing.assert_allclose(
            res_q.layers[k].times, res_n.layers[k].times, rtol=0, atol=1e-12
        )


FEED_FORWARD = tuple(s for s in STRUCTURES if s[1] is None)


def check_ttfs_path(case, solver=None):
    """Single-spike feed-forward layers on the parallel TTFS path: the reference with a
    refractory period longer than the run (so each neuron spikes at most once) gives the
    same spikes, and so does the event loop (``fast_ttfs=False``)."""
    layers, times, indices = case.data
    once = [{**layer, "t_refrac": np.full(len(layer["tau_mem"]), 1.0)} for layer in layers]
    ref_spikes, diag = reference_simulate(once, times, indices, T_MAX, max_spikes=MAX_SPIKES)
    assume(diag["margin"] > 1e-7 and diag["min_slope"] > 1e-1 and diag["end_gap"] > 1e-8)
    event("output spikes: " + ("yes" if diag["n_spikes"][-1] else "no"))
    net, inputs = build(case)
    net = es.Network(
        [es.Layer(x.weights, x.params, delay=x.delay, single_spike=True) for x in net.layers]
    )
    kw = dict(t_max=T_MAX, max_spikes=MAX_SPIKES, solver=solver)
    fast = es.simulate(net, inputs, fast_ttfs=True, **kw)
    loop = es.simulate(net, inputs, fast_ttfs=False, **kw)
    assert_spikes_match(fast, ref_spikes, case.sizes, 1e-9)
    for a, b in zip(fast.layers, loop.layers):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(a.times, b.times, rtol=0, atol=1e-12)


@settings(max_examples=25)
@given(case=cases(structures=FEED_FORWARD))
def test_parallel_ttfs_path_matches_reference_and_event_loop(case):
    check_ttfs_path(case)


@settings(max_examples=15)
@given(case=cases(structures=FEED_FORWARD, ratio_modes=("2",)))
def test_parallel_ttfs_path_with_quadratic_solver(case):
    check_ttfs_path(case, es.QuadraticSolver())


def test_random_networks_do_spike():
    """The generator is useful: most draws spike, in every layer, without overflowing."""
    rng = np.random.default_rng(0)
    n, spiking_last, spiking_all, total, overflowing = 40, 0, 0, 0, 0
    for s in range(n):
        structure = STRUCTURES[s % len(STRUCTURES)]
        k = structure[0]
        case = Case(
            structure=structure,
            n_in=int(rng.integers(1, 6)),
            sizes=tuple(int(x) for x in rng.integers(1, 9, k)),
            ratio_modes=tuple(rng.choice(["1", "2", "uniform"], k)),
            leak_modes=tuple(rng.choice(["zero", "below", "below", "tonic"], k)),
            refrac=tuple(bool(x) for x in rng.integers(0, 2, k)),
            n_spikes=int(rng.integers(0, INPUT_CAP + 1)),
            ties=str(rng.choice(["none", "some", "grid"])),
            seed=int(rng.integers(2**32)),
        )
        spikes, diag = reference(case)
        counts = [len(t) for t, _ in spikes]
        spiking_last += counts[-1] > 0
        spiking_all += min(counts) > 0
        total += sum(counts)
        overflowing += diag["overflow"] or max(counts) >= MAX_SPIKES
    assert overflowing <= 0.1 * n, overflowing
    assert spiking_last >= 0.6 * n, spiking_last
    assert spiking_all >= 0.5 * n, spiking_all
    assert total / n > 10


# --------------------------------------------------------------------------------------
# The reference itself against closed forms
# --------------------------------------------------------------------------------------


def one_neuron(w, **params):
    p = dict(tau_mem=10e-3, tau_syn=5e-3, v_th=1.0, v_reset=0.0, v_leak=0.0, t_refrac=0.0)
    p.update(params)
    return dict(
        weights=np.atleast_2d(np.asarray(w, float)),
        recurrent_weights=None,
        delay=0.0,
        **{k: np.atleast_1d(np.asarray(v, float)) for k, v in p.items()},
    )


def test_reference_matches_closed_forms():
    # tonic firing
    spikes, _ = reference_simulate(
        [one_neuron(0.0, v_leak=1.5, v_reset=0.2, t_refrac=2e-3)], [], [], T_MAX
    )
    period = 2e-3 + 10e-3 * math.log((1.5 - 0.2) / (1.5 - 1.0))
    expected = period * np.arange(int(T_MAX / period) + 1)
    np.testing.assert_allclose(spikes[0][0], expected, rtol=0, atol=1e-11)
    # one supra-threshold PSP
    tau_m, tau_s, w, t_in = 10e-3, 4e-3, 1.3 / psp_peak(10e-3, 4e-3)[1], 2e-3
    spikes, diag = reference_simulate([one_neuron(w, tau_syn=tau_s)], [t_in], [0], T_MAX)
    t_star = bisect(lambda t: w * psp(t, tau_m, tau_s) - 1.0, 0.0, psp_peak(tau_m, tau_s)[0])
    np.testing.assert_allclose(spikes[0][0], [t_in + t_star], rtol=0, atol=1e-12)
    assert diag["min_slope"] > 1.0
    # a PSP peaking 1e-4 below threshold: no spike, margin reported
    w = 0.9999 / psp_peak(tau_m, tau_s)[1]
    spikes, diag = reference_simulate([one_neuron(w, tau_syn=tau_s)], [t_in], [0], T_MAX)
    assert len(spikes[0][0]) == 0
    assert diag["margin"] == pytest.approx(1e-4, rel=1e-6)


@pytest.mark.parametrize("eps", [1e-6, 1e-9])
def test_reference_finds_brief_grazing_crossings(eps):
    """Excursions above threshold far shorter than a solver step (no sign change of
    V - v_th at step ends) are spikes, also when another neuron's ordinary crossing ends
    the integration just after them (solve_ivp drops events after a terminal one)."""
    tau_m, tau_s, t_in = 10e-3, 4e-3, 2e-3
    t_peak, k_peak = psp_peak(tau_m, tau_s)
    w = [(1 + eps) / k_peak, (1 + 2 * eps) / k_peak, (1 - eps) / k_peak]
    t_cross = [
        bisect(lambda t, wi=wi: wi * psp(t, tau_m, tau_s) - 1.0, 0.0, t_peak) for wi in w[:2]
    ]
    # neuron 3 (tau_mem = tau_syn = 20 ms: still steeply rising) crosses a third of the
    # way through neuron 0's excursion
    t3 = t_cross[0] + (t_peak - t_cross[0]) / 3
    w.append(1.0 / psp(t3, 20e-3, 20e-3))
    layer = one_neuron(0.0, tau_syn=tau_s)
    layer["weights"] = np.array([w])
    layer.update({p: np.repeat(layer[p], 4) for p in PARAMS})
    layer["tau_mem"][3] = layer["tau_syn"][3] = 20e-3
    spikes, diag = reference_simulate([layer], [t_in], [0], T_MAX)
    t3 = bisect(lambda t: w[3] * psp(t, 20e-3, 20e-3) - 1.0, 0.0, 20e-3)
    times, idx = spikes[0]
    np.testing.assert_array_equal(idx[:3], [1, 0, 3])  # then neuron 3 fires on
    assert set(idx[3:]) == {3}
    np.testing.assert_allclose(
        times[:3], t_in + np.array([t_cross[1], t_cross[0], t3]), rtol=0, atol=1e-9
    )
    assert diag["margin"] == pytest.approx(eps, rel=1e-3)


# --------------------------------------------------------------------------------------
# Single neurons against hand-derived closed forms
# --------------------------------------------------------------------------------------


def single(w, t_in=(2e-3,), dtype=None, max_spikes=16, t_max=T_MAX, check_overflow=True, **params):
    p = dict(tau_mem=10e-3, tau_syn=5e-3, v_th=1.0, v_reset=0.0, v_leak=0.0, t_refrac=0.0)
    p.update(params)
    net = es.Network([es.dense_layer(np.full((1, 1), w), dtype=dtype, **p)])
    t_in = np.asarray(t_in, float)
    inputs = es.Spikes(
        t_in if len(t_in) else [np.inf], np.zeros(len(t_in), int) if len(t_in) else [-1]
    )
    res = es.simulate(
        net, inputs, t_max=t_max, max_spikes=max_spikes, check_overflow=check_overflow
    )
    return np.asarray(res.layers[0].times)[: int(res.counts[0])], res


RATIOS = [1.0, 2.0, 0.5, 3.7]


@pytest.mark.parametrize("ratio", RATIOS)
def test_subthreshold_psp_does_not_spike(ratio):
    tau_m, v_leak, v_th = 10e-3, 0.2, 1.0
    tau_s = tau_m / ratio
    w = 0.999 * (v_th - v_leak) / psp_peak(tau_m, tau_s)[1]
    times, _ = single(w, tau_mem=tau_m, tau_syn=tau_s, v_leak=v_leak, v_th=v_th, v_reset=-0.3)
    assert len(times) == 0


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("eps", [1e-6, 1e-9])
def test_grazing_psp(ratio, eps):
    """Weight just above / below the one whose PSP peak touches threshold exactly."""
    tau_m, v_leak, v_th, t_in = 10e-3, -0.3, 0.8, 3e-3
    tau_s = tau_m / ratio
    t_peak, k_peak = psp_peak(tau_m, tau_s)
    w_crit = (v_th - v_leak) / k_peak
    kw = dict(tau_mem=tau_m, tau_syn=tau_s, v_leak=v_leak, v_th=v_th, v_reset=-0.5)

    below, _ = single(w_crit * (1 - eps), t_in=[t_in], **kw)
    assert len(below) == 0

    w = w_crit * (1 + eps)
    above, _ = single(w, t_in=[t_in], **kw)
    assert len(above) == 1
    # u = w k(t) reaches v_th - v_leak on the rising side, ~tau sqrt(2 eps) before the peak
    t_cross = bisect(lambda t: w * psp(t, tau_m, tau_s) - (v_th - v_leak), 0.0, t_peak)
    assert 0 < t_peak - t_cross < 3 * max(tau_m, tau_s) * math.sqrt(2 * eps)
    assert abs(above[0] - (t_in + t_cross)) < 1e-9


@pytest.mark.parametrize(("t_refrac", "v_reset"), [(2e-3, 0.2), (0.0, -0.5), (0.7e-3, 1.1)])
def test_tonic_firing_period(t_refrac, v_reset):
    v_leak, v_th, tau_m = 1.6, 1.2, 7e-3
    period = t_refrac + tau_m * math.log((v_leak - v_reset) / (v_leak - v_th))
    n = int(T_MAX / period) + 1
    assert T_MAX - (n - 1) * period > 1e-5  # not at the horizon
    times, _ = single(
        0.0,
        t_in=[],
        tau_mem=tau_m,
        tau_syn=3e-3,
        v_leak=v_leak,
        v_th=v_th,
        v_reset=v_reset,
        t_refrac=t_refrac,
        max_spikes=64,
    )
    np.testing.assert_allclose(times, period * np.arange(n), rtol=0, atol=1e-12)


def test_equal_and_nearly_equal_time_constants():
    tau, w, t_in = 10e-3, 1.4 * math.e, 2e-3
    # tau_m == tau_s: u = w (t/tau) exp(-t/tau) reaches 1 before the peak at t = tau
    t_cross = bisect(lambda t: w * t / tau * math.exp(-t / tau) - 1.0, 0.0, tau)
    got = {}
    for factor in [1.0, 1 + 1e-9, 1 - 1e-9, 1 + 1e-6]:
        times, _ = single(w, t_in=[t_in], tau_mem=tau, tau_syn=tau * factor)
        assert len(times) == 1
        got[factor] = times[0]
    for factor in [1.0, 1 + 1e-9, 1 - 1e-9]:
        assert abs(got[factor] - (t_in + t_cross)) < 1e-9, got
    # continuity: 1e-6 relative change of tau_syn moves the spike by O(1e-6 tau)
    assert abs(got[1 + 1e-6] - got[1.0]) < 1e-7


@settings(max_examples=30)
@given(
    tau_mem=st.floats(1e-3, 50e-3),
    ratio=st.floats(0.02, 50.0),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_plain_kernel_matches_the_smooth_one_where_it_applies(tau_mem, ratio, dtype):
    """`kernel(smooth=False)` (the plain difference of exponentials, for simulation only)
    against the smooth form on a grid, within the rounding bound the docstring states, and
    `plain_kernel_ok` draws the line at `PLAIN_KERNEL_GAP`."""
    from eventsnn.neuron import PLAIN_KERNEL_GAP, kernel, plain_kernel_ok, propagate

    tau_syn = tau_mem / ratio
    ok = plain_kernel_ok(tau_mem, tau_syn)
    assert ok == (abs(tau_mem - tau_syn) >= PLAIN_KERNEL_GAP * min(tau_mem, tau_syn))
    assume(ok)
    t = jnp.asarray(np.linspace(0.0, 5 * max(tau_mem, tau_syn), 2001), dtype)
    tm, ts = jnp.asarray(tau_mem, dtype), jnp.asarray(tau_syn, dtype)
    ulp = float(jnp.finfo(dtype).eps)
    bound = 2 * (1 + 1 / PLAIN_KERNEL_GAP) * ulp + 4 * ulp  # + the smooth form's own
    smooth, plain = kernel(t, tm, ts), kernel(t, tm, ts, smooth=False)
    assert plain.dtype == smooth.dtype
    np.testing.assert_allclose(plain, smooth, rtol=0, atol=bound)
    u0, i0 = jnp.asarray(0.3, dtype), jnp.asarray(-1.7, dtype)
    for a, b in zip(propagate(u0, i0, t, tm, ts), propagate(u0, i0, t, tm, ts, smooth=False)):
        np.testing.assert_allclose(b, a, rtol=0, atol=2 * bound)
    # Too close (or equal, or not concrete): the smooth form is required.
    assert not plain_kernel_ok(tau_mem, tau_mem * (1 + 0.5 * PLAIN_KERNEL_GAP))
    assert not plain_kernel_ok(np.array([tau_mem, tau_mem]), np.array([tau_syn, tau_mem]))
    assert not jax.jit(lambda a, b: jnp.asarray(plain_kernel_ok(a, b)))(tm, ts)


# --------------------------------------------------------------------------------------
# Simultaneous spikes, overflow, batching, errors
# --------------------------------------------------------------------------------------


def _layers_net(layers):
    return es.Network(
        [
            es.dense_layer(
                lay["weights"],
                recurrent_weights=lay["recurrent_weights"],
                delay=lay["delay"],
                **{p: lay[p] for p in PARAMS},
            )
            for lay in layers
        ]
    )


def _record(res, k):
    c = int(res.counts[k])
    return np.asarray(res.layers[k].times)[:c], np.asarray(res.layers[k].indices)[:c]


T_TIES = np.array([1e-3, 1e-3, 4e-3, 9e-3, 9e-3, 15e-3])
I_TIES = np.array([0, 1, 1, 0, 1, 0])


def test_identical_neurons_spike_at_exactly_the_same_time():
    """Two identical neurons fed identically: every spike is an exact tie, both spikes are
    emitted, index 0 first, and the next layer receives both (one alone is subthreshold)."""
    lif = dict(delay=0.0, recurrent_weights=None, v_th=1.0, t_refrac=0.0)
    layers = [
        dict(
            weights=np.array([[3.0, 3.0], [2.5, 2.5]]),
            tau_mem=10e-3,
            tau_syn=4e-3,
            v_reset=-0.2,
            v_leak=0.1,
            **{**lif, "t_refrac": 1e-3},
        ),
        # r = 1: one spike peaks at 2.2/e = 0.81 < 1, two together at 1.62
        dict(
            weights=np.array([[2.2], [2.2]]),
            tau_mem=5e-3,
            tau_syn=5e-3,
            v_reset=0.0,
            v_leak=0.0,
            **lif,
        ),
    ]
    res = es.simulate(_layers_net(layers), es.Spikes(T_TIES, I_TIES), t_max=T_MAX, max_spikes=64)
    times, idx = _record(res, 0)
    assert len(times) >= 4 and len(times) % 2 == 0
    np.testing.assert_array_equal(idx, np.tile([0, 1], len(times) // 2))
    np.testing.assert_array_equal(times[0::2], times[1::2])  # bitwise
    ref_spikes, diag = reference_simulate(layers, T_TIES, I_TIES, T_MAX)
    assert diag["margin"] > 1e-6
    assert_spikes_match(res, ref_spikes, (2, 1), tol=1e-9)
    assert int(res.counts[1]) > 0


@pytest.mark.parametrize("twins", [(1, 2), (0, 2)])
def test_simultaneous_spikes_with_recurrence(twins):
    """Twins (identical inputs and recurrent input, no twin-to-twin synapse) next to a third
    neuron with zero-delay recurrence: both twins spike every time, together, and match the
    reference. The ties may break by an ulp: XLA on CPU can evaluate the same expression
    differently in different vector lanes (e.g. fused multiply-add in one lane only)."""
    a, b = twins
    other = 3 - a - b
    w = np.zeros((2, 3))
    w[:, a] = w[:, b] = [3.0, 2.5]
    w[:, other] = [2.0, 4.0]
    rec = np.zeros((3, 3))
    rec[other, a] = rec[other, b] = 0.3
    rec[a, other] = rec[b, other] = -0.5
    tau_mem = np.full(3, 10e-3)
    tau_mem[other] = 8e-3
    layers = [
        dict(
            weights=w,
            recurrent_weights=rec,
            delay=0.0,
            tau_mem=tau_mem,
            tau_syn=5e-3,
            v_th=1.0,
            v_reset=-0.2,
            v_leak=0.1,
            t_refrac=1e-3,
        ),
        dict(
            weights=np.array([[1.5], [1.5], [1.0]]),
            recurrent_weights=None,
            delay=0.0,
            tau_mem=5e-3,
            tau_syn=5e-3,
            v_th=1.0,
            v_reset=0.0,
            v_leak=0.0,
            t_refrac=0.0,
        ),
    ]
    res = es.simulate(_layers_net(layers), es.Spikes(T_TIES, I_TIES), t_max=T_MAX, max_spikes=64)
    times, idx = _record(res, 0)
    ta, tb = times[idx == a], times[idx == b]
    assert len(ta) >= 2 and len(ta) == len(tb)
    np.testing.assert_allclose(ta, tb, rtol=1e-14, atol=0)
    ref_spikes, diag = reference_simulate(layers, T_TIES, I_TIES, T_MAX)
    assert diag["margin"] > 1e-6
    assert_spikes_match(res, ref_spikes, (3, 1), tol=1e-9)  # also: sorted, ties by index
    assert int(res.counts[1]) > 0


def test_overflow_is_reported_and_raised():
    kw = dict(
        t_in=[],
        tau_mem=4e-3,
        tau_syn=2e-3,
        v_leak=1.5,
        v_th=1.0,
        v_reset=0.0,
        t_refrac=1e-3,
        max_spikes=3,
    )
    times, res = single(0.0, check_overflow=False, **kw)
    assert bool(res.overflow[0]) and int(res.counts[0]) == 3
    period = 1e-3 + 4e-3 * math.log(1.5 / 0.5)  # 5.4 ms: 6 spikes due before t_max
    np.testing.assert_allclose(times, period * np.arange(3), rtol=0, atol=1e-12)
    with pytest.raises(RuntimeError, match="max_spikes"):
        single(0.0, **kw)
    # enough budget: no overflow
    _, res = single(0.0, **{**kw, "max_spikes": 16})
    assert not bool(res.overflow[0])


def _fixed_net():
    return build(
        Case(
            structure=STRUCTURES[4],
            n_in=3,
            sizes=(5, 4),
            ratio_modes=("uniform", "1"),
            leak_modes=("below", "tonic"),
            refrac=(True, False),
            n_spikes=16,
            ties="some",
            seed=1234,
        )
    )[0]


def test_vmap_batch_equals_per_sample():
    net = _fixed_net()
    rng = np.random.default_rng(5)
    batch_t = rng.uniform(0, 25e-3, (4, INPUT_CAP))
    batch_i = rng.integers(0, 3, (4, INPUT_CAP))
    batch_t[1, 10:] = np.inf  # padding, different per sample
    batch_i[1, 10:] = -1
    batch_t[2, :3] = batch_t[2, 3]  # ties
    res = es.simulate(net, es.Spikes(batch_t, batch_i), t_max=T_MAX, max_spikes=MAX_SPIKES)
    assert res.counts.shape == (4, 2)
    n_spikes = 0
    for b in range(4):
        one = es.simulate(
            net, es.Spikes(batch_t[b], batch_i[b]), t_max=T_MAX, max_spikes=MAX_SPIKES
        )
        np.testing.assert_array_equal(res.counts[b], one.counts)
        for k in range(2):
            np.testing.assert_array_equal(res.layers[k].indices[b], one.layers[k].indices)
            np.testing.assert_allclose(
                res.layers[k].times[b], one.layers[k].times, rtol=0, atol=1e-13
            )
        n_spikes += int(one.counts.sum())
    assert n_spikes > 0


def test_new_input_values_do_not_recompile():
    from eventsnn.event import simulate as sim_mod

    cached = getattr(getattr(sim_mod, "_simulate_batch", None), "_cached", None)
    if cached is None or not hasattr(cached, "_cache_size"):
        pytest.skip("no access to the jit cache of the simulator")
    net = _fixed_net()
    rng = np.random.default_rng(9)

    def run():
        t = rng.uniform(0, 25e-3, INPUT_CAP)
        i = rng.integers(0, 3, INPUT_CAP)
        return es.simulate(net, es.Spikes(t, i), t_max=T_MAX, max_spikes=MAX_SPIKES)

    run()
    size = cached._cache_size()
    a, b = run(), run()
    assert cached._cache_size() == size
    assert not np.array_equal(np.asarray(a.layers[0].times), np.asarray(b.layers[0].times))


def test_bad_parameters_name_the_field():
    w = np.ones((2, 3))
    with pytest.raises(ValueError, match="tau_mem"):
        es.dense_layer(w, tau_mem=-1.0, tau_syn=5e-3)
    with pytest.raises(ValueError, match="v_reset"):
        es.dense_layer(w, tau_mem=10e-3, tau_syn=5e-3, v_th=1.0, v_reset=1.0)
    with pytest.raises(ValueError, match="v_reset"):
        es.dense_layer(w, tau_mem=10e-3, tau_syn=5e-3, v_th=1.0, v_reset=[0.0, 1.5, 0.0])
    layer0 = es.dense_layer(w, tau_mem=10e-3, tau_syn=5e-3)
    with pytest.raises(ValueError, match=r"layers\[1\]\.weights"):
        es.Network([layer0, es.dense_layer(np.ones((4, 2)), tau_mem=10e-3, tau_syn=5e-3)])
    net = es.Network([layer0])
    with pytest.raises(ValueError, match=r"inputs\.times"):
        es.simulate(net, es.Spikes([1e-3, np.nan], [0, 1]), t_max=T_MAX)


def test_float32_layers_stay_float32():
    """A float32 network is simulated and reported in float32, also with x64 enabled."""
    times, res = single(3.0, t_in=[1e-3, 2e-3], dtype=jnp.float32)
    assert res.layers[0].times.dtype == jnp.float32
    assert len(times) == 1
    assert jax.config.jax_enable_x64  # conftest: float64 available session-wide


@settings(max_examples=30)
@given(
    k=st.sampled_from([1, 2, 7, 100, 300]),  # 300: past PAIRWISE_MAX, the lax.sort branch
    seed=st.integers(0, 2**32 - 1),
    with_tiebreak=st.booleans(),
)
def test_time_order_is_a_stable_lexicographic_sort(k, seed, with_tiebreak):
    """Ranking by pairwise comparison gives numpy's stable order, ties (many, inf
    included) broken by the tiebreak key, then by position."""
    from eventsnn.event.order import time_order

    rng = np.random.default_rng(seed)
    t = rng.integers(0, 5, (3, k)).astype(float)
    t[t == 4] = np.inf
    key = rng.integers(0, 3, (3, k))
    got = np.asarray(time_order(jnp.asarray(t), jnp.asarray(key) if with_tiebreak else None))
    keys = (
        (lambda b: (np.arange(k), key[b], t[b]))
        if with_tiebreak
        else (lambda b: (np.arange(k), t[b]))
    )
    want = np.stack([np.lexsort(keys(b)) for b in range(3)])
    np.testing.assert_array_equal(got, want)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), ratio=st.sampled_from([2.0, 0.6, 3.3]))
def test_peak_potential_matches_a_fine_grid_and_finite_differences(seed, ratio):
    """`peak_potential` (the highest u of each neuron under its inputs alone) against the
    sum of hand-written PSPs on a 0.2 us grid, and its weight gradient against central
    differences."""
    from eventsnn.event.simulate import layer_arrivals
    from eventsnn.event.ttfs import peak_potential

    rng = np.random.default_rng(seed)
    tau_m = 10e-3
    tau_s = tau_m / ratio
    w = rng.normal(0.2, 1.0, (6, 4))
    times = np.sort(rng.uniform(0, 15e-3, 6))

    def peak(weights, t=times):
        layer = es.dense_layer(weights, tau_mem=tau_m, tau_syn=tau_s)
        arrivals = layer_arrivals(es.Spikes(jnp.asarray(t), jnp.arange(6)), 0.0)
        return peak_potential(layer, arrivals, T_MAX)

    grid = np.arange(0, T_MAX, 2e-7)  # plus the arrival times, where kinks sit
    grid = np.sort(np.concatenate([grid, times]))
    lag = grid[:, None] - times[None, :]
    psp = np.where(
        lag >= 0, tau_s / (tau_s - tau_m) * (np.exp(-lag / tau_s) - np.exp(-lag / tau_m)), 0.0
    )
    u = psp @ w  # [grid, neurons]
    want = np.maximum(u.max(axis=0), 0.0)  # u = 0 at rest before the first input
    got = np.asarray(peak(jnp.asarray(w)))
    # The grid can only miss the top, by at most |du/dt| (< 300/s here) times half a step.
    assert np.all(got >= want - 1e-12) and np.all(got <= want + 3e-5), (got, want)

    g = np.asarray(jax.grad(lambda x: jnp.sum(peak(x) * jnp.arange(1.0, 5.0)))(jnp.asarray(w)))
    h = 1e-6
    for i, j in [(0, 0), (3, 2), (5, 3)]:
        d = np.zeros_like(w)
        d[i, j] = h
        fd = (
            float(jnp.sum(peak(jnp.asarray(w + d)) * jnp.arange(1.0, 5.0)))
            - float(jnp.sum(peak(jnp.asarray(w - d)) * jnp.arange(1.0, 5.0)))
        ) / (2 * h)
        np.testing.assert_allclose(g[i, j], fd, rtol=1e-5, atol=1e-8)
    # ... and in the input times (a peak at an arrival moves with it)
    coef = jnp.arange(1.0, 5.0)
    g_t = np.asarray(
        jax.grad(lambda t: jnp.sum(peak(jnp.asarray(w), t) * coef))(jnp.asarray(times))
    )
    h = 1e-9
    for k in range(6):
        d = np.zeros(6)
        d[k] = h
        fd = (
            float(jnp.sum(peak(jnp.asarray(w), times + d) * coef))
            - float(jnp.sum(peak(jnp.asarray(w), times - d) * coef))
        ) / (2 * h)
        np.testing.assert_allclose(g_t[k], fd, rtol=1e-4, atol=1e-3)
