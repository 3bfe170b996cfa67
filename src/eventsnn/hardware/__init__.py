"""Analog neuromorphic hardware (BrainScaleS-2 style): the experiment interface, a mock
chip, calibration and training in the loop. Chip units: us, mV, integer settings and
6-bit signed weights; `ChipUnits` converts from and to the model's."""

from .backend import PARAMETERS as PARAMETERS
from .backend import SETTING_MAX as SETTING_MAX
from .backend import Backend as Backend
from .backend import ChipConfig as ChipConfig
from .backend import ChipConfigError as ChipConfigError
from .backend import Recording as Recording
from .calibrate import Calibration as Calibration
from .calibrate import Protocol as Protocol
from .calibrate import Targets as Targets
from .calibrate import calibrate as calibrate
from .calibrate import measure_all as measure_all
from .calibrate import residual_table as residual_table
from .mock import MockChip as MockChip
from .mock import MockSpec as MockSpec
from .units import WEIGHT_MAX as WEIGHT_MAX
from .units import ChipUnits as ChipUnits


def mock_chip(seed: int, n_neurons: int | None = None, **spec) -> MockChip:
    """A mock chip from a seed (optionally with fewer neurons or other `MockSpec` fields)."""
    if n_neurons is not None:
        spec["n_neurons"] = n_neurons
    return MockChip(seed, MockSpec(**spec))
