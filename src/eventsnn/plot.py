"""Figures for training runs: learning curves, a spike raster, the decision map.

Needs matplotlib (``pip install eventsnn[plot]``); imported only when plots are asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plots need matplotlib: pip install 'eventsnn[plot]' (or drop --plots)"
        ) from e
    return plt


def learning_curves(ax, history) -> None:
    epochs = [e["epoch"] for e in history.epochs]
    ax.plot(epochs, [100 * e["train_accuracy"] for e in history.epochs], label="train")
    ax.plot(epochs, [100 * e["val_accuracy"] for e in history.epochs], label="validation")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="learning curves")
    ax.legend()


def raster(ax, records, sizes, t_max: float) -> None:
    """Spike raster of one sample: ``records`` one `Spikes` ``[k]`` per layer."""
    offset = 0
    for k, (rec, n) in enumerate(zip(records, sizes)):
        t, i = np.asarray(rec.times), np.asarray(rec.indices)
        real = np.isfinite(t) & (i >= 0)
        ax.scatter(1e3 * t[real], offset + i[real], s=6, label=f"layer {k}")
        offset += n
    ax.set(xlabel="time (ms)", ylabel="neuron", xlim=(0, 1e3 * t_max), title="spike raster")
    ax.legend(loc="upper right", fontsize="small")


def decision_map(ax, predict, points, labels, resolution: int = 60) -> None:
    """Predicted class over the unit square, test points on top."""
    g = np.linspace(0, 1, resolution)
    xx, yy = np.meshgrid(g, g)
    grid = np.stack([xx.ravel(), yy.ravel()], 1)
    pred = np.asarray(predict(grid)).reshape(xx.shape)
    ax.imshow(
        pred,
        origin="lower",
        extent=(0, 1, 0, 1),
        alpha=0.4,
        cmap="viridis",
        vmin=-1,
        vmax=max(2, int(labels.max())),
    )
    ax.scatter(points[:, 0], points[:, 1], c=labels, s=4, cmap="viridis")
    ax.set(xlabel="x", ylabel="y", title="decision map (-1: no output spike)")


def task_plots(directory: Path, weights, cfg, splits, history) -> list[Path]:
    """Write learning_curves.png, raster.png and decision_map.png into `directory`."""
    from . import classify

    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    learning_curves(ax, history)
    paths.append(_save(fig, directory / "learning_curves.png", plt))

    points, labels = splits["test"]
    x = classify.encode(points[:1], cfg)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if cfg.engine == "event":
        _, res = classify.outputs(weights, x, cfg)
        records = [type(r)(r.times[0], r.indices[0]) for r in res.layers]
    else:
        from .discrete.simulate import trains_to_spikes

        _, res = classify.outputs(weights, x, cfg)
        records = [trains_to_spikes(t[0], cfg.dt, 512)[0] for t in res.trains]
    raster(ax, records, (cfg.hidden, cfg.n_out), cfg.t_max)
    paths.append(_save(fig, directory / "raster.png", plt))

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    decision_map(
        ax, lambda p: classify.predict(weights, classify.encode(p, cfg), cfg), points, labels
    )
    paths.append(_save(fig, directory / "decision_map.png", plt))
    return paths


def spike_task_plots(directory: Path, params, cfg, data, history, hidden=None) -> list[Path]:
    """Write learning_curves.png and raster.png (the first test sample's input and hidden
    spikes, and its readout voltage for the LI readout) into `directory`. `hidden`: that
    sample's hidden `Spikes` where already computed (else simulated here, op by op)."""
    from . import classify_spikes
    from .network import Spikes

    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 3.5))
    learning_curves(ax, history)
    paths.append(_save(fig, directory / "learning_curves.png", plt))

    sample = data.subset(np.arange(1)).to_device()
    x = sample.spikes()
    if hidden is None:
        batch = classify_spikes.outputs(params, x, cfg)[1]
        hidden = Spikes(batch.times[0], batch.indices[0])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    records = [Spikes(x.times[0], x.indices[0]), hidden]
    raster(top, records, (cfg.n_in, cfg.hidden), cfg.t_max)
    top.set_title(f"spike raster (label {int(sample.labels[0])}): inputs, then hidden")
    if cfg.engine == "event" and cfg.loss != "count":
        from .readout import LIReadout, trace

        ro = LIReadout(
            classify_spikes.output_weights(params, cfg),
            tau_mem=cfg.readout_tau_mem,
            tau_syn=cfg.readout_tau_syn,
        )
        t = np.linspace(0.0, cfg.t_max, 400)
        v = np.asarray(trace(ro, records[1], t, presorted=True))
        bottom.plot(1e3 * t, v)
        bottom.set(xlabel="time (ms)", ylabel="readout V", title="readout voltages")
    paths.append(_save(fig, directory / "raster.png", plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)
    return path
