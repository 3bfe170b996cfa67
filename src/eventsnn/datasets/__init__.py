"""Datasets: procedural 2-D tasks (`two_d`: Yin-Yang and friends) and spike-train datasets.

Spike-train datasets share one container, `SpikeDataset` (padded spike records, labels,
seeded splits, device batches): SHD and SSC read from their published HDF5 files
(`load_shd`, `load_ssc`), an offline one encoded from scikit-learn's 8x8 digits
(`digits`), and SHD-shaped random data for timing (`shd_like`, marked synthetic).
"""

from .digits import digits as digits
from .digits import encode_intensities as encode_intensities
from .heidelberg import DatasetNotFoundError as DatasetNotFoundError
from .heidelberg import load_heidelberg as load_heidelberg
from .heidelberg import load_shd as load_shd
from .heidelberg import load_ssc as load_ssc
from .spikes import SpikeDataset as SpikeDataset
from .spikes import from_events as from_events
from .spikes import from_ragged as from_ragged
from .synthetic import shd_like as shd_like
