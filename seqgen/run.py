"""Command-line entry point: `python -m seqgen.run [overrides]` (a thin `@hydra.main`).

The work is `seqgen.experiment.run_experiment(cfg)`. This file only turns mistakes into one
line: before Hydra starts, the overrides are composed once (each value of a sweep too) and
validated (`compose.check_overrides`), so a typo in a key, a wrong type or an out-of-range
knob prints `error: <what was wrong and what is allowed>` and exits with status 2, without a
traceback. From Python, `seqgen.run(overrides)` (`seqgen.api.run`) runs the same config in-process.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from seqgen import sweep
from seqgen.compose import CONFIG_PATH, check_overrides
from seqgen.config import validate_config
from seqgen.errors import TrainingInterrupted, UserError, storage_error_message
from seqgen.experiment import run_experiment
from seqgen.parallel import exit_process
from seqgen.plugins import export_to_jobs, import_plugins

log = logging.getLogger("seqgen")


class _CallableModule(types.ModuleType):
    """`seqgen.run` is this module (`python -m seqgen.run`) and also the Python API's
    `seqgen.run(overrides)`: importing a submodule sets the package attribute of its name, so
    a function of that name in `seqgen/__init__.py` would be replaced by the module."""

    def __call__(self, overrides: list[str] = (), out_dir: str | Path | None = None) -> dict:
        from seqgen.api import run

        return run(overrides, out_dir)


sys.modules[__name__].__class__ = _CallableModule


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _traceback_to_log_file() -> None:
    """The exception being handled, with its traceback, in the run's log file only."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "failed", None, sys.exc_info())
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> Any:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        import_plugins(cfg.get("plugins"))  # a job a launcher runs in another process too
        validate_config(cfg)
        return run_experiment(cfg, out_dir=out_dir)
    except TrainingInterrupted as exc:  # SIGINT / SIGTERM: checkpoint saved; stop the sweep too
        print(exc, file=sys.stderr, flush=True)
        exit_process(exc.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training
        print("interrupted", file=sys.stderr, flush=True)
        exit_process(130)
    except UserError as exc:
        _fail(str(exc))
        if multirun:  # keep the other jobs of the sweep going; the summary lists this one
            sweep.record_failure(out_dir, cfg, exc)
            return None
        exit_process(2)
    except Exception as exc:
        storage = storage_error_message(exc)
        if storage is not None and not multirun:
            _fail(storage)
            sys.exit(2)
        if multirun:
            log.exception("job failed")
            sweep.record_failure(out_dir, cfg, exc)
            return None
        if cfg.get("distributed"):  # the traceback in the log file, one line, no wait for peers
            _traceback_to_log_file()
            _fail(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            exit_process(1)
        raise


# ---------------------------------------------------------------------------------------------
# Override pre-check (`compose.check_overrides`): one clear line instead of Hydra's multi-line
# composition errors.

_FLAGS_WITH_VALUE = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir"}
_FLAGS_SKIP_CHECK = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--version"}


def _split_argv(argv: list[str]) -> tuple[list[str], str] | None:
    """(overrides, config name) of a command line; None when Hydra should see it unchecked
    (help, --cfg, another config dir)."""
    overrides: list[str] = []
    config_name = "config"
    it = iter(argv)
    for arg in it:
        if arg in _FLAGS_SKIP_CHECK:
            return None
        if arg in _FLAGS_WITH_VALUE:
            value = next(it, "")
            if arg not in ("-cn", "--config-name"):
                return None  # another config dir: leave it to Hydra
            config_name = value
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, config_name


def _check_overrides(argv: list[str]) -> None:
    """Compose the config for each override value and validate it; exit 2 on a mistake."""
    split = _split_argv(argv)
    if split is None:
        return
    overrides, config_name = split
    try:
        check_overrides(overrides, config_name, any(a in ("-m", "--multirun") for a in argv))
    except UserError as exc:
        _fail(str(exc))
        sys.exit(2)


def cli() -> None:
    _check_overrides(sys.argv[1:])
    export_to_jobs()  # a launcher's jobs in other processes import the same plugins
    main()
    if sweep.FAILED_JOBS:
        sys.exit(1)


if __name__ == "__main__":
    cli()
