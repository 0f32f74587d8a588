"""Bad inputs, by kind (issue 19): each is one `UserError` line naming what was wrong and what
is allowed, before any work where the config alone decides it; nothing hangs. Config-only
cases compose and check, training nothing. (Lost work: `test_train.py`'s double-signal tests
and `test_sample.py`'s `out=` tests; damaged sources: `test_sample.py`, `test_checkpoint.py`.)
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import compose

from seqgen import preflight
from seqgen.checkpoint import ModelCache
from seqgen.config import validate_config
from seqgen.errors import UserError, storage_error_message
from seqgen.preflight import check_environment


def _refused(check, needle: str) -> str:
    with pytest.raises(UserError) as err:
        check()
    line = str(err.value)
    assert "\n" not in line and re.search(needle, line), line
    assert "allowed" in line or "lower" in line or "free space" in line, line
    return line


# ---------------------------------------------------------------------------------------------
# Tracebacks: values that passed the checks and broke later.


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.lr=inf", r"^train\.lr=inf is out of range"),
        ("train.clip_norm=inf", r"^train\.clip_norm=inf"),
        ("model.dropout=nan", r"^model\.dropout=nan"),
        ("data.stop_prob=-inf", r"^data\.stop_prob=-inf"),
        ("train.end_lr_ratio=inf", r"^train\.end_lr_ratio=inf"),
    ],
)
def test_non_finite_floats_are_refused(override, needle):
    _refused(lambda: validate_config(compose([override])), needle)


@pytest.mark.parametrize(
    "overrides, out_dir, needle",
    [
        (["cache_dir=/proc/seqgen-cache"], None, r"^cache_dir=/proc/seqgen-cache is not writable"),
        ([], "/proc/seqgen-run", r"^hydra\.run\.dir=/proc/seqgen-run is not writable"),
        ([], "/proc/self", r"^hydra\.run\.dir=/proc/self is not writable"),
    ],
)
def test_folders_that_cannot_be_written_are_found_by_trying(overrides, out_dir, needle):
    _refused(lambda: check_environment(compose(overrides), out_dir), needle)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_full_disk_anywhere_in_the_chain_is_one_line(code):
    inner = OSError(code, os.strerror(code), "/cache/models/x/model")
    try:
        try:
            raise inner
        except OSError as e:
            raise RuntimeError("orbax: save failed") from e
    except RuntimeError as outer:
        line = storage_error_message(outer)
    assert line and os.strerror(code) in line and "/cache/models/x/model" in line
    assert storage_error_message(RuntimeError("a bug")) is None
    assert storage_error_message(OSError(errno.ENOENT, "gone")) is None


def test_a_lock_path_that_is_a_folder_is_one_line(tmp_path):
    cache = ModelCache(tmp_path)
    (tmp_path / "k.lock").mkdir()

    def lock():
        with cache.lock("k"):
            pass

    _refused(lock, r"lock .*k\.lock is not a file")


GIB = 2**30


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["train.seq_len=1000000"], r"train\.seq_len=1000000 .* needs at least"),
        (["model.num_layers=2000"], r"model\.num_layers=2000 .* needs at least"),
        (["model.hidden_size=20000"], r"model\.hidden_size=20000 needs at least"),
    ],
)
def test_every_size_knob_counts_in_the_training_memory_estimate(monkeypatch, overrides, needle):
    monkeypatch.setattr(preflight, "available_memory", lambda: (16 * GIB, "host memory"))
    preflight.check_training_memory(compose([]), 100)  # the default run fits in 16 GiB
    _refused(lambda: preflight.check_training_memory(compose(overrides), 100), needle)


def test_synthetic_data_size_is_checked_before_drawing(monkeypatch):
    monkeypatch.setattr(preflight, "host_available_memory", lambda: 16 * GIB)
    preflight.check_data_memory(compose(["data=synthetic"]))
    big = compose(["data=synthetic", "data.num_train=1000000000"])
    _refused(
        lambda: preflight.check_data_memory(big), r"^data\.num_train=1000000000 .* needs about"
    )
    capped = compose(["data=synthetic", "data.num_train=1000000000", "data.max_sequences=1000"])
    preflight.check_data_memory(capped)


@pytest.mark.parametrize(
    "env, needle",
    [("offline", None), ("disabled", None), ("bogus", r"^WANDB_MODE=bogus in the environment")],
)
def test_wandb_mode_from_the_environment(monkeypatch, env, needle):
    from seqgen.tracking import effective_mode

    monkeypatch.setenv("WANDB_MODE", env)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    cfg = compose(["logger=wandb", "logger.mode=online"])
    if needle is None:  # the environment keeps it off the network: no key needed
        check_environment(cfg)
        assert effective_mode(cfg.logger) == env
    else:
        _refused(lambda: check_environment(cfg), needle)


# ---------------------------------------------------------------------------------------------
# Hangs: a blocking open() of a FIFO or a device, a decode of 1e7 steps.


def _fifo(tmp_path: Path) -> str:
    path = tmp_path / "corpus.fifo"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize(
    "make, needle",
    [
        (_fifo, "is a FIFO"),
        (lambda _: "/dev/zero", "is a device"),
        (lambda p: str(p), "is a folder"),
        (lambda p: str(p / "missing.txt"), "does not exist"),
    ],
)
@pytest.mark.parametrize("key", ["path", "valid_path"])
def test_data_files_are_stat_checked_before_any_open(tmp_path, make, needle, key):
    target = make(tmp_path)
    other = tmp_path / "train.txt"
    other.write_text("some text\n" * 20)
    paths = (
        [f"data.{key}={target}"]
        if key == "path"
        else [
            f"data.train_path={other}",
            f"data.valid_path={target}",
        ]
    )
    cfg = compose(["data=text", *paths])
    _refused(lambda: check_environment(cfg), rf"^data\.{key}=.* {needle}")


@pytest.mark.parametrize("max_len", [10_000_000, 1_000_001])
def test_a_decode_too_long_to_finish_is_refused(max_len):
    _refused(
        lambda: validate_config(compose([f"decode.max_len={max_len}"])),
        rf"^decode\.max_len={max_len} is out of range; allowed: an integer in \[1, 1000000\]",
    )


# ---------------------------------------------------------------------------------------------
# Silent or accepted wrong.


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (
            ["decoder=greedy", "decoder.top_p=0.5"],
            r"^decoder\.top_p=0\.5 is not read by decoder greedy; allowed: the knobs greedy reads",
        ),
        (
            ["decoder=beam", "decoder.temperature=0.7"],
            r"^decoder\.temperature=0\.7 is not read by decoder beam",
        ),
        (
            ["decoder=exact", "decoder.min_length=3"],
            r"^decoder\.min_length=3 is not read by decoder exact",
        ),
        (
            ["compare=[{name:greedy},{name:sample,beam_size:8}]"],
            r"^compare\[1\]\.beam_size=8 is not read by decoder sample",
        ),
        (
            ["decoder=sample", "decoder.min_length=256"],
            r"^decoder\.min_length=256 leaves no room for EOS",
        ),
        (
            ["decoder=beam", "decoder.min_length=240"],
            r"^decoder\.min_length=240 leaves no room for EOS .*prompts of 16",
        ),
        (
            ["data=synthetic", "data.path=/tmp/x.txt"],
            r"^data\.path=/tmp/x\.txt is not read by data=synthetic",
        ),
        (["data.num_train=10"], r"^data\.num_train=10 is not read by data=folk"),
        (
            ["data=text", "data.path=/tmp/x.txt", "data.collections=[a]"],
            r"^data\.collections=\['a'\] is not read by data=text",
        ),
        (
            ["experiment_name=../../.."],
            r"^experiment_name='\.\./\.\./\.\.' is not a plain folder name",
        ),
        (["experiment_name=a/b"], r"^experiment_name='a/b'"),
        (["experiment_name=.."], r"^experiment_name='\.\.'"),
        # greedy in effect, yet gen/ppl (under softmax(logits / t)) overflowed to null
        (
            ["decoder=sample", "decoder.temperature=1e-30"],
            r"^decoder\.temperature=1e-30 is 0 in effect .*allowed: 0 or \[0\.001, inf\)",
        ),
        (["decoder=sample", "decoder.temperature=0.00099"], r"^decoder\.temperature=0\.00099"),
        (
            ["compare=[{name:sample,temperature:1e-9}]"],
            r"^compare\[0\]\.temperature=1e-09 is 0 in effect",
        ),
    ],
)
def test_settings_that_would_be_silently_ignored_or_wrong_are_refused(overrides, needle):
    _refused(lambda: validate_config(compose(overrides)), needle)


def test_mbrs_nested_sampler_reads_only_its_own_knobs():
    from omegaconf import OmegaConf

    from seqgen.config import Config

    def cfg(candidates):
        dec = {"name": "mbr", "candidates": candidates}
        return OmegaConf.merge(OmegaConf.structured(Config), {"decoder": dec})

    validate_config(cfg({"top_p": 0.9}))  # the nested sampler defaults to sample
    _refused(
        lambda: validate_config(cfg({"name": "greedy", "top_p": 0.9})),
        r"^decoder\.candidates\.top_p=0\.9 is not read by decoder greedy",
    )


@pytest.mark.parametrize("t", ["0", "0.001", "0.7"])  # greedy's limit and the smallest t
def test_temperatures_at_the_bounds_pass(t):
    validate_config(compose(["decoder=sample", f"decoder.temperature={t}"]))


def test_the_decoders_own_knobs_and_label_pass():
    for overrides in (
        ["decoder=greedy", "decoder.repetition_penalty=1.2"],
        ["decoder=beam", "decoder.length_penalty=gnmt", "decoder.min_length=5"],
        ["decoder=sample", "decoder.top_p=0.9", "decoder.label=mine"],
        ["data=synthetic", "data.num_train=10"],
    ):
        validate_config(compose(overrides))


def test_a_vocabulary_of_reserved_symbols_only_is_refused():
    from seqgen.data.vocab import Vocab

    cfg = compose(["data=text", "data.path=/tmp/x.txt", "data.min_count=1000000"])
    corpus = SimpleNamespace(vocab=Vocab([], "char"))
    _refused(
        lambda: preflight.check_vocabulary(cfg, corpus),
        r"^the vocabulary has no symbol besides .*data\.min_count=1000000",
    )


# ---------------------------------------------------------------------------------------------
# Late: known from the config (or the data) alone, yet found after training.


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["train.steps=10", "train.warmup_steps=11"], r"^train\.warmup_steps=11 is more than"),
        (
            [
                "data=text",
                "data.path=/tmp/x.txt",
                "constraint=regex",
                'constraint.pattern="a{300}"',
            ],
            r"needs at least 300 characters, more than decode\.max_len=256",
        ),
        (
            [
                "data=text",
                "data.path=/tmp/x.txt",
                "constraint=regex",
                "constraint.pattern='a[^\\s\\S]'",
            ],
            r"matches no string",
        ),
    ],
)
def test_rules_known_from_the_config_are_checked_with_it(overrides, needle):
    _refused(lambda: validate_config(compose(overrides)), needle)


def test_a_reference_checkpoint_that_is_no_model_folder_is_found_before_any_data(tmp_path):
    for ref, needle in ((tmp_path, "no meta.json"), (tmp_path / "nope", "does not exist")):
        cfg = compose([f"metrics.reference_checkpoint={ref}"])
        _refused(
            lambda cfg=cfg: check_environment(cfg), rf"^metrics\.reference_checkpoint=.*{needle}"
        )


@pytest.mark.parametrize(
    "prompts, needle",
    [
        ("['12','3 4']", r"the constraint rejects every prompt"),
        ("['" + "e" * 40 + "']", r"40 tokens, which leaves no room for a continuation"),
    ],
)
def test_prompts_the_run_cannot_continue_are_found_before_training(tmp_path, prompts, needle):
    from seqgen.data.corpus import load_corpus

    text = tmp_path / "t.txt"
    text.write_text("".join(f"line {i} of the text\n" for i in range(200)))
    cfg = compose(
        [
            "data=text", f"data.path={text}", "data.window=64", "constraint=regex",
            "constraint.pattern='[a-z ]*'", f"decode.prompts={prompts}", "decode.max_len=40",
            "decoder=greedy",
        ]
    )  # fmt: skip
    validate_config(cfg)
    corpus = load_corpus(cfg.data, 0)
    _refused(lambda: preflight.check_run(cfg, corpus), needle)


def test_a_later_jobs_data_dependent_mistake_stops_the_sweep_before_its_first_job(capsys):
    from seqgen import run

    argv = ["-m", "data=synthetic", "data.num_train=300", "decoder=greedy"]
    with pytest.raises(SystemExit) as exit_:  # the second job's openings cannot be 100 long
        run._check_overrides([*argv, "decode.prompts=heldout", "decode.prompt_len=4,100"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: no held-out opening qualifies for decode.prompt_len=100")
    run._check_overrides([*argv, "decode.prompts=heldout", "decode.prompt_len=3,4"])  # both fit


# ---------------------------------------------------------------------------------------------
# Lost work and the cache's leftovers.


def test_a_killed_saves_temporary_folder_is_removed_by_the_next_save(tmp_path):
    from flax import nnx

    from seqgen.models import LanguageModel

    cache = ModelCache(tmp_path)
    stale = tmp_path / "k" / ".model.killed"
    (stale / "model").mkdir(parents=True)
    model = LanguageModel(6, embed_size=4, hidden_size=4, rngs=nnx.Rngs(0))
    with cache.lock("k"):
        cache.save_model("k", model, '{"symbols": []}', {"metrics": {}})
    assert not stale.exists() and cache.check("k")["sha256"]


def test_a_read_only_cache_that_holds_models_is_used(monkeypatch, tmp_path, caplog):
    (tmp_path / "models").mkdir()

    def not_writable(path, what):
        raise UserError(f"{what}={path} is not writable; allowed: a writable folder")

    monkeypatch.setattr(preflight, "check_writable_dir", not_writable)
    preflight.check_cache_dir(tmp_path, "cache_dir")  # a warning, not an error
    assert any("read-only" in r.getMessage() for r in caplog.records)
    shutil.rmtree(tmp_path / "models")
    _refused(lambda: preflight.check_cache_dir(tmp_path, "cache_dir"), "not writable")


# ---------------------------------------------------------------------------------------------
# Messages and launchers: what `python -m seqgen.run` prints before Hydra starts.


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["hydra/launcher=slurm"],
            r"^error: hydra/launcher=slurm only launches the jobs of a multirun; allowed: add -m",
        ),
        (
            ["hydra/launcher=parallel", "decoder=greedy"],
            r"^error: hydra/launcher=parallel only launches",
        ),
        (
            ["-m", "hydra/launcher=slurm"],
            r"^error: hydra/launcher=slurm submits with sbatch, which is not on PATH",
        ),
        (
            ["compare=[{name:sample,bogus:1}]"],
            r"^error: unknown key 'compare\[0\]\.bogus'; allowed keys in compare\[0\]: name, ",
        ),
        (
            ["compare=[{name:greedy},{name:sample,top_k:abc}]"],
            r"^error: compare\[1\]\.top_k: Value 'abc'.*; allowed: an integer >= 0$",
        ),
        (["train.lr=abc"], r"^error: train\.lr: Value 'abc'.*; allowed: \(0\.0, inf\)$"),
        (
            ["decoder=sample", "decoder.top_p=x"],
            r"^error: decoder\.top_p: Value 'x'.*; allowed: \(0\.0, 1\.0\]$",
        ),
    ],
)
def test_the_command_line_gives_one_line(monkeypatch, capsys, argv, needle):
    from seqgen import run

    monkeypatch.setattr(shutil, "which", lambda cmd: None)  # no SLURM here
    with pytest.raises(SystemExit) as exit_:
        run._check_overrides(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and re.search(needle, err[0]), err


def test_the_documented_regex_quoting_composes():
    cfg = compose(["constraint=regex", 'constraint.pattern="[a-z ]+\\."', "data=text"])
    assert cfg.constraint.pattern == "[a-z ]+\\."


def test_a_sweeps_precheck_leaves_warnings_to_its_jobs(caplog):
    """The sweep's corpus checks run before its jobs, which warn again in their own logs: a
    warning the pre-check printed too appeared twice (`too few held-out openings`)."""
    from conftest import TINY

    from seqgen.compose import check_overrides, compose_config
    from seqgen.data.corpus import load_corpus

    few = [*TINY, "decode.prompts=heldout", "decode.prompt_len=2", "decode.num_prompts=100000"]
    cfg = compose_config([*few, "decoder=sample"])
    with caplog.at_level("WARNING", logger="seqgen"):
        preflight.check_run(cfg, load_corpus(cfg.data, int(cfg.seed)))  # a job's own check
        assert sum("openings qualify" in r.getMessage() for r in caplog.records) == 1
        caplog.clear()
        check_overrides([*few, "decoder=sample", "decoder.top_k=5,10"], multirun=True)
    assert not [r for r in caplog.records if "openings qualify" in r.getMessage()]
