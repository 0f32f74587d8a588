"""Config composition and validation: every shipped config composes; mistakes are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONF_DIR, compose, run_cli

from seqgen.config import validate_config
from seqgen.errors import UserError

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


@pytest.mark.parametrize(
    "args, needle",
    [
        (["model.hidden_size=0"], "model.hidden_size=0 is out of range"),
        (["model.hidden_siz=3"], "unknown key 'model.hidden_siz'"),
        (["+model.hidden_siz=3"], "(did you mean 'model.hidden_size'?)"),
        (["model=transformer"], "model/transformer"),
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


def test_decoder_schema_defaults_equal_the_decoders_own():
    # conf validation (seqgen.config) and the decoders (seqgen.decoding, which must not import
    # the Hydra schema) each state the defaults; a drift would make `decoder=NAME` and a direct
    # `decode(cfg={...})` call disagree
    from seqgen.config import DecoderConfig, to_dict
    from seqgen.decoding import DEFAULTS

    schema = to_dict(DecoderConfig())
    assert {k: schema[k] for k in DEFAULTS} == DEFAULTS


def test_cli_run_dir_that_is_a_file_is_one_line(tmp_path: Path):
    # checked before Hydra creates the run dir (which would be a traceback)
    (tmp_path / "taken").write_text("x")
    proc = run_cli(["decoder=greedy", f"hydra.run.dir={tmp_path / 'taken'}"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1 and "hydra.run.dir=" in err_lines[0], proc.stderr
    assert "is an existing file" in err_lines[0] and "Traceback" not in proc.stderr
