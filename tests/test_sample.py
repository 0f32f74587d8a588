"""seqgen-sample: the run's own tokens from the same seed, decoder and prompts; files; the CLI."""

from __future__ import annotations

import json
import os
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
