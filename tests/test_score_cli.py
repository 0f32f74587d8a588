"""`seqgen-score` (`seqgen/score.py`): the Python API's `.score()` as a console script."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, read_samples

import seqgen
from seqgen.errors import UserError
from seqgen.score import cli, score


@pytest.fixture(scope="module")
def oracle_run(cache_dir, tmp_path_factory):
    """The DPFSA's exact distribution as a run dir (no training), with its greedy sample."""
    out = tmp_path_factory.mktemp("oracle_score")
    seqgen.run([*TINY, "model=oracle", "decoder=greedy"], out_dir=out)
    return out


def test_scores_give_back_the_runs_own_logprobs(oracle_run, tmp_path, monkeypatch):
    rows = [r for r in read_samples(oracle_run) if r["prompt"] == ""]
    text = rows[0]["text"]
    ended = len(rows[0]["token_ids"]) < 16  # shorter than decode.max_len: it ended at EOS
    texts = tmp_path / "texts.txt"
    texts.write_text(text.replace("\n", "\\n") + "\n")
    out = tmp_path / "scores.jsonl"
    monkeypatch.setattr("sys.argv", ["seqgen-score", str(oracle_run), f"file={texts}",
                                     f"out={out}", f"ended={str(ended).lower()}"])  # fmt: skip
    cli()
    (got,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert got["token_ids"] == rows[0]["token_ids"]
    np.testing.assert_allclose(got["logprob"], rows[0]["logprob"], rtol=1e-5, atol=1e-5)
    total = sum(got["token_logprobs"]) + got["eos_logprob"]
    np.testing.assert_allclose(total, got["logprob"], rtol=1e-6)
    n = len(got["token_ids"]) + ended
    np.testing.assert_allclose(got["perplexity"], np.exp(-got["logprob"] / n), rtol=1e-6)


@pytest.mark.parametrize(
    "argv, msg",
    [([], "give the run dir"), (["x", "txt=a"], "is not key=value"), (["x"], "nothing to score")],
)
def test_mistakes_are_one_line(argv, msg):
    with pytest.raises(UserError, match=msg):
        score(argv)
