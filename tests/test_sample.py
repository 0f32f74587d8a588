"""seqgen-sample: the run's own tokens from the same seed, decoder and prompts; files; the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLE_DECODER, SAMPLE_PROMPTS, SAMPLE_RUN, compose, read_samples

from seqgen.errors import UserError
from seqgen.experiment import run_experiment
from seqgen.outputs import slug
from seqgen.sample import list_models, parse_args, sample

pytestmark = pytest.mark.slow  # a trained run, and the command in a subprocess

DECODER, PROMPTS = SAMPLE_DECODER, SAMPLE_PROMPTS


@pytest.fixture(scope="module")
def run(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_run")
    run_experiment(compose(SAMPLE_RUN), out_dir=out)  # seed 0: the shared model
    return out, read_samples(out)


def _ids(rows):
    return [(r["prompt_index"], r["sample_index"], r["token_ids"]) for r in rows]


def test_same_seed_decoder_and_prompts_give_the_runs_tokens(run, tmp_path):
    out, run_rows = run
    args = [f"run={out}", *DECODER, *(f"prompt={p}" for p in PROMPTS), "num_samples=3"]
    res = sample([*args, f"out={tmp_path}"])
    assert len(run_rows) == 6 and _ids(res["samples"]) == _ids(run_rows)
    assert [r["text"] for r in res["samples"]] == [r["text"] for r in run_rows]
    written = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert _ids(written) == _ids(run_rows)
    txt = (tmp_path / "samples" / f"{slug(res['samples'][0]['decoder'])}.txt").read_text()
    assert txt == (run[0] / "samples" / f"{slug(run_rows[0]['decoder'])}.txt").read_text()
    # another seed is another draw; the run's decoder is the default decoder
    other = sample([f"run={out}", "seed=1", *(f"prompt={p}" for p in PROMPTS), "num_samples=3"])
    assert other["decoder"]["top_p"] == 0.9 and _ids(other["samples"]) != _ids(run_rows)


def test_model_dir_and_list(run):
    out, _ = run
    model_dir = json.loads((out / "metrics.json").read_text())["model"]["cache_dir"]
    listed = list_models(os.environ["SEQGEN_CACHE"])
    assert model_dir in [r["model_dir"] for r in listed]
    entry = next(r for r in listed if r["model_dir"] == model_dir)
    assert entry["data"] == "synthetic/char" and entry["steps"] > 0
    res = sample([f"model_dir={model_dir}", "decoder=greedy", "prompts=heldout", "num_prompts=2"])
    # greedy from two held-out openings: one sequence each, each continuing its opening
    assert [r["prompt_index"] for r in res["samples"]] == [0, 1]


def test_mistakes_are_one_line_errors(run):
    out, _ = run
    with pytest.raises(UserError, match="unknown key 'num_sample'"):
        parse_args(["num_sample=3"])
    with pytest.raises(UserError, match="run=<run dir> or model_dir"):
        sample(["num_samples=3"])
    with pytest.raises(UserError, match="decoder.top_p"):
        sample([f"run={out}", "decoder.top_p=1.5"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "seqgen.sample", f"run={out}", "decoder.top_q=0.5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr


def test_a_run_saved_with_a_retired_key_still_samples(run, tmp_path):
    """Configs written before `data.max_len` was removed hold it; loading drops it."""
    import shutil

    import yaml

    out, run_rows = run
    old = tmp_path / "old_run"
    shutil.copytree(out, old)
    saved = yaml.safe_load((old / "config.yaml").read_text())
    saved["data"]["max_len"] = 24
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    args = [f"run={old}", *DECODER, *(f"prompt={p}" for p in PROMPTS), "num_samples=3"]
    res = sample([*args, f"out={tmp_path / 'again'}"])
    assert _ids(res["samples"]) == _ids(run_rows)


# ---------------------------------------------------------------------------------------------
# Damaged sources: seqgen-sample survives what the model cache survives (one line, no decode).


def _write(name, text):
    return lambda d: (d / name).write_text(text)


def _metrics_model(model):
    return _write("metrics.json", json.dumps({"ppl/valid": 2.0, "model": model}))


def _folder_instead(name):
    def damage(d):
        (d / name).unlink()
        (d / name).mkdir()

    return damage


RUN_DAMAGE = {
    "config_garbage": (_write("config.yaml", "data: [unclosed\n"), "not a readable YAML config"),
    "config_a_list": (_write("config.yaml", "- 1\n- 2\n"), "not a mapping"),
    "config_wrong_type": (
        _write("config.yaml", "model:\n  hidden_size: many\n"),
        "does not fit the config schema",
    ),
    "config_a_folder": (_folder_instead("config.yaml"), "is a folder"),
    "metrics_truncated": (_write("metrics.json", '{"model": {"cache_'), "not readable JSON"),
    "metrics_a_list": (_write("metrics.json", "[1, 2]"), "not an object"),
    "metrics_without_model": (_write("metrics.json", '{"ppl/valid": 2.0}'), "no 'model'"),
    "metrics_without_entry": (_metrics_model({"cached": True}), "names no model-cache entry"),
    "metrics_entry_gone": (_metrics_model({"cache_dir": "/nonexistent/x"}), "does not exist"),
}


@pytest.mark.parametrize("damage", sorted(RUN_DAMAGE))
def test_a_damaged_run_folder_is_one_line(run, tmp_path, damage):
    out, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    apply, needle = RUN_DAMAGE[damage]
    apply(copy)
    with pytest.raises(UserError, match=re.escape(needle)):
        sample([f"run={copy}", "prompt=ab", "num_samples=1"])


def _edit_meta(**changes):
    def damage(entry):
        meta = json.loads((entry / "meta.json").read_text())
        meta.update(changes)
        (entry / "meta.json").write_text(json.dumps(meta))

    return damage


def _fifo_meta(entry):
    (entry / "meta.json").unlink()
    os.mkfifo(entry / "meta.json")


ENTRY_DAMAGE = {
    "meta_edited_data": (_edit_meta(data_cfg={"name": "synthetic", "num_train": 5}), "edited"),
    "meta_edited_seed": (_edit_meta(seed=-1), "edited"),
    "meta_garbage": (_write("meta.json", "{not json"), "not readable JSON"),
    "meta_missing": (lambda e: (e / "meta.json").unlink(), "no meta.json"),
    "meta_a_fifo": (_fifo_meta, "FIFO"),  # stat-checked: no open() that blocks forever
    "vocab_altered": (_write("vocab.json", '{"symbols": ["a"]}'), "does not match its sha256"),
}


@pytest.mark.parametrize("damage", sorted(ENTRY_DAMAGE))
def test_a_damaged_model_dir_is_one_line(run, tmp_path, damage):
    out, _ = run
    entry = json.loads((out / "metrics.json").read_text())["model"]["cache_dir"]
    copy = tmp_path / "models" / os.path.basename(entry)
    shutil.copytree(entry, copy)
    apply, needle = ENTRY_DAMAGE[damage]
    apply(copy)
    with pytest.raises(UserError, match=re.escape(needle)):
        sample([f"model_dir={copy}", "prompt=ab", "num_samples=1"])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["seed=-1"], "seed=-1 is out of range"),
        (["seed=4294967296"], "seed=4294967296 is out of range"),
        (["max_len=1000000000"], "decode.max_len=1000000000 is out of range"),
        (["max_len=1000000", "num_samples=1000"], "more than decode.max_tokens"),
        (["decoder=greedy", "decoder.top_p=0.5"], "is not read by decoder greedy"),
    ],
)
def test_seeds_budgets_and_unread_knobs_are_refused_before_decoding(run, args, needle):
    out, _ = run
    with pytest.raises(UserError, match=re.escape(needle)):
        sample([f"run={out}", "prompt=ab", *args])


def test_list_of_a_missing_cache_says_so(tmp_path):
    with pytest.raises(UserError, match="no model cache at"):
        list_models(str(tmp_path / "nowhere"))


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_out_is_refused_before_decoding_unless_sample_owns_it(run, tmp_path):
    out, _ = run
    (tmp_path / "a_file").write_text("keep me")
    before = _snapshot(out)
    cases = {
        str(tmp_path / "a_file"): "is an existing file",
        str(tmp_path / "a_file" / "inside"): "which is a file",
        "/proc/seqgen-sample-out": "is not writable",
        str(out): "seqgen-sample did not write",  # a run's folder: never overwritten
    }
    for target, needle in cases.items():
        with pytest.raises(UserError, match=re.escape(needle)):
            sample([f"run={out}", "prompt=ab", "num_samples=1", f"out={target}"])
    assert _snapshot(out) == before and (tmp_path / "a_file").read_text() == "keep me"
    # a folder of its own is written again (an empty one, then the one it wrote)
    mine = tmp_path / "mine"
    for _ in range(2):
        sample([f"run={out}", "prompt=ab", "num_samples=1", f"out={mine}"])
    assert (mine / ".seqgen-sample").is_file() and len(
        (mine / "samples.jsonl").read_text().splitlines()
    ) == 1
