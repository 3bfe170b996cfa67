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
    devices: int = 1,
) -> dict:
    """Train a classifier on `task` and evaluate it on the test split (`devices`: data
    parallel over that many devices)."""
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
        devices=devices,
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


def run_hardware_task(
    chip,
    cal,
    setup,
    model: classify.ClassifierConfig,
    software_train: TrainConfig,
    loop_train: TrainConfig,
    *,
    software: dict | None = None,
    metrics_path: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    plots_dir: Path | None = None,
    train_samples: int | None = None,
    devices: int = 1,
) -> dict:
    """Yin-Yang on a chip: software training on the calibrated model (or the given
    `software` result of `run_point_task`), deployment, then training in the loop.

    Returns the final record: ``test_accuracy`` (chip, after training in the loop),
    ``deployed_test_accuracy`` (chip, software training only), ``software_test_accuracy``,
    plus ``weights`` and ``history``."""
    from .hardware.in_the_loop import chip_accuracy, train_in_the_loop

    model = setup.model_config(cal, dataclasses.replace(model, n_classes=3))
    if software is None:
        software = run_point_task(
            "yinyang",
            model,
            software_train,
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / "software",
            resume=resume,
            train_samples=train_samples,
            devices=devices,
        )
    splits = load_splits("yinyang", train_samples)
    deployed = chip_accuracy(setup, chip, cal, software["weights"], *splits["test"], model)
    weights, history = train_in_the_loop(
        chip,
        cal,
        setup,
        software["weights"],
        splits,
        model,
        loop_train,
        metrics_path=metrics_path,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
    )
    final = {
        "test_accuracy": chip_accuracy(setup, chip, cal, weights, *splits["test"], model),
        "deployed_test_accuracy": deployed,
        "software_test_accuracy": software["test_accuracy"],
        "seconds_per_epoch": float(np.median([e["epoch_seconds"] for e in history.epochs]))
        if history.epochs
        else None,
        "calibration_residuals": cal.residuals,
    }
    if metrics_path is not None:
        write_metrics(Path(metrics_path), history, final)
    if plots_dir is not None:
        from .plot import task_plots

        task_plots(Path(plots_dir), weights, model, splits, history)
    return {**final, "weights": weights, "history": history}
