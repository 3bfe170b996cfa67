"""Running a 2-D point classification task end to end (what the task runners call)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import classify
from .datasets import two_d
from .train import TrainConfig, fit, write_metrics


def load_splits(task: str, train_samples: int | None = None):
    """``{split: (points, labels)}``; Yin-Yang follows its reference protocol."""
    if task == "yinyang":
        splits = {s: two_d.yinyang(s) for s in ("train", "validation", "test")}
    else:
        splits = {
            s: two_d.sample(task, n, seed)
            for s, n, seed in (("train", 2000, 42), ("validation", 500, 41), ("test", 500, 40))
        }
    if train_samples is not None:
        points, labels = splits["train"]
        splits["train"] = (points[:train_samples], labels[:train_samples])
    return splits


def accuracy(weights, points, labels, cfg, batch: int = 500) -> float:
    correct = 0
    for start in range(0, len(labels), batch):
        x = classify.encode(points[start : start + batch], cfg)
        pred = _predict(weights, x, cfg)
        correct += int(jnp.sum(pred == jnp.asarray(labels[start : start + batch])))
    return correct / len(labels)


_predict = jax.jit(classify.predict, static_argnums=2)


def run_point_task(
    task: str,
    model: classify.ClassifierConfig,
    train: TrainConfig,
    *,
    metrics_path: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    plots_dir: Path | None = None,
    train_samples: int | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train a classifier on `task` and evaluate it on the test split."""
    import time

    splits = load_splits(task, train_samples)
    points, labels = splits["train"]
    n_classes = int(labels.max()) + 1
    model = dataclasses.replace(model, n_classes=n_classes)
    inputs = classify.encode(points, model)
    weights = classify.init_params(jax.random.PRNGKey(train.seed), model)

    def evaluate(w):
        return accuracy(w, *splits["validation"], model)

    def loss_and_correct(w, x, y, key):
        return classify.loss_and_correct(w, x, y, model, key)

    start = time.perf_counter()
    weights, history = fit(
        weights,
        loss_and_correct,
        (inputs, jnp.asarray(labels)),
        evaluate,
        train,
        metrics_path=metrics_path,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        meta={"task": task, "model": dataclasses.asdict(model)},
        stop_after=stop_after,
    )
    elapsed = time.perf_counter() - start
    test_acc = accuracy(weights, *splits["test"], model)
    seconds = [e["epoch_seconds"] for e in history.epochs]
    final = {
        "test_accuracy": test_acc,
        "epochs": len(history.epochs),
        "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
    }
    if metrics_path is not None:
        write_metrics(Path(metrics_path), history, final)
    if plots_dir is not None:
        from .plot import task_plots

        task_plots(Path(plots_dir), weights, model, splits, history)
    return {**final, "weights": weights, "history": history, "wall_seconds": elapsed}
