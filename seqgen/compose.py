"""The Hydra config as `seqgen` composes it, from Python: `compose_config(overrides)`, and the
override pre-check (`check_overrides`) that turns a mistake into one `UserError` line.

The CLI (`seqgen.run`), `seqgen-sample` and `seqgen.run(overrides)` all compose through here,
so a bad override gives the same line in each (`error: <line>` on the command line).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqgen import config
from seqgen.config import register_configs, unknown_key_message, validate_config
from seqgen.decoding import knobs, registry
from seqgen.errors import UserError
from seqgen.plugins import import_plugins
from seqgen.preflight import check_environment

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


def compose_config(
    overrides: list[str] = (), config_name: str = "config", return_hydra_config: bool = False
) -> DictConfig:
    """The primary config (conf/config.yaml) with `overrides`, as `seqgen` composes it; a
    composition error is one `UserError` line (`explain`)."""
    overrides = list(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a syntax error: compose reports it
        parsed = []
    import_override_plugins(parsed)
    register_configs()  # the knobs and decoders registered since (a notebook's own too)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                config_name=config_name,
                overrides=overrides,
                return_hydra_config=return_hydra_config,
            )
    except Exception as exc:
        raise UserError(explain(exc, overrides)) from None
    finally:
        GlobalHydra.instance().clear()
    import_plugins(cfg.get("plugins"))  # those a config file names
    return cfg


def import_override_plugins(parsed: list[Override]) -> None:
    """Import the plugins the overrides name before composing, so the decoders and knobs they
    register are in the schema Hydra composes with: `plugins=[...]` (every value of a sweep) and
    the `plugins:` of each `+experiment=NAME` file (read before composing, since Hydra composes
    an experiment's `override /decoder: NAME` before its `plugins`). Plugins a config file
    names are imported once it is composed: their models and metrics are accepted."""
    for o in parsed:
        if o.key_or_group not in ("plugins", "experiment"):
            continue
        values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        for value in values:
            if o.key_or_group == "experiment":
                value = _experiment_plugins(value)
            if isinstance(value, list):  # anything else: the schema's type check says why
                import_plugins(value)


def _experiment_plugins(name: Any) -> Any:
    """The `plugins` an experiment file of conf/experiment/ names (None: none, or no such file;
    composing says why)."""
    path = CONF_DIR / "experiment" / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        return None
    entries = OmegaConf.load(path).get("plugins")
    return None if entries is None else OmegaConf.to_container(entries)


def explain(exc: BaseException, overrides: list[str] = ()) -> str:
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
        if getattr(err, "object_type", None) is config.DecoderConfig and "." not in full_key:
            full_key = _locate_decoder_key(full_key, overrides)
        msg = str(err).splitlines()[0]
        if "not in '" in msg:
            return unknown_key_message(full_key)
        allowed = _allowed(full_key)
        return f"{full_key}: {msg}" + (f"; allowed: {allowed}" if allowed else "")
    text = " ".join(str(exc).split())
    if "Unexpected type for root: NoneType" in text and any(
        o.lstrip("+").startswith("decoder.") for o in overrides
    ):
        names = ", ".join(registry.names())
        return f"decoder.* knobs need a decoder: add decoder=NAME (one of: {names})"
    text = re.sub(r"\s*Config search path:.*$", "", text)
    text = text.replace(" Available options in", "; available options in")
    return text


def _allowed(full_key: str) -> str | None:
    """What a field accepts, in words (`Knob.allowed`), for a key of a decoder or a group."""
    where, _, name = full_key.rpartition(".")
    group = where.split("[")[0]
    if group in ("decoder", "compare"):
        knob = knobs.KNOBS.get(name)
    elif group in config.GROUP_SCHEMAS:
        knob = config.field_knobs(config.GROUP_SCHEMAS[group]).get(name)
    else:
        knob = None
    return None if knob is None else knob.allowed()


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
    import_plugins(cfg.get("plugins"))
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
    seqgen_log = logging.getLogger("seqgen")
    level = seqgen_log.level
    seqgen_log.setLevel(logging.ERROR)  # warnings are each job's to log, else they print twice
    try:
        for cfg in cfgs:
            key = json.dumps([to_dict(cfg.data), int(cfg.seed)], sort_keys=True, default=str)
            if key not in corpora:
                corpora[key] = load_corpus(cfg.data, int(cfg.seed))
            check_run(cfg, corpora[key])
    finally:
        seqgen_log.setLevel(level)


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


def check_overrides(
    overrides: list[str], config_name: str = "config", multirun: bool = False
) -> None:
    """Compose the config for each value of each override (sweeps too) and validate it, with
    the folders the run will write; a mistake raises one `UserError` line."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:  # a syntax error in an override
        raise UserError(explain(exc)) from None
    given = {o.key_or_group for o in parsed}
    _check_launcher(parsed, multirun)
    import_override_plugins(parsed)
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            jobs: list[DictConfig] = []
            for variant in _variants(parsed):
                try:
                    jobs += _check_variant(config_name, variant, multirun, given)
                except UserError:
                    raise
                except Exception as exc:
                    raise UserError(explain(exc, variant)) from None
            if multirun and len(jobs) > 1:  # every job's corpus-dependent checks, first
                _check_jobs_with_data(jobs)
    finally:
        GlobalHydra.instance().clear()
