"""Command-line entry point: `python -m seqgen.run [overrides]` (a thin `@hydra.main`).

The work is `seqgen.experiment.run_experiment(cfg)`. This file only turns mistakes into one
line: before Hydra starts, the overrides are composed once (each value of a sweep too) and
validated, so a typo in a key, a wrong type or an out-of-range knob prints
`error: <what was wrong and what is allowed>` and exits with status 2, without a traceback.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqgen import sweep
from seqgen.config import DecoderConfig, register_configs, unknown_key_message, validate_config
from seqgen.decoding import registry
from seqgen.errors import TrainingInterrupted, UserError, storage_error_message
from seqgen.experiment import run_experiment
from seqgen.parallel import exit_process
from seqgen.preflight import check_environment

log = logging.getLogger("seqgen")
# The Hydra configs: inside an installed wheel they are the package `seqgen.conf` (pyproject maps
# the checkout's conf/ there); in a checkout, editable install or not, they are conf/ beside the
# package, so a worktree always reads its own conf/ and never another install's.
_PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
if _PACKAGED_CONF.is_dir():
    CONF_DIR, CONFIG_PATH = _PACKAGED_CONF, "pkg://seqgen.conf"
else:
    CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
    CONFIG_PATH = str(CONF_DIR)

register_configs()


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
# Override pre-check: one clear line instead of Hydra's multi-line composition errors.

_FLAGS_WITH_VALUE = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir"}
_FLAGS_SKIP_CHECK = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--version"}


def _explain(exc: BaseException, overrides: list[str] = ()) -> str:
    """Condense an OmegaConf/Hydra composition error into one line."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for err in reversed(chain):
        full_key = str(getattr(err, "full_key", "") or "")
        if not (isinstance(err, OmegaConfBaseException) and full_key):
            continue
        if getattr(err, "object_type", None) is DecoderConfig and "." not in full_key:
            full_key = _locate_decoder_key(full_key, overrides)
        msg = str(err).splitlines()[0]
        if "not in '" in msg:
            return unknown_key_message(full_key)
        return f"{full_key}: {msg}"
    text = " ".join(str(exc).split())
    if "Unexpected type for root: NoneType" in text and any(
        o.lstrip("+").startswith("decoder.") for o in overrides
    ):
        names = ", ".join(registry.names())
        return f"decoder.* knobs need a decoder: add decoder=NAME (one of: {names})"
    text = re.sub(r"\s*Config search path:.*$", "", text)
    text = text.replace(" Available options in", "; available options in")
    return text


def _locate_decoder_key(key: str, overrides: list[str]) -> str:
    """`compare[i].key` (or `decoder.key`) for a key OmegaConf reports without its place,
    found in the override that sets a whole decoder or list of decoders."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:
        return key
    for o in parsed:
        value = o.value()
        if o.key_or_group == "compare" and isinstance(value, list):
            for i, dec in enumerate(value):
                if isinstance(dec, dict) and key in dec:
                    return f"compare[{i}].{key}"
        if o.key_or_group == "decoder" and isinstance(value, dict) and key in value:
            return f"decoder.{key}"
    return key


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


def _sweep_choices(override: Override) -> list[str] | None:
    """Each value of a sweep (`a,b`, `choice()`, `range()`, `sort()`, ...) as its own override
    `key=value`, enumerated by Hydra as its basic sweeper does; None for a sweep only Hydra
    can expand (`interval()`, `glob()`): it is left to Hydra."""
    try:
        values = list(override.sweep_string_iterator())
    except Exception:
        return None
    return [f"{override.get_key_element()}={v}" for v in values]


def _variants(parsed: list[Override]) -> list[list[str]]:
    """The override lists to compose: every sweep at its first value, then each other value
    of each sweep (one at a time, the others at their first)."""
    base: list[str | None] = [o.input_line for o in parsed]
    sweeps: list[tuple[int, list[str]]] = []
    for i, o in enumerate(parsed):
        if o.is_sweep_override():
            choices = _sweep_choices(o) or []
            base[i] = choices[0] if choices else None
            sweeps.append((i, choices))
    variants = [[b for b in base if b is not None]]
    for i, choices in sweeps:
        for choice in choices[1:]:
            variant = list(base)
            variant[i] = choice
            variants.append([b for b in variant if b is not None])
    return variants


def _check_variant(
    config_name: str, variant: list[str], multirun: bool, given: set[str]
) -> list[DictConfig]:
    """Compose one variant and validate it, and each value of the sweeps its experiment file
    sets (`hydra.sweeper.params`, parsed by Hydra's grammar like the command line's) that the
    command line does not override (`given`: the keys it sets); return the configs."""
    cfg = compose(config_name=config_name, overrides=variant, return_hydra_config=True)
    validate_config(cfg)
    cfgs = [cfg]
    # folders, coordinator, credentials: before Hydra creates the run dir
    out_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    check_environment(cfg, OmegaConf.select(cfg, out_key), out_key)
    params = cfg.hydra.sweeper.get("params") or {}
    lines = [f"{key}={spec}" for key, spec in params.items() if key.lstrip("+~") not in given]
    for override in OverridesParser.create().parse_overrides(lines):
        values = [override.input_line]
        if override.is_sweep_override():
            values = _sweep_choices(override) or []
        for one in values:
            cfgs.append(compose(config_name=config_name, overrides=[*variant, one]))
            validate_config(cfgs[-1])
    return cfgs


def _check_jobs_with_data(cfgs: list[DictConfig]) -> None:
    """The checks that need the corpus (prompts, decode budgets, training memory), for every
    job of a sweep before the first one runs, each corpus loaded once: a later job's bad value
    is found before earlier jobs spend their time."""
    import json

    from seqgen.config import to_dict
    from seqgen.data.corpus import load_corpus
    from seqgen.preflight import check_run

    corpora: dict[str, Any] = {}
    for cfg in cfgs:
        key = json.dumps([to_dict(cfg.data), int(cfg.seed)], sort_keys=True, default=str)
        if key not in corpora:
            corpora[key] = load_corpus(cfg.data, int(cfg.seed))
        check_run(cfg, corpora[key])


# What each launcher of conf/hydra/launcher/ needs on this machine: a command on PATH.
_LAUNCHER_COMMANDS = {"slurm": "sbatch"}


def _check_launcher(parsed: list[Override], multirun: bool) -> None:
    """A launcher runs the jobs of a multirun: without `-m` Hydra ignores it and starts one
    full run here; `slurm` off a cluster would fail in submitit with a long traceback."""
    import shutil

    for o in parsed:
        if o.key_or_group != "hydra/launcher":
            continue
        name = o.value()
        if not multirun:
            raise UserError(
                f"hydra/launcher={name} only launches the jobs of a multirun; allowed: add -m "
                f"(python -m seqgen.run -m hydra/launcher={name} ...)"
            )
        command = _LAUNCHER_COMMANDS.get(str(name))
        if command and shutil.which(command) is None:
            raise UserError(
                f"hydra/launcher={name} submits with {command}, which is not on PATH here; "
                "allowed: run it on a cluster's login node, or hydra/launcher=local|parallel"
            )


def _check_overrides(argv: list[str]) -> None:
    """Compose the config for each override value and validate it; exit 2 on a mistake."""
    split = _split_argv(argv)
    if split is None:
        return
    overrides, config_name = split
    multirun = any(a in ("-m", "--multirun") for a in argv)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # a syntax error in an override
        _fail(_explain(exc))
        sys.exit(2)
    given = {o.key_or_group for o in parsed}
    try:
        _check_launcher(parsed, multirun)
    except UserError as exc:
        _fail(str(exc))
        sys.exit(2)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        jobs: list[DictConfig] = []
        for variant in _variants(parsed):
            try:
                jobs += _check_variant(config_name, variant, multirun, given)
            except UserError as exc:
                _fail(str(exc))
                sys.exit(2)
            except Exception as exc:
                _fail(_explain(exc, variant))
                sys.exit(2)
        if multirun and len(jobs) > 1:
            try:
                _check_jobs_with_data(jobs)
            except UserError as exc:
                _fail(str(exc))
                sys.exit(2)
    GlobalHydra.instance().clear()


def cli() -> None:
    _check_overrides(sys.argv[1:])
    main()
    if sweep.FAILED_JOBS:
        sys.exit(1)


if __name__ == "__main__":
    cli()
