"""Datasets, losses, the training loop (exact resume) and the Yin-Yang task runner."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eventsnn import classify
from eventsnn import loss as L
from eventsnn.classify import ClassifierConfig
from eventsnn.datasets import two_d
from eventsnn.tasks import load_splits, run_point_task
from eventsnn.train import TrainConfig

SMALL = ClassifierConfig(hidden=30, grad="analytic")  # the fast path; learning test: eventprop


def test_yinyang_reference_protocol():
    x, y = two_d.yinyang("train")
    assert x.shape == (5000, 2) and np.all((x >= 0) & (x <= 1))
    assert np.bincount(y).tolist() == [1667, 1667, 1666]
    assert np.all(two_d.yinyang_class(x[:, 0], x[:, 1]) == y)
    x2, y2 = two_d.yinyang("train")
    np.testing.assert_array_equal(x, x2)  # fixed seed
    xt, _ = two_d.yinyang("test")
    assert xt.shape == (1000, 2) and not np.allclose(xt[:10], x[:10])


def test_yinyang_geometry():
    cls = two_d.yinyang_class
    assert cls(0.25, 0.5) == 2 and cls(0.75, 0.5) == 2  # the dots
    assert cls(0.02, 0.02) == -1  # outside the circle
    assert cls(0.5, 0.9) == 0 and cls(0.5, 0.1) == 1  # upper half yin, lower half yang


def test_cross_entropy_and_prediction():
    t = jnp.array([[1e-3, 2e-3, jnp.inf], [jnp.inf, jnp.inf, jnp.inf]])
    np.testing.assert_array_equal(L.first_spike_prediction(t), [0, -1])
    labels = jnp.array([0, 1])
    ce = L.first_spike_cross_entropy(t, labels, t_max=0.03, tau=5e-3)
    logits = -jnp.where(jnp.isfinite(t), t, 0.03) / 5e-3
    expected = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])
    np.testing.assert_allclose(ce, expected)
    # The label neuron spiking earlier lowers the loss.
    assert L.first_spike_cross_entropy(t.at[0, 0].set(0.5e-3), labels, t_max=0.03, tau=5e-3) < ce


def test_silent_push_raises_weights_into_neurons_that_should_fire():
    w = jnp.zeros((2, 2))
    g = jax.grad(L.silent_neuron_push)(w, jnp.array([[True, False]]), jnp.array([[True, False]]))
    assert (
        float(L.silent_neuron_push(w + 1.0, jnp.array([[True, True]]), jnp.array([[True, True]])))
        == 0.0
    )
    np.testing.assert_array_equal(g, [[-1.0, 0.0], [0.0, 0.0]])


def _run(tmp_path, stop_after=None, resume=False, epochs=4, **train):
    return run_point_task(
        "circles",
        SMALL,
        TrainConfig(epochs=epochs, batch_size=50, seed=3, **train),
        checkpoint_dir=tmp_path / "ckpt",
        resume=resume,
        stop_after=stop_after,
        metrics_path=tmp_path / "metrics.jsonl",
        train_samples=500,
    )


@pytest.mark.parametrize("train", [{}, {"average": 0.9, "clip_norm": 0.5}])
def test_resume_is_bit_identical(tmp_path, train):
    full = _run(tmp_path / "a", **train)
    _run(tmp_path / "b", stop_after=2, **train)
    resumed = _run(tmp_path / "b", resume=True, **train)
    for a, b in zip(full["weights"], resumed["weights"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines[:-1]] == [1, 2, 3, 4]
    assert json.loads(lines[-1])["test_accuracy"] == full["test_accuracy"]


def _toy_fit(**train):
    """Adam on ``|p - 1|^2`` from p = 0: 20 steps of one-sample batches."""
    from eventsnn.train import fit

    def loss_and_correct(p, x, y, key):
        return jnp.sum((p - 1.0) ** 2), 0

    data = (jnp.zeros((20, 1)), jnp.zeros(20, jnp.int32))
    cfg = TrainConfig(epochs=1, batch_size=1, learning_rate=0.01, **train)
    p, _ = fit(jnp.zeros(3), loss_and_correct, data, lambda p: 0.0, cfg)
    return np.asarray(p)


def test_gradient_clipping_and_weight_average_act():
    plain = _toy_fit()
    assert np.all(plain > 0.1)  # Adam: about lr per step towards 1
    # Clipped to 1e-12 the gradient drowns in Adam's epsilon: hardly a step.
    assert np.all(np.abs(_toy_fit(clip_norm=1e-12)) < 1e-3)
    # A slow average of the weights lags far behind the last weights.
    averaged = _toy_fit(average=0.99)
    assert np.all((averaged > 0) & (averaged < 0.2 * plain))


def test_resume_refuses_other_settings(tmp_path):
    _run(tmp_path, stop_after=1)
    with pytest.raises(ValueError, match="other settings"):
        run_point_task(
            "circles",
            dataclasses.replace(SMALL, loss_tau=1e-3),
            TrainConfig(epochs=4, batch_size=50, seed=3),
            checkpoint_dir=tmp_path / "ckpt",
            resume=True,
            train_samples=500,
        )


def test_same_seed_same_run(tmp_path):
    a = _run(tmp_path / "a", epochs=2)
    b = _run(tmp_path / "b", epochs=2)
    for x, y in zip(a["weights"], b["weights"]):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("engine", ["event", "discrete"])
def test_yinyang_learns(engine):
    """A few epochs on a subset: accuracy well above chance (1/3)."""
    grad = "eventprop" if engine == "event" else "surrogate"
    extra = {"peak_push": 1.0} if engine == "event" else {}  # learning with the hinge on
    model = dataclasses.replace(SMALL, engine=engine, grad=grad, hidden=60, **extra)
    res = run_point_task("yinyang", model, TrainConfig(epochs=8, seed=0), train_samples=2000)
    assert res["test_accuracy"] > 0.5, res["test_accuracy"]


def test_silent_label_peak_hinge_raises_silent_label_neurons():
    """Output weights too weak for any output spike: the hinge is positive, its gradient
    raises the label neurons' peak voltage (the hinge falls), and it vanishes where the
    label neuron spikes."""
    cfg = dataclasses.replace(SMALL, hidden=30, peak_push=1.0)
    points, labels = load_splits("yinyang")["train"]
    x, y = classify.encode(points[:32], cfg), jnp.asarray(labels[:32])
    params = classify.init_params(jax.random.PRNGKey(0), cfg)
    weak = (params[0], 0.3 * params[1] - 0.1)

    def hinge(p):
        scores, res = classify.outputs(p, x, cfg)
        return classify.silent_label_peak_hinge(p, res.layers[0], scores, y, cfg)

    scores, _ = classify.outputs(weak, x, cfg)
    assert not np.any(np.isfinite(np.asarray(scores)))  # all silent
    h0, g = jax.value_and_grad(hinge)(weak)
    assert float(h0) > 0.1
    stepped = jax.tree.map(lambda p, d: p - 0.05 * d / jnp.linalg.norm(d), weak, g)
    assert float(hinge(stepped)) < float(h0) - 1e-3
    strong = (params[0], params[1] + 3.0)
    scores, _ = classify.outputs(strong, x, cfg)
    assert np.all(np.isfinite(np.asarray(scores)))  # every label neuron spikes
    assert float(hinge(strong)) == 0.0


@pytest.mark.parametrize("engine", ["event", "discrete"])
def test_output_populations_reduce_to_their_class(engine):
    """With two output neurons per class, a class scores its earliest spike (event) or
    largest voltage (discrete): a copy of each output neuron next to it changes no loss,
    count or prediction; a copy made stronger takes the class over."""
    grad = "eventprop" if engine == "event" else "surrogate"
    one = dataclasses.replace(SMALL, engine=engine, grad=grad, peak_push=1.0)
    two = dataclasses.replace(one, outputs_per_class=2)
    assert two.n_out == 6
    points, labels = load_splits("yinyang")["train"]
    x, y = classify.encode(points[:64], one), jnp.asarray(labels[:64])
    w1, w2 = classify.init_params(jax.random.PRNGKey(1), one)
    copied = (w1, jnp.repeat(w2, 2, axis=1))  # class-major: [c0, c0, c1, c1, c2, c2]
    loss_one, n_one = classify.loss_and_correct((w1, w2), x, y, one)
    loss_two, n_two = classify.loss_and_correct(copied, x, y, two)
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-6)
    assert int(n_two) == int(n_one)
    np.testing.assert_array_equal(
        classify.predict(copied, x, two), classify.predict((w1, w2), x, one)
    )
    # Class 2's second neuron alone made much stronger: class 2 wins every sample.
    boosted = (w1, copied[1].at[:, 5].add(5.0))
    assert np.all(np.asarray(classify.predict(boosted, x, two)) == 2)
    with pytest.raises(ValueError, match="outputs_per_class"):
        dataclasses.replace(one, outputs_per_class=0).check()


@pytest.mark.parametrize("grad", ["eventprop", "analytic"])
def test_plain_kernel_option_computes_the_same_loss_and_gradient(grad):
    """``plain_kernel=True`` only changes how the PSP kernel is evaluated (float64 here:
    agreement to rounding); it is refused where the time constants are too close."""
    smooth = dataclasses.replace(SMALL, grad=grad)
    plain = dataclasses.replace(smooth, plain_kernel=True)
    assert classify.solver_for(smooth).smooth and not classify.solver_for(plain).smooth
    points, labels = load_splits("yinyang")["train"]
    x, y = classify.encode(points[:64], smooth), jnp.asarray(labels[:64])
    params = classify.init_params(jax.random.PRNGKey(2), smooth)
    out = [
        jax.value_and_grad(lambda p, c=c: classify.loss_and_correct(p, x, y, c)[0])(params)
        for c in (smooth, plain)
    ]
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-12)
    for a, b in zip(out[0][1], out[1][1]):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12 * float(jnp.max(jnp.abs(a))))
    with pytest.raises(ValueError, match="plain_kernel"):
        dataclasses.replace(plain, tau_syn=plain.tau_mem * 1.05).check()


def test_silent_outputs_predict_the_class_closest_to_threshold():
    """Where every output neuron stays silent, the prediction is the class whose neuron
    came closest to threshold, checked against the hidden spikes' PSPs summed on a fine
    grid; where some output fires, it is the earliest spike as before."""
    cfg = dataclasses.replace(SMALL, grad="eventprop")
    points, _ = load_splits("yinyang")["test"]
    x = classify.encode(points[:64], cfg)
    w1, w2 = classify.init_params(jax.random.PRNGKey(3), cfg)
    # Weak output weights of zero mean: no output neuron reaches threshold, and which
    # class comes closest depends on the sample.
    q = 0.7 * jax.random.normal(jax.random.PRNGKey(1), w2.shape)
    quiet = (w1, q - jnp.mean(q, axis=0))
    scores, res = classify.outputs(quiet, x, cfg)
    assert not np.any(np.isfinite(np.asarray(scores)))
    hidden = np.asarray(res.layers[0].first_times(cfg.hidden))  # [64, hidden]
    w_out = np.asarray(classify.weights_of(quiet, cfg)[1])
    grid = np.arange(0.0, cfg.t_max, 1e-6)
    lag = grid[None, :, None] - np.where(np.isfinite(hidden), hidden, np.inf)[:, None, :]
    tm, ts = cfg.tau_mem, cfg.tau_syn
    psp = np.where(lag >= 0, ts / (tm - ts) * (np.exp(-lag / tm) - np.exp(-lag / ts)), 0.0)
    want = np.argmax(np.max(psp @ w_out, axis=1), axis=-1)  # [64]
    assert len(np.unique(want)) == 3
    np.testing.assert_array_equal(classify.predict(quiet, x, cfg), want)
    loud = (w1, w2 + 3.0)
    first = L.first_spike_prediction(classify.outputs(loud, x, cfg)[0])
    assert np.all(np.asarray(first) >= 0)
    np.testing.assert_array_equal(classify.predict(loud, x, cfg), first)


def test_runner_help_and_bad_combination():
    out = subprocess.run(
        [sys.executable, "-m", "tasks.yinyang", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0
    for option in (
        "--engine",
        "--grad",
        "--seed",
        "--epochs",
        "--metrics",
        "--plots",
        "--checkpoint",
        "--resume",
        "--plain-kernel",
    ):
        assert option in out.stdout
    from tasks.yinyang import configs, parser

    assert configs(parser().parse_args(["--plain-kernel"]))[0].plain_kernel
    assert not configs(parser().parse_args([]))[0].plain_kernel
    bad = subprocess.run(
        [sys.executable, "-m", "tasks.yinyang", "--engine", "discrete", "--grad", "eventprop"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "does not go with engine" in bad.stderr


def test_runner_end_to_end(tmp_path):
    metrics, plots = tmp_path / "m.jsonl", tmp_path / "plots"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.yinyang",
            "--epochs",
            "2",
            "--train-samples",
            "640",
            "--metrics",
            str(metrics),
            "--plots",
            str(plots),
            "--checkpoint",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy:")
    final = json.loads(metrics.read_text().splitlines()[-1])
    assert 0 <= final["test_accuracy"] <= 1
    assert f"{100 * final['test_accuracy']:.2f}%" in last
    for name in ("learning_curves.png", "raster.png", "decision_map.png"):
        assert (plots / name).stat().st_size > 1000
