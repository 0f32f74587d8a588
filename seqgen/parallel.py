"""Data parallelism with `jax.sharding`: a 1-D device mesh, batch sharding, opt-in multi-host.

Training: the batch axis is split over the mesh axis `"data"`; parameters and optimizer state are
replicated. `jax.jit` propagates these shardings, so the train step itself is unchanged: the
gradient of the global masked-mean loss is all-reduced by XLA.

Decoding (`row_parallel`, `decode_mesh`): a decoder program's rows are independent, so under
`decode_mesh(mesh)` it runs as `shard_map` over the mesh, each device decoding its slice of the
rows with no communication in the loop (the SPMD partitioner would all-reduce the scan's
"every row ended" test and all-gather the carry for the beams' row gathers at every step).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seqgen.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named `"data"` over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of `tree` on all devices of `mesh` (fully replicated).

    Under multi-host every process passes the same values and places a copy on each of its own
    devices (`device_put` would need every device addressable).
    """
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(x: Any) -> jax.Array:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = x.addressable_data(0)  # already replicated: this process's copy
        devices = sharding.addressable_devices_indices_map(np.shape(x))
        copies = [jax.device_put(x, d) for d in devices]
        return jax.make_array_from_single_device_arrays(copies[0].shape, sharding, copies)

    return jax.tree.map(place, tree)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Split every leaf of `batch` (e.g. a `Batch` NamedTuple) along axis 0 over the mesh.

    `batch` is the GLOBAL batch, the same on every process (seqgen's batch iterators are seeded
    alike everywhere); each process places the rows its own devices own.
    """
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    size = mesh.shape[DATA_AXIS]
    for leaf in jax.tree.leaves(batch):
        if leaf.shape[0] % size:
            raise UserError(
                f"batch size {leaf.shape[0]} is not divisible by the {size} devices; "
                "set train.batch_size to a multiple of the device count or data_parallel=false"
            )
    if jax.process_count() > 1:
        return shard_rows(batch, mesh)
    return jax.device_put(batch, sharding)


def describe_devices(mesh: Mesh | None) -> str:
    """Where a phase runs, for its log line: `8 devices (cpu), 2 processes` or `1 device (cpu)`."""
    devices = [jax.local_devices()[0]] if mesh is None else list(mesh.devices.flat)
    n, procs = len(devices), len({d.process_index for d in devices})
    where = f"{n} device{'s' * (n != 1)} ({devices[0].platform})"
    return where + (f", {procs} processes" if procs > 1 else "")


# What `jax.distributed.initialize()` is given from the environment besides the coordinator
# (which JAX reads itself from JAX_COORDINATOR_ADDRESS); SLURM and the others need none of them.
DISTRIBUTED_ENV = {"num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def maybe_initialize_distributed(cfg: Any) -> bool:
    """Call `jax.distributed.initialize()` only when `cfg.distributed` is true (opt-in).

    The coordinator's address comes from `JAX_COORDINATOR_ADDRESS` (or optional fields
    `coordinator_address`, `num_processes`, `process_id` of `cfg`), the process count and
    index from `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`; what is unset JAX detects on SLURM,
    Open MPI, TPU pods and k8s. Must run before any other JAX call. On CPU the processes'
    collectives go through gloo (JAX's default `jax_cpu_collectives_implementation`). At most
    once per process: the later jobs of an in-process multirun find it initialized.
    Returns whether the process runs distributed.
    """
    if not getattr(cfg, "distributed", False):
        return False
    if jax.distributed.is_initialized():
        return True
    given = {k: getattr(cfg, k, None) for k in ("num_processes", "process_id")}
    for name, var in DISTRIBUTED_ENV.items():
        if given[name] is None and os.environ.get(var):
            given[name] = int(os.environ[var])
    jax.distributed.initialize(
        coordinator_address=getattr(cfg, "coordinator_address", None), **given
    )
    return True


def exit_process(code: int) -> None:
    """Exit with `code`; in a multi-process run at once, skipping JAX's exit barrier, which
    waits for every peer to shut down while the peers wait in a collective for this process.
    The launcher (`seqgen.launch`, or `srun --kill-on-bad-exit=1`) then stops the others."""
    if not jax.distributed.is_initialized():
        sys.exit(code)
    logging.shutdown()  # flush the run log
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def is_lead() -> bool:
    """Process 0, the one that writes the run folder, computes the metrics and logs."""
    return jax.process_index() == 0


# The fields of a decoder program's inputs (`decoding.program.ProgramInputs`) whose leaves have
# the rows (prompts) on axis 0.
ROW_ARGS = ("init_carry", "prompts", "prompt_lengths", "prompt_ids")
_DECODE_MESH: ContextVar[Mesh | None] = ContextVar("seqgen_decode_mesh", default=None)


@contextlib.contextmanager
def decode_mesh(mesh: Mesh | None) -> Iterator[None]:
    """Within the block, `row_parallel` programs split their rows over `mesh` (None: one device)."""
    token = _DECODE_MESH.set(mesh)
    try:
        yield
    finally:
        _DECODE_MESH.reset(token)


def shard_rows(tree: Any, mesh: Mesh) -> Any:
    """Split axis 0 of every leaf over the mesh, given the GLOBAL rows (the same on every process).

    One process: `shard_batch`; several: each process places the rows its devices own.
    """
    if jax.process_count() == 1:
        return shard_batch(tree, mesh)
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    def place(x: Any) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(place, tree)


def gather_rows_to_all(tree: Any, rows: int) -> Any:
    """The first `rows` rows of every (row-sharded) leaf, on every process."""
    if jax.process_count() > 1:
        tree = jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(lambda x: x[:rows], tree)


@functools.lru_cache(maxsize=64)
def _sharded_program(fn: Callable, mesh: Mesh, inputs: Any, static: tuple) -> Callable:
    """`inputs`: the program's inputs with each field's partition spec in place of its value
    (one spec a field: a prefix of its leaves)."""
    body = functools.partial(fn, **dict(static))
    # check_vma=False: a device's `lax.cond` skip of finished steps tests its own rows only
    mapped = jax.shard_map(
        body, mesh=mesh, in_specs=(inputs,), out_specs=PartitionSpec(DATA_AXIS), check_vma=False
    )
    return jax.jit(mapped)


def row_parallel(fn: Callable) -> Callable:
    """`jax.jit` of a decoder program `fn(inputs, *, ...)` whose rows are independent: `inputs`
    (a NamedTuple pytree, `decoding.program.ProgramInputs`) is traced, every keyword-only
    argument is static.

    Contract: the leaves of the fields of `inputs` named in ROW_ARGS and of every output have the
    rows on axis 0, and a row's output depends only on its own inputs (its key comes from its
    prompt id). Outside `decode_mesh` (or on a 1-device mesh) this is plain `jax.jit`. Inside,
    the rows are padded with copies of the last row to a multiple of the device count, split over
    the mesh, decoded by one compiled program per device (`shard_map`, no collectives), gathered
    (to every process under multi-host) and trimmed; every other field is replicated.
    `.lower(...)` lowers the one-device program, `.lower_sharded(mesh, inputs, **static)` the
    sharded one (to inspect their HLO).
    """
    params = inspect.signature(fn).parameters.values()
    static_argnames = tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)
    single = jax.jit(fn, static_argnames=static_argnames)

    def sharded(mesh: Mesh, inputs: Any, static: dict) -> tuple[Callable, Any, int]:
        fields = inputs._asdict()
        row_leaves = [x for k in ROW_ARGS for x in jax.tree.leaves(fields.get(k))]
        n_rows = int(np.shape(row_leaves[0])[0])
        pad = -n_rows % mesh.size

        def pad_rows(x: Any) -> jax.Array:
            x = jnp.asarray(x)
            return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x

        placed = type(inputs)(**{
            k: shard_rows(jax.tree.map(pad_rows, v), mesh) if k in ROW_ARGS else replicate(v, mesh)
            for k, v in fields.items()
        })  # fmt: skip
        row, whole = PartitionSpec(DATA_AXIS), PartitionSpec()
        specs = type(inputs)(**{k: row if k in ROW_ARGS else whole for k in fields})
        return _sharded_program(fn, mesh, specs, tuple(sorted(static.items()))), placed, n_rows

    @functools.wraps(fn)
    def call(inputs: Any, **static: Any) -> Any:
        mesh = _DECODE_MESH.get()
        if mesh is None or mesh.size == 1:
            return single(inputs, **static)
        program, placed, n_rows = sharded(mesh, inputs, static)
        if n_rows == 0:
            return single(inputs, **static)
        return gather_rows_to_all(program(placed), n_rows)

    def lower_sharded(mesh: Mesh, inputs: Any, **static: Any) -> Any:
        program, placed, _ = sharded(mesh, inputs, static)
        return program.lower(placed)

    call.lower = single.lower  # the one-device program, as for any jitted function
    call.lower_sharded = lower_sharded
    return call
