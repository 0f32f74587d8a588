"""Experiment trackers: a small protocol with a Weights & Biases and a no-op implementation.

Only process 0 logs (`jax.process_index() == 0`); a run is always finished, also when it fails
(`finish(exit_code=1)`), so offline files are complete and online runs are not left "running".
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Protocol

import jax

import seqgen
from seqgen.errors import UserError

log = logging.getLogger(__name__)

# The W&B folder variables seqgen set for the last job (a value the user set is left alone).
_SET_FOR_JOB: dict[str, str] = {}


def _set_for_job(var: str, value: str | os.PathLike) -> None:
    if os.environ.get(var) in (None, _SET_FOR_JOB.get(var)):
        os.environ[var] = _SET_FOR_JOB[var] = str(value)


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_summary(self, metrics: dict[str, Any]) -> None: ...

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def log_image(self, key: str, path: str | os.PathLike) -> None: ...

    def log_html(self, key: str, path: str | os.PathLike) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class NoOpTracker:
    """Logs nothing (`logger=none`, or any process other than 0)."""

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_summary(self, metrics: dict[str, Any]) -> None:
        pass

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def log_image(self, key: str, path: str | os.PathLike) -> None:
        pass

    def log_html(self, key: str, path: str | os.PathLike) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def git_commit() -> str | None:
    """The commit of the seqgen checkout this package was imported from, else None.

    An installed wheel is no checkout; if it sits inside some other repository (a virtual
    environment in a project folder), that repository's commit is not seqgen's, so the commit is
    only taken when the repository's top level is the folder that holds the `seqgen` package.
    """
    package_root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=package_root,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != package_root:
        return None
    return lines[1]


def run_provenance() -> dict[str, str | None]:
    """What every tracked run records about the code: seqgen's version, and the commit when
    it runs from a checkout."""
    return {"seqgen_version": seqgen.__version__, "git_commit": git_commit()}


class WandbTracker:
    """Weights & Biases. `mode` is online | offline | disabled; offline never touches the network.

    W&B's files go under `out_dir` (its `wandb/` folder) unless WANDB_DIR is set, and its cache
    and data folders default there too, so nothing lands in the user's home by surprise. The
    folder is passed to `wandb.init`, never put in the environment: each job of an in-process
    multirun (and the sweep summary) writes into its own `out_dir`.
    """

    def __init__(
        self,
        *,
        config: dict[str, Any],
        project: str,
        out_dir: str | os.PathLike,
        mode: str = "offline",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        job_type: str | None = None,
    ) -> None:
        import wandb  # a slow import: only when a W&B run is made

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _set_for_job("WANDB_CACHE_DIR", out_dir / "wandb" / ".cache")
        _set_for_job("WANDB_DATA_DIR", out_dir / "wandb" / ".data")
        os.environ.setdefault("WANDB_SILENT", "true")
        wandb_dir = os.environ.get("WANDB_DIR") or str(out_dir)
        self._wandb = wandb
        config = dict(config)
        for k, v in run_provenance().items():
            config.setdefault(k, v)
        self.run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            name=name,
            tags=list(tags or []),
            job_type=job_type,
            mode=mode,
            config=config,
            dir=wandb_dir,
            reinit="finish_previous",
            settings=wandb.Settings(init_timeout=60, console="off"),
        )

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def log_summary(self, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            self.run.summary[k] = v

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({key: self._wandb.Table(columns=columns, data=rows)})

    def log_image(self, key: str, path: str | os.PathLike) -> None:
        self.run.log({key: self._wandb.Image(str(path))})

    def log_html(self, key: str, path: str | os.PathLike) -> None:
        """A self-contained HTML page (the run's report), as W&B renders it: unchanged."""
        self.run.log({key: self._wandb.Html(Path(path).read_text(), inject=False)})

    def finish(self, exit_code: int = 0) -> None:
        offline = self.run.offline
        where = self.run.settings.sync_dir
        self.run.finish(exit_code=exit_code)
        if offline:  # nothing reached W&B: say how to send it
            log.info("W&B offline run: upload it with `wandb sync %s`", where)


# The values of the WANDB_MODE environment variable W&B knows ("dryrun" is offline's old name).
WANDB_ENV_MODES = ("online", "offline", "disabled", "dryrun")


def effective_mode(logger_cfg: Any) -> str:
    """The W&B mode a run uses: `logger.mode`, unless the environment's WANDB_MODE keeps it
    off the network (offline, disabled): W&B itself reads that variable, and a job that a
    scheduler or a test runs offline must not need an API key because its config says online."""
    env = os.environ.get("WANDB_MODE", "")
    if env and env not in WANDB_ENV_MODES:
        raise UserError(
            f"WANDB_MODE={env} in the environment is not a W&B mode; allowed: "
            f"{', '.join(WANDB_ENV_MODES)} (or unset it)"
        )
    if env in ("offline", "dryrun", "disabled"):
        return "offline" if env == "dryrun" else env
    return str(logger_cfg.mode)


def make_tracker(
    logger_cfg: Any,
    *,
    config: dict[str, Any],
    out_dir: str | os.PathLike,
    default_group: str | None = None,
    default_name: str | None = None,
    job_type: str | None = None,
) -> Tracker:
    """The tracker a `logger` config asks for; a no-op on every process but 0."""
    if logger_cfg.name == "none" or jax.process_index() != 0:
        return NoOpTracker()
    mode = effective_mode(logger_cfg)
    if mode == "disabled":
        return NoOpTracker()
    return WandbTracker(
        config=config,
        project=logger_cfg.project,
        out_dir=out_dir,
        mode=mode,
        entity=logger_cfg.entity,
        group=logger_cfg.group or default_group,
        name=logger_cfg.run_name or default_name,
        tags=list(logger_cfg.tags),
        job_type=job_type,
    )
