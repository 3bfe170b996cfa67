"""NIR (Neuromorphic Intermediate Representation) export and import.

NIR's ``CubaLIF`` is ``tau_syn dI/dt = -I + w_in S``, ``tau_mem dv/dt = (v_leak - v) + r I``
with ``S`` a sum of Dirac deltas and time in seconds; our model is the same with ``r = 1``
and jumps of ``I`` as weights. A spike through NIR weight ``W_nir[j, i]`` (``[post, pre]``)
therefore adds ``W[i, j] = W_nir[j, i] * w_in[j] * r[j] / tau_syn[j]`` to our ``I``.

Export writes ``W_nir = W^T``, ``r = 1`` and ``w_in = tau_syn``, so the per-neuron factor
``w_in r / tau_syn`` is exactly 1 and a json -> nir -> json round trip is bit-exact.
What NIR's CubaLIF lacks travels in node metadata: ``t_refrac`` and ``single_spike``.
A layer's synaptic delay becomes a ``Delay`` node in front of its ``Linear`` (and of the
recurrent ``Linear``). A non-spiking readout is exported as ``CubaLI``.

Import accepts graphs from other tools (any node names): a chain
``Input -> [Delay] -> Linear|Affine -> CubaLIF -> ... -> Output``, each ``CubaLIF`` with at
most one recurrent ``Linear``/``Affine`` path back to itself, optionally a final ``CubaLI``
readout. What has no equivalent (a nonzero ``Affine`` bias, other node types, branching
graphs, subgraphs) is refused with `NIRImportError` naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .network import Layer, Network
from .neuron import LIFParams

#: Threshold given to a non-spiking readout (CubaLI) on import: never reached.
NO_THRESHOLD = 1e30


class NIRImportError(ValueError):
    """A NIR graph that has no equivalent here; the message names the node."""


@dataclass(frozen=True)
class NIRModel:
    """An imported graph: the network and whether its last layer is a CubaLI readout
    (run it with the discrete engine's ``li_readout=True``)."""

    network: Network
    li_readout: bool = False


def _nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - the extra is part of the test set-up
        raise ImportError(
            "NIR support needs the `nir` package: pip install 'eventsnn[nir]'"
        ) from e
    return nir


# -- export --------------------------------------------------------------------------------
def to_nir(network: Network, *, li_readout: bool = False, metadata: dict | None = None):
    """The network as a ``nir.NIRGraph`` (see the module docstring for the mapping)."""
    nir = _nir()
    nodes = {"input": nir.Input({"input": np.array([network.input_size])})}
    edges = []
    previous = "input"
    last = len(network.layers) - 1
    for k, layer in enumerate(network.layers):
        p = {
            f: np.asarray(getattr(layer.params, f), dtype=float)
            for f in ("tau_mem", "tau_syn", "v_th", "v_reset", "v_leak", "t_refrac")
        }
        ones = np.ones(layer.size)
        neuron = f"layer{k}"
        if k == last and li_readout:
            nodes[neuron] = nir.CubaLI(
                tau_syn=p["tau_syn"],
                tau_mem=p["tau_mem"],
                r=ones,
                v_leak=p["v_leak"],
                w_in=p["tau_syn"],
            )
        else:
            nodes[neuron] = nir.CubaLIF(
                tau_syn=p["tau_syn"],
                tau_mem=p["tau_mem"],
                r=ones,
                v_leak=p["v_leak"],
                v_threshold=p["v_th"],
                v_reset=p["v_reset"],
                w_in=p["tau_syn"],
                metadata={"t_refrac": p["t_refrac"], "single_spike": bool(layer.single_spike)},
            )
        paths = [(previous, np.asarray(layer.weights, dtype=float).T, f"linear{k}")]
        if layer.recurrent_weights is not None:
            rec = np.asarray(layer.recurrent_weights, dtype=float).T
            paths.append((neuron, rec, f"recurrent{k}"))
        for source, weight, name in paths:
            if layer.delay > 0:
                n_pre = weight.shape[1]
                nodes[f"{name}_delay"] = nir.Delay(np.full(n_pre, float(layer.delay)))
                edges.append((source, f"{name}_delay"))
                source = f"{name}_delay"
            nodes[name] = nir.Linear(weight)
            edges += [(source, name), (name, neuron)]
        previous = neuron
    nodes["output"] = nir.Output({"output": np.array([network.layers[-1].size])})
    edges.append((previous, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(metadata or {}))


# -- import --------------------------------------------------------------------------------
def _broadcast(value, n: int, field: str, node: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0 or arr.size == 1:
        return np.full(n, float(arr.reshape(-1)[0]))
    arr = arr.reshape(-1)
    if arr.size != n:
        raise NIRImportError(f"node {node!r}: {field} has {arr.size} entries, expected {n}.")
    return arr


def from_nir(graph) -> NIRModel:
    """Build a network from a ``nir.NIRGraph`` (ours or another tool's)."""
    nir = _nir()
    nodes, edges = graph.nodes, list(graph.edges)
    neurons = (nir.CubaLIF, nir.CubaLI)
    passive = (nir.Linear, nir.Affine, nir.Delay)
    for name, node in nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise NIRImportError(f"node {name!r} is a subgraph; flatten the graph first.")
        if isinstance(node, (nir.LIF, nir.LI, nir.IF, nir.I)):
            raise NIRImportError(
                f"node {name!r} ({type(node).__name__}) has no equivalent: eventsnn runs "
                "current-based neurons (CubaLIF, CubaLI readouts)."
            )
        if not isinstance(node, (*neurons, *passive, nir.Input, nir.Output)):
            raise NIRImportError(
                f"node {name!r} of type {type(node).__name__} is not supported (Input, Output, "
                "Linear, Affine without bias, Delay, CubaLIF, CubaLI)."
            )
        if isinstance(node, nir.Affine) and np.any(np.asarray(node.bias) != 0):
            raise NIRImportError(
                f"node {name!r}: an Affine bias is a constant input current, which has no "
                "equivalent here; fold it into a bias input spike or set it to zero."
            )
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise NIRImportError(f"edge {(a, b)} names a node the graph does not have.")
        preds[b].append(a)
    inputs = [n for n, v in nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise NIRImportError(f"the graph needs exactly one Input node, found {len(inputs)}.")

    def trace(start: str, target: str):
        """Follow a path back from `start` through Delay/Linear/Affine nodes; returns
        (source node, weight [post, pre] or None, delay)."""
        weight, delay, cur = None, 0.0, start
        while isinstance(nodes[cur], passive):
            node = nodes[cur]
            if isinstance(node, nir.Delay):
                d = np.unique(np.asarray(node.delay, dtype=float))
                if d.size != 1:
                    raise NIRImportError(
                        f"node {cur!r}: delays differ between synapses; eventsnn has one "
                        "delay per layer."
                    )
                delay += float(d[0])
            else:
                if weight is not None:
                    raise NIRImportError(
                        f"node {cur!r}: two weight nodes in a row before {target!r}; "
                        "multiply them into one."
                    )
                weight = np.asarray(node.weight, dtype=float)
            if len(preds[cur]) != 1:
                raise NIRImportError(f"node {cur!r} must have exactly one input edge.")
            cur = preds[cur][0]
        return cur, weight, delay

    feeds = {}  # neuron -> (source, weight, delay, recurrent (weight, delay) | None)
    for name, node in nodes.items():
        if not isinstance(node, neurons):
            continue
        ff, rec = [], []
        for p in preds[name]:
            source, weight, delay = trace(p, name)
            (rec if source == name else ff).append((source, weight, delay))
        if len(ff) != 1 or len(rec) > 1:
            raise NIRImportError(
                f"node {name!r} must have one feed-forward input path and at most one "
                f"recurrent one, found {len(ff)} and {len(rec)} (branching graphs are not "
                "supported)."
            )
        feeds[name] = (ff[0], rec[0] if rec else None)

    order, current = [], inputs[0]
    while True:
        nxt = [n for n, ((src, _, _), _) in feeds.items() if src == current]
        if not nxt:
            break
        if len(nxt) > 1:
            raise NIRImportError(f"node {current!r} feeds several neuron nodes {nxt}: branching.")
        order.append(nxt[0])
        current = nxt[0]
    if not order:
        raise NIRImportError("no CubaLIF node is fed from the Input node.")
    missing = set(feeds) - set(order)
    if missing:
        raise NIRImportError(f"neuron nodes {sorted(missing)} are not on the chain from Input.")

    input_type = nodes[inputs[0]].input_type
    n_pre = int(np.prod(next(iter(input_type.values()))))
    layers = []
    li_readout = False
    for k, name in enumerate(order):
        node = nodes[name]
        (src, w_ff, delay), rec = feeds[name]
        is_li = isinstance(node, nir.CubaLI)
        if is_li and k != len(order) - 1:
            raise NIRImportError(f"node {name!r}: a CubaLI is only supported as the readout.")
        n = w_ff.shape[0] if w_ff is not None else n_pre
        if w_ff is None:
            w_ff = np.eye(n)
        if w_ff.shape != (n, n_pre):
            raise NIRImportError(
                f"the weights into {name!r} have shape {w_ff.shape}, expected [{n}, {n_pre}]."
            )

        def b(value, field, n=n, name=name):
            return _broadcast(value, n, field, name)

        tau_syn = b(node.tau_syn, "tau_syn")
        scale = b(node.w_in, "w_in") * b(node.r, "r") / tau_syn  # per postsynaptic neuron
        meta = getattr(node, "metadata", {}) or {}
        p = dict(
            tau_mem=b(node.tau_mem, "tau_mem"),
            tau_syn=tau_syn,
            v_leak=b(node.v_leak, "v_leak"),
            t_refrac=b(meta.get("t_refrac", 0.0), "t_refrac"),
        )
        if is_li:
            p.update(v_th=np.full(n, NO_THRESHOLD), v_reset=np.zeros(n))
            li_readout = True
        else:
            p["v_th"] = b(node.v_threshold, "v_threshold")
            reset = node.v_reset if node.v_reset is not None else 0.0
            p["v_reset"] = b(reset, "v_reset")
        recurrent = None
        if rec is not None:
            _, w_rec, rec_delay = rec
            w_rec = np.eye(n) if w_rec is None else w_rec
            if w_rec.shape != (n, n):
                raise NIRImportError(f"recurrent weights of {name!r} must be [{n}, {n}].")
            if rec_delay != delay:
                raise NIRImportError(
                    f"node {name!r}: recurrent delay {rec_delay} differs from the feed-forward "
                    f"delay {delay}; eventsnn has one delay per layer."
                )
            recurrent = w_rec.T * scale[None, :]
        try:
            params = LIFParams(n, name=f"node {name!r}", **p)
        except ValueError as e:
            raise NIRImportError(str(e)) from None
        layers.append(
            Layer(
                np.asarray(w_ff.T * scale[None, :]),
                params,
                recurrent,
                delay,
                single_spike=bool(meta.get("single_spike", False)),
            )
        )
        n_pre = n
    return NIRModel(Network(layers), li_readout)


def write_nir(path, network: Network, **kw) -> None:
    """Export to a ``.nir`` file (HDF5) via a temporary file and rename."""
    import os
    import tempfile

    nir = _nir()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".nir")
    os.close(fd)
    try:
        nir.write(tmp, to_nir(network, **kw))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_nir(path):
    """Read a ``.nir`` file into a ``nir.NIRGraph``."""
    return _nir().read(path)
