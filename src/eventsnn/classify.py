"""Spiking classifiers of 2-D points: one hidden layer, one output per class.

Two engines share the architecture, data and training loop:

* ``event``: exact event-driven simulation; time-to-first-spike coding (single-spike
  neurons), prediction by the earliest output spike, loss = cross-entropy over ``-t/tau``
  plus an early-label regulariser. Gradients: EventProp or analytic (both exact).
* ``discrete``: forward Euler at a fixed step with surrogate gradients; the readout is a
  leaky integrator and its maximum (or mean, ``readout="mean"``) voltage over time gives
  the logits.

Trainable parameters are ``(theta_hidden, theta_out)``, the weights in units of
`weight_scales`; neuron parameters are fixed by the config.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .discrete.simulate import simulate_discrete
from .encode import max_voltage
from .event.simulate import layer_arrivals, simulate
from .event.spike_time import NewtonSolver, QuadraticSolver, SpikeTimeSolver
from .event.ttfs import peak_potential
from .loss import (
    early_label_regulariser,
    first_spike_cross_entropy,
    first_spike_prediction,
    silent_neuron_push,
    voltage_cross_entropy,
)
from .network import Layer, Network, Spikes
from .neuron import PLAIN_KERNEL_GAP, LIFParams, plain_kernel_ok


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture, coding and loss of a 2-D point classifier (times in s)."""

    n_in: int = 5
    hidden: int = 200
    n_classes: int = 3
    outputs_per_class: int = 1  # output neurons per class; a class's time is its earliest
    tau_mem: float = 12e-3
    tau_syn: float = 6e-3
    v_th: float = 1.0
    t_max: float = 28e-3
    t_early: float = 0.0
    t_late: float = 14e-3
    bias_time: float = 0.0
    engine: str = "event"
    grad: str = "eventprop"  # eventprop | analytic (event), surrogate (discrete)
    dt: float = 0.5e-3  # discrete engine
    loss_tau: float = 5e-3  # cross-entropy temperature (s)
    reg_alpha: float = 3e-3  # early-label regulariser weight
    reg_tau: float = 20e-3
    silent_push: float = 0.1  # weight of `silent_neuron_push` (per layer)
    peak_push: float = 0.0  # weight of a hinge raising a silent label neuron's peak voltage
    w_hidden: tuple[float, float] = (1.2, 1.0)  # init mean, std of the parameters
    w_out: tuple[float, float] = (0.5, 0.5)
    readout: str = "max"  # discrete engine: logits = max ("max") or mean ("mean") of V
    time_noise: float = 0.0  # std (s) of Gaussian jitter on input times during training
    # Event engine: evaluate the PSP kernel as the plain difference of exponentials (the
    # solvers' smooth=False): the same function, about 1.5x faster training, different
    # float32 rounding (so other numbers than the default's, seed for seed).
    plain_kernel: bool = False
    # Weights as a chip realises them (quantisation-aware training): per layer the step
    # and the largest magnitude (model weight units; 0: continuous, unbounded). The
    # rounding passes gradients straight through; a clipped weight gets none.
    weight_step: tuple[float, float] = (0.0, 0.0)
    weight_limit: tuple[float, float] = (0.0, 0.0)

    @property
    def n_out(self) -> int:
        """Output neurons: ``outputs_per_class`` per class, class-major."""
        return self.n_classes * self.outputs_per_class

    def check(self) -> None:
        if not (isinstance(self.outputs_per_class, int) and self.outputs_per_class >= 1):
            raise ValueError(
                f"outputs_per_class must be a positive integer, got {self.outputs_per_class!r}."
            )
        for name in ("weight_step", "weight_limit"):
            value = getattr(self, name)
            if len(value) != 2 or not all(v >= 0 for v in value):
                raise ValueError(
                    f"{name} must be two numbers >= 0 (one per layer), got {value!r}."
                )
        combos = {"event": ("eventprop", "analytic"), "discrete": ("surrogate",)}
        if self.engine not in combos:
            raise ValueError(f"engine must be 'event' or 'discrete', got {self.engine!r}.")
        if self.grad not in combos[self.engine]:
            raise ValueError(
                f"grad {self.grad!r} does not go with engine {self.engine!r}: use "
                f"{' or '.join(combos[self.engine])}."
            )
        if self.plain_kernel and not plain_kernel_ok(self.tau_mem, self.tau_syn):
            raise ValueError(
                f"plain_kernel needs tau_mem and tau_syn at least {PLAIN_KERNEL_GAP:.0%} "
                f"apart (got {self.tau_mem} and {self.tau_syn} s): set plain_kernel=False."
            )


@functools.lru_cache
def _psp_peak(tau_mem: float, tau_syn: float) -> float:
    """Peak of the unit PSP k(t) (a constant of the config, computed once)."""
    from .neuron import kernel

    with jax.ensure_compile_time_eval():
        t = jnp.linspace(0.0, 10 * max(tau_mem, tau_syn), 4001)
        return float(jnp.max(kernel(t, tau_mem, tau_syn)))


def weight_scales(cfg: ClassifierConfig) -> tuple[float, float]:
    """Weight per unit of parameter, per layer: the jump that brings a neuron from rest to
    threshold alone, over sqrt(fan-in). Training the parameters (O(1) numbers) rather than
    the weights gives both layers the same step size under Adam."""
    unit = cfg.v_th / _psp_peak(cfg.tau_mem, cfg.tau_syn)
    return unit / cfg.n_in**0.5, unit / cfg.hidden**0.5


def init_params(key, cfg: ClassifierConfig):
    """Gaussian parameters ``(theta_hidden [n_in, hidden], theta_out [hidden, classes])``."""
    k1, k2 = jax.random.split(key)
    (m1, s1), (m2, s2) = cfg.w_hidden, cfg.w_out
    theta1 = m1 + s1 * jax.random.normal(k1, (cfg.n_in, cfg.hidden))
    theta2 = m2 + s2 * jax.random.normal(k2, (cfg.hidden, cfg.n_out))
    return (theta1, theta2)


def weights_of(params, cfg: ClassifierConfig):
    """The weight matrices (jumps of I) of the parameters, quantised and clipped where
    ``cfg.weight_step`` / ``cfg.weight_limit`` say so."""
    s1, s2 = weight_scales(cfg)
    return tuple(
        quantised(p * s, step, limit)
        for p, s, step, limit in zip(params, (s1, s2), cfg.weight_step, cfg.weight_limit)
    )


def quantised(w, step: float, limit: float = 0.0):
    """``round(clip(w, -limit, limit) / step) * step`` forward; backward the clip's
    derivative (0 where saturated: no gradient pushes a clipped weight further) with the
    rounding passed straight through. ``step = 0``: no rounding; ``limit = 0``: no clip."""
    if limit > 0:
        w = jnp.clip(w, -limit, limit)
    if step > 0:
        w = w + jax.lax.stop_gradient(jnp.round(w / step) * step - w)
    return w


def network(params, cfg: ClassifierConfig) -> Network:
    single = cfg.engine == "event"
    lif = dict(tau_mem=cfg.tau_mem, tau_syn=cfg.tau_syn, v_th=cfg.v_th)
    w1, w2 = weights_of(params, cfg)
    return Network(
        [
            Layer(w1, LIFParams(cfg.hidden, dtype=w1.dtype, **lif), single_spike=single),
            Layer(w2, LIFParams(cfg.n_out, dtype=w2.dtype, **lif), single_spike=single),
        ]
    )


def solver_for(cfg: ClassifierConfig) -> SpikeTimeSolver:
    """The closed form where ``tau_mem = 2 tau_syn`` (known statically here, unlike inside a
    traced network), else safeguarded Newton; the PSP kernel's form from ``plain_kernel``."""
    smooth = not cfg.plain_kernel
    if cfg.tau_mem == 2 * cfg.tau_syn:
        return QuadraticSolver(smooth=smooth)
    return NewtonSolver(smooth=smooth)


def encode(points, cfg: ClassifierConfig) -> Spikes:
    """Points ``[N, 2]`` to input spikes ``[N, 5]``: x, y, 1-x, 1-y, bias."""
    from .datasets.two_d import encode_points

    times = encode_points(points, cfg.t_early, cfg.t_late, cfg.bias_time)
    idx = jnp.broadcast_to(jnp.arange(times.shape[1], dtype=jnp.int32), times.shape)
    return Spikes(times, idx)


def _by_class(x, cfg: ClassifierConfig):
    """``[..., n_out]`` per output neuron to ``[..., classes, outputs_per_class]``."""
    return x.reshape(*x.shape[:-1], cfg.n_classes, cfg.outputs_per_class)


def class_scores(scores, cfg: ClassifierConfig):
    """Output-neuron scores ``[batch, n_out]`` to class scores ``[batch, classes]``: the
    earliest first spike of each class's neurons (event engine) or their largest voltage."""
    reduce = jnp.min if cfg.engine == "event" else jnp.max
    return reduce(_by_class(scores, cfg), axis=-1)


def outputs(weights, inputs: Spikes, cfg: ClassifierConfig):
    """Per-output-neuron scores ``[batch, n_out]``: first spike times (event) or max (or
    mean) voltage; `class_scores` reduces them to classes."""
    net = network(weights, cfg)
    if cfg.engine == "event":
        # The parallel TTFS path; backward by EventProp's adjoint in closed form
        # ("eventprop") or autodiff with implicit-function derivatives ("analytic").
        res = simulate(
            net,
            inputs,
            t_max=cfg.t_max,
            max_spikes=(cfg.hidden, cfg.n_out),
            solver=solver_for(cfg),
            method=cfg.grad,
            fast_ttfs=True,
            check_overflow=False,
        )
        return res.output.first_times(cfg.n_out), res
    res = simulate_discrete(net, inputs, dt=cfg.dt, t_max=cfg.t_max, li_readout=True)
    v = res.output_voltage  # [batch, steps, classes]
    if cfg.readout == "mean":
        return jnp.mean(v, axis=-2), res
    return max_voltage(v), res


def loss_and_correct(params, inputs: Spikes, labels, cfg: ClassifierConfig, key=None):
    """``(loss, number of correct predictions)`` for one batch. With ``cfg.time_noise``
    and a `key`, the input spike times are jittered (training for noisy hardware)."""
    if cfg.time_noise > 0 and key is not None:
        noise = cfg.time_noise * jax.random.normal(key, inputs.times.shape, inputs.times.dtype)
        inputs = Spikes(jnp.maximum(inputs.times + noise, 0.0), inputs.indices)
    scores, res = outputs(params, inputs, cfg)
    if cfg.engine == "event":
        hidden = res.layers[0].first_times(cfg.hidden)
        loss, correct = first_spike_loss(params, inputs, hidden, scores, labels, cfg)
        if cfg.peak_push > 0:
            loss = loss + cfg.peak_push * silent_label_peak_hinge(
                params, res.layers[0], scores, labels, cfg
            )
        return loss, correct
    scores = class_scores(scores, cfg)
    loss = voltage_cross_entropy(scores, labels)
    return loss, jnp.sum(jnp.argmax(scores, axis=-1) == labels)


def first_spike_loss(params, inputs: Spikes, hidden_times, output_times, labels, cfg):
    """The time-to-first-spike loss and the number of correct predictions, from the first
    spike times of the hidden ``[batch, hidden]`` and output ``[batch, n_out]`` layers
    (simulated, or recorded on hardware): cross-entropy over ``-t/tau`` of the class times,
    the early-label regulariser, and pushes that revive the neurons of a silent label and
    hidden neurons dead on the batch. The count goes by spikes alone (a sample whose
    outputs all stay silent counts as wrong), as on a chip; `predict` also breaks that tie
    by the outputs' peak potentials, which takes one more pass this step need not pay."""
    class_times = class_scores(output_times, cfg)
    loss = first_spike_cross_entropy(class_times, labels, t_max=cfg.t_max, tau=cfg.loss_tau)
    loss = loss + cfg.reg_alpha * early_label_regulariser(
        class_times, labels, t_max=cfg.t_max, tau=cfg.reg_tau
    )
    in_fired = jnp.isfinite(inputs.times) & (inputs.times <= cfg.t_max)
    hidden_fired = jnp.isfinite(hidden_times)
    dead = jnp.broadcast_to(~jnp.any(hidden_fired, axis=0), hidden_fired.shape)
    onehot = jax.nn.one_hot(labels, cfg.n_classes, dtype=bool)
    label_silent = jnp.repeat(onehot & ~jnp.isfinite(class_times), cfg.outputs_per_class, -1)
    loss = loss + cfg.silent_push * (
        silent_neuron_push(params[0], in_fired, dead)
        + silent_neuron_push(params[1], hidden_fired, label_silent)
    )
    return loss, jnp.sum(first_spike_prediction(class_times) == labels)


def class_peaks(params, hidden: Spikes, cfg: ClassifierConfig):
    """``[batch, classes]`` highest potential ``u / theta`` any neuron of each class reaches
    within ``t_max`` under the hidden spikes ``[batch, hidden]``, as if it never spiked (1 is
    the threshold): how close a silent class came to firing."""
    layer = network(params, cfg).layers[1]
    theta = layer.params.v_th - layer.params.v_leak

    def one(h: Spikes):
        arrivals = layer_arrivals(h, layer.delay, presorted=True)
        return peak_potential(layer, arrivals, cfg.t_max, solver_for(cfg).smooth)

    return jnp.max(_by_class(jax.vmap(one)(hidden) / theta, cfg), axis=-1)


def silent_label_peak_hinge(params, hidden: Spikes, output_times, labels, cfg):
    """Mean over the batch of ``relu(1 - u_peak / theta)`` of label neurons that stayed
    silent, ``u_peak`` their highest potential under the hidden spikes: a true gradient
    that raises them to threshold (a silent neuron has no spike time to differentiate)."""
    peak = class_peaks(params, hidden, cfg)
    label_peak = jnp.take_along_axis(peak, labels[:, None], axis=-1)[:, 0]
    class_times = class_scores(output_times, cfg)
    silent = ~jnp.isfinite(jnp.take_along_axis(class_times, labels[:, None], axis=-1)[:, 0])
    return jnp.mean(jnp.where(silent, jax.nn.relu(1.0 - label_peak), 0.0))


def predict(weights, inputs: Spikes, cfg: ClassifierConfig):
    """``[batch]`` predicted classes. Event engine: the class of the earliest output
    spike; where every output neuron stayed silent, the class that came closest to
    threshold (highest peak potential). Discrete engine: the largest readout voltage."""
    scores, res = outputs(weights, inputs, cfg)
    scores = class_scores(scores, cfg)
    if cfg.engine == "event":
        first = first_spike_prediction(scores)
        closest = jnp.argmax(class_peaks(weights, res.layers[0], cfg), axis=-1)
        return jnp.where(first >= 0, first, closest)
    return jnp.argmax(scores, axis=-1)
