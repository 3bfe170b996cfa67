"""The spike-train task runner ``python -m tasks.spikes``: options, errors, and tiny runs
on the offline digits (metrics, checkpoint, plots; resume bit-identical; other engines)."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from tasks.spikes import configs, main, parser

needs_digits = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None,
    reason="the digits dataset needs scikit-learn (eventsnn[digits])",
)

TINY = ["--dataset", "digits", "--epochs", "1", "--train-samples", "64", "--hidden", "16"]


def test_help_lists_the_options():
    out = subprocess.run(
        [sys.executable, "-m", "tasks.spikes", "--help"], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for option in (
        "--dataset", "--data-dir", "--engine", "--grad", "--loss", "--seed", "--epochs",
        "--batch-size", "--hidden", "--metrics", "--plots", "--checkpoint", "--resume",
        "--train-samples", "--input-dropout", "digits", "shd", "ssc", "eventprop", "analytic",
        "discrete",
    ):  # fmt: skip
        assert option in out.stdout, option


def _exit(argv, capsys):
    """Run the runner in this process; return (exit code, stderr lines)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--engine", "discrete", "--grad", "eventprop"], "does not go with engine"),
        (["--engine", "event", "--grad", "surrogate"], "does not go with engine"),
        (["--resume"], "--resume needs --checkpoint"),
        (["--engine", "discrete", "--loss", "count"], "loss 'count' (spiking outputs) needs"),
        (["--hidden", "0"], "must be a positive integer"),
        (["--epochs", "-1"], "must be a positive integer"),
        (["--batch-size", "0"], "must be a positive integer"),
        (["--train-samples", "16"], "less than one batch"),
        (["--input-dropout", "1"], "input_dropout must be in [0, 1)"),
    ],
)
def test_bad_combination_is_one_clear_error(argv, message, capsys):
    code, err = _exit(argv, capsys)
    assert code == 2
    errors = [line for line in err if "error" in line]
    assert len(errors) == 1 and message in errors[0], err


def test_fit_refuses_fewer_samples_than_one_batch():
    """Before anything compiles (it was optax's 'decay_steps=0' error, or a ZeroDivision)."""
    import jax.numpy as jnp

    from eventsnn.train import TrainConfig, fit

    data = (jnp.zeros((5, 1)), jnp.zeros(5, jnp.int32))
    for cfg, message in (
        (TrainConfig(epochs=1, batch_size=8), "batch_size 8 exceeds the 5 training samples"),
        (TrainConfig(epochs=0, batch_size=2), "epochs >= 1"),
        (TrainConfig(epochs=1, batch_size=0), "batch_size >= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            fit(jnp.zeros(3), None, data, None, cfg)


def test_missing_dataset_file_is_one_line(tmp_path, capsys):
    code, err = _exit(["--dataset", "shd", "--data-dir", str(tmp_path)], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert "shd_train.h5" in err[0] and str(tmp_path) in err[0]


def test_shd_runs_end_to_end_on_files_in_the_published_layout(tmp_path, capfd):
    """`--dataset shd` on two small files written in the official HDF5 layout (700
    channels, 20 classes; the real ones are not here): it trains an epoch and reports the
    test accuracy of `shd_test`."""
    pytest.importorskip("h5py")
    from test_datasets import write_heidelberg

    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 20)):
        counts = rng.integers(5, 30, n)
        write_heidelberg(
            tmp_path / f"shd_{split}.h5",
            [rng.uniform(0, 0.09, k) for k in counts],
            [rng.integers(0, 700, k) for k in counts],
            np.arange(n) % 20,
        )
    argv = ["--dataset", "shd", "--data-dir", str(tmp_path), "--engine", "discrete",
            "--epochs", "1", "--batch-size", "8", "--hidden", "8"]  # fmt: skip
    accuracy = main(argv)
    summary = json.loads(capfd.readouterr().out.strip().splitlines()[-2])
    assert summary["dataset"] == "shd_test" and summary["epochs"] == 1
    assert summary["test_accuracy"] == accuracy and 0 <= accuracy <= 1


def test_configs_follow_the_options():
    model, train = configs(parser().parse_args([]))
    assert (model.engine, model.grad, model.loss, model.recurrent) == (
        "event", "eventprop", "max", True,
    )  # fmt: skip
    model, train = configs(parser().parse_args(["--engine", "discrete", *TINY[2:]]))
    assert (model.grad, model.hidden, train.epochs) == ("surrogate", 16, 1)
    model, _ = configs(parser().parse_args(["--grad", "analytic", "--loss", "count"]))
    assert (model.grad, model.loss) == ("analytic", "count")


def _metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@needs_digits
@pytest.mark.parametrize(
    "engine",
    [
        "discrete",  # surrogate gradients: compiles in seconds
        # the default (windowed EventProp): ~40 s CPU, most of it compiling the gradient
        pytest.param("event", marks=pytest.mark.slow),
    ],
)
def test_tiny_run_end_to_end(tmp_path, capfd, engine):
    """One epoch on 64 digits: the progress line, the final JSON and accuracy lines, the
    metrics file (an epoch record, then the final record), a checkpoint and the plots."""
    metrics, plots, ckpt = tmp_path / "m.jsonl", tmp_path / "plots", tmp_path / "ckpt"
    argv = [*TINY, "--engine", engine, "--metrics", str(metrics), "--checkpoint", str(ckpt)]
    try:
        import matplotlib  # noqa: F401

        argv += ["--plots", str(plots)]
    except ImportError:
        plots = None
    accuracy = main(argv)
    out = capfd.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[-1] == f"test accuracy: {100 * accuracy:.2f}%"
    summary = json.loads(lines[-2])
    records = _metrics(metrics)
    assert [r["epoch"] for r in records[:-1]] == [1]
    assert np.isfinite(records[0]["train_loss"]) and 0 <= records[0]["val_accuracy"] <= 1
    final = records[-1]
    assert final["test_accuracy"] == accuracy == summary["test_accuracy"]
    assert 0 <= accuracy <= 1
    assert final["hidden_spikes_per_neuron"] == summary["hidden_spikes_per_neuron"] > 0
    assert summary["dataset"] == "digits" and summary["epochs"] == 1
    assert "epoch    1/1" in out.out + out.err  # the progress line
    assert (ckpt / "checkpoint.npz").stat().st_size > 0
    if plots is not None:
        for name in ("learning_curves.png", "raster.png"):
            assert (plots / name).stat().st_size > 1000


def _run(tmp_path, argv, **kw):
    from eventsnn.tasks import run_spike_task

    args = parser().parse_args(argv)
    model, train = configs(args)
    return run_spike_task(
        args.dataset, model, train, train_samples=args.train_samples,
        metrics_path=tmp_path / "m.jsonl", checkpoint_dir=tmp_path / "ckpt", **kw,
    )  # fmt: skip


def _without_time(records):
    return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "seconds_per_epoch")}
            for r in records]  # fmt: skip


@pytest.mark.slow
@needs_digits
def test_resume_is_bit_identical(tmp_path):
    """Two epochs at once, and one epoch then a resumed second: the same weights bit for
    bit and the same metrics (timings aside)."""
    argv = [*TINY, "--epochs", "2"]
    full = _run(tmp_path / "a", argv)
    _run(tmp_path / "b", argv, stop_after=1)
    resumed = _run(tmp_path / "b", argv, resume=True)
    for a, b in zip(full["weights"], resumed["weights"]):
        if a is None:
            assert b is None
            continue
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _without_time(_metrics(tmp_path / "a" / "m.jsonl")) == _without_time(
        _metrics(tmp_path / "b" / "m.jsonl")
    )
    assert [r["epoch"] for r in _metrics(tmp_path / "b" / "m.jsonl")[:-1]] == [1, 2]


@pytest.mark.slow
@needs_digits
@pytest.mark.parametrize("loss", ["integral", "count"])
def test_other_losses_run(tmp_path, loss):
    accuracy = main([*TINY, "--loss", loss, "--metrics", str(tmp_path / "m.jsonl")])
    final = _metrics(tmp_path / "m.jsonl")[-1]
    assert final["test_accuracy"] == accuracy and 0 <= accuracy <= 1
    assert final["hidden_spikes_per_neuron"] > 0


@pytest.mark.slow
@needs_digits
def test_analytic_and_eventprop_train_alike(tmp_path):
    """The event loop differentiated through its events (``--grad analytic``) and the
    windows by EventProp: the same spikes and gradients, so the same run (float64)."""
    runs = [_run(tmp_path / g, [*TINY, "--grad", g]) for g in ("eventprop", "analytic")]
    assert runs[0]["test_accuracy"] == runs[1]["test_accuracy"]
    assert runs[0]["hidden_spikes_per_neuron"] == runs[1]["hidden_spikes_per_neuron"]
    loss = [r["history"].epochs[0]["train_loss"] for r in runs]
    np.testing.assert_allclose(loss[1], loss[0], rtol=1e-9)
    for a, b in zip(runs[0]["weights"], runs[1]["weights"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-7)


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--devices", "--train-samples"])
def test_yinyang_runner_refuses_non_positive_sizes(flag, capsys):
    """`python -m tasks.yinyang` gives the same one-line error, not a traceback later."""
    from tasks.yinyang import parser

    with pytest.raises(SystemExit) as e:
        parser().parse_args([flag, "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2
    assert [line for line in err if "error" in line] == [
        f"python -m tasks.yinyang: error: argument {flag}: must be a positive integer, got 0"
    ]
