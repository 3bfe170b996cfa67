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


def _fail(field: str, problem: str):
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


def _read_json(path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise NetworkFileError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise NetworkFileError(
            f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None


#: The entries of a network file that are not the network (what ``--inputs`` gives).
SETTINGS_FIELDS = ("t_max", "inputs", "max_spikes", "loss")


def load_document(path: str | os.PathLike, inputs_path=None) -> dict:
    """The decoded network file at `path`: JSON, or a NIR graph (``.nir``) whose settings
    (t_max, inputs, ...) come from `inputs_path`, or else from what our export stored."""
    if str(path).endswith(".nir"):
        doc = nir_document(path)
    else:
        doc = _read_json(path)
    if inputs_path is not None:
        extra = _read_json(inputs_path)
        if not isinstance(extra, dict):
            _fail(str(inputs_path), "must be a JSON object with t_max and inputs")
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
    except OSError as e:
        raise NetworkFileError(f"{path}: cannot read as NIR ({e})") from None
    except Exception as e:  # h5py/nir raise assorted errors on malformed files
        raise NetworkFileError(f"{path}: not a NIR graph ({type(e).__name__}: {e})") from None
    try:
        model = from_nir(graph)
    except NIRImportError as e:
        raise NetworkFileError(f"{path}: {e}") from None
    if model.li_readout:
        _fail(
            f"{path}: readout",
            "is a non-spiking CubaLI; network files and the event core have spiking layers "
            "only (load it with eventsnn.nir.from_nir and use the discrete engine)",
        )
    doc = network_document(model.network)
    stored = (graph.metadata or {}).get("eventsnn")
    if stored is not None:
        doc.update(json.loads(str(stored)))
    return doc


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
