"""The Python API: `seqgen.run(overrides)` is the command's run, `seqgen.load(dir).generate` gives
the run's (and seqgen-sample's) tokens, `Model.score` gives back the decoders' log-probs and the
DPFSA's exact ones; `import seqgen` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SAMPLE_DECODER, SAMPLE_PROMPTS, SAMPLE_RUN, TINY, read_samples

import seqgen
import seqgen.run  # the module: `seqgen.run(...)` must still be the API's function
from seqgen.errors import UserError
from seqgen.metrics import compute
from seqgen.sample import sample
from seqgen.tokens import UNK_ID

DECODER, PROMPTS = SAMPLE_DECODER, SAMPLE_PROMPTS


@pytest.fixture(scope="module")
def api_run(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("api_run")
    res = seqgen.run(SAMPLE_RUN, out_dir=out)  # the run test_sample makes with run_experiment
    return res, out, read_samples(out)


@pytest.fixture(scope="module")
def model(api_run):
    return seqgen.load(api_run[1])


@pytest.fixture(scope="module")
def oracle(cache_dir, tmp_path_factory):
    """The DPFSA's exact distribution as a loaded run (no training)."""
    out = tmp_path_factory.mktemp("oracle")
    seqgen.run([*TINY, "model=oracle", "decoder=greedy"], out_dir=out)
    return seqgen.load(out)


def _ids(token_ids):
    return [list(map(int, t)) for t in token_ids]


def test_import_seqgen_loads_neither_jax_nor_hydra():
    code = "import sys, seqgen; print([m for m in ('jax', 'hydra', 'flax') if m in sys.modules])"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


@pytest.mark.slow
def test_run_returns_the_runs_results(api_run):
    res, out, rows = api_run
    assert res["out_dir"] == str(out) and [r["decoder"]["label"] for r in res["results"]] == [
        rows[0]["decoder"],
        "human",
    ]
    assert (out / "config.yaml").exists() and "hydra" not in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_generate_gives_the_runs_and_seqgen_samples_tokens(api_run, model):
    res, out, rows = api_run
    got = model.generate(PROMPTS, "sample", num_samples=3, top_p=0.9, temperature=0.8)
    assert len(rows) == 6 and _ids(got.token_ids) == [r["token_ids"] for r in rows]
    assert got.texts == [r["text"] for r in rows] and got.prompts == ["ab"] * 3 + ["c"] * 3
    assert list(got.scores) == [r["score"] for r in rows]
    # the metric table on the bundle gives the run's row (all but the decode's wall time)
    run_row = res["results"][0]["metrics"]
    got_row = compute(got.generations)
    assert got_row.keys() == run_row.keys() - {"time/decode_s"}
    np.testing.assert_array_equal([got_row[k] for k in got_row], [run_row[k] for k in got_row])
    args = [f"run={out}", *DECODER, *(f"prompt={p}" for p in PROMPTS), "num_samples=3"]
    assert _ids(got.token_ids) == [r["token_ids"] for r in sample(args)["samples"]]
    # the cache entry loads the same model (with the default decode.max_len: the run's is
    # given); another seed is another draw
    entry = seqgen.load(json.loads((out / "metrics.json").read_text())["model"]["cache_dir"])
    again = entry.generate(PROMPTS, "sample", num_samples=3, max_len=16, top_p=0.9, temperature=0.8)
    assert _ids(again.token_ids) == _ids(got.token_ids)
    other = model.generate(PROMPTS, "sample", num_samples=3, top_p=0.9, temperature=0.8, seed=1)
    assert _ids(other.token_ids) != _ids(got.token_ids)


@pytest.mark.slow
@pytest.mark.parametrize(
    "decoder, knobs",
    [("greedy", {}), ("sample", {"num_samples": 4}), ("sample", {"top_k": 3, "num_samples": 4})],
)
def test_score_gives_back_the_decoders_own_logprobs(model, decoder, knobs):
    """Teacher-forced scoring of a generation's tokens after its prompt equals the log-probs
    the decoder reported for them (for sampling and greedy its raw score is their sum)."""
    got = model.generate(PROMPTS, decoder, **knobs)
    prompt_ids = [model.vocab.encode(p) for p in got.prompts]
    scored = model.score(got.token_ids, prompts=prompt_ids, ended=list(got.ended))
    np.testing.assert_allclose(scored.logprobs, got.scores, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(scored.eos_logprobs, got.eos_logprobs, rtol=1e-6, atol=1e-6)
    for a, b in zip(scored.token_logprobs, got.token_logprobs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # the same as texts (the vocabulary's encoding of what it decoded; a sampled UNK decodes
    # to "<unk>", which is no symbol of a char vocabulary)
    rows = [i for i, t in enumerate(got.token_ids) if UNK_ID not in t]
    texts = [got.continuations[i] for i in rows]
    as_text = model.score(texts, [got.prompts[i] for i in rows], [got.ended[i] for i in rows])
    np.testing.assert_array_equal(as_text.logprobs, scored.logprobs[rows])


def test_score_under_the_oracle_is_the_dpfsas_exact_logprob(oracle):
    seqs = [np.asarray(s) for s in oracle.corpus.test[:5]]
    scored = oracle.score(seqs)  # each a whole sequence from BOS, ended by EOS
    exact = [oracle.corpus.oracle.logprob(list(map(int, s))) for s in seqs]
    np.testing.assert_allclose(scored.logprobs, exact, rtol=1e-5)
    np.testing.assert_allclose(
        scored.perplexity, np.exp(-np.array(exact) / [len(s) + 1 for s in seqs]), rtol=1e-5
    )


def test_a_bad_override_is_the_line_the_command_prints(capsys):
    bad = ["decoder=sample", "decoder.top_p=1.5"]
    with pytest.raises(UserError) as exc:
        seqgen.run(bad)
    with pytest.raises(SystemExit) as code:
        seqgen.run._check_overrides(bad)  # the command line's pre-check
    assert code.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {exc.value}" and "top_p" in str(exc.value)


def test_generate_mistakes_are_one_line_errors(oracle):
    with pytest.raises(UserError, match="top_p"):
        oracle.generate("ab", "sample", top_p=1.5)
    with pytest.raises(UserError, match="top_q"):
        oracle.generate("ab", "sample", top_q=0.5)
    with pytest.raises(UserError, match="decoder"):
        oracle.generate("ab", "no_such_decoder")
    with pytest.raises(UserError, match="one prompt and one flag per text"):
        oracle.score(["ab", "c"], prompts=["a"])
