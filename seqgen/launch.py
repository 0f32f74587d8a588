"""`python -m seqgen.launch`: the multi-host path on one machine, for trying it before a cluster.

    python -m seqgen.launch --processes 2 --devices 4 [seqgen overrides ...]

starts `--processes` copies of `python -m seqgen.run distributed=true OVERRIDES`, each a JAX
process with `--devices` virtual CPU devices (`--xla_force_host_platform_device_count`), joined
by `jax.distributed` through a coordinator on 127.0.0.1 (a free port) with gloo collectives:
the program a SLURM job runs with one task per GPU, here on CPU. All processes share one
`hydra.run.dir`; process 0 writes it and prints the log. When a process fails, the launcher
stops the others at once (their collectives would wait for the failed one until JAX's timeouts)
and exits with the failed process's status, after one line naming it (preceded, for a process
other than 0, by the last line it wrote to stderr): what `srun --kill-on-bad-exit=1` does on a
cluster.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

# Hydra settings of the processes other than 0: no second `.hydra/` or log file in the run folder.
FOLLOWER_OVERRIDES = ("hydra.output_subdir=null", "hydra.job_logging.root.handlers=[console]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(rank: int, processes: int, devices: int, port: int) -> dict[str, str]:
    """The environment of process `rank`: CPU devices, the coordinator, its index."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": str(processes),
        "JAX_PROCESS_ID": str(rank),
        "PYTHONUNBUFFERED": "1",
    }


SEQGEN_RUN = ("-m", "seqgen.run")


def launch(
    overrides: Sequence[str],
    processes: int = 2,
    devices: int = 4,
    program: Sequence[str] = SEQGEN_RUN,
) -> int:
    """Run `python PROGRAM distributed=true OVERRIDES` as `processes` processes; the exit
    status of the first that fails (the others are stopped then), else 0."""
    port = free_port()
    overrides = list(overrides)
    seqgen_run = tuple(program) == SEQGEN_RUN
    if seqgen_run and not any(o.startswith("hydra.run.dir=") for o in overrides):
        # `${now:...}` could differ between processes started a second apart
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        overrides.append(f"hydra.run.dir=outputs/${{experiment_name}}/{stamp}")
    procs, errors = [], []
    for rank in range(processes):
        args = [sys.executable, *program, "distributed=true", *overrides]
        if rank > 0 and seqgen_run:
            args += FOLLOWER_OVERRIDES
        env = process_env(rank, processes, devices, port)
        # process 0 logs for all; the others' errors are shown when one of them fails first
        out = None if rank == 0 else subprocess.DEVNULL
        errors.append(None if rank == 0 else tempfile.TemporaryFile("w+"))
        procs.append(subprocess.Popen(args, env=env, stdout=out, stderr=errors[-1]))
    try:
        return _wait(procs, errors)
    except KeyboardInterrupt:
        _stop(procs)
        return 130


def _wait(procs: list[subprocess.Popen], errors: list[Any]) -> int:
    while True:
        codes = [p.poll() for p in procs]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            rank, code = failed[0]
            _stop(procs)
            if rank > 0:  # its own `error:` line (or traceback's last line) says why
                errors[rank].seek(0)
                lines = errors[rank].read().strip().splitlines()
                if lines:
                    print(lines[-1], file=sys.stderr)
            print(
                f"error: process {rank} of {len(procs)} exited with status {code}; "
                "stopped the others",
                file=sys.stderr,
            )
            return code
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen]) -> None:
    """Kill the processes still running: a peer's collectives cannot finish without the failed
    one, and a checkpoint is only ever complete or absent (orbax writes it atomically)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seqgen.launch",
        description="Run seqgen as several JAX processes on this machine (CPU, gloo).",
    )
    parser.add_argument("--processes", type=int, default=2, help="JAX processes (default 2)")
    parser.add_argument("--devices", type=int, default=4, help="CPU devices each (default 4)")
    args, overrides = parser.parse_known_args(argv)
    if args.processes < 1 or args.devices < 1:
        parser.error("--processes and --devices must be at least 1")
    return launch(overrides, args.processes, args.devices)


if __name__ == "__main__":
    sys.exit(main())
