"""Spiking classifiers of spike-train datasets: a recurrent multi-spike hidden layer and a
readout, trained with exact gradients (event engine) or surrogate gradients (discrete).

The network: input channels -> ``hidden`` CuBa-LIF neurons (multi-spike, optional dense
recurrence, one synaptic delay for both) -> ``n_classes`` outputs. The outputs are
leaky integrators (`eventsnn.readout.LIReadout`) read by the maximum of their voltage over
the run (``loss="max"``) or its time integral (``"integral"``), or spiking LIF neurons read
by their spike counts (``"count"``, `loss.spike_count_cross_entropy`). A firing-rate
penalty on the hidden neurons (`loss.firing_rate_penalty`) shapes their activity.

Engines: ``event`` simulates exactly, the hidden layer window by window
(`Windows`), differentiated by EventProp (``grad="eventprop"``), or one event at a time,
differentiated through the event sequence with exact spike-time derivatives
(``"analytic"``); ``discrete`` steps the same network with forward Euler at ``dt`` and
surrogate gradients. Trainable parameters are the three weight matrices in units of
`weight_scales`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp

from .discrete.simulate import simulate_discrete
from .encode import drop_spikes, jitter_times
from .event.simulate import simulate
from .event.spike_time import NewtonSolver
from .event.windows import Windows
from .loss import firing_rate_penalty, voltage_cross_entropy, weighted_spike_counts
from .network import Layer, Network, Spikes
from .neuron import LIFParams, kernel, plain_kernel_ok
from .readout import LIReadout, integral, peak

LOSSES = ("max", "integral", "count")


@dataclass(frozen=True)
class SpikeClassifierConfig:
    """Architecture, loss and engine of a spike-train classifier (times in s)."""

    n_in: int = 64
    hidden: int = 128
    n_classes: int = 10
    recurrent: bool = True
    tau_mem: float = 20e-3
    tau_syn: float = 5e-3
    v_th: float = 1.0
    t_refrac: float = 0.0
    delay: float = 1e-3  # synaptic delay into the hidden layer, input and recurrent alike
    readout_tau_mem: float = 20e-3
    readout_tau_syn: float = 5e-3
    t_max: float = 30e-3
    loss: str = "max"  # max | integral (LI readout) | count (spiking outputs)
    count_scale: float = 1.0  # logits per weighted output spike (loss "count")
    rate_weight: float = 0.0  # weight of the hidden firing-rate penalty
    rate_upper: float = 10.0  # spikes per run above which a hidden neuron is penalised
    input_jitter: float = 0.0  # s, std of noise on input spike times in training (augmentation)
    input_dropout: float = 0.0  # probability of deleting each input spike in training
    w_in: tuple[float, float] = (0.2, 0.7)  # init mean, std of the parameters
    w_rec: tuple[float, float] = (0.0, 0.5)
    w_out: tuple[float, float] = (0.0, 1.0)
    engine: str = "event"
    grad: str = "eventprop"  # eventprop | analytic (event), surrogate (discrete)
    dt: float = 0.5e-3  # discrete engine
    max_spikes: int = 2048  # hidden spikes recorded per sample (more is an error)
    # The hidden neurons share their time constants (the config's): one exponential per
    # arrival, not per arrival and neuron.
    windows: Windows = Windows(shared_time_constants=True)

    @property
    def n_out(self) -> int:
        return self.n_classes

    def check(self) -> None:
        combos = {"event": ("eventprop", "analytic"), "discrete": ("surrogate",)}
        if self.engine not in combos:
            raise ValueError(f"engine must be 'event' or 'discrete', got {self.engine!r}.")
        if self.grad not in combos[self.engine]:
            raise ValueError(
                f"grad {self.grad!r} does not go with engine {self.engine!r}: use "
                f"{' or '.join(combos[self.engine])}."
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}.")
        if self.loss == "count" and self.engine != "event":
            raise ValueError(
                "loss 'count' (spiking outputs) needs engine 'event'; the discrete engine "
                "reads a leaky-integrator readout: use loss 'max' or 'integral'."
            )
        for name in ("tau_mem", "tau_syn", "readout_tau_mem", "readout_tau_syn", "t_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}.")
        if not self.input_jitter >= 0:
            raise ValueError(f"input_jitter must be >= 0 seconds, got {self.input_jitter!r}.")
        if not 0 <= self.input_dropout < 1:
            raise ValueError(f"input_dropout must be in [0, 1), got {self.input_dropout!r}.")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {self.delay!r}.")


@functools.lru_cache
def _psp_peak(tau_mem: float, tau_syn: float) -> float:
    with jax.ensure_compile_time_eval():
        t = jnp.linspace(0.0, 10 * max(tau_mem, tau_syn), 4001)
        return float(jnp.max(kernel(t, tau_mem, tau_syn)))


def weight_scales(cfg: SpikeClassifierConfig) -> tuple[float, float, float]:
    """Weight per unit of parameter, per matrix (input, recurrent, output): the jump that
    brings a neuron from rest to threshold alone, over sqrt(fan-in)."""
    unit = cfg.v_th / _psp_peak(cfg.tau_mem, cfg.tau_syn)
    unit_out = cfg.v_th / _psp_peak(cfg.readout_tau_mem, cfg.readout_tau_syn)
    return unit / cfg.n_in**0.5, unit / cfg.hidden**0.5, unit_out / cfg.hidden**0.5


def init_params(key, cfg: SpikeClassifierConfig):
    """Gaussian parameters ``(theta_in [n_in, hidden], theta_rec [hidden, hidden] or None,
    theta_out [hidden, n_out])``."""
    k1, k2, k3 = jax.random.split(key, 3)

    def draw(k, shape, mean_std):
        return mean_std[0] + mean_std[1] * jax.random.normal(k, shape)

    rec = draw(k2, (cfg.hidden, cfg.hidden), cfg.w_rec) if cfg.recurrent else None
    return (
        draw(k1, (cfg.n_in, cfg.hidden), cfg.w_in),
        rec,
        draw(k3, (cfg.hidden, cfg.n_out), cfg.w_out),
    )


def _lif(cfg: SpikeClassifierConfig, n: int, dtype, output: bool = False) -> LIFParams:
    tm, ts = (cfg.readout_tau_mem, cfg.readout_tau_syn) if output else (cfg.tau_mem, cfg.tau_syn)
    return LIFParams(n, tau_mem=tm, tau_syn=ts, v_th=cfg.v_th, t_refrac=cfg.t_refrac, dtype=dtype)


def hidden_layer(params, cfg: SpikeClassifierConfig) -> Layer:
    s_in, s_rec, _ = weight_scales(cfg)
    w_in = params[0] * s_in
    rec = None if params[1] is None else params[1] * s_rec
    return Layer(w_in, _lif(cfg, cfg.hidden, w_in.dtype), rec, cfg.delay)


def output_weights(params, cfg: SpikeClassifierConfig):
    return params[2] * weight_scales(cfg)[2]


def _solver(cfg: SpikeClassifierConfig) -> NewtonSolver:
    """The plain PSP kernel where the time constants allow it (known statically here)."""
    return NewtonSolver(smooth=not plain_kernel_ok(cfg.tau_mem, cfg.tau_syn))


def _event_hidden(params, inputs: Spikes, cfg: SpikeClassifierConfig):
    """Hidden spikes ``[batch, max_spikes]`` and whether a budget overflowed ``[batch]``."""
    windowed = cfg.grad == "eventprop"
    # Known here, unlike inside the traced network: whether a neuron can be held.
    windows = dataclasses.replace(cfg.windows, refractory=cfg.t_refrac > 0)
    net = Network([hidden_layer(params, cfg)])
    res = simulate(
        net,
        inputs,
        t_max=cfg.t_max,
        max_spikes=cfg.max_spikes,
        solver=_solver(cfg),
        method=cfg.grad,
        fast_ttfs=False,
        windows=windows if windowed else None,
        check_overflow=False,
    )
    return res.layers[0], res.overflow[..., 0]


def outputs(params, inputs: Spikes, cfg: SpikeClassifierConfig):
    """``(scores [batch, n_out], hidden spikes [batch, k], overflow [batch])``: the
    readout's maximum or integral voltage, or the outputs' spike records' weighted counts
    (event engine); the discrete engine's readout voltage (max or mean over time)."""
    if cfg.engine == "discrete":
        return _discrete_outputs(params, inputs, cfg)
    hidden, overflow = _event_hidden(params, inputs, cfg)
    w_out = output_weights(params, cfg)
    if cfg.loss == "count":
        out = Layer(w_out, _lif(cfg, cfg.n_out, w_out.dtype, output=True))
        res = simulate(
            Network([out]), hidden, t_max=cfg.t_max, max_spikes=cfg.max_spikes,
            solver=_solver(cfg), method=cfg.grad, fast_ttfs=False,
            windows=cfg.windows if cfg.grad == "eventprop" else None, check_overflow=False,
        )  # fmt: skip
        scores = weighted_spike_counts(res.output, cfg.n_out, cfg.t_max)
        return scores, hidden, overflow | res.overflow[..., 0], res.output
    ro = LIReadout(w_out, tau_mem=cfg.readout_tau_mem, tau_syn=cfg.readout_tau_syn)
    with jax.named_scope("readout"):
        smooth = not plain_kernel_ok(cfg.readout_tau_mem, cfg.readout_tau_syn)
        if cfg.loss == "max":
            scores = peak(ro, hidden, cfg.t_max, presorted=True, smooth=smooth)[0]
        else:  # mean voltage over the run
            area = jax.vmap(lambda h: integral(ro, h, cfg.t_max, smooth=smooth))(hidden)
            scores = area / cfg.t_max
    return scores, hidden, overflow, None


def _discrete_outputs(params, inputs: Spikes, cfg: SpikeClassifierConfig):
    layer = hidden_layer(params, cfg)
    w_out = output_weights(params, cfg)
    readout = Layer(w_out, _lif(cfg, cfg.n_out, w_out.dtype, output=True))
    res = simulate_discrete(
        Network([layer, readout]), inputs, dt=cfg.dt, t_max=cfg.t_max, li_readout=True
    )
    v = res.output_voltage
    scores = jnp.max(v, axis=-2) if cfg.loss == "max" else jnp.mean(v, axis=-2)
    train = res.trains[0]  # [batch, steps, hidden]
    steps = jnp.arange(1, train.shape[1] + 1, dtype=train.dtype) * cfg.dt
    # Spike record of the hidden layer for the rate penalty: step ends as times.
    hidden = Spikes(
        jnp.where(train > 0, steps[None, :, None], jnp.inf).reshape(train.shape[0], -1),
        jnp.broadcast_to(jnp.arange(cfg.hidden), train.shape).reshape(train.shape[0], -1),
    )
    return scores, hidden, jnp.zeros(train.shape[0], bool), None


def loss_and_correct(params, inputs: Spikes, labels, cfg: SpikeClassifierConfig, key=None):
    """``(loss, number of correct predictions)`` for one batch. An overflowing spike
    budget stops the run with an error naming it (inside jit too): never a silent loss."""
    if key is not None:
        k_jitter, k_drop = jax.random.split(key)
        if cfg.input_jitter > 0:
            inputs = jitter_times(k_jitter, inputs, cfg.input_jitter)
        if cfg.input_dropout > 0:
            inputs = drop_spikes(k_drop, inputs, cfg.input_dropout)
    scores, hidden, overflow, _ = outputs(params, inputs, cfg)
    if cfg.loss == "count" and cfg.engine == "event":
        log_p = jax.nn.log_softmax(cfg.count_scale * scores, axis=-1)
        loss = -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))
    else:
        loss = voltage_cross_entropy(scores, labels)
    if cfg.rate_weight > 0:
        loss = loss + cfg.rate_weight * firing_rate_penalty(
            hidden, cfg.hidden, t_max=cfg.t_max, upper=cfg.rate_upper
        )
    loss = eqx.error_if(
        loss,
        jnp.any(overflow),
        "a spike budget was exceeded (more hidden spikes per sample than max_spikes, or "
        "more simultaneous spikes than Windows.window_spikes): raise them",
    )
    return loss, jnp.sum(jnp.argmax(scores, axis=-1) == labels)


def predict(params, inputs: Spikes, cfg: SpikeClassifierConfig):
    """``[batch]`` predicted classes: the output with the highest score."""
    scores, *_ = outputs(params, inputs, cfg)
    return jnp.argmax(scores, axis=-1)
