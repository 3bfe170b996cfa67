"""Readers for the Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC).

Cramer, Stradmann, Schemmel & Zenke (2022), "The Heidelberg spiking data sets for the
systematic evaluation of spiking neural networks", IEEE TNNLS 33:2744. Spoken words passed
through a cochlea model into 700 input channels; SHD has 20 classes (digits 0-9 in English
and German; train/test), SSC 35 (train/valid/test). The files are published, gzipped, at
`HEIDELBERG_URL` (licence CC BY 4.0); download ``shd_train.h5.gz`` etc. into a directory
and pass it as ``data_dir`` (a ``.h5.gz`` next to a missing ``.h5`` is unpacked there once).

Layout of every file (HDF5): ``spikes/times`` and ``spikes/units``, one variable-length
row per sample (times in s, float; units = channel in ``[0, 700)``, int), and ``labels``
``[N]`` int. Anything else in the file (``extra/...``: speakers, keys) is not read.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
from pathlib import Path

import numpy as np

from .spikes import SpikeDataset, from_ragged

HEIDELBERG_URL = "https://zenkelab.org/datasets/"
HEIDELBERG_MIRROR = "https://compneuro.net/datasets/"
N_CHANNELS = 700
#: name -> (full name, classes, splits)
CORPORA = {
    "shd": ("Spiking Heidelberg Digits", 20, ("train", "test")),
    "ssc": ("Spiking Speech Commands", 35, ("train", "valid", "test")),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is not on disk; the message says which file, where it was looked
    for and where it is published (one line, for a command-line runner to print)."""


def load_shd(data_dir, split: str, max_samples: int | None = None) -> SpikeDataset:
    """SHD split ``"train"`` or ``"test"`` from ``data_dir/shd_{split}.h5``; see
    `load_heidelberg`."""
    return load_heidelberg("shd", data_dir, split, max_samples)


def load_ssc(data_dir, split: str, max_samples: int | None = None) -> SpikeDataset:
    """SSC split ``"train"``, ``"valid"`` or ``"test"`` from ``data_dir/ssc_{split}.h5``;
    see `load_heidelberg`."""
    return load_heidelberg("ssc", data_dir, split, max_samples)


def load_heidelberg(
    corpus: str, data_dir, split: str, max_samples: int | None = None
) -> SpikeDataset:
    """One split of SHD or SSC as a `SpikeDataset` (700 channels, budget = the largest
    sample read, ``duration`` = the latest spike rounded up to 0.1 s).

    Args:
        corpus: ``"shd"`` or ``"ssc"``.
        data_dir: directory holding ``{corpus}_{split}.h5`` (or ``.h5.gz``).
        split: see `CORPORA`.
        max_samples: read only this many samples, evenly spaced through the file (a
            deterministic choice that still covers every class where the file is ordered).

    Raises:
        DatasetNotFoundError: neither the ``.h5`` nor the ``.h5.gz`` file is there.
        ImportError: h5py is not installed (``pip install eventsnn[shd]``).
    """
    if corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {sorted(CORPORA)}, got {corpus!r}.")
    title, n_classes, splits = CORPORA[corpus]
    if split not in splits:
        raise ValueError(f"{corpus} split must be one of {list(splits)}, got {split!r}.")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}.")
    path = _locate(Path(data_dir), f"{corpus}_{split}.h5", title)
    try:
        import h5py
    except ImportError as err:
        raise ImportError("reading SHD/SSC needs h5py: pip install eventsnn[shd]") from err
    with h5py.File(path, "r") as f:
        n = f["labels"].shape[0]
        rows = slice(None)
        if max_samples is not None and max_samples < n:
            rows = np.unique(np.linspace(0, n - 1, max_samples).round().astype(np.int64))
        times = f["spikes/times"][rows]
        units = f["spikes/units"][rows]
        labels = f["labels"][rows]
    latest = max((float(np.max(t)) for t in times if len(t)), default=0.0)
    return from_ragged(
        times,
        units,
        labels,
        n_channels=N_CHANNELS,
        n_classes=n_classes,
        duration=max(math.ceil(latest * 10 - 1e-9) / 10, 0.1),
        name=f"{corpus}_{split}",
    )


def _locate(data_dir: Path, filename: str, title: str) -> Path:
    """The ``.h5`` file, unpacked from the ``.h5.gz`` beside it if only that is there."""
    path = data_dir / filename
    if path.is_file():
        return path
    packed = data_dir / (filename + ".gz")
    if packed.is_file():
        partial = path.with_name(filename + ".partial")
        with gzip.open(packed, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        os.replace(partial, path)  # atomic: a half-written .h5 never appears
        return path
    raise DatasetNotFoundError(
        f"{filename} not found in {data_dir.resolve()} (nor {filename}.gz): the {title} "
        f"are published at {HEIDELBERG_URL} (mirror {HEIDELBERG_MIRROR}); download "
        f"{filename}.gz there or give the directory that holds it (data_dir, --data-dir)."
    )
