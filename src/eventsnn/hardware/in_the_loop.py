"""Training in the loop: the forward pass on a chip, exact gradients in software.

Every step deploys the (quantised) weights, runs the batch on the backend and reads back
the first spike time of every hidden and output neuron. The loss is computed from those
recorded times; its gradient comes from the software model *at the recorded times*: for a
single-spike neuron that crossed threshold at ``t*`` the implicit function theorem gives
``dt*/dtheta = -(dV/dtheta) / (dV/dt)`` at ``t*``, which is what EventProp's adjoint
reduces to for time-to-first-spike networks. `pinned_first_spikes` builds times whose
value is the recording and whose derivative is that expression, so autodiff chains the
layers through the recorded hidden times. Weights are trained in float and deployed
saturated and rounded: the rounding is passed straight through, the saturation is not
(a weight clipped at the chip's largest integer gets no gradient pushing it further).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import classify
from ..network import Spikes
from ..neuron import kernel
from ..train import Progress, TrainConfig, end_epoch, load_checkpoint, optimizer
from .backend import Backend, ChipConfig, Limits, Reproducible
from .calibrate import Calibration, Targets
from .units import WEIGHT_MAX, ChipUnits


def pinned_first_spikes(t_rec, weights, t_pre, tau_mem, tau_syn, slope_floor):
    """Recorded first spike times with the software model's exact derivative.

    Args:
        t_rec: ``[batch, n]`` recorded first spike times (s), inf where silent.
        weights: ``[n_pre, n]`` (differentiable).
        t_pre: ``[batch, n_pre]`` presynaptic first spike times (s, differentiable).
        tau_mem, tau_syn: the model's time constants (s).
        slope_floor: lower bound of ``dV/dt`` (per s) used in the derivative, so that a
            recording where the model's membrane is flat gives no exploding step.

    Returns:
        ``[batch, n]``: equal to `t_rec`, with ``d t / d(weights, t_pre)`` of the model.
    """
    t_post = jax.lax.stop_gradient(t_rec)
    lag = t_post[:, None, :] - t_pre[:, :, None]  # [batch, n_pre, n]
    active = jnp.isfinite(lag) & (lag > 0)
    lag_safe = jnp.where(active, lag, 1.0)
    k, k_dot = jax.jvp(
        lambda t: kernel(t, tau_mem, tau_syn), (lag_safe,), (jnp.ones_like(lag_safe),)
    )
    v = jnp.sum(jnp.where(active, weights[None] * k, 0.0), axis=1)  # V(t*) - v_leak
    v_dot = jnp.sum(jnp.where(active, weights[None] * k_dot, 0.0), axis=1)
    slope = jnp.maximum(jax.lax.stop_gradient(v_dot), slope_floor)
    fired = jnp.isfinite(t_post)
    shift = (v - jax.lax.stop_gradient(v)) / slope  # value 0, derivative dV/dtheta / V'
    return jnp.where(fired, jnp.where(fired, t_post, 0.0) - shift, jnp.inf)


@dataclass(frozen=True)
class HardwareSetup:
    """A classifier placed on a chip: model units, placement and input fan-out.

    Attributes:
        units: the conversion to chip units (from the calibration).
        input_repeat: each input channel drives this many synapse rows, which share its
            integer weight (so a weight reaches ``input_repeat * 63`` steps).
        first_neuron: calibrated neurons skipped before the hidden layer (see `placement`).
        output_scale: integer steps per model weight unit of the output layer (its neurons
            calibrated to a smaller synaptic gain resolve its weights more finely); None:
            ``units.weight_scale``.
    """

    units: ChipUnits
    input_repeat: int = 5
    first_neuron: int = 0
    output_scale: float | None = None

    @property
    def scales(self) -> tuple[float, float]:
        """Integer steps per model weight unit of the hidden and output layers."""
        s = self.units.weight_scale
        return s, s if self.output_scale is None else self.output_scale

    @classmethod
    def from_calibration(cls, cal: Calibration, **kw) -> HardwareSetup:
        """The units of the calibration's first group (the hidden layer's neurons); with
        two groups the output layer goes on the second one's, at its own weight scale."""
        t, last = cal.groups[0][1], cal.groups[-1][1]
        if (t.tau_mem, t.tau_syn) != (last.tau_mem, last.tau_syn):
            raise ValueError(
                "the calibration groups have different time constants; the network's layers "
                "share one tau_mem and tau_syn."
            )
        units = ChipUnits(
            weight_scale=(t.v_th - t.v_leak) / t.synapse_gain, v_leak=t.v_leak, v_th=t.v_th
        )
        if len(cal.groups) > 1:
            kw.setdefault("output_scale", (last.v_th - last.v_leak) / last.synapse_gain)
        return cls(units, **kw)

    def model_config(self, cal: Calibration, base: classify.ClassifierConfig):
        """`base` with the calibrated time constants (model units)."""
        t = cal.targets
        return dataclasses.replace(
            base,
            tau_mem=float(self.units.time_to_model(t.tau_mem)),
            tau_syn=float(self.units.time_to_model(t.tau_syn)),
        )

    def quantised_config(self, cfg: classify.ClassifierConfig):
        """`cfg` with the chip's weight steps and limits: the software model of the
        deployed network (for quantisation-aware software training)."""
        s1, s2 = self.scales
        return dataclasses.replace(
            cfg,
            weight_step=(1.0 / s1, 1.0 / s2),
            weight_limit=(self.input_repeat * WEIGHT_MAX / s1, WEIGHT_MAX / s2),
        )

    def integer_weights(self, params, cfg) -> tuple[np.ndarray, np.ndarray]:
        """The deployed integer weights: ``[n_in * repeat, hidden]`` and ``[hidden, out]``."""
        w1, w2 = (np.asarray(w) for w in classify.weights_of(params, cfg))
        r, (s1, s2) = self.input_repeat, self.scales
        total = np.rint(np.clip(w1 * s1, -r * WEIGHT_MAX, r * WEIGHT_MAX))
        # Spread each total over r rows as evenly as integers allow.
        base = np.trunc(total / r)
        rest = (total - r * base).astype(int)  # |rest| < r
        rows = np.repeat(base[:, None, :], r, axis=1)  # [n_in, r, hidden]
        rows += np.sign(rest)[:, None, :] * (
            np.arange(r)[None, :, None] < np.abs(rest)[:, None, :]
        )
        q2 = np.rint(np.clip(w2 * s2, -WEIGHT_MAX, WEIGHT_MAX)).astype(np.int32)
        return rows.reshape(-1, w1.shape[1]).astype(np.int32), q2

    def deployed_weights(self, params, cfg):
        """The model weights the chip realises (differentiable: saturation, then rounding
        straight through)."""
        return classify.weights_of(params, self.quantised_config(cfg))

    def placement(self, cfg, cal: Calibration, limits: Limits):
        """Chip neurons of the hidden and output layers, calibrated ones only: with two
        calibration groups, the hidden layer on the first's neurons and the outputs on the
        last's; else the hidden layer from the first calibrated neurons and the outputs in
        another hemisphere where one has calibrated neurons (each layer's sources take two
        synapse rows per hemisphere, so two layers in one hemisphere share its 256 rows)."""
        if len(cal.groups) > 1:
            hidden = np.asarray(cal.groups[0][0])[self.first_neuron :][: cfg.hidden]
            outputs = np.asarray(cal.groups[-1][0])[: cfg.n_out]
            if hidden.size < cfg.hidden or outputs.size < cfg.n_out:
                raise ValueError(
                    f"the network needs {cfg.hidden} hidden and {cfg.n_out} output neurons; "
                    f"the calibration groups have {hidden.size} and {outputs.size}."
                )
            return hidden, outputs
        free = np.asarray(cal.neurons)[self.first_neuron :]
        if free.size < cfg.hidden + cfg.n_out:
            raise ValueError(
                f"the network needs {cfg.hidden + cfg.n_out} calibrated neurons, the "
                f"calibration has {free.size} from first_neuron={self.first_neuron}."
            )
        hidden = free[: cfg.hidden]
        rest = free[cfg.hidden :]
        elsewhere = ~np.isin(limits.hemisphere(rest), limits.hemisphere(hidden))
        if elsewhere.sum() >= cfg.n_out:
            rest = rest[elsewhere]
        return hidden, rest[: cfg.n_out]

    def configuration(self, chip: Backend, cal: Calibration, params, cfg) -> ChipConfig:
        """The chip configuration of the network `params`."""
        q1, q2 = self.integer_weights(params, cfg)
        routing = np.repeat(np.arange(cfg.n_in), self.input_repeat)
        placement = self.placement(cfg, cal, chip.limits)
        return ChipConfig(cal.settings, placement, (q1, q2), cfg.n_in, routing)

    def record(self, chip: Backend, cal: Calibration, params, inputs: Spikes, cfg):
        """Run a batch on the chip: first spike times (model s) of the hidden
        ``[batch, hidden]`` and output ``[batch, n_out]`` neurons, and overflow flags."""
        chip.configure(self.configuration(chip, cal, params, cfg))
        times = self.units.time_to_chip(np.asarray(inputs.times))
        channels = np.where(np.isfinite(times), np.asarray(inputs.indices), -1)
        duration = float(self.units.time_to_chip(cfg.t_max))
        rec = chip.run(times, channels, duration)
        firsts = []
        for t, i, n in zip(rec.times, rec.indices, (cfg.hidden, cfg.n_out)):
            t_model = np.where(np.isfinite(t), self.units.time_to_model(t), np.inf)
            t_model = np.where(t_model <= cfg.t_max, t_model, np.inf)
            firsts.append(np.asarray(Spikes(jnp.asarray(t_model), jnp.asarray(i)).first_times(n)))
        return firsts[0], firsts[1], rec.overflow


def calibration_groups(limits: Limits, targets: Targets, output_weight_scale=None,
                       neurons=None):  # fmt: skip
    """Calibration groups for a two-layer network placed across hemispheres: the last
    hemisphere's neurons (the output layer's, see `HardwareSetup.placement`) at the
    synaptic gain ``(v_th - v_leak) / output_weight_scale``, so that the output layer,
    whose weights span a few model units, gets finer integer steps; the others at
    `targets`. Returns ``[(neurons, Targets), ...]`` for `calibrate` (one group where
    `output_weight_scale` is None). `neurons`: the chip neurons to calibrate (all)."""
    neurons = np.arange(limits.neurons) if neurons is None else np.asarray(neurons)
    if output_weight_scale is None:
        return [(neurons, targets)]
    if not output_weight_scale > 0:
        raise ValueError(f"output_weight_scale must be > 0, got {output_weight_scale!r}.")
    last = limits.hemisphere(neurons) == limits.hemispheres - 1
    if last.all() or not last.any():
        raise ValueError(
            "an output group needs calibrated neurons in the last hemisphere and in another."
        )
    gain = (targets.v_th - targets.v_leak) / output_weight_scale
    return [
        (neurons[~last], targets),
        (neurons[last], dataclasses.replace(targets, synapse_gain=gain)),
    ]


def chip_accuracy(setup, chip, cal, params, points, labels, cfg, batch: int = 500) -> float:
    correct = 0
    for start in range(0, len(labels), batch):
        x = classify.encode(points[start : start + batch], cfg)
        _, out, _ = setup.record(chip, cal, params, x, cfg)
        pred = classify.first_spike_prediction(classify.class_scores(jnp.asarray(out), cfg))
        pred = np.asarray(pred)
        correct += int(np.sum(pred == labels[start : start + batch]))
    return correct / len(labels)


def _loss_from_recording(params, inputs, hidden_rec, out_rec, labels, cfg, setup):
    w1, w2 = setup.deployed_weights(params, cfg)
    floor = 0.05 * cfg.v_th / cfg.tau_mem
    args = (cfg.tau_mem, cfg.tau_syn, floor)
    hidden = pinned_first_spikes(hidden_rec, w1, inputs.first_times(cfg.n_in), *args)
    out = pinned_first_spikes(out_rec, w2, hidden, *args)
    return classify.first_spike_loss(params, inputs, hidden, out, labels, cfg)


def train_in_the_loop(
    chip: Backend,
    cal: Calibration,
    setup: HardwareSetup,
    params,
    splits: dict,
    cfg: classify.ClassifierConfig,
    train: TrainConfig,
    *,
    metrics_path: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
):
    """Fine-tune `params` with the forward pass on `chip`. Returns ``(params, history)``,
    history being one metrics record per epoch (chip accuracies). `stop_after` ends the
    run after that many epochs in total (an interruption, for tests)."""
    from ..train import History

    points, labels = splits["train"]
    inputs = classify.encode(points, cfg)
    labels = np.asarray(labels)
    n_batches = len(labels) // train.batch_size
    opt = optimizer(train, n_batches)
    # The chip's run counter is part of the state: a resumed mock run draws the same noise.
    state = (params, opt.init(params), jnp.asarray(0, jnp.int32))
    history = History([])
    meta = json.loads(
        json.dumps(
            {
                "train": dataclasses.asdict(train),
                "model": dataclasses.asdict(cfg),
                "backend": str(cal.identity),
                "in_the_loop": True,
            }
        )
    )
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / "in_the_loop.npz"
    if resume and ckpt is not None and ckpt.exists():
        state, history = load_checkpoint(ckpt, state, meta)

    @eqx.filter_jit
    def update(p, o, batch, hidden_rec, out_rec, y):
        (loss, correct), g = jax.value_and_grad(_loss_from_recording, has_aux=True)(
            p, batch, hidden_rec, out_rec, y, cfg, setup
        )
        updates, o = opt.update(g, o, p)
        return optax.apply_updates(p, updates), o, loss, correct

    progress = Progress(train.epochs)
    last = train.epochs if stop_after is None else min(train.epochs, stop_after)
    for e in range(len(history.epochs), last):
        params, opt_state, runs = state
        if isinstance(chip, Reproducible):
            chip.run_count = int(runs)
        start = time.perf_counter()
        key = jax.random.fold_in(jax.random.PRNGKey(train.seed), e)
        order = np.asarray(jax.random.permutation(key, len(labels)))
        losses, correct = [], 0
        for b in range(n_batches):
            idx = order[b * train.batch_size : (b + 1) * train.batch_size]
            batch = Spikes(inputs.times[idx], inputs.indices[idx])
            hidden_rec, out_rec, _ = setup.record(chip, cal, params, batch, cfg)
            params, opt_state, loss, c = update(
                params,
                opt_state,
                batch,
                jnp.asarray(hidden_rec),
                jnp.asarray(out_rec),
                jnp.asarray(labels[idx]),
            )
            losses.append(float(loss))
            correct += int(c)
        seconds = time.perf_counter() - start
        record = {
            "epoch": e + 1,
            "train_loss": float(np.mean(losses)),
            "train_accuracy": correct / (n_batches * train.batch_size),
            "val_accuracy": chip_accuracy(setup, chip, cal, params, *splits["validation"], cfg),
            "epoch_seconds": seconds,
        }
        runs = chip.run_count if isinstance(chip, Reproducible) else 0
        state = (params, opt_state, jnp.asarray(runs, jnp.int32))
        end_epoch(record, state, history, progress, ckpt, meta, metrics_path)
    return state[0], history
