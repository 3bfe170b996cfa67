"""`python -m eventsnn simulate`: the network-spec.md contract, run as a user would."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

NET = {
    "t_max": 0.04,
    "input_size": 2,
    "layers": [
        {
            "size": 3,
            "tau_mem": 0.01,
            "tau_syn": 0.005,
            "v_th": 1.0,
            "t_refrac": 0.001,
            "weights": [[4.5, 5.0, 0.5], [4.5, 5.0, 6.0]],
            "recurrent_weights": [[0, 0.5, 0], [0, 0, 0], [0, 0, 0]],
        },
        {
            "size": 2,
            "tau_mem": [0.01, 0.02],
            "tau_syn": 0.01,
            "v_th": 1.0,
            "delay": 0.001,
            "weights": [[3, 2], [3, 2], [3, 2]],
        },
    ],
    "inputs": [{"times": [0.002, 0.001], "indices": [1, 0]}, {"times": [0.003], "indices": [1]}],
    "max_spikes": 32,
}


def run(tmp_path, doc, *args):
    path = tmp_path / "net.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return subprocess.run(
        [sys.executable, "-m", "eventsnn", "simulate", str(path), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_simulate_writes_sorted_spikes_of_every_layer(tmp_path):
    out = tmp_path / "out.json"
    proc = run(tmp_path, NET, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    doc = json.loads(out.read_text())
    assert len(doc["samples"]) == 2
    for sample in doc["samples"]:
        assert sample["overflow"] is False
        assert len(sample["layers"]) == 2
        for layer, size in zip(sample["layers"], (3, 2)):
            t, i = np.array(layer["times"]), np.array(layer["indices"], int)
            assert len(t) == len(i)
            assert np.all(np.diff(t) >= 0)
            assert np.all((i >= 0) & (i < size))
    first = doc["samples"][0]["layers"]
    assert len(first[0]["times"]) >= 3 and len(first[1]["times"]) >= 3
    # Layer 1 only hears layer 0 through a 1 ms delay: nothing before its first input + 1 ms.
    assert min(first[1]["times"]) > min(first[0]["times"]) + 0.001


def test_stdout_and_float32_agree_with_float64(tmp_path):
    a = run(tmp_path, NET)
    b = run(tmp_path, NET, "--dtype", "float32")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    da, db = json.loads(a.stdout), json.loads(b.stdout)
    for sa, sb in zip(da["samples"], db["samples"]):
        for la, lb in zip(sa["layers"], sb["layers"]):
            assert la["indices"] == lb["indices"]
            np.testing.assert_allclose(la["times"], lb["times"], atol=1e-5)


def test_overflow_is_reported_not_hidden(tmp_path):
    doc = copy.deepcopy(NET)
    doc["max_spikes"] = 2
    proc = run(tmp_path, doc)
    assert proc.returncode == 0, proc.stderr
    sample = json.loads(proc.stdout)["samples"][0]
    assert sample["overflow"] is True
    assert len(sample["layers"][0]["times"]) == 2


def _mutate(path, value):
    doc = copy.deepcopy(NET)
    *parents, last = path
    target = doc
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return doc


BAD = [
    (("layers", 0, "tau_mem"), -0.01, "layers[0].tau_mem"),
    (("layers", 1, "tau_syn"), [0.01], "layers[1].tau_syn"),
    (("layers", 0, "v_reset"), 1.5, "layers[0].v_reset"),
    (("layers", 0, "t_refrac"), -1e-3, "layers[0].t_refrac"),
    (("layers", 1, "delay"), -1e-3, "layers[1].delay"),
    (("layers", 1, "weights"), [[1, 2], [3, 4]], "layers[1].weights"),
    (("layers", 0, "recurrent_weights"), [[0, 1], [1, 0]], "layers[0].recurrent_weights"),
    (("layers", 0, "weights"), KeyError, "layers[0].weights"),
    (("layers", 0, "size"), 0, "layers[0].size"),
    (("layers", 0, "tau_mm"), 0.01, "layers[0].tau_mm"),
    (("t_max",), -1, "t_max"),
    (("input_size",), "two", "input_size"),
    (("inputs", 0, "indices"), [0, 2], "inputs[0].indices[1]"),
    (("inputs", 1, "indices"), [1, 1], "inputs[1].indices"),
    (("inputs", 0, "times"), [0.001, -0.002], "inputs[0].times"),
    (("max_spikes",), 0, "max_spikes"),
    (("loss",), {"first_spike_coefficients": [1.0]}, "loss.first_spike_coefficients"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD, ids=[b[2] for b in BAD])
def test_malformed_file_exits_2_naming_the_field(tmp_path, path, value, field):
    out = tmp_path / "out.json"
    proc = run(tmp_path, _mutate(path, value), "--out", str(out))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert field in lines[0]
    assert proc.stdout == ""
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps(NET).replace("0.001]", "NaN]"), "inputs[0].times"),
    ],
)
def test_unparseable_or_nan_file_exits_2(tmp_path, text, field):
    proc = run(tmp_path, text)
    assert proc.returncode == 2
    assert field in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
