"""`seqgen-score` (`seqgen/score.py`): the Python API's `Model.score` as a console script."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, read_samples

import seqgen
from seqgen.errors import UserError
from seqgen.score import cli, parse_args


@pytest.fixture(scope="module")
def oracle_run(cache_dir, tmp_path_factory):
    """The DPFSA's exact distribution as a run dir (no training), with its greedy sample."""
    out = tmp_path_factory.mktemp("oracle_score")
    seqgen.run([*TINY, "model=oracle", "decoder=greedy"], out_dir=out)
    return out


def _cli(monkeypatch, argv: list[str]) -> None:
    monkeypatch.setattr("sys.argv", ["seqgen-score", *argv])
    cli()


@pytest.mark.slow  # a run of the oracle (decodes, compiles): tens of seconds
def test_scores_are_the_apis_and_add_up(oracle_run, tmp_path, monkeypatch):
    model = seqgen.load(oracle_run)
    texts = [model.vocab.decode(s) for s in model.corpus.test[:3]]  # strings the DPFSA allows
    listed = tmp_path / "texts.txt"
    listed.write_text("".join(t.replace("\n", "\\n") + "\n" for t in texts[1:]))
    out = tmp_path / "scores.jsonl"
    _cli(monkeypatch, [str(oracle_run), f"text={texts[0]}", f"file={listed}", f"out={out}"])
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["text"] for g in got] == texts
    # the same numbers as Model.score
    want = model.score(texts)
    for g, ids, lps, eos, lp, ppl in zip(
        got, want.token_ids, want.token_logprobs, want.eos_logprobs, want.logprobs, want.perplexity
    ):
        assert g["token_ids"] == ids.tolist() and g["token_logprobs"] == lps.tolist()
        assert (g["eos_logprob"], g["logprob"], g["perplexity"]) == (eos, lp, ppl)
    # by hand: the sequence's log-prob is its tokens' and EOS's sum, ppl = exp(-mean)
    for g in got:
        terms = [*g["token_logprobs"], g["eos_logprob"]]
        assert g["num_tokens"] == len(g["token_ids"]) + 1 and g["eos_logprob"] < 0
        np.testing.assert_allclose(g["logprob"], sum(terms), rtol=1e-6)
        np.testing.assert_allclose(g["perplexity"], np.exp(-np.mean(terms)), rtol=1e-6)
    # ended=false: no EOS term
    _cli(monkeypatch, [str(oracle_run), f"text={texts[0]}", "ended=false", f"out={out}"])
    (cut,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert cut["eos_logprob"] == 0.0 and cut["num_tokens"] == got[0]["num_tokens"] - 1
    assert cut["logprob"] == pytest.approx(got[0]["logprob"] - got[0]["eos_logprob"], rel=1e-6)


@pytest.mark.slow  # a run of the oracle (decodes, compiles): tens of seconds
def test_a_generation_scores_its_decoders_logprob(oracle_run, tmp_path, monkeypatch, capsys):
    (sample,) = [r for r in read_samples(oracle_run) if r["prompt"] == ""]
    ended = len(sample["token_ids"]) < 16  # shorter than decode.max_len: it ended at EOS
    _cli(monkeypatch, [str(oracle_run), f"text={sample['text']}", f"ended={str(ended).lower()}"])
    (got,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert got["token_ids"] == sample["token_ids"]
    np.testing.assert_allclose(got["logprob"], sample["logprob"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "argv, msg",
    [
        ([], "give the run dir"),
        (["x", "txt=a"], "is not key=value"),
        (["x"], "nothing to score"),
        (["x", "file=/no/such/file"], "is not a file"),
        (["x", "text=a", "ended=maybe"], "allowed: true, false"),
        (["x", "text=", "ended=false"], "scores no token"),
        (["x", "text=a", "out=/no/such/dir/s.jsonl"], "in no folder"),
    ],
)
def test_mistakes_are_one_line(argv, msg):
    with pytest.raises(UserError, match=msg):
        parse_args(argv)


@pytest.mark.slow  # a run of the oracle (decodes, compiles): tens of seconds
def test_a_text_outside_the_vocabulary_is_one_line(oracle_run, monkeypatch, capsys):
    with pytest.raises(SystemExit) as ex:
        _cli(monkeypatch, [str(oracle_run), "text=ab#"])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "symbol '#' in the text" in err  # the text, not a prompt, is named
