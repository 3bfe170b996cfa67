"""The network file (JSON): parse and validate it, build the network and inputs.

The format is a contract with other tools (network-spec.md). Every problem is reported
as one `NetworkFileError` naming the field (``layers[1].weights``) and what to change.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from typing import NoReturn

import jax.numpy as jnp
import numpy as np

from .network import Layer, Network, Spikes
from .neuron import LIFParams

DEFAULT_MAX_SPIKES = 256
_TOP_FIELDS = {"t_max", "input_size", "layers", "inputs", "max_spikes", "loss"}
_LAYER_FIELDS = {
    "size",
    "tau_mem",
    "tau_syn",
    "v_th",
    "v_reset",
    "v_leak",
    "t_refrac",
    "delay",
    "weights",
    "recurrent_weights",
}
_LOSS_FIELDS = {"first_spike_coefficients", "all_spike_coefficients"}


class NetworkFileError(ValueError):
    """A malformed network file; the message names the field."""


@dataclass(frozen=True)
class Loss:
    """``L = sum_j c_j t_j`` over first spikes (``first_spike=True``) or all spikes."""

    coefficients: np.ndarray
    first_spike: bool


@dataclass(frozen=True)
class NetworkFile:
    network: Network
    inputs: Spikes  # [samples, k]
    t_max: float
    max_spikes: int
    loss: Loss | None


def _fail(field: str, problem: str) -> NoReturn:
    raise NetworkFileError(f"{field}: {problem}")


def _number(obj, field: str, *, positive=False, nonneg=False):
    if isinstance(obj, bool) or not isinstance(obj, (int, float)):
        _fail(field, f"must be a number, got {json.dumps(obj)}")
    if not math.isfinite(obj):
        _fail(field, "must be finite (no NaN or Infinity)")
    if positive and obj <= 0:
        _fail(field, f"must be > 0, got {obj}")
    if nonneg and obj < 0:
        _fail(field, f"must be >= 0, got {obj}")
    return float(obj)


def _count(obj, field: str) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int) or obj < 1:
        _fail(field, f"must be a positive integer, got {json.dumps(obj)}")
    return obj


def _array(obj, field: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A finite float array of exactly `shape` from nested lists."""
    try:
        arr = np.array(obj, dtype=float)
    except (TypeError, ValueError):
        _fail(field, f"must be {what} of numbers")
    if arr.shape != shape:
        _fail(field, f"must be {what} of shape {list(shape)}, got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        _fail(field, f"must be finite (no NaN or Infinity), bad entry at index {list(bad)}")
    return arr


def _param(obj, field: str, size: int, *, positive=False, nonneg=False) -> np.ndarray:
    if isinstance(obj, list):
        arr = _array(obj, field, (size,), "a scalar or a list")
    else:
        arr = np.full(size, _number(obj, field))
    if positive and (arr <= 0).any():
        _fail(field, f"must be > 0 (seconds), got {arr[arr <= 0][0]}")
    if nonneg and (arr < 0).any():
        _fail(field, f"must be >= 0 (seconds), got {arr[arr < 0][0]}")
    return arr


def _check_keys(obj, field: str, allowed: set[str], required: tuple[str, ...]):
    if not isinstance(obj, dict):
        _fail(field or "file", "must be a JSON object")
    prefix = f"{field}." if field else ""
    for key in obj:
        if key not in allowed:
            _fail(
                f"{prefix}{key}", f"unknown field (expected one of: {', '.join(sorted(allowed))})"
            )
    for key in required:
        if key not in obj:
            _fail(f"{prefix}{key}", "is required but missing")


def _layer(obj, k: int, n_in: int, dtype) -> Layer:
    name = f"layers[{k}]"
    _check_keys(obj, name, _LAYER_FIELDS, ("size", "tau_mem", "tau_syn", "v_th", "weights"))
    n = _count(obj["size"], f"{name}.size")
    p = {
        "tau_mem": _param(obj["tau_mem"], f"{name}.tau_mem", n, positive=True),
        "tau_syn": _param(obj["tau_syn"], f"{name}.tau_syn", n, positive=True),
        "v_th": _param(obj["v_th"], f"{name}.v_th", n),
        "v_reset": _param(obj.get("v_reset", 0.0), f"{name}.v_reset", n),
        "v_leak": _param(obj.get("v_leak", 0.0), f"{name}.v_leak", n),
        "t_refrac": _param(obj.get("t_refrac", 0.0), f"{name}.t_refrac", n, nonneg=True),
    }
    if (p["v_reset"] >= p["v_th"]).any():
        _fail(f"{name}.v_reset", "must be below v_th for every neuron")
    src = "input_size" if k == 0 else f"layers[{k - 1}].size"
    w = _array(obj["weights"], f"{name}.weights", (n_in, n), f"a list of lists [{src}, size]")
    rec = obj.get("recurrent_weights")
    if rec is not None:
        rec = _array(rec, f"{name}.recurrent_weights", (n, n), "a list of lists [size, size]")
    delay = _number(obj.get("delay", 0.0), f"{name}.delay", nonneg=True)
    lif = LIFParams(n, dtype=dtype, name=name, **p)
    rec = None if rec is None else jnp.asarray(rec, dtype)
    return Layer(jnp.asarray(w, dtype), lif, rec, delay)


def _inputs(obj, input_size: int, dtype) -> Spikes:
    if not isinstance(obj, list) or not obj:
        _fail("inputs", "must be a non-empty list with one {times, indices} object per sample")
    width = 1
    samples = []
    for s, sample in enumerate(obj):
        name = f"inputs[{s}]"
        _check_keys(sample, name, {"times", "indices"}, ("times", "indices"))
        if not isinstance(sample["times"], list) or not isinstance(sample["indices"], list):
            _fail(name, "times and indices must be lists")
        k = len(sample["times"])
        times = _array(sample["times"], f"{name}.times", (k,), "a list")
        if (times < 0).any():
            _fail(f"{name}.times", f"must be >= 0 seconds, got {times[times < 0][0]}")
        idx = sample["indices"]
        if len(idx) != k:
            _fail(f"{name}.indices", f"must have the same length as times ({k}), got {len(idx)}")
        for j, i in enumerate(idx):
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < input_size:
                _fail(
                    f"{name}.indices[{j}]",
                    f"must be an integer in [0, {input_size - 1}], got {json.dumps(i)}",
                )
        samples.append((times, np.asarray(idx, np.int32)))
        width = max(width, k)
    times = np.full((len(samples), width), np.inf)
    indices = np.full((len(samples), width), -1, np.int32)
    for s, (t, i) in enumerate(samples):
        times[s, : len(t)], indices[s, : len(i)] = t, i
    return Spikes(times, indices, dtype=dtype)


def _loss(obj, n_out: int) -> Loss | None:
    if obj is None:
        return None
    _check_keys(obj, "loss", _LOSS_FIELDS, ())
    if len(obj) != 1:
        _fail("loss", "must hold exactly one of first_spike_coefficients, all_spike_coefficients")
    ((key, value),) = obj.items()
    c = _array(value, f"loss.{key}", (n_out,), "a list (one per output neuron)")
    return Loss(c, key == "first_spike_coefficients")


def parse_network(doc, dtype=np.float64) -> NetworkFile:
    """Validate a decoded network file and build the network, inputs and settings."""
    _check_keys(doc, "", _TOP_FIELDS, ("t_max", "input_size", "layers", "inputs"))
    t_max = _number(doc["t_max"], "t_max", positive=True)
    n_in = _count(doc["input_size"], "input_size")
    if not isinstance(doc["layers"], list) or not doc["layers"]:
        _fail("layers", "must be a non-empty list of layer objects")
    layers, size = [], n_in
    for k, obj in enumerate(doc["layers"]):
        layers.append(_layer(obj, k, size, dtype))
        size = layers[-1].size
    max_spikes = _count(doc.get("max_spikes", DEFAULT_MAX_SPIKES), "max_spikes")
    return NetworkFile(
        network=Network(layers),
        inputs=_inputs(doc["inputs"], n_in, dtype),
        t_max=t_max,
        max_spikes=max_spikes,
        loss=_loss(doc.get("loss"), size),
    )


#: What the two kinds of file must be, said in every message that refuses one.
NETWORK_EXPECTED = "a network file (JSON text, see network-spec.md) or a NIR graph (HDF5)"
INPUTS_EXPECTED = "a JSON object with t_max and inputs (network-spec.md)"

#: The first 8 bytes of every HDF5 file (and so of every ``.nir`` file).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _one_line(text: str) -> str:
    """Library messages may span lines; the CLI's contract is one line per error."""
    return " ".join(str(text).split())


def _read_bytes(path, expected: str) -> bytes:
    """The content of `path`, or one `NetworkFileError` saying why it cannot be read."""
    if os.path.isdir(path):
        _fail(str(path), f"is a directory; expected {expected}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        _fail(str(path), f"cannot read ({e.strerror or e}); expected {expected}")
    if not data.strip():
        _fail(str(path), f"is empty; expected {expected}")
    return data


def is_hdf5(data: bytes) -> bool:
    """Whether `data` (a file's content) is HDF5: the signature sits at byte 0 or, after
    a user block, at 512, 1024, 2048, ... (HDF5 file format specification, superblock)."""
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= len(data):
        if data[offset : offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            return True
        offset = 512 if offset == 0 else 2 * offset
    return False


def _parse_json(data: bytes, path, expected: str):
    """Decode UTF-8 JSON (a byte-order mark is allowed), or refuse in one line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        where = f"byte 0x{data[e.start]:02x} at offset {e.start}"
        _fail(str(path), f"not UTF-8 text ({where}); expected {expected}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        _fail(str(path), f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})")
    except RecursionError:
        _fail(str(path), "not valid JSON (nested too deeply)")
    except ValueError as e:  # e.g. an integer literal beyond Python's digit limit
        _fail(str(path), f"not valid JSON ({_one_line(e)})")


def _read_json(path, expected: str = INPUTS_EXPECTED) -> dict:
    data = _read_bytes(path, expected)
    if is_hdf5(data):
        _fail(str(path), f"is an HDF5 file (a NIR graph?); expected {expected}")
    return _parse_json(data, path, expected)


#: The entries of a network file that are not the network (what ``--inputs`` gives).
SETTINGS_FIELDS = ("t_max", "inputs", "max_spikes", "loss")


def load_document(path: str | os.PathLike, inputs_path=None) -> dict:
    """The decoded network file at `path`: JSON, or a NIR graph whose settings (t_max,
    inputs, ...) come from `inputs_path`, or else from what our export stored. A NIR graph
    is recognised by its content (the HDF5 signature), whatever the file is called; a
    ``.nir`` name on anything else is refused."""
    data = _read_bytes(path, NETWORK_EXPECTED)
    if is_hdf5(data):  # by content: a NIR graph under any name
        doc = nir_document(path)
    elif str(path).endswith(".nir"):
        looks_json = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[")
        hint = " (it looks like JSON text: if it is a network file, name it .json)"
        _fail(
            str(path),
            "is not a NIR graph: a .nir file is HDF5 and this one is not"
            + (hint if looks_json else ""),
        )
    else:
        doc = _parse_json(data, path, NETWORK_EXPECTED)
        if not isinstance(doc, dict):
            _fail(str(path), f"must be a JSON object; expected {NETWORK_EXPECTED}")
    if inputs_path is not None:
        extra = _read_json(inputs_path, INPUTS_EXPECTED)
        if not isinstance(extra, dict):
            _fail(str(inputs_path), f"must be {INPUTS_EXPECTED}")
        unknown = set(extra) - set(SETTINGS_FIELDS)
        if unknown:
            _fail(
                f"{inputs_path}: {sorted(unknown)[0]}",
                f"is not an inputs-file field (allowed: {', '.join(SETTINGS_FIELDS)})",
            )
        doc = {**{k: v for k, v in doc.items() if k not in SETTINGS_FIELDS}, **extra}
    if "inputs" not in doc:
        _fail("inputs", f"{path} holds no input spikes: give them with --inputs FILE.json")
    return doc


def load_network(path: str | os.PathLike, dtype=np.float64, inputs_path=None) -> NetworkFile:
    """Read and validate a network file (JSON, or ``.nir`` plus an inputs file). Raises
    `NetworkFileError` naming the field."""
    return parse_network(load_document(path, inputs_path), dtype)


def network_document(network: Network) -> dict:
    """``input_size`` and ``layers`` of a network, as in the file (scalars where every
    neuron of a layer shares a value)."""
    layers = []
    for layer in network.layers:
        entry = {"size": layer.size}
        for field in ("tau_mem", "tau_syn", "v_th", "v_reset", "v_leak", "t_refrac"):
            values = np.asarray(getattr(layer.params, field), dtype=float)
            entry[field] = float(values[0]) if np.all(values == values[0]) else values.tolist()
        if layer.delay:
            entry["delay"] = float(layer.delay)
        entry["weights"] = np.asarray(layer.weights, dtype=float).tolist()
        if layer.recurrent_weights is not None:
            entry["recurrent_weights"] = np.asarray(layer.recurrent_weights, dtype=float).tolist()
        layers.append(entry)
    return {"input_size": network.input_size, "layers": layers}


def nir_document(path) -> dict:
    """A ``.nir`` file as a network-file document (settings from our export's metadata)."""
    from .nir import NIRImportError, from_nir, read_nir

    try:
        graph = read_nir(path)
    except ImportError:
        _fail(
            str(path),
            "is an HDF5 file (a NIR graph?); reading NIR needs the nir package: "
            "pip install 'eventsnn[nir]'",
        )
    except OSError as e:
        reason = _one_line(e)
        _fail(str(path), f"has the HDF5 signature but cannot be read as a NIR graph ({reason})")
    except Exception as e:  # h5py/nir raise assorted errors on malformed files
        _fail(str(path), f"HDF5 but not a NIR graph ({type(e).__name__}: {_one_line(e)})")
    try:
        model = from_nir(graph)
    except NIRImportError as e:
        _fail(str(path), _one_line(e))
    except Exception as e:  # a graph whose nodes lack what NIR promises
        _fail(str(path), f"not a usable NIR graph ({type(e).__name__}: {_one_line(e)})")
    if model.li_readout:
        _fail(
            f"{path}: readout",
            "is a non-spiking CubaLI; network files and the event core have spiking layers "
            "only (load it with eventsnn.nir.from_nir and use the discrete engine)",
        )
    doc = network_document(model.network)
    stored = (graph.metadata or {}).get("eventsnn")
    if stored is not None:
        try:
            settings = json.loads(str(stored))
        except ValueError:
            settings = None
        if not isinstance(settings, dict):
            _fail(f"{path}: metadata.eventsnn", "must be the JSON object our export writes")
        doc.update(settings)
    return doc


def check_writable(path: str | os.PathLike, field: str) -> None:
    """Refuse an output path that cannot be written (a directory, a missing folder) before
    any work is done, so that a long run does not end in a traceback."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        _fail(f"{field} {path}", "is a directory; expected a file name")
    if not os.path.isdir(directory):
        _fail(f"{field} {path}", f"the folder {directory} does not exist")
    if not os.access(directory, os.W_OK):
        _fail(f"{field} {path}", f"the folder {directory} is not writable")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON to `path` via a temporary file and rename: never a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
