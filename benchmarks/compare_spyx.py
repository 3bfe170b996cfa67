"""eventsnn against Spyx 1.0.0 on Spyx's own workload (BENCHMARKS.md, section 2).

    python benchmarks/compare_spyx.py --spyx-python /path/to/spyx-venv/bin/python [--blocks 3]

Installs nothing: the Spyx side runs in a subprocess with the given interpreter (a venv with
``pip install spyx==1.0.0``, see benchmarks/README.md), so each library keeps its own
dependencies. Blocks alternate between the two sides; each figure is the best over blocks.
The same weights and inputs go to both sides, and both differentiate (and, in the epoch,
Adam-update) the two weight matrices only: Spyx's ``alpha`` and ``beta`` are ``nnx.Param``
too, and are split off and held fixed here, as eventsnn's time constants are.

Prints JSON lines per side and block, then one final line (ratios > 1: eventsnn faster):

- ``spyx_trace_max_abs_diff``: largest difference of the readout traces (64 samples).
- ``spyx_grad_max_rel_diff``: the weight gradients of the same loss on the same 64
  samples, eventsnn's discrete engine against Spyx, as ``max |a - b| / max |b|`` per weight
  matrix (a difference relative to that matrix's largest gradient, so that entries that
  are zero on both sides, or tiny, do not divide by zero), the larger of the two matrices.
- ``discrete_{fwd,grad}_b{64,256}_ratio``, ``epoch_ratio``: the same computation.
- ``event_grad_b64_ratio``: the same model (multi-spike CuBa-LIF hidden layer, LI readout,
  tau 10/5 ms, the same weights, the same max-voltage cross-entropy) on eventsnn's event
  engine with exact EventProp gradients (windowed engine) against Spyx's surrogate
  gradient at dt = 0.5 ms: exact against time-stepped, the method differs, the model not.
  ``event_vs_spyx_logit_rel_diff`` is how far the exact model's logits are from Spyx's
  (time discretisation) and ``event_hidden_spikes_per_sample`` its activity.
- the raw figures and the compile times of both sides.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from _timing import best_time, compile_seconds, emit, epoch_seconds, machine, run_peer, throughputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

DT, STEPS, TAU_SYN, TAU_MEM = 0.5e-3, 60, 5e-3, 10e-3
BATCHES = (1, 64, 256)
EPOCH_BATCHES, EPOCH_BATCH = 78, 64


def workload(seed: int = 0):
    """Weights, inputs (time-major ``[T, B, 5]``: each channel spikes once at a uniform
    random step) and random labels, from one seed."""
    rng = np.random.default_rng(seed)
    n = max(BATCHES[-1], EPOCH_BATCHES * EPOCH_BATCH)
    steps = rng.integers(0, STEPS, (n, 5))
    x = np.zeros((STEPS, n, 5), np.float32)
    x[steps, np.arange(n)[:, None], np.arange(5)[None, :]] = 1.0
    return {
        "w1": (rng.normal(0.0, 1.0, (5, 120)) / np.sqrt(5)).astype(np.float32) * 2.0,
        "w2": (rng.normal(0.0, 1.0, (120, 3)) / np.sqrt(120)).astype(np.float32),
        "x": x,
        "steps": steps,
        "labels": rng.integers(0, 3, n).astype(np.int32),
    }


# -- eventsnn ---------------------------------------------------------------------------
def eventsnn_side(data) -> dict:
    import jax
    import jax.numpy as jnp

    import eventsnn as es

    rule, surrogate = es.SpyxStep(), es.SuperSpike(25.0)

    def net_of(params):
        w1, w2 = params
        return es.Network(
            [
                es.dense_layer(w1, tau_mem=TAU_MEM, tau_syn=TAU_SYN),
                es.dense_layer(w2, tau_mem=TAU_MEM, tau_syn=TAU_SYN),
            ]
        )

    def traces(params, x):  # x time-major [T, B, 5] -> readout [T, B, 3]
        res = es.simulate_discrete(
            net_of(params),
            jnp.swapaxes(x, 0, 1),
            dt=DT,
            t_max=STEPS * DT,
            rule=rule,
            surrogate=surrogate,
            li_readout=True,
        )
        return jnp.swapaxes(res.output_voltage, 0, 1)

    def loss(params, x, y):
        logits = jnp.max(traces(params, x), axis=0)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])

    params = (jnp.asarray(data["w1"]), jnp.asarray(data["w2"]))
    fwd = jax.jit(lambda p, x: jnp.max(traces(p, x), axis=0))
    grad = jax.jit(jax.grad(loss))
    out = {"trace": np.asarray(jax.jit(traces)(params, jnp.asarray(data["x"][:, :64])))}

    def batch_of(b):
        return jnp.asarray(data["x"][:, :b]), jnp.asarray(data["labels"][:b])

    out["compile_fwd_s"] = compile_seconds(fwd, params, batch_of(64)[0])
    out["compile_grad_s"] = compile_seconds(grad, params, *batch_of(64))
    # The weight gradients for the parity figure (after the compile timing: cached since).
    out["grads"] = [np.asarray(g) for g in grad(params, *batch_of(64))]
    out |= throughputs("discrete_", fwd, grad, params, batch_of, BATCHES)

    # One epoch: 78 batches of 64, Adam 1e-3, one scan inside one jit, data on the device.
    xs = (
        jnp.asarray(data["x"][:, : EPOCH_BATCHES * EPOCH_BATCH])
        .reshape(STEPS, EPOCH_BATCHES, EPOCH_BATCH, 5)
        .transpose(1, 0, 2, 3)
    )
    ys = jnp.asarray(data["labels"][: EPOCH_BATCHES * EPOCH_BATCH]).reshape(EPOCH_BATCHES, -1)
    out["epoch_s"] = epoch_seconds(loss, params, xs, ys)

    # The event engine on the same model: exact EventProp gradients (see `exact_model`).
    loss_exact, to_exact = exact_model(es)
    exact_params = to_exact(params)
    spikes = exact_inputs(es, data, 64)
    y = jnp.asarray(data["labels"][:64])
    exact_grad = jax.jit(jax.grad(loss_exact))
    out["compile_event_grad_s"] = compile_seconds(exact_grad, exact_params, spikes, y)
    logits, hidden = jax.jit(lambda p, s: exact_logits(es, p, s))(exact_params, spikes)
    out["event_logits"] = np.asarray(logits)
    out["event_hidden_spikes_per_sample"] = float(jnp.mean(jnp.sum(hidden, axis=-1)))
    out["event_grad_b64"] = 64 / best_time(exact_grad, exact_params, spikes, y)
    out["discrete_logits"] = np.asarray(fwd(params, batch_of(64)[0]))
    return out


# -- the same model on the event engine -------------------------------------------------
# Spyx's step, ``I = alpha I + W x; V = beta V + I`` (readout: ``V = beta V + W x``), is the
# forward-Euler step of ``tau_mem dV/dt = -V + (tau_mem / dt) I`` with ``I`` jumping by ``W`` per
# input spike: the continuous CuBa-LIF neuron of the event engine (``tau_mem dV/dt = -V + I``)
# with weights ``W tau_mem / dt``. The readout adds ``W`` to ``V`` per spike (no synaptic
# filter): the event engine's LI readout with a synaptic time constant much shorter than a
# step (RO_TAU_SYN) and weights ``W tau_mem / RO_TAU_SYN`` (its PSP then rises to ``W`` at
# once and decays with tau_mem). Threshold 1, reset to 0 (Spyx subtracts the threshold,
# which is the same at an exact crossing). Both sides differ only by time discretisation;
# ``event_vs_spyx_logit_rel_diff`` says by how much.
RO_TAU_SYN = 0.02 * DT
EXACT_MAX_SPIKES = 1536  # hidden spikes per sample (the run reports an overflow)


def exact_inputs(es, data, b):
    """The inputs of the first `b` samples as exact spike times (step k -> k dt)."""
    import jax.numpy as jnp

    times = jnp.asarray(data["steps"][:b] * DT, jnp.float32)
    return es.Spikes(times, jnp.broadcast_to(jnp.arange(5, dtype=jnp.int32), times.shape))


def exact_logits(es, params, spikes):
    """``(max readout voltage [B, 3], hidden spike mask [B, k])`` of the exact model."""
    import jax.numpy as jnp

    w1, w2 = params
    hidden = es.Layer(w1, es.LIFParams(120, tau_mem=TAU_MEM, tau_syn=TAU_SYN, v_th=1.0))
    res = es.simulate(
        es.Network([hidden]),
        spikes,
        t_max=STEPS * DT,
        max_spikes=EXACT_MAX_SPIKES,
        fast_ttfs=False,
        windows=es.Windows(arrivals=8, spikes=2, window_spikes=32, chunk=32),
    )
    readout = es.LIReadout(w2, tau_mem=TAU_MEM, tau_syn=RO_TAU_SYN)
    logits = es.readout.peak(readout, res.layers[0], STEPS * DT, presorted=True)[0]
    return logits, jnp.isfinite(res.layers[0].times)


def exact_model(es):
    """``(loss(params, spikes, labels), convert(spyx_params))`` of the exact model."""
    import jax
    import jax.numpy as jnp

    def loss(params, spikes, y):
        logits, _ = exact_logits(es, params, spikes)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])

    def convert(params):
        w1, w2 = params
        return (w1 * (TAU_MEM / DT), w2 * (TAU_MEM / RO_TAU_SYN))

    return loss, convert


# -- Spyx, in its own interpreter ---------------------------------------------------------
SPYX_SIDE = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
import spyx
data = np.load(sys.argv[1])
DT, STEPS, TAU_SYN, TAU_MEM = 0.5e-3, 60, 5e-3, 10e-3
alpha, beta = float(np.exp(-DT / TAU_SYN)), float(np.exp(-DT / TAU_MEM))
rngs = nnx.Rngs(0)
model = spyx.nn.Sequential(
    nnx.Linear(5, 120, use_bias=False, rngs=rngs),
    spyx.nn.CuBaLIF((120,), alpha=alpha, beta=beta, activation=spyx.axn.superspike(25), rngs=rngs),
    nnx.Linear(120, 3, use_bias=False, rngs=rngs),
    spyx.nn.LI((3,), beta=beta, rngs=rngs),
)
model.layers[0].kernel.value = jnp.asarray(data["w1"])
model.layers[2].kernel.value = jnp.asarray(data["w2"])
# Differentiate and update the Linear kernels only; alpha and beta (nnx.Param too) stay fixed.
kernels = nnx.All(nnx.Param, nnx.PathContains("kernel"))
graphdef, params, rest = nnx.split(model, kernels, ...)
assert len(jax.tree.leaves(params)) == 2, jax.tree.map(jnp.shape, params)

def traces(params, x):
    m = nnx.merge(graphdef, params, rest)
    return spyx.nn.run(m, x)[0]

def loss(params, x, y):
    logits = jnp.max(traces(params, x), axis=0)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

from _timing import compile_seconds, epoch_seconds, throughputs  # shared (PYTHONPATH)

fwd = jax.jit(lambda p, x: jnp.max(traces(p, x), axis=0))
grad = jax.jit(jax.grad(loss))
def batch_of(b):
    return jnp.asarray(data["x"][:, :b]), jnp.asarray(data["labels"][:b])
out = {"compile_fwd_s": compile_seconds(fwd, params, batch_of(64)[0]),
       "compile_grad_s": compile_seconds(grad, params, *batch_of(64))}
g = grad(params, *batch_of(64))  # for the parity figure (after the compile timing)
np.savez(sys.argv[2], trace=np.asarray(jax.jit(traces)(params, batch_of(64)[0])),
         g1=np.asarray(g["layers"][0]["kernel"].value),
         g2=np.asarray(g["layers"][2]["kernel"].value))
out |= throughputs("", fwd, grad, params, batch_of, (1, 64, 256))
xs = jnp.asarray(data["x"][:, :78 * 64]).reshape(60, 78, 64, 5).transpose(1, 0, 2, 3)
ys = jnp.asarray(data["labels"][:78 * 64]).reshape(78, -1)
out["epoch_s"] = epoch_seconds(loss, params, xs, ys)
out["spyx"] = spyx.__version__ if hasattr(spyx, "__version__") else "1.0.0"
out["jax"] = jax.__version__
print(json.dumps(out))
"""


def spyx_side(python: str, data_path: Path, trace_path: Path) -> dict:
    return run_peer(python, SPYX_SIDE, [str(data_path), str(trace_path)], "Spyx")


def max_rel_diff(ours, theirs) -> float:
    """Largest over weight matrices of ``max |a - b| / max |b|``."""
    return max(
        float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), np.finfo(np.float32).tiny))
        for a, b in zip(ours, theirs, strict=True)
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spyx-python", required=True, help="interpreter of a spyx==1.0.0 venv")
    p.add_argument("--blocks", type=int, default=3, help="alternating blocks per side")
    args = p.parse_args()
    data = workload(0)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data_path, trace_path = Path(tmp) / "data.npz", Path(tmp) / "spyx_out.npz"
        np.savez(data_path, **data)
        for block in range(args.blocks):
            o = eventsnn_side(data)
            trace, grads = o.pop("trace"), o.pop("grads")
            event_logits, discrete_logits = o.pop("event_logits"), o.pop("discrete_logits")
            emit({"side": "eventsnn", "block": block, **o})
            t = spyx_side(args.spyx_python, data_path, trace_path)
            emit({"side": "spyx", "block": block, **t})
            ours.append(o)
            theirs.append(t)
        spyx_out = dict(np.load(trace_path))

    def best(rows, key, low=False):
        values = [r[key] for r in rows]
        return min(values) if low else max(values)

    final = {"benchmark": "compare_spyx", "blocks": args.blocks}
    final["spyx_trace_max_abs_diff"] = float(np.max(np.abs(trace - spyx_out["trace"])))
    final["spyx_grad_max_rel_diff"] = max_rel_diff(grads, (spyx_out["g1"], spyx_out["g2"]))
    for kind in ("fwd", "grad"):
        for b in BATCHES:
            e, s = best(ours, f"discrete_{kind}_b{b}"), best(theirs, f"{kind}_b{b}")
            final[f"eventsnn_discrete_{kind}_b{b}"] = e
            final[f"spyx_{kind}_b{b}"] = s
            if b > 1:
                final[f"discrete_{kind}_b{b}_ratio"] = e / s
    final["eventsnn_event_grad_b64"] = best(ours, "event_grad_b64")
    final["event_grad_b64_ratio"] = final["eventsnn_event_grad_b64"] / final["spyx_grad_b64"]
    final["event_vs_spyx_logit_rel_diff"] = float(
        np.max(np.abs(event_logits - discrete_logits)) / np.max(np.abs(discrete_logits))
    )
    final["event_hidden_spikes_per_sample"] = ours[-1]["event_hidden_spikes_per_sample"]
    final["eventsnn_epoch_s"] = best(ours, "epoch_s", low=True)
    final["spyx_epoch_s"] = best(theirs, "epoch_s", low=True)
    final["epoch_ratio"] = final["spyx_epoch_s"] / final["eventsnn_epoch_s"]
    compiles = ("compile_fwd_s", "compile_grad_s")
    for side, rows, keys in (
        ("eventsnn", ours, (*compiles, "compile_event_grad_s")),
        ("spyx", theirs, compiles),
    ):
        for key in keys:
            final[f"{side}_{key}"] = best(rows, key, low=True)
    emit({**final, **machine()})


if __name__ == "__main__":
    main()
