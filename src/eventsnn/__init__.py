"""eventsnn: event-driven, continuous-time spiking neural networks with exact gradients."""

from . import loss as loss
from .discrete.rules import ExactStep as ExactStep
from .discrete.rules import ForwardEuler as ForwardEuler
from .discrete.rules import IntegrateAndReset as IntegrateAndReset
from .discrete.rules import SpyxStep as SpyxStep
from .discrete.rules import StepRule as StepRule
from .discrete.simulate import DiscreteResult as DiscreteResult
from .discrete.simulate import simulate_discrete as simulate_discrete
from .discrete.simulate import trains_to_spikes as trains_to_spikes
from .discrete.surrogate import ArcTan as ArcTan
from .discrete.surrogate import Sigmoid as Sigmoid
from .discrete.surrogate import SuperSpike as SuperSpike
from .discrete.surrogate import Surrogate as Surrogate
from .encode import drop_spikes as drop_spikes
from .encode import first_spike_time as first_spike_time
from .encode import jitter_times as jitter_times
from .encode import latency_encode as latency_encode
from .encode import max_voltage as max_voltage
from .encode import rate_encode as rate_encode
from .encode import spike_count as spike_count
from .encode import spikes_to_train as spikes_to_train
from .event.simulate import SimulationResult as SimulationResult
from .event.simulate import default_solver as default_solver
from .event.simulate import simulate as simulate
from .event.spike_time import NewtonSolver as NewtonSolver
from .event.spike_time import QuadraticSolver as QuadraticSolver
from .event.spike_time import SpikeTimeSolver as SpikeTimeSolver
from .event.windowed import SparseNetwork as SparseNetwork
from .event.windowed import WindowedResult as WindowedResult
from .event.windowed import simulate_windowed as simulate_windowed
from .event.windows import Windows as Windows
from .loss import linear_spike_time_loss as linear_spike_time_loss
from .network import Layer as Layer
from .network import Network as Network
from .network import Spikes as Spikes
from .network import dense_layer as dense_layer
from .neuron import LIFParams as LIFParams
from .readout import LIReadout as LIReadout
from .sparse import Synapses as Synapses
from .sparse import balanced_ei as balanced_ei

__version__ = "0.1.0"
