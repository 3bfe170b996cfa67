"""Data-parallel training across devices with `jax.sharding`.

The batch is split over a one-axis device mesh (``"batch"``) and the weights are
replicated; XLA partitions the vmapped simulation and inserts the gradient all-reduce.
Several hosts: call `initialize_distributed` first on every host (it wraps
``jax.distributed.initialize``), then the mesh spans every host's devices. On one CPU,
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` gives N devices to test with.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def initialize_distributed(**kwargs) -> None:
    """Join a multi-host run (coordinator address, process count and id from `kwargs` or
    the environment, as ``jax.distributed.initialize`` reads them). No-op on one host."""
    if kwargs or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(**kwargs)


def data_mesh(devices: int, batch_size: int) -> Mesh | None:
    """A mesh of the first `devices` devices along the batch axis (None for one device).
    Raises ValueError naming the fix when there are too few devices or the batch does not
    split evenly."""
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}.")
    if devices == 1:
        return None
    available = jax.devices()
    if len(available) < devices:
        raise ValueError(
            f"devices={devices} but JAX sees {len(available)} ({available[0].platform}); on "
            f"CPU set XLA_FLAGS=--xla_force_host_platform_device_count={devices} before "
            "starting Python."
        )
    if batch_size % devices:
        raise ValueError(
            f"batch size {batch_size} does not split over {devices} devices: use a multiple "
            f"of {devices}."
        )
    return Mesh(np.asarray(available[:devices]), (BATCH_AXIS,))


def shard_batch(tree, mesh: Mesh | None):
    """Constrain every leaf's leading (sample) axis to be split over the mesh."""
    if mesh is None:
        return tree
    spec = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, spec), tree)


def replicate(tree, mesh: Mesh | None):
    """Place every leaf on all devices of the mesh (weights, optimizer state)."""
    if mesh is None:
        return tree
    spec = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.device_put(x, spec), tree)
