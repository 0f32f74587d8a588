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
from seqgen.config import register_configs, unknown_key_message, validate_config
from seqgen.decoding import registry
from seqgen.errors import TrainingInterrupted, UserError
from seqgen.experiment import run_experiment
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


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> Any:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        validate_config(cfg)
        return run_experiment(cfg, out_dir=out_dir)
    except TrainingInterrupted as exc:  # SIGINT / SIGTERM: checkpoint saved; stop the sweep too
        print(exc, file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    except UserError as exc:
        _fail(str(exc))
        if multirun:  # keep the other jobs of the sweep going; the summary lists this one
            sweep.record_failure(out_dir, cfg, exc)
            return None
        sys.exit(2)
    except Exception as exc:
        if multirun:
            log.exception("job failed")
            sweep.record_failure(out_dir, cfg, exc)
            return None
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


def _check_variant(config_name: str, variant: list[str], multirun: bool, given: set[str]) -> None:
    """Compose one variant and validate it, and each value of the sweeps its experiment file
    sets (`hydra.sweeper.params`, parsed by Hydra's grammar like the command line's) that the
    command line does not override (`given`: the keys it sets)."""
    cfg = compose(config_name=config_name, overrides=variant, return_hydra_config=True)
    validate_config(cfg)
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
            validate_config(compose(config_name=config_name, overrides=[*variant, one]))


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
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for variant in _variants(parsed):
            try:
                _check_variant(config_name, variant, multirun, given)
            except UserError as exc:
                _fail(str(exc))
                sys.exit(2)
            except Exception as exc:
                _fail(_explain(exc, variant))
                sys.exit(2)
    GlobalHydra.instance().clear()


def cli() -> None:
    _check_overrides(sys.argv[1:])
    main()
    if sweep.FAILED_JOBS:
        sys.exit(1)


if __name__ == "__main__":
    cli()
