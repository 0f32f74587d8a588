"""Config composition and validation: every shipped config composes; mistakes are one line."""

from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import CONF_DIR, compose, run_cli
from flax.nnx import Rngs
from omegaconf import OmegaConf

from seqgen.config import (
    GROUP_SCHEMAS,
    Config,
    DataConfig,
    DecoderConfig,
    TrainConfig,
    check_fields,
    field_knobs,
    schema_default,
    setting,
    to_dict,
    validate_config,
)
from seqgen.data.corpus import _get as corpus_get
from seqgen.decoding.knobs import KNOBS
from seqgen.decoding.registry import SPECS, validate_decoder
from seqgen.driver import decoder_label
from seqgen.errors import UserError
from seqgen.models import LanguageModel
from seqgen.train import hparams_from_cfg

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
GROUPS = {
    g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml"))
    for g in ("data", "model", "train", "decoder", "decode", "logger")
}


def test_there_are_experiments_and_decoders():
    assert {"beam_sweep", "degeneration", "folk_rnn", "char_rnn"} <= set(EXPERIMENTS)
    assert {"greedy", "sample", "beam", "stochastic_beam", "diverse_beam"} <= set(GROUPS["decoder"])


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name):
    overrides = [f"+experiment={name}"]
    if name.startswith("char_rnn"):
        overrides.append("data.path=/tmp/any.txt")
    cfg = compose(overrides)
    validate_config(cfg)
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert "python -m seqgen.run +experiment=" in text  # the header names the command


def test_every_group_option_composes():
    for group, options in GROUPS.items():
        for option in options:
            extra = ["data=synthetic"] if option == "oracle" else []
            extra += ["data.path=/tmp/x.txt"] if option == "text" else []
            extra += ["constraint.pattern='a+'"] if option == "regex" else []
            extra += ["data.level=abc"] if option == "meter" else []
            cfg = compose([f"{group}={option}", *extra])
            validate_config(cfg)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.hidden_size=0", "model.hidden_size"),
        ("decode.max_len=0", "decode.max_len"),
        ("train.lr=-1", "train.lr"),
        ("data.name=nope", "data.name"),
    ],
)
def test_out_of_range_values_are_user_errors(override, needle):
    cfg = compose([override])
    with pytest.raises(UserError, match=needle.replace(".", r"\.")):
        validate_config(cfg)


def test_decoder_knob_ranges_are_checked():
    for override in ("decoder.top_p=0", "decoder.top_p=1.5", "decoder.temperature=-0.1"):
        cfg = compose(["decoder=sample", override])
        with pytest.raises(UserError, match=override.split("=")[0].replace(".", r"\.")):
            validate_config(cfg)
    cfg = compose(["decoder=beam", "decoder.beam_size=0"])
    with pytest.raises(UserError, match="beam_size"):
        validate_config(cfg)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (
            ["+model.hidden_siz=3"],
            r"unknown key 'model\.hidden_siz' \(did you mean 'model\.hidden_size'",
        ),
        (["decoder=sample", "+decoder.top_kk=5"], r"unknown key 'decoder\.top_kk' \(did you mean"),
        (["+compare.0.top_kk=5"], r"unknown key 'compare\[0\]\.top_kk'"),
        (["+bogus=1"], r"unknown key 'bogus'; allowed keys: data, model"),
        (["seed=-1"], r"seed=-1 is out of range"),
        (["data=synthetic", "seed=-1"], r"^seed=-1 is out of range"),
        (["decode.prompts=[]"], r"decode\.prompts=\[\] is not allowed"),
    ],
)
def test_added_keys_seeds_and_empty_prompts_are_user_errors(overrides, needle):
    cfg = compose(overrides)
    with pytest.raises(UserError, match=needle):
        validate_config(cfg)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, needle",
    [
        (["model.hidden_size=0"], "model.hidden_size=0 is out of range"),
        (["model.hidden_siz=3"], "unknown key 'model.hidden_siz'"),
        (["+model.hidden_siz=3"], "(did you mean 'model.hidden_size'?)"),
        (["model=mamba"], "model/mamba"),  # a config group option that does not exist
        (["-m", "decoder=beam", "decoder.beam_size=2,0"], "decoder.beam_size=0"),
    ],
)
def test_cli_bad_override_is_one_line(tmp_path: Path, args, needle):
    proc = run_cli(args, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1, proc.stderr
    assert err_lines[0].startswith("error: ") and needle in err_lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def _bad_values(knob) -> list:
    """Values just outside each finite bound of a numeric knob, or an unknown choice."""
    if knob.choices:
        return ["nope"]
    if knob.type is int:
        return [int(knob.low) - 1]
    if knob.type is not float:
        return []
    bad = []
    if math.isfinite(knob.low):
        bad.append(knob.low if knob.low_open else knob.low - 1e-3)
    if math.isfinite(knob.high):
        bad.append(knob.high if knob.high_open else knob.high + 1e-3)
    if knob.zero_gap:  # (0, zero_gap): 0 in effect, refused (temperature)
        bad.append(knob.zero_gap / 2)
    return bad + [float("nan")]


def _with_decoder(where: str, knobs: dict):
    """The schema's default config with one decoder, as `decoder` or as `compare[0]`."""
    base = OmegaConf.structured(Config)
    dec = {"name": "sample", **knobs}
    return OmegaConf.merge(base, {"decoder": dec} if where == "decoder" else {"compare": [dec]})


@pytest.mark.parametrize("name", list(KNOBS))
@pytest.mark.parametrize("where", ["decoder", "compare[0]"])
def test_every_registry_knob_is_a_checked_schema_field(name, where):
    # generated from the registry: each knob is a DecoderConfig field with the registry's
    # default, the default passes, and each value past a bound is refused, naming the knob
    knob = KNOBS[name]
    assert getattr(DecoderConfig(), name) == knob.default
    validate_config(_with_decoder(where, {}))
    for bad in _bad_values(knob):
        with pytest.raises(UserError, match=rf"^{re.escape(where)}\.{name}="):
            validate_config(_with_decoder(where, {name: bad}))
        with pytest.raises(UserError, match=rf"^{re.escape(where)}\.{name}="):
            validate_decoder({"name": "sample", name: bad}, where, vocab_size=10)


def test_the_vocabulary_bounds_min_tokens_to_keep_once_it_is_known():
    cfg = _with_decoder("decoder", {"min_tokens_to_keep": 11})
    validate_config(cfg)  # before the corpus: no vocabulary yet
    validate_decoder(cfg.decoder, "decoder", vocab_size=11)
    with pytest.raises(UserError, match=r"decoder\.min_tokens_to_keep=11 .* \[1, 10\]"):
        validate_decoder(cfg.decoder, "decoder", vocab_size=10)


@pytest.mark.parametrize("name", GROUPS["decoder"])
def test_each_decoder_file_sets_only_knobs_its_decoder_reads(name):
    conf = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "decoder" / f"{name}.yaml"))
    assert conf.pop("name") == name and name in SPECS
    assert set(conf) <= set(SPECS[name].knobs), set(conf) - set(SPECS[name].knobs)
    for key, value in conf.items():
        KNOBS[key].check(value)


@pytest.mark.parametrize(
    "dec, want",
    [
        ({"name": "greedy"}, "greedy"),
        ({"name": "beam"}, "beam(beam_size=4)"),  # a beam's row always shows its width
        (
            {"name": "beam", "alpha": 0.6, "length_penalty": "gnmt"},
            "beam(beam_size=4, length_penalty=gnmt)",
        ),
        (
            {"name": "diverse_beam", "num_groups": 2, "beam_size": 8},
            "diverse_beam(beam_size=8, num_groups=2)",
        ),
        ({"name": "sample", "top_p": 0.9, "beam_size": 2}, "sample(top_p=0.9)"),
        ({"name": "exact", "beam_size": 2}, "exact(beam_size=2)"),
        ({"name": "sample", "top_k": 5, "label": "mine"}, "mine"),
    ],
)
def test_row_labels_name_the_knobs_that_differ(dec, want):
    full = {**to_dict(DecoderConfig()), **dec}
    assert decoder_label(full) == want
    assert decoder_label({**dec}) == want  # a partial dict: the rest at their defaults


def test_partial_configs_take_the_schema_defaults():
    hp = hparams_from_cfg(SimpleNamespace(steps=70))
    schema = TrainConfig()
    assert hp == (
        70, schema.lr, schema.weight_decay, schema.warmup_steps, schema.clip_norm, 0.0,
        schema.backward,
    )  # fmt: skip
    for f in fields(DataConfig):
        assert corpus_get({}, f.name) == getattr(DataConfig(), f.name), f.name


def test_train_patience_and_end_lr_ratio_are_reachable_and_data_max_len_is_gone():
    cfg = compose(["train.patience=3", "train.end_lr_ratio=0.1"])
    validate_config(cfg)
    assert cfg.train.patience == 3 and hparams_from_cfg(cfg.train).end_lr_ratio == 0.1
    for bad in ("train.patience=-1", "train.end_lr_ratio=1.5"):
        with pytest.raises(UserError, match=bad.split("=")[0].replace(".", r"\.")):
            validate_config(compose([bad]))
    with pytest.raises(UserError, match=r"unknown key 'data\.max_len'"):
        validate_config(compose(["+data.max_len=24"]))


@pytest.mark.slow
def test_cli_run_dir_that_is_a_file_is_one_line(tmp_path: Path):
    # checked before Hydra creates the run dir (which would be a traceback)
    (tmp_path / "taken").write_text("x")
    proc = run_cli(["decoder=greedy", f"hydra.run.dir={tmp_path / 'taken'}"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1 and "hydra.run.dir=" in err_lines[0], proc.stderr
    assert "is an existing file" in err_lines[0] and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# One config mechanism: each field's range beside it, checked by `Knob.check`.

SCHEMAS = [Config, *GROUP_SCHEMAS.values()]


def _field_cases():
    for schema in SCHEMAS:
        group = next((g for g, s in GROUP_SCHEMAS.items() if s is schema), "")
        for name, knob in field_knobs(schema).items():
            yield pytest.param(group, name, knob, id=f"{group or 'root'}.{name}")


@pytest.mark.parametrize("group, name, knob", list(_field_cases()))
def test_every_schema_range_refuses_the_values_past_it(group, name, knob):
    key = f"{group}.{name}" if group else name
    base = OmegaConf.structured(Config)
    check = (
        (lambda cfg: check_fields(GROUP_SCHEMAS[group], cfg[group], group))
        if group
        else (lambda cfg: check_fields(Config, cfg))
    )
    check(base)  # the schema's default passes its own range
    bad = _bad_values(knob)
    if knob.type is float:
        bad += [math.inf, -math.inf]  # every float field is finite
    if knob.type is int and math.isfinite(knob.high):
        bad.append(int(knob.high) + 1)
    assert bad, key
    for value in bad:
        cfg = base.copy()
        OmegaConf.update(cfg, key, value, force_add=False)
        with pytest.raises(UserError, match=rf"^{re.escape(key)}=.*allowed: "):
            check(cfg)


@pytest.mark.parametrize(
    "override", ["train.lr=inf", "train.clip_norm=inf", "data.stop_prob=nan", "seed=4294967296"]
)
def test_non_finite_and_too_large_values_are_refused_in_a_composed_config(override):
    with pytest.raises(UserError, match=re.escape(override.split("=")[0]) + "="):
        validate_config(compose([override]))


@pytest.mark.parametrize("group", [g for g in GROUP_SCHEMAS if (CONF_DIR / g).is_dir()])
def test_group_files_hold_only_what_differs_from_the_schema(group):
    schema = GROUP_SCHEMAS[group]
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        conf = OmegaConf.to_container(OmegaConf.load(path)) or {}
        if group == "decoder":
            conf.pop("name")  # `decoder=NAME` names its decoder (the schema default is none)
        same = [k for k, v in conf.items() if v == schema_default(schema, k)]
        assert not same, f"{path.name} repeats the schema's defaults of {same}"


@pytest.mark.parametrize(
    "node",
    [
        {"lr": 0.5},
        SimpleNamespace(lr=0.5),
        OmegaConf.create({"lr": 0.5, "steps": None}),
        TrainConfig(lr=0.5),
    ],
)
def test_one_helper_reads_a_field_or_its_default(node):
    from seqgen.decoding.common import get as knob_get

    assert setting(node, "lr", 1.0) == 0.5
    default_steps = 250 if isinstance(node, TrainConfig) else 7
    assert setting(node, "steps", 7) == default_steps  # missing or None: the default
    assert setting(None, "lr", 1.0) == 1.0
    assert knob_get(node, "top_p") == KNOBS["top_p"].default  # the decoders' reading of it


@pytest.mark.parametrize(
    "check, needle",
    [
        (
            lambda: hparams_from_cfg(SimpleNamespace(steps=5, warmup_steps=6)),
            r"^train\.warmup_steps=6 is more than train\.steps=5",
        ),
        (
            lambda: validate_config(compose(["train.steps=5", "train.warmup_steps=6"])),
            r"^train\.warmup_steps=6 is more than train\.steps=5",
        ),
        (
            lambda: hparams_from_cfg(SimpleNamespace(lr=0.0)),
            r"^train\.lr=0\.0 is out of range",
        ),
        (
            lambda: LanguageModel(5, embed_size=4, hidden_size=8, tie_weights=True, rngs=Rngs(0)),
            r"^model\.tie_weights=true needs model\.embed_size == model\.hidden_size",
        ),
        (
            lambda: validate_config(compose(["model.tie_weights=true", "model.embed_size=4"])),
            r"^model\.tie_weights=true needs model\.embed_size == model\.hidden_size",
        ),
        (
            lambda: LanguageModel(5, dropout=1.0, rngs=Rngs(0)),
            r"^model\.dropout=1\.0 is out of range",
        ),
    ],
)
def test_each_rule_has_one_checker_whichever_way_it_is_reached(check, needle):
    with pytest.raises(UserError, match=needle):
        check()
