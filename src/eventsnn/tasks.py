"""Running a 2-D point classification task end to end (what the task runners call)."""

from __future__ import annotations

import dataclasses
import functools
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
    quantisation_aware: bool = True,
) -> dict:
    """Yin-Yang on a chip: software training on the calibrated model (or the given
    `software` result of `run_point_task`), deployment, then training in the loop.
    `quantisation_aware`: the software model trains with the chip's weight steps and
    limits (`HardwareSetup.quantised_config`).

    Returns the final record: ``test_accuracy`` (chip, after training in the loop),
    ``deployed_test_accuracy`` (chip, software training only), ``software_test_accuracy``
    (the software model's), plus ``weights`` and ``history``."""
    from .hardware.in_the_loop import chip_accuracy, train_in_the_loop

    model = setup.model_config(cal, dataclasses.replace(model, n_classes=3))
    if software is None:
        software = run_point_task(
            "yinyang",
            setup.quantised_config(model) if quantisation_aware else model,
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


def spike_splits(dataset: str, seed: int, data_dir: Path | None = None, train_samples=None):
    """``{split: SpikeDataset}`` with train, validation (10% of the training data, seeded)
    and test. ``digits``: scikit-learn's bundled 8x8 digits, encoded (70/30 split by
    `seed`); ``shd``/``ssc``: the official HDF5 files in `data_dir`; ``shd_like``: synthetic
    SHD-shaped data (timing only)."""
    from .datasets import digits, load_shd, load_ssc, shd_like

    if dataset == "digits":
        train, test = digits(seed=seed)
    elif dataset in ("shd", "ssc"):
        load = load_shd if dataset == "shd" else load_ssc
        train, test = load(data_dir, "train"), load(data_dir, "test")
    elif dataset == "shd_like":
        train, test = shd_like(1024, seed), shd_like(256, seed + 1)
    else:
        raise ValueError(f"unknown dataset {dataset!r}: digits, shd, ssc or shd_like.")
    train, validation = train.split(0.9, seed)
    if train_samples is not None:
        train = train.subset(jnp.arange(min(train_samples, len(train))))
    return {"train": train, "validation": validation, "test": test}


#: Samples per evaluation batch: every batch has this shape (one compile for all splits).
EVAL_BATCH = 256


def _eval_batches(data, batch: int):
    """``(device batch of `batch` samples, mask of the real ones)`` over `data`; the last
    batch is padded with copies of its first sample."""
    for start in range(0, len(data), batch):
        idx = np.arange(start, start + batch)
        real = idx < len(data)
        yield data.subset(np.where(real, idx, start)).to_device(), real


def spike_metrics(params, data, cfg, batch: int = EVAL_BATCH) -> tuple[float, float]:
    """``(accuracy, hidden spikes per neuron and sample)`` of `classify_spikes` on a
    `SpikeDataset`, in batches of one shape (padding not counted)."""
    correct = spikes = 0
    for part, real in _eval_batches(data, batch):
        pred, hidden = _predict_and_hidden(params, part.spikes(), cfg)
        correct += int(jnp.sum((pred == part.labels) & real))
        spikes += int(jnp.sum(jnp.isfinite(hidden.times) & real[:, None]))
    return correct / len(data), spikes / (len(data) * cfg.hidden)


def spike_accuracy(params, data, cfg, batch: int = EVAL_BATCH) -> float:
    """Accuracy of `classify_spikes.predict` on a `SpikeDataset` (see `spike_metrics`)."""
    return spike_metrics(params, data, cfg, batch)[0]


def first_hidden(params, data, cfg, batch: int = EVAL_BATCH):
    """The hidden spikes (`Spikes` ``[max_spikes]``) of the first sample of `data`, from
    the evaluation's compiled forward pass (plots)."""
    part, _ = next(_eval_batches(data, batch))
    hidden = _predict_and_hidden(params, part.spikes(), cfg)[1]
    return jax.tree.map(lambda x: x[0], hidden)


@functools.partial(jax.jit, static_argnums=2)
def _predict_and_hidden(params, inputs, cfg):
    """Predicted classes ``[batch]`` (as `classify_spikes.predict`) and the hidden spikes
    ``[batch, k]``, from one forward pass."""
    from .classify_spikes import outputs

    scores, hidden, *_ = outputs(params, inputs, cfg)
    return jnp.argmax(scores, axis=-1), hidden


def run_spike_task(
    dataset: str,
    model,
    train: TrainConfig,
    *,
    data_dir: Path | None = None,
    metrics_path: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    plots_dir: Path | None = None,
    train_samples: int | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train a `classify_spikes` network on a spike-train dataset; evaluate on its test
    split. Returns the final record (test accuracy, mean hidden spikes per neuron and
    sample on the test set, seconds per epoch) plus weights and history."""
    import time

    from . import classify_spikes

    splits = spike_splits(dataset, train.seed, data_dir, train_samples)
    data = splits["train"]
    model = dataclasses.replace(
        model,
        n_in=data.n_channels,
        n_classes=data.n_classes,
        t_max=max(model.t_max, float(data.duration)),
    )
    model.check()
    params = classify_spikes.init_params(jax.random.PRNGKey(train.seed), model)
    device = data.to_device()

    def evaluate(p):
        return spike_accuracy(p, splits["validation"], model)

    def loss_and_correct(p, x, y, key):
        return classify_spikes.loss_and_correct(p, x, y, model, key)

    start = time.perf_counter()
    params, history = fit(
        params,
        loss_and_correct,
        (device.spikes(), device.labels),
        evaluate,
        train,
        metrics_path=metrics_path,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        meta={"task": dataset, "model": dataclasses.asdict(model)},
        stop_after=stop_after,
    )
    elapsed = time.perf_counter() - start
    test = splits["test"]
    seconds = [e["epoch_seconds"] for e in history.epochs]
    test_accuracy, hidden_rate = spike_metrics(params, test, model)
    final = {
        "test_accuracy": test_accuracy,
        "hidden_spikes_per_neuron": hidden_rate,
        "epochs": len(history.epochs),
        "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
        "dataset": test.name,
    }
    if metrics_path is not None:
        write_metrics(Path(metrics_path), history, final)
    if plots_dir is not None:
        from .plot import spike_task_plots

        hidden = first_hidden(params, test, model)
        spike_task_plots(Path(plots_dir), params, model, test, history, hidden=hidden)
    return {**final, "weights": params, "history": history, "wall_seconds": elapsed}
