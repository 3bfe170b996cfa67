"""Training loop: optax, jit-compiled epochs, metrics as JSON lines, exact resume.

Reproducible from a seed: the shuffle of epoch ``e`` comes from ``fold_in(key(seed), e)``,
so an interrupted run resumed from its checkpoint takes exactly the same steps as an
uninterrupted one (bit-identical weights). Checkpoints and metrics are written atomically.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .parallel import data_mesh, replicate, shard_batch


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 300
    batch_size: int = 64
    learning_rate: float = 3e-3
    final_learning_rate: float = 3e-5  # cosine decay to this
    clip_norm: float | None = None  # clip each step's gradient to this global norm
    average: float | None = None  # evaluate and return an exponential moving average of
    # the weights with this decay per step (e.g. 0.999), not the last weights
    seed: int = 0


@dataclass
class History:
    epochs: list  # one metrics record per finished epoch


def optimizer(cfg: TrainConfig, steps_per_epoch: int):
    schedule = optax.cosine_decay_schedule(
        cfg.learning_rate,
        cfg.epochs * steps_per_epoch,
        cfg.final_learning_rate / cfg.learning_rate,
    )
    adam = optax.adam(schedule)
    if cfg.clip_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adam)


def _write_atomic(path: Path, write: Callable) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: Path, state, history: History, meta: dict) -> None:
    """Every leaf of `state` plus the history, in one .npz, atomically."""
    leaves = jax.tree.leaves(state)
    arrays = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["history"] = np.frombuffer(json.dumps(history.epochs).encode(), np.uint8)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    _write_atomic(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: Path, like, meta: dict):
    """Restore a state with the structure of `like`; refuses a checkpoint of another run."""
    with np.load(path) as data:
        saved_meta = json.loads(bytes(data["meta"]).decode())
        if saved_meta != meta:
            diff = {k: (saved_meta.get(k), v) for k, v in meta.items() if saved_meta.get(k) != v}
            raise ValueError(
                f"checkpoint {path} belongs to a run with other settings {diff}; "
                "use another --checkpoint directory or the same settings."
            )
        leaves, treedef = jax.tree.flatten(like)
        restored = [jnp.asarray(data[f"leaf_{i}"], dtype=x.dtype) for i, x in enumerate(leaves)]
        history = json.loads(bytes(data["history"]).decode())
    return jax.tree.unflatten(treedef, restored), History(history)


def write_metrics(path: Path, history: History, final: dict | None = None) -> None:
    lines = [json.dumps(e) for e in history.epochs] + ([json.dumps(final)] if final else [])
    _write_atomic(path, lambda f: f.write(("\n".join(lines) + "\n").encode()))


class Progress:
    """One line per epoch on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int, stream=None):
        # sys.stderr as it is now, not as it was at import (redirected or captured since)
        self.total, self.stream = total, sys.stderr if stream is None else stream
        self.tty = self.stream.isatty()

    def update(self, epoch: int, record: dict) -> None:
        width = 20
        done = int(width * epoch / self.total)
        bar = "#" * done + "-" * (width - done)
        text = (
            f"epoch {epoch:>4}/{self.total} [{bar}] loss {record['train_loss']:.4f} "
            f"train {100 * record['train_accuracy']:5.1f}% "
            f"val {100 * record['val_accuracy']:5.1f}% ({record['epoch_seconds']:.2f}s)"
        )
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        if self.tty and epoch == self.total:
            self.stream.write("\n")
        self.stream.flush()


def fit(
    params,
    loss_and_correct: Callable,
    train_data: tuple,
    evaluate: Callable,
    cfg: TrainConfig,
    *,
    metrics_path: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    meta: dict | None = None,
    stop_after: int | None = None,
    devices: int = 1,
):
    """Train `params` with Adam and cosine decay (optionally clipped gradients and an
    average of the weights, see `TrainConfig`).

    Args:
        loss_and_correct: ``(params, inputs, labels, key) -> (loss, n_correct)`` for a
            batch; `key` (a PRNG key of this step) serves noise injected during training.
        train_data: ``(inputs, labels)``, pytrees with a leading sample axis.
        evaluate: ``params -> validation accuracy`` (called once per epoch).
        checkpoint_dir: a checkpoint is written there after every epoch; with `resume`
            training continues from it.
        meta: settings identifying the run (stored in the checkpoint, checked on resume).
        stop_after: stop after this many epochs in total (simulates an interruption).
        devices: split every batch over this many devices (data parallel, weights
            replicated; see `eventsnn.parallel`). Same result as one device up to the
            order of floating-point sums.

    Returns:
        ``(params, History)``: the last weights, or their moving average with
        ``cfg.average``.
    """
    inputs, labels = train_data
    n = labels.shape[0]
    n_batches = n // cfg.batch_size
    opt = optimizer(cfg, n_batches)
    # weights, optimiser state, and their moving average (None when not averaging)
    state = (params, opt.init(params), None if cfg.average is None else params)
    history = History([])
    meta = json.loads(json.dumps({"train": asdict(cfg), **(meta or {})}))  # as stored
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / "checkpoint.npz"
    if resume and ckpt is not None and ckpt.exists():
        state, history = load_checkpoint(ckpt, state, meta)
    mesh = data_mesh(devices, cfg.batch_size)
    state = replicate(state, mesh)

    @eqx.filter_jit
    def epoch(state, epoch_index):
        key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), epoch_index)
        order = jax.random.permutation(key, n)[: n_batches * cfg.batch_size]
        batches = order.reshape(n_batches, cfg.batch_size)

        def step(state, xs):
            (p, o, avg), (idx, step_key) = state, xs
            batch, y = shard_batch((jax.tree.map(lambda x: x[idx], inputs), labels[idx]), mesh)
            (loss, correct), g = jax.value_and_grad(loss_and_correct, has_aux=True)(
                p, batch, y, step_key
            )
            updates, o = opt.update(g, o, p)
            p = optax.apply_updates(p, updates)
            if avg is not None:
                avg = optax.incremental_update(p, avg, 1 - cfg.average)
            return (p, o, avg), (loss, correct)

        step_keys = jax.random.split(jax.random.fold_in(key, 1), n_batches)
        state, (loss, correct) = jax.lax.scan(step, state, (batches, step_keys))
        return state, jnp.mean(loss), jnp.sum(correct) / (n_batches * cfg.batch_size)

    progress = Progress(cfg.epochs)
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    for e in range(len(history.epochs), last):
        start = time.perf_counter()
        state, loss, acc = epoch(state, jnp.asarray(e, jnp.int32))  # traced: one compile
        loss = float(loss)
        seconds = time.perf_counter() - start
        record = {
            "epoch": e + 1,
            "train_loss": loss,
            "train_accuracy": float(acc),
            "val_accuracy": float(evaluate(_evaluated(state))),
            "epoch_seconds": seconds,
        }
        end_epoch(record, state, history, progress, ckpt, meta, metrics_path)
    return _evaluated(state), history


def _evaluated(state):
    """The weights a run evaluates and returns: the moving average if kept, else the last."""
    params, _, average = state
    return params if average is None else average


def end_epoch(record: dict, state, history: History, progress, ckpt, meta, metrics_path):
    """Book a finished epoch: refuse a non-finite loss, append the record, show it, then
    checkpoint and write metrics (both atomically)."""
    loss = record["train_loss"]
    if not np.isfinite(loss):
        raise FloatingPointError(
            f"loss became {loss} in epoch {record['epoch']}; lower the learning rate."
        )
    history.epochs.append(record)
    progress.update(record["epoch"], record)
    if ckpt is not None:
        save_checkpoint(ckpt, state, history, meta)
    if metrics_path is not None:
        write_metrics(Path(metrics_path), history)
