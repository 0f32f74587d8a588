"""Data parallelism with `jax.sharding`: a 1-D device mesh, batch sharding, opt-in multi-host.

The batch axis is split over the mesh axis `"data"`; parameters and optimizer state are
replicated. `jax.jit` propagates these shardings, so the train step itself is unchanged: the
gradient of the global masked-mean loss is all-reduced by XLA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seqgen.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named `"data"` over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of `tree` on all devices of `mesh` (fully replicated)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Split every leaf of `batch` (e.g. a `Batch` NamedTuple) along axis 0 over the mesh.

    In a multi-process run each process passes its local slice of the global batch.
    """
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    size = mesh.shape[DATA_AXIS]
    local = size // jax.process_count()
    for leaf in jax.tree.leaves(batch):
        if leaf.shape[0] % local:
            raise UserError(
                f"batch size {leaf.shape[0]} is not divisible by the {local} local devices; "
                "set train.batch_size to a multiple of the device count or data_parallel=false"
            )
    if jax.process_count() > 1:
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
        )
    return jax.device_put(batch, sharding)


def maybe_initialize_distributed(cfg: Any) -> bool:
    """Call `jax.distributed.initialize()` only when `cfg.distributed` is true (opt-in).

    Optional fields `coordinator_address`, `num_processes`, `process_id` are passed through
    (None lets JAX detect them on SLURM / TPU / k8s). Must run before any other JAX call.
    Returns whether it initialized.
    """
    if not getattr(cfg, "distributed", False):
        return False
    jax.distributed.initialize(
        coordinator_address=getattr(cfg, "coordinator_address", None),
        num_processes=getattr(cfg, "num_processes", None),
        process_id=getattr(cfg, "process_id", None),
    )
    return True
