"""NIR export/import: exact round trips, graphs written by hand with the `nir` package,
refusals, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import nir
import numpy as np
import pytest

from eventsnn import Network, Spikes, dense_layer, simulate
from eventsnn.netfile import load_network, network_document, parse_network
from eventsnn.nir import NIRImportError, from_nir, to_nir

REPO = Path(__file__).resolve().parents[1]


def _doc(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "t_max": 0.04,
        "input_size": 3,
        "layers": [
            {
                "size": 5,
                "tau_mem": rng.uniform(5e-3, 20e-3, 5).tolist(),
                "tau_syn": 5e-3,
                "v_th": 1.0,
                "v_reset": -0.2,
                "v_leak": 0.1,
                "t_refrac": rng.uniform(0, 2e-3, 5).tolist(),
                "delay": 1e-3,
                "weights": rng.uniform(0.5, 3.0, (3, 5)).tolist(),
                "recurrent_weights": rng.uniform(-0.5, 0.5, (5, 5)).tolist(),
            },
            {
                "size": 2,
                "tau_mem": 0.01,
                "tau_syn": [0.01, 0.004],
                "v_th": 0.5,
                "weights": rng.uniform(0.0, 1.5, (5, 2)).tolist(),
            },
        ],
        "inputs": [
            {"times": [0.001, 0.002, 0.003, 0.009], "indices": [0, 1, 2, 0]},
            {"times": [0.004, 0.001], "indices": [2, 1]},
        ],
        "loss": {"first_spike_coefficients": [1.0, -1.0]},
    }


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _spikes(net, inputs, t_max=0.04):
    res = simulate(net, inputs, t_max=t_max, max_spikes=64)
    return [(np.asarray(r.times), np.asarray(r.indices)) for r in res.layers]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_json_nir_json_round_trip_is_exact(tmp_path, seed):
    doc = _doc(seed)
    src = tmp_path / "net.json"
    src.write_text(json.dumps(doc))
    for a, b in [("net.json", "net.nir"), ("net.nir", "back.json")]:
        done = subprocess.run(
            [sys.executable, "-m", "eventsnn", "convert", str(tmp_path / a), str(tmp_path / b)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    before = load_network(src)
    after = load_network(tmp_path / "back.json")
    via_nir = load_network(tmp_path / "net.nir")
    for other in (after, via_nir):
        _leaves_equal(before.network, other.network)
        _leaves_equal(before.inputs, other.inputs)
        assert (other.t_max, other.max_spikes) == (before.t_max, before.max_spikes)
        for x, y in zip(
            _spikes(before.network, before.inputs), _spikes(other.network, other.inputs)
        ):
            np.testing.assert_array_equal(x[0], y[0])
            np.testing.assert_array_equal(x[1], y[1])


def test_handwritten_nir_graph_matches_the_equivalent_network_file():
    """A graph another tool could write: its own names, Affine with zero bias, w_in and r
    not 1, per-neuron parameters, a delay, recurrence through an Affine."""
    rng = np.random.default_rng(3)
    n_in, n_h, n_out = 3, 6, 2
    w1 = rng.uniform(0.005, 0.015, (n_h, n_in))  # [post, pre]
    wr = rng.uniform(-0.001, 0.001, (n_h, n_h))
    w2 = rng.uniform(0.0, 0.004, (n_out, n_h))
    tau_syn_h = rng.uniform(3e-3, 8e-3, n_h)
    tau_mem_h = rng.uniform(8e-3, 15e-3, n_h)
    w_in_h, r_h = rng.uniform(0.5, 2, n_h), rng.uniform(0.5, 2, n_h)
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input({"input": np.array([n_in])}),
            "d": nir.Delay(np.full(n_in, 0.5e-3)),
            "fc1": nir.Affine(w1, np.zeros(n_h)),
            "lif1": nir.CubaLIF(
                tau_syn=tau_syn_h,
                tau_mem=tau_mem_h,
                r=r_h,
                v_leak=np.full(n_h, 0.05),
                v_threshold=np.full(n_h, 1.0),
                v_reset=np.full(n_h, -0.1),
                w_in=w_in_h,
            ),
            "dr": nir.Delay(np.full(n_h, 0.5e-3)),
            "rec": nir.Affine(wr, np.zeros(n_h)),
            "fc2": nir.Linear(w2),
            "lif2": nir.CubaLIF(
                tau_syn=np.full(n_out, 5e-3),
                tau_mem=np.full(n_out, 10e-3),
                r=np.full(n_out, 2.0),
                v_leak=np.zeros(n_out),
                v_threshold=np.full(n_out, 0.8),
                w_in=np.ones(n_out),
            ),
            "out": nir.Output({"output": np.array([n_out])}),
        },
        edges=[
            ("in", "d"),
            ("d", "fc1"),
            ("fc1", "lif1"),
            ("lif1", "dr"),
            ("dr", "rec"),
            ("rec", "lif1"),
            ("lif1", "fc2"),
            ("fc2", "lif2"),
            ("lif2", "out"),
        ],
    )
    model = from_nir(graph)
    assert not model.li_readout
    # The network file of the same network, written from the documented mapping.
    s1 = w_in_h * r_h / tau_syn_h
    doc = {
        "t_max": 0.05,
        "input_size": n_in,
        "layers": [
            {
                "size": n_h,
                "tau_mem": tau_mem_h.tolist(),
                "tau_syn": tau_syn_h.tolist(),
                "v_th": 1.0,
                "v_reset": -0.1,
                "v_leak": 0.05,
                "delay": 0.5e-3,
                "weights": (w1.T * s1).tolist(),
                "recurrent_weights": (wr.T * s1).tolist(),
            },
            {
                "size": n_out,
                "tau_mem": 0.01,
                "tau_syn": 0.005,
                "v_th": 0.8,
                "weights": (w2.T * 2.0 / 5e-3).tolist(),
            },
        ],
        "inputs": [{"times": [0.001, 0.002, 0.0025], "indices": [0, 1, 2]}],
    }
    ref = parse_network(doc)
    x = ref.inputs
    got, want = _spikes(model.network, x, 0.05), _spikes(ref.network, x, 0.05)
    assert np.isfinite(want[0][0]).sum() >= 3 and np.isfinite(want[1][0]).sum() >= 1
    for (tg, ig), (tw, iw) in zip(got, want):
        np.testing.assert_array_equal(ig, iw)
        np.testing.assert_allclose(tg, tw, rtol=0, atol=1e-12)


def _chain(**extra):
    nodes = {
        "input": nir.Input({"input": np.array([2])}),
        "lin": nir.Linear(np.ones((3, 2))),
        "lif": nir.CubaLIF(
            tau_syn=np.ones(3),
            tau_mem=np.ones(3),
            r=np.ones(3),
            v_leak=np.zeros(3),
            v_threshold=np.ones(3),
        ),
        "output": nir.Output({"output": np.array([3])}),
    }
    edges = [("input", "lin"), ("lin", "lif"), ("lif", "output")]
    for name, (node, new_edges, drop) in extra.items():
        nodes[name] = node
        edges = [e for e in edges if e not in drop] + new_edges
    return nir.NIRGraph(nodes=nodes, edges=edges)


@pytest.mark.parametrize(
    "graph, match",
    [
        (
            _chain(
                b=(
                    nir.Affine(np.ones((3, 2)), np.ones(3)),
                    [("input", "b"), ("b", "lif")],
                    [("input", "lin"), ("lin", "lif")],
                )
            ),
            "Affine bias",
        ),
        (
            _chain(
                x=(
                    nir.LIF(
                        tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)
                    ),
                    [("lin", "x")],
                    [],
                )
            ),
            "'x' \\(LIF\\)",
        ),
        (_chain(x=(nir.Threshold(np.ones(3)), [("lif", "x")], [])), "not supported"),
        (
            _chain(
                x=(
                    nir.CubaLIF(
                        tau_syn=np.ones(3),
                        tau_mem=np.ones(3),
                        r=np.ones(3),
                        v_leak=np.zeros(3),
                        v_threshold=np.ones(3),
                    ),
                    [("lin", "x")],
                    [],
                )
            ),
            "branching|one input edge",
        ),
    ],
)
def test_import_refuses_what_has_no_equivalent(graph, match):
    with pytest.raises(NIRImportError, match=match):
        from_nir(graph)


def test_cubali_readout_round_trip_for_the_discrete_engine():
    from eventsnn import simulate_discrete

    net = Network(
        [
            dense_layer(np.full((2, 3), 2.0), tau_mem=0.01, tau_syn=0.005),
            dense_layer(np.full((3, 2), 0.5), tau_mem=0.02, tau_syn=0.005),
        ]
    )
    graph = to_nir(net, li_readout=True)
    assert isinstance(graph.nodes["layer1"], nir.CubaLI)
    model = from_nir(graph)
    assert model.li_readout
    x = Spikes(jnp.array([0.001, 0.002]), jnp.array([0, 1]))
    a = simulate_discrete(net, x, dt=1e-4, t_max=0.03, li_readout=True)
    b = simulate_discrete(model.network, x, dt=1e-4, t_max=0.03, li_readout=True)
    np.testing.assert_allclose(b.output_voltage, a.output_voltage, rtol=1e-12)


def test_cli_nir_needs_inputs_and_takes_them(tmp_path):
    doc = _doc()
    graph = to_nir(parse_network(doc).network)  # no stored settings
    nir.write(tmp_path / "bare.nir", graph)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({k: doc[k] for k in ("t_max", "inputs", "loss")}))
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "eventsnn", *a],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    bad = run("simulate", str(tmp_path / "bare.nir"))
    assert bad.returncode == 2 and "--inputs" in bad.stderr and bad.stdout == ""
    good = run("simulate", str(tmp_path / "bare.nir"), "--inputs", str(inputs))
    assert good.returncode == 0, good.stderr
    (tmp_path / "net.json").write_text(json.dumps(doc))
    ref = run("simulate", str(tmp_path / "net.json"))
    assert json.loads(good.stdout) == json.loads(ref.stdout)
    grad = run("grad", str(tmp_path / "bare.nir"), "--inputs", str(inputs), "--method", "analytic")
    assert grad.returncode == 0 and "grads" in json.loads(grad.stdout)
    garbage = tmp_path / "garbage.nir"
    garbage.write_text("not hdf5")
    bad = run("simulate", str(garbage), "--inputs", str(inputs))
    assert bad.returncode == 2 and "garbage.nir" in bad.stderr


def test_network_document_reproduces_the_network():
    net = parse_network(_doc()).network
    again = parse_network({**network_document(net), "t_max": 0.04, "inputs": _doc()["inputs"]})
    _leaves_equal(net, again.network)
