"""eventsnn: event-driven, continuous-time spiking neural networks with exact gradients."""

from .event.simulate import SimulationResult as SimulationResult
from .event.simulate import default_solver as default_solver
from .event.simulate import simulate as simulate
from .event.spike_time import NewtonSolver as NewtonSolver
from .event.spike_time import QuadraticSolver as QuadraticSolver
from .event.spike_time import SpikeTimeSolver as SpikeTimeSolver
from .loss import linear_spike_time_loss as linear_spike_time_loss
from .network import Layer as Layer
from .network import Network as Network
from .network import Spikes as Spikes
from .network import dense_layer as dense_layer
from .neuron import LIFParams as LIFParams

__version__ = "0.1.0"
