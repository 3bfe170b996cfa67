"""Spike-train datasets: the container, the SHD/SSC readers, the digits encoder, shd_like."""

import dataclasses
import gzip
import shutil
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eventsnn import Spikes
from eventsnn.datasets import (
    DatasetNotFoundError,
    SpikeDataset,
    digits,
    encode_intensities,
    from_events,
    from_ragged,
    load_shd,
    load_ssc,
    shd_like,
)
from eventsnn.datasets.digits import DIGITS_MAX_VALUE

META = dict(n_channels=5, n_classes=3, duration=1.0, name="toy")


def write_heidelberg(path, times, units, labels, time_dtype=np.float16):
    """A file in the published layout: vlen rows under spikes/, labels [N]."""
    with h5py.File(path, "w") as f:
        t = f.create_dataset("spikes/times", (len(times),), dtype=h5py.vlen_dtype(time_dtype))
        u = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (ti, ui) in enumerate(zip(times, units)):
            t[i] = np.asarray(ti, time_dtype)
            u[i] = np.asarray(ui, np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, np.uint16))
        f.create_dataset("extra/speaker", data=np.zeros(len(labels), np.uint16))  # not read


# Sample 0 unsorted (the reader sorts), sample 2 empty, a spike after 1 s.
ROWS_T = [[0.5, 0.125, 0.25], [1.25, 0.0], [], [0.75]]
ROWS_U = [[699, 3, 10], [0, 1], [], [7]]
ROWS_Y = [19, 0, 5, 7]


@pytest.fixture
def shd_dir(tmp_path):
    write_heidelberg(tmp_path / "shd_train.h5", ROWS_T, ROWS_U, ROWS_Y)
    return tmp_path


def test_shd_reader_reads_the_published_layout(shd_dir):
    data = load_shd(shd_dir, "train")
    assert (len(data), data.budget, data.n_channels, data.n_classes) == (4, 3, 700, 20)
    assert data.times.dtype == np.float32 and data.channels.dtype == np.int32
    np.testing.assert_array_equal(data.labels, ROWS_Y)
    np.testing.assert_array_equal(data.spikes_per_sample, [3, 2, 0, 1])
    np.testing.assert_array_equal(data.times[0], [0.125, 0.25, 0.5])  # sorted
    np.testing.assert_array_equal(data.channels[0], [3, 10, 699])  # moved with their times
    np.testing.assert_array_equal(data.times[1], [0.0, 1.25, np.inf])
    np.testing.assert_array_equal(data.channels[1], [1, 0, -1])
    assert np.all(np.isinf(data.times[2])) and np.all(data.channels[2] == -1)
    assert data.duration == pytest.approx(1.3)  # latest spike 1.25 s, rounded up to 0.1 s
    assert not data.synthetic and data.name == "shd_train"


def test_reader_max_samples_spreads_over_the_file(tmp_path):
    n = 10
    times = [[0.01 * i] for i in range(n)]
    write_heidelberg(tmp_path / "ssc_valid.h5", times, [[i] for i in range(n)], range(n))
    data = load_ssc(tmp_path, "valid", max_samples=4)
    assert data.n_classes == 35 and data.name == "ssc_valid"
    np.testing.assert_array_equal(data.labels, [0, 3, 6, 9])  # first, last, evenly between
    np.testing.assert_array_equal(data.channels[:, 0], [0, 3, 6, 9])


def test_reader_unpacks_a_gzipped_file(shd_dir):
    plain = shd_dir / "shd_train.h5"
    with open(plain, "rb") as src, gzip.open(shd_dir / "shd_train.h5.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    expected = load_shd(shd_dir, "train")
    plain.unlink()
    data = load_shd(shd_dir, "train")
    assert plain.is_file() and not (shd_dir / "shd_train.h5.partial").exists()
    np.testing.assert_array_equal(data.times, expected.times)
    np.testing.assert_array_equal(data.channels, expected.channels)


def test_missing_file_names_file_directory_and_source(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_ssc(tmp_path, "test")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "ssc_test.h5" in message and str(tmp_path.resolve()) in message
    assert "https://zenkelab.org/datasets/" in message and "\n" not in message


def test_reader_refuses_bad_arguments_and_labels(shd_dir, monkeypatch):
    with pytest.raises(ValueError, match="split must be one of"):
        load_shd(shd_dir, "valid")  # SHD has no validation split
    with pytest.raises(ValueError, match="max_samples"):
        load_shd(shd_dir, "train", max_samples=0)
    write_heidelberg(shd_dir / "shd_test.h5", [[0.1]], [[2]], [20])  # SHD has 20 classes
    with pytest.raises(ValueError, match="labels out of range"):
        load_shd(shd_dir, "test")
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
    with pytest.raises(ImportError, match=r"pip install eventsnn\[shd\]"):
        load_shd(shd_dir, "train")


def toy(n=12, seed=0):
    """Sample i: one spike at 0.01 i s on channel i % 5, label i % 3 (rows identifiable)."""
    i = np.arange(n)
    return from_events(i, 0.01 * i, i % 5, i % 3, **META)


@given(
    events=st.lists(
        st.tuples(st.integers(0, 3), st.floats(0, 1, width=32), st.integers(0, 4)), max_size=30
    )
)
def test_from_events_keeps_every_event_sorted_per_sample(events):
    sample, times, channels = (np.array(x) for x in zip(*events)) if events else ([], [], [])
    data = from_events(sample, times, channels, [0, 1, 2, 0], **META)
    real = np.isfinite(data.times)
    rows = np.nonzero(real)[0]
    packed = sorted(zip(rows, data.times[real].tolist(), data.channels[real].tolist()))
    assert packed == sorted((int(s), float(t), int(c)) for s, t, c in events)
    counts = np.bincount(np.asarray(sample, int), minlength=4)
    np.testing.assert_array_equal(data.spikes_per_sample, counts)
    assert data.budget == max(counts.max(), 1)
    assert np.all(data.times[:, 1:] >= data.times[:, :-1])  # sorted, padding at the end


def test_construction_checks_values():
    t = np.array([[0.2, 0.1]], np.float32)
    c = np.array([[0, 1]], np.int32)
    y = np.array([0], np.int32)
    with pytest.raises(ValueError, match="ascending"):
        SpikeDataset(t, c, y, **META)
    with pytest.raises(ValueError, match="channels must be < 5"):
        SpikeDataset(t[:, ::-1], c + 4, y, **META)
    with pytest.raises(ValueError, match="-1 exactly where times is"):
        SpikeDataset(np.array([[0.1, np.inf]], np.float32), c, y, **META)
    with pytest.raises(ValueError, match="<= 1.0 s"):
        SpikeDataset(t[:, ::-1] * 10, c, y, **META)
    with pytest.raises(ValueError, match="labels must have shape"):
        SpikeDataset(t[:, ::-1], c, np.array([0, 1], np.int32), **META)
    with pytest.raises(ValueError, match="too small"):
        from_events([0, 0], [0.1, 0.2], [1, 2], [0], budget=1, **META)
    with pytest.raises(ValueError, match="same length"):
        from_ragged([[0.1, 0.2]], [[1]], [0], **META)


def test_with_budget_pads_and_refuses_to_cut():
    data = from_ragged([[0.1, 0.2, 0.3], [0.4]], [[0, 1, 2], [3]], [0, 1], budget=5, **META)
    tight = data.with_budget(data.max_spikes)
    assert (data.budget, tight.budget, data.max_spikes) == (5, 3, 3)
    wide = tight.with_budget(8)
    np.testing.assert_array_equal(wide.times[:, :5], data.times)
    np.testing.assert_array_equal(wide.channels[:, 5:], -1)
    assert np.all(np.isinf(wide.times[:, 3:]))
    with pytest.raises(ValueError, match="at least 3"):
        data.with_budget(2)
    with pytest.raises(ValueError, match="at least 3"):
        data.to_device().with_budget(2)
    on_device = data.to_device().with_budget(6)
    assert isinstance(on_device.times, jax.Array) and on_device.budget == 6


def test_spikes_record_shapes_and_dtypes():
    data = toy()
    spikes = data.spikes()
    assert isinstance(spikes, Spikes)
    assert spikes.times.shape == spikes.indices.shape == (12, 1)
    assert spikes.times.dtype == jnp.float32 and spikes.indices.dtype == jnp.int32
    assert data.spikes(dtype=jnp.float64).times.dtype == jnp.float64
    spikes.validate(data.n_channels)


def test_split_is_stratified_disjoint_and_seeded():
    data = toy(n=30)
    first, second = data.split(0.7, seed=1)
    assert (len(first), len(second)) == (21, 9)
    ids = np.concatenate([first.times[:, 0], second.times[:, 0]]) / 0.01
    np.testing.assert_array_equal(np.sort(np.rint(ids)), np.arange(30))  # disjoint, complete
    np.testing.assert_array_equal(np.bincount(first.labels), [7, 7, 7])  # 70% of each class
    again, _ = data.split(0.7, seed=1)
    other, _ = data.split(0.7, seed=2)
    np.testing.assert_array_equal(again.times, first.times)
    assert not np.array_equal(other.times, first.times)
    with pytest.raises(ValueError, match="fraction"):
        data.split(1.0, seed=0)


def test_batches_are_gathered_on_device_inside_jit():
    data = toy(n=10).to_device()
    idx = data.batch_indices(jax.random.PRNGKey(0), 4)
    assert idx.shape == (2, 4) and len(np.unique(idx)) == 8 and np.all(idx < 10)
    np.testing.assert_array_equal(idx, data.batch_indices(jax.random.PRNGKey(0), 4))

    @jax.jit
    def first_times(data, idx):
        spikes, labels = data.batch(idx)
        return spikes.times[:, 0], labels

    times, labels = first_times(data, idx[1])
    host = toy(n=10).subset(np.asarray(idx[1]))
    np.testing.assert_array_equal(times, host.times[:, 0])
    np.testing.assert_array_equal(labels, host.labels)
    with pytest.raises(ValueError, match="batch_size"):
        data.batch_indices(jax.random.PRNGKey(0), 11)


@given(
    values=hnp.arrays(np.float64, (3, 4), elements=st.floats(0, 1)),
    max_spikes=st.integers(1, 6),
    jitter=st.floats(0, 0.99),
)
def test_encoder_counts_and_slots(values, max_spikes, jitter):
    sample, times, channels = encode_intensities(
        values, max_spikes=max_spikes, duration=0.02, jitter=jitter, seed=0
    )
    counts = np.zeros((3, 4), int)
    np.add.at(counts, (sample, channels), 1)
    np.testing.assert_array_equal(counts, np.rint(values * max_spikes))
    assert np.all((times > 0) & (times < 0.02))
    for s, c in zip(*np.nonzero(counts)):  # each spike in its own slot of width 0.02 / n
        t = np.sort(times[(sample == s) & (channels == c)])
        slot = np.floor(t / (0.02 / len(t)))
        np.testing.assert_array_equal(slot, np.arange(len(t)))


def test_encoder_is_deterministic_in_the_seed():
    values = np.full((2, 3), 0.8)
    a = encode_intensities(values, max_spikes=4, duration=1.0, jitter=0.5, seed=3)
    b = encode_intensities(values, max_spikes=4, duration=1.0, jitter=0.5, seed=3)
    c = encode_intensities(values, max_spikes=4, duration=1.0, jitter=0.5, seed=4)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    with pytest.raises(ValueError, match="jitter"):
        encode_intensities(values, max_spikes=4, duration=1.0, jitter=1.0, seed=0)


def test_digits_spike_counts_follow_the_pixels():
    from sklearn.datasets import load_digits

    images = load_digits()
    train, test = digits(seed=0)
    assert (len(train), len(test)) == (1258, 539)  # round(0.7 * 1797) and the rest
    assert train.n_channels == 64 and train.n_classes == 10 and train.budget == test.budget
    both = np.concatenate([np.bincount(train.labels), np.bincount(test.labels)])
    whole = np.bincount(images.target)
    np.testing.assert_array_equal(both[:10] + both[10:], whole)
    assert np.all(np.abs(both[:10] - 0.7 * whole) <= 1)  # stratified
    rows = {r.tobytes() for r in train.times} & {r.tobytes() for r in test.times}
    assert not rows  # no sample in both parts
    expected = np.rint(images.data / DIGITS_MAX_VALUE * 4).sum(1)  # 4 spikes per pixel max
    got = np.concatenate([train.spikes_per_sample, test.spikes_per_sample])
    np.testing.assert_array_equal(np.sort(got), np.sort(expected))
    real = np.isfinite(train.times)
    assert np.all((train.times[real] > 0) & (train.times[real] < train.duration))
    again, _ = digits(seed=0)
    np.testing.assert_array_equal(again.times, train.times)


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install eventsnn\[digits\]"):
        digits()


@pytest.mark.parametrize(("target", "duration"), [(1000, 0.25), (8000, 1.0)])
def test_shd_like_statistics(target, duration):
    data = shd_like(20, seed=0, spikes_per_sample=target, duration=duration)
    counts = data.spikes_per_sample
    assert abs(counts.mean() / target - 1) < 0.03  # sd of the mean: 0.2% to 0.7%
    assert data.budget == counts.max() and data.n_channels == 700 and data.n_classes == 20
    real = np.isfinite(data.times)
    assert np.all((data.times[real] >= 0) & (data.times[real] <= duration))
    assert abs(data.times[real].mean() / (duration / 2) - 1) < 0.03  # uniform in time
    ch = data.channels[real]
    assert ch.min() >= 0 and ch.max() < 700 and np.all((data.labels >= 0) & (data.labels < 20))
    assert data.synthetic and "synthetic" in data.name and "synthetic" in data.summary()


def test_shd_like_is_seeded():
    a, b, c = shd_like(3, seed=5), shd_like(3, seed=5), shd_like(3, seed=6)
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.times[:, :100], c.times[:, :100])
    assert shd_like(3, seed=5, budget=9000).budget == 9000


def test_digits_train_with_fit_on_spike_counts():
    """The interface `eventsnn.train.fit` takes, end to end: device batches gathered inside
    jit; a linear read-out of spike counts per channel learns the digits (the encoding
    carries the class)."""
    from eventsnn.train import TrainConfig, fit

    train, test = (d.to_device() for d in digits(seed=0))

    def counts(spikes):  # [b, budget] -> [b, 64] spikes per channel (padding dropped)
        one = lambda c: jnp.zeros(64).at[c].add(1.0, mode="drop")
        return jax.vmap(one)(jnp.where(spikes.indices >= 0, spikes.indices, 64))

    def logits(params, spikes):
        return counts(spikes) @ params["w"] + params["b"]

    def loss_and_correct(params, spikes, labels, key):
        z = logits(params, spikes)
        loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), labels[:, None], 1))
        return loss, jnp.sum(jnp.argmax(z, 1) == labels)

    @jax.jit
    def accuracy(params, spikes, labels):
        return jnp.mean(jnp.argmax(logits(params, spikes), 1) == labels)

    evaluate = lambda params: float(accuracy(params, test.spikes(), test.labels))

    params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
    cfg = TrainConfig(epochs=3, batch_size=64, learning_rate=0.05, final_learning_rate=0.01)
    params, _ = fit(params, loss_and_correct, (train.spikes(), train.labels), evaluate, cfg)
    assert evaluate(params) > 0.85  # chance: 0.1


def test_jitter_times_moves_real_spikes_only():
    """Training augmentation: real times move by noise of the given spread and stay >= 0;
    padding stays padding; the same key gives the same draw."""
    from eventsnn import jitter_times

    times = np.full((4, 3000), np.inf)
    times[:, :2000] = np.linspace(0.0, 0.02, 2000)
    spikes = Spikes(times, np.where(np.isfinite(times), 5, -1))
    key = jax.random.PRNGKey(3)
    out = jitter_times(key, spikes, 1e-3)
    t = np.asarray(out.times)
    assert np.all(np.isinf(t[:, 2000:])) and np.all(np.isfinite(t[:, :2000]))
    assert np.all(t[:, :2000] >= 0) and np.any(t[:, :10] == 0.0)  # clipped at 0
    moved = t[:, 500:2000] - times[:, 500:2000]  # away from the clip at 0
    assert 0.9e-3 < np.std(moved) < 1.1e-3 and abs(np.mean(moved)) < 1e-4
    np.testing.assert_array_equal(np.asarray(out.indices), np.asarray(spikes.indices))
    np.testing.assert_array_equal(t, np.asarray(jitter_times(key, spikes, 1e-3).times))


def test_classifier_input_jitter_is_checked_and_used_in_training_only():
    from eventsnn.classify_spikes import SpikeClassifierConfig, init_params, loss_and_correct

    with pytest.raises(ValueError, match="input_jitter"):
        SpikeClassifierConfig(input_jitter=-1e-3).check()
    cfg = SpikeClassifierConfig(n_in=3, hidden=4, n_classes=2, input_jitter=2e-3, t_max=10e-3)
    params = init_params(jax.random.PRNGKey(0), cfg)
    params = (params[0] + 2.0, params[1], params[2])  # hidden neurons that spike
    x = Spikes(np.array([[1e-3, 2e-3, 3e-3, np.inf]]), np.array([[0, 1, 2, -1]]))
    y = jnp.array([1])
    plain = loss_and_correct(params, x, y, cfg)[0]  # no key: no augmentation
    same = loss_and_correct(params, x, y, dataclasses.replace(cfg, input_jitter=0.0))[0]
    moved = loss_and_correct(params, x, y, cfg, jax.random.PRNGKey(1))[0]
    assert float(plain) == float(same) and float(moved) != float(plain)


def test_drop_spikes_deletes_real_spikes_at_the_given_rate():
    """Deleted spikes become padding (time inf); kept ones are untouched; padding stays
    padding; the fraction deleted matches the rate; the same key gives the same draw."""
    from eventsnn import drop_spikes

    times = np.full((4, 3000), np.inf)
    times[:, :2000] = np.linspace(0.0, 0.02, 2000)
    spikes = Spikes(times, np.where(np.isfinite(times), 5, -1))
    key = jax.random.PRNGKey(4)
    t = np.asarray(drop_spikes(key, spikes, 0.25).times)
    assert np.all(np.isinf(t[:, 2000:]))
    kept = np.isfinite(t[:, :2000])
    np.testing.assert_array_equal(t[:, :2000][kept], times[:, :2000][kept])
    assert 0.23 < 1 - kept.mean() < 0.27
    np.testing.assert_array_equal(t, np.asarray(drop_spikes(key, spikes, 0.25).times))
    np.testing.assert_array_equal(np.asarray(drop_spikes(key, spikes, 0.0).times), times)


def test_classifier_input_dropout_is_checked_and_used_in_training_only():
    from eventsnn.classify_spikes import SpikeClassifierConfig, init_params, loss_and_correct

    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="input_dropout"):
            SpikeClassifierConfig(input_dropout=bad).check()
    cfg = SpikeClassifierConfig(n_in=3, hidden=4, n_classes=2, input_dropout=0.5, t_max=10e-3)
    params = init_params(jax.random.PRNGKey(0), cfg)
    params = (params[0] + 2.0, params[1], params[2])
    x = Spikes(np.array([[1e-3, 2e-3, 3e-3, 4e-3, np.inf]]), np.array([[0, 1, 2, 0, -1]]))
    y = jnp.array([1])
    plain = loss_and_correct(params, x, y, cfg)[0]
    same = loss_and_correct(params, x, y, dataclasses.replace(cfg, input_dropout=0.0))[0]
    keys = [jax.random.PRNGKey(k) for k in range(6)]
    losses = {float(loss_and_correct(params, x, y, cfg, k)[0]) for k in keys}
    assert float(plain) == float(same) and len(losses - {float(plain)}) > 0
