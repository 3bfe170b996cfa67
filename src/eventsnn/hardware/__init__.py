"""Analog neuromorphic hardware (BrainScaleS-2 style): the experiment interface, backends
found by name (entry-point group ``eventsnn.backends``), a mock chip, calibration and
training in the loop. Chip units: us, mV, integer settings and 6-bit signed weights;
`ChipUnits` converts from and to the model's. `eventsnn.hardware.testing` holds the
conformance suite a backend runs."""

from .backend import OPERATING_POINT as OPERATING_POINT
from .backend import PARAMETERS as PARAMETERS
from .backend import SETTING_MAX as SETTING_MAX
from .backend import Backend as Backend
from .backend import ChipConfig as ChipConfig
from .backend import ChipConfigError as ChipConfigError
from .backend import ChipIdentity as ChipIdentity
from .backend import Limits as Limits
from .backend import Recording as Recording
from .backend import Reproducible as Reproducible
from .backend import RunRequest as RunRequest
from .backend import synapse_rows as synapse_rows
from .calibrate import Calibration as Calibration
from .calibrate import CalibrationMismatchError as CalibrationMismatchError
from .calibrate import Protocol as Protocol
from .calibrate import Targets as Targets
from .calibrate import calibrate as calibrate
from .calibrate import measure_all as measure_all
from .calibrate import residual_table as residual_table
from .mock import MockChip as MockChip
from .mock import MockSpec as MockSpec
from .registry import UnknownBackendError as UnknownBackendError
from .registry import backend_names as backend_names
from .registry import open_backend as open_backend
from .units import WEIGHT_MAX as WEIGHT_MAX
from .units import ChipUnits as ChipUnits


def mock_chip(seed: int, n_neurons: int | None = None, **spec) -> MockChip:
    """A mock chip from a seed (optionally with fewer neurons or other `MockSpec` fields)."""
    if n_neurons is not None:
        spec["n_neurons"] = n_neurons
    return MockChip(seed, MockSpec(**spec))
