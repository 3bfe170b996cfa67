"""eventsnn against jaxsnn 0.3.0 on the 5-100-3 Yin-Yang network (BENCHMARKS.md, section 1).

    python benchmarks/compare_jaxsnn.py --jaxsnn-python PATH/bin/python [--blocks 3]

Installs nothing: the jaxsnn side runs in a subprocess with the given interpreter (a venv
with ``pip install jaxsnn==0.3.0``, see benchmarks/README.md). Both sides run the same
network with the same weights (eventsnn's initial weights, loaded into jaxsnn's ``Linear``
projections): 5-100-3, tau_mem 10 ms, tau_syn 5 ms, t_max 20 ms, single-spike LIF neurons,
on the same input points, with the same loss (cross-entropy over ``-t/5 ms`` of the output
first-spike times, silent outputs at ``t_max``); batch 1, 64, 256, forward and
forward+gradient with EventProp and the analytic method, and one training epoch (78 batches
of 64, Adam, one scan in one jit). jaxsnn's event budgets are the exact ones: 105 events
for the hidden layer (5 input spikes + 100 single spikes), 103 for the output layer.
Blocks alternate between the sides; each figure is the best over blocks.

The final JSON line: keys ending in ``_ratio`` are eventsnn / jaxsnn samples/s (epoch:
jaxsnn's time / eventsnn's); ``jaxsnn_spike_max_abs_diff`` is the largest difference (s)
of the first-spike times of every hidden and output neuron on 256 samples (a neuron
silent on one side and not the other counts as infinite), ``jaxsnn_spike_mismatches`` how
many neurons differ in whether they spike at all.

The speed-up is algorithmic: eventsnn runs feed-forward single-spike layers on its
parallel TTFS path (every neuron's first spike solved at once from the sorted inputs),
where jaxsnn steps through the events one at a time. It holds for feed-forward
single-spike networks, not for multi-spike or recurrent ones.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from _timing import emit, epoch_seconds, machine, run_peer, throughputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

HIDDEN, TAU_MEM, TAU_SYN, T_MAX, T_LATE = 100, 10e-3, 5e-3, 20e-3, 15e-3
LOSS_TAU = 5e-3
BATCHES = (1, 64, 256)
PARITY_SAMPLES = 256
METHODS = {"eventprop": "eventprop", "analytic": "analytical"}  # ours -> jaxsnn's name


def points(seed: int = 0, n: int = 78 * 64):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 2))
    return np.concatenate([x, 1 - x, np.zeros((n, 1))], 1).astype(np.float32), rng.integers(
        0, 3, n
    )


def config(method: str):
    from eventsnn import classify

    return classify.ClassifierConfig(
        hidden=HIDDEN, grad=method, tau_mem=TAU_MEM, tau_syn=TAU_SYN, t_max=T_MAX
    )


def shared_weights():
    """eventsnn's initial parameters and the weights (jumps of I) they stand for, the
    same for both methods; the weights go to jaxsnn."""
    import jax

    from eventsnn import classify

    cfg = config("eventprop")
    params = classify.init_params(jax.random.PRNGKey(0), cfg)
    return params, tuple(np.asarray(w, np.float32) for w in classify.weights_of(params, cfg))


def first_spike_times(values) -> np.ndarray:
    """Hidden and output first-spike times ``[n, HIDDEN + 3]`` (s, inf: silent)."""
    import jax
    import jax.numpy as jnp

    from eventsnn import classify

    cfg = config("eventprop")
    params, _ = shared_weights()
    times = jnp.asarray(values * T_LATE)
    spikes = classify.Spikes(times, jnp.broadcast_to(jnp.arange(5), times.shape))
    res = jax.jit(lambda p, s: classify.outputs(p, s, cfg)[1])(params, spikes)
    hidden, out = res.layers
    return np.concatenate([hidden.first_times(HIDDEN), out.first_times(3)], -1)


def eventsnn_side(values, labels) -> dict:
    import jax
    import jax.numpy as jnp

    from eventsnn import classify

    out = {}
    params, _ = shared_weights()
    for method in METHODS:
        cfg = config(method)
        times = jnp.asarray(values * T_LATE)
        spikes = classify.Spikes(times, jnp.broadcast_to(jnp.arange(5), times.shape))
        y_all = jnp.asarray(labels)
        fwd = jax.jit(lambda p, s, cfg=cfg: classify.outputs(p, s, cfg)[0])

        def loss(p, s, y, cfg=cfg):  # the same loss as the jaxsnn side's
            t = classify.outputs(p, s, cfg)[0]
            logits = -jnp.where(jnp.isfinite(t), t, T_MAX) / LOSS_TAU
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])

        out |= throughputs(
            f"{method}_",
            fwd,
            jax.jit(jax.grad(loss)),
            params,
            lambda b, spikes=spikes, y=y_all: (jax.tree.map(lambda a: a[:b], spikes), y[:b]),
            BATCHES,
        )
        xs = jax.tree.map(lambda a: a.reshape((78, 64) + a.shape[1:]), spikes)
        out[f"{method}_epoch_s"] = epoch_seconds(loss, params, xs, y_all.reshape(78, 64))
    return out


JAXSNN_SIDE = r"""
import json, sys, time
from functools import partial
import jax, jax.numpy as jnp, numpy as np, optax
from jaxsnn.event.modules.lif.lif import LIFParameters
from jaxsnn.event.encode import spatio_temporal_encode
from jaxsnn.event.loss import first_spike
from jaxsnn.event.modules import LIF, Linear, Source
from jaxsnn.event.topology import Topology
HIDDEN, TAU_MEM, TAU_SYN, T_MAX, T_LATE = 100, 10e-3, 5e-3, 20e-3, 15e-3
data = np.load(sys.argv[1])
shared = {"syn1": jnp.asarray(data["w1"]), "syn2": jnp.asarray(data["w2"])}
values, labels = jnp.asarray(data["values"]), jnp.asarray(data["labels"])
enc = jax.jit(jax.vmap(partial(spatio_temporal_encode, t_late=T_LATE, duplication=None,
                               duplicate_neurons=False)))
x = enc(values)

from _timing import epoch_seconds, throughputs  # the same timing as eventsnn's (PYTHONPATH)

out = {}
for ours, theirs in (("eventprop", "eventprop"), ("analytic", "analytical")):
    p = LIFParameters(v_reset=-1000.0, v_th=1.0, tau_syn=TAU_SYN, tau_mem=TAU_MEM)
    b = Topology(t_max=T_MAX, backprop_method=theirs)
    # Event budgets: exact ones, the input events plus one spike per neuron (single-spike).
    b.add({"inp": Source(5), "lif1": LIF(HIDDEN, 5 + HIDDEN, p), "lif2": LIF(3, HIDDEN + 3, p),
           "syn1": Linear(pre_weights=shared["syn1"], min_delay=0.0),
           "syn2": Linear(pre_weights=shared["syn2"], min_delay=0.0)})
    b.connect([("inp", "syn1"), ("syn1", "lif1"), ("lif1", "syn2"), ("syn2", "lif2")])
    init_fn, apply_fn = b.done()
    w = init_fn(jax.random.PRNGKey(0))
    assert all(np.array_equal(w[k], shared[k]) for k in shared), "weights not loaded"
    def first(w, inp):
        return jax.vmap(first_spike, in_axes=(0, None))(apply_fn({"inp": inp}, w)["lif2"], 3)
    def loss(w, inp, y):
        t = first(w, inp)
        logits = -jnp.where(jnp.isfinite(t), t, T_MAX) / 5e-3
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    if ours == "eventprop":  # first-spike times of both layers, for the parity figure
        n = int(sys.argv[3])
        ev = jax.jit(lambda w, inp: apply_fn({"inp": inp}, w))(
            w, jax.tree.map(lambda a: a[:n], x))
        t = jnp.concatenate([jax.vmap(first_spike, in_axes=(0, None))(ev["lif1"], HIDDEN),
                             jax.vmap(first_spike, in_axes=(0, None))(ev["lif2"], 3)], -1)
        np.save(sys.argv[2], np.asarray(t))
    out |= throughputs(f"{ours}_", jax.jit(first), jax.jit(jax.grad(loss)), w,
                       lambda n: (jax.tree.map(lambda a: a[:n], x), labels[:n]), (1, 64, 256))
    xs = jax.tree.map(lambda a: a.reshape((78, 64) + a.shape[1:]), x)
    out[f"{ours}_epoch_s"] = epoch_seconds(loss, w, xs, labels.reshape(78, 64))
out["jax"] = jax.__version__
print(json.dumps(out))
"""


def jaxsnn_side(python: str, data_path: Path, times_path: Path) -> dict:
    args = [str(data_path), str(times_path), str(PARITY_SAMPLES)]
    return run_peer(python, JAXSNN_SIDE, args, "jaxsnn")


def spike_time_diff(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, int]:
    """Largest difference of first-spike times (inf where one side is silent and the
    other not; 0 where both are silent) and the number of such mismatches."""
    both = np.isfinite(ours) & np.isfinite(theirs)
    mismatches = int(np.sum(np.isfinite(ours) != np.isfinite(theirs)))
    diff = float(np.max(np.abs(ours[both] - theirs[both]), initial=0.0))
    return (np.inf if mismatches else diff), mismatches


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jaxsnn-python", required=True, help="interpreter of a jaxsnn venv")
    p.add_argument("--blocks", type=int, default=3, help="alternating blocks per side")
    args = p.parse_args()
    values, labels = points()
    _, (w1, w2) = shared_weights()
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data_path, times_path = Path(tmp) / "data.npz", Path(tmp) / "jaxsnn_times.npy"
        np.savez(data_path, values=values, labels=labels, w1=w1, w2=w2)
        for block in range(args.blocks):
            ours.append(eventsnn_side(values, labels))
            emit({"side": "eventsnn", "block": block, **ours[-1]})
            theirs.append(jaxsnn_side(args.jaxsnn_python, data_path, times_path))
            emit({"side": "jaxsnn", "block": block, **theirs[-1]})
        their_times = np.load(times_path)
    final = {"benchmark": "compare_jaxsnn", "blocks": args.blocks}
    diff, mismatches = spike_time_diff(first_spike_times(values[:PARITY_SAMPLES]), their_times)
    final["jaxsnn_spike_max_abs_diff"] = diff
    final["jaxsnn_spike_mismatches"] = mismatches
    for method in METHODS:
        for kind in ("fwd", "grad"):
            for b in BATCHES:
                key = f"{method}_{kind}_b{b}"
                e, j = max(r[key] for r in ours), max(r[key] for r in theirs)
                final[f"eventsnn_{key}"], final[f"jaxsnn_{key}"] = e, j
                final[f"{key}_ratio"] = e / j
        e = min(r[f"{method}_epoch_s"] for r in ours)
        j = min(r[f"{method}_epoch_s"] for r in theirs)
        final[f"eventsnn_{method}_epoch_s"], final[f"jaxsnn_{method}_epoch_s"] = e, j
        final[f"{method}_epoch_ratio"] = j / e
    emit({**final, **machine()})


if __name__ == "__main__":
    main()
