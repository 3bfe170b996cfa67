"""`python -m eventsnn simulate`: the network-spec.md contract, run as a user would."""

import copy
import json
import os
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


# -- files that cannot be read as what they claim to be -------------------------------------
# Run in-process (cli.main): every refusal happens before anything is compiled, so the
# whole matrix costs milliseconds; one subprocess run below checks the real command.


def _write_hdf5_not_nir(path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3.0)


def _unreadable(path, monkeypatch):
    path.write_text(json.dumps(NET))
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make open() refuse as it would
        from eventsnn import netfile

        def refuse(p, *a, **k):
            if os.fspath(p) == os.fspath(path):
                raise PermissionError(13, "Permission denied", os.fspath(p))
            return open(p, *a, **k)

        monkeypatch.setattr(netfile, "open", refuse, raising=False)


# name -> (file name, how to make it, phrase as the network file, phrase as --inputs)
BAD_FILES = {
    "binary": (
        "net.json",
        lambda p, m: p.write_bytes(bytes(range(256)) * 4),
        "not UTF-8 text (byte 0x80 at offset 128); expected a network file",
        "not UTF-8 text (byte 0x80 at offset 128); expected a JSON object with t_max",
    ),
    "hdf5-not-nir": (
        "data.json",
        lambda p, m: _write_hdf5_not_nir(p),
        "HDF5 but not a NIR graph",
        "is an HDF5 file (a NIR graph?); expected a JSON object",
    ),
    "json-named-nir": (
        "net.nir",
        lambda p, m: p.write_text(json.dumps(NET)),
        "is not a NIR graph: a .nir file is HDF5 and this one is not (it looks like JSON",
        "is not an inputs-file field",
    ),
    "garbage-named-nir": (
        "net.nir",
        lambda p, m: p.write_bytes(b"PK\x03\x04 zip?"),
        "is not a NIR graph: a .nir file is HDF5 and this one is not",
        "not valid JSON",
    ),
    "empty": ("net.json", lambda p, m: p.write_bytes(b""), "is empty; expected", "is empty"),
    "blank": ("net.json", lambda p, m: p.write_text(" \n"), "is empty; expected", "is empty"),
    "directory": ("netdir", lambda p, m: p.mkdir(), "is a directory; expected", "is a directory"),
    "unreadable": ("net.json", _unreadable, "cannot read (Permission denied)", "Permission"),
    "missing": ("none.json", lambda p, m: None, "cannot read (No such file", "No such file"),
}

COMMANDS = {
    "simulate": lambda bad, good, out: ["simulate", bad, "--out", out],
    "grad": lambda bad, good, out: ["grad", bad, "--method", "eventprop", "--out", out],
    "convert": lambda bad, good, out: ["convert", bad, out],
    "simulate --inputs": lambda bad, good, out: ["simulate", good, "--inputs", bad, "--out", out],
    "grad --inputs": lambda bad, good, out: [
        "grad",
        good,
        "--method",
        "analytic",
        "--inputs",
        bad,
        "--out",
        out,
    ],
    "convert --inputs": lambda bad, good, out: ["convert", good, out, "--inputs", bad],
}


def _main_refuses(argv, out, capsys, *phrases):
    from eventsnn.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for phrase in phrases:
        assert phrase in lines[0]
    assert captured.out == ""
    assert not os.path.exists(out)
    return lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_unreadable_file_gets_one_line_and_exit_2(tmp_path, capsys, monkeypatch, kind, command):
    name, make, as_network, as_inputs = BAD_FILES[kind]
    bad = tmp_path / name
    make(bad, monkeypatch)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({**NET, "loss": {"first_spike_coefficients": [1.0, -1.0]}}))
    out = tmp_path / ("out.nir" if command.startswith("convert") else "out.json")
    phrase = as_inputs if "--inputs" in command else as_network
    argv = COMMANDS[command](str(bad), str(good), str(out))
    _main_refuses(argv, out, capsys, str(bad), phrase)


def _nir_file(tmp_path, name):
    """NET exported as a NIR graph (HDF5) under `name`, with its settings in the metadata."""
    pytest.importorskip("nir")
    from eventsnn.cli import main

    src = tmp_path / "src.json"
    src.write_text(json.dumps(NET))
    nir_path = tmp_path / "graph.nir"
    assert main(["convert", str(src), str(nir_path)]) == 0
    target = tmp_path / name
    nir_path.rename(target)
    return target


def test_hdf5_under_a_json_name_is_read_as_nir(tmp_path):
    from eventsnn.cli import main

    disguised = _nir_file(tmp_path, "really_nir.json")
    back = tmp_path / "back.json"
    assert main(["convert", str(disguised), str(back)]) == 0
    doc = json.loads(back.read_text())
    assert doc["inputs"] == NET["inputs"] and doc["t_max"] == NET["t_max"]
    np.testing.assert_array_equal(doc["layers"][1]["weights"], NET["layers"][1]["weights"])


def test_nir_graph_given_as_inputs_file_is_named(tmp_path, capsys):
    graph = _nir_file(tmp_path, "graph.nir")
    out = tmp_path / "out.json"
    argv = ["simulate", str(graph), "--inputs", str(graph), "--out", str(out)]
    _main_refuses(argv, out, capsys, "is an HDF5 file (a NIR graph?)", "t_max")


@pytest.mark.parametrize("where", ["folder", "missing-folder"])
def test_unwritable_out_is_refused_before_any_work(tmp_path, capsys, where):
    src = tmp_path / "net.json"
    src.write_text(json.dumps(NET))
    out = tmp_path if where == "folder" else tmp_path / "no" / "out.json"
    _main_refuses(["simulate", str(src), "--out", str(out)], tmp_path / "none", capsys, "--out")


def test_binary_file_to_grad_is_one_line_not_a_traceback(tmp_path):
    """The reported failure, run as a user would: an HDF5-like binary file to `grad`."""
    path = tmp_path / "net.json"
    path.write_bytes(b"\x89HDX\r\n\x1a\n" + bytes(range(256)))
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventsnn",
            "grad",
            str(path),
            "--method",
            "eventprop",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}: not UTF-8 text (byte 0x89 at offset 0); expected a network file "
        "(JSON text, see network-spec.md) or a NIR graph (HDF5)"
    ]
    assert proc.stdout == "" and not out.exists()
