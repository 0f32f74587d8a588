"""The pipeline end to end, in-process, on the DPFSA with a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, compose

from seqgen import experiment, model_store, tracking
from seqgen.decoding.registry import SPECS
from seqgen.errors import UserError
from seqgen.experiment import run_experiment
from seqgen.train import train

COMPARE = "compare=[{name:greedy},{name:sample},{name:beam,beam_size:3}]"


@pytest.fixture(scope="module")
def first_run(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run1")
    cfg = compose([*TINY, COMPARE])
    return run_experiment(cfg, out_dir=out), out


@pytest.mark.slow
def test_run_writes_every_output(first_run):
    res, out = first_run
    for name in ("config.yaml", "metrics.json", "results.jsonl", "samples.jsonl"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("ppl/valid", "ppl/test", "bits/valid", "bits/test"):
        assert metrics[key] > 0
    # bits per token and perplexity are two views of one number
    assert metrics["bits/valid"] == pytest.approx(
        __import__("math").log2(metrics["ppl/valid"]), rel=1e-6
    )
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["decoder"]["name"] for r in rows] == ["greedy", "sample", "beam", "human"]
    for r in rows:
        assert "diversity/distinct_2" in r["metrics"] and "length/mean" in r["metrics"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    keys = {"decoder", "prompt_index", "sample_index", "token_ids", "text", "score", "logprob"}
    assert all(keys <= set(s) for s in samples)
    # greedy and beam give one sequence per prompt, sampling num_samples
    by = {}
    for s in samples:
        by.setdefault(s["decoder"], []).append(s)
    assert len(by["greedy"]) == 1 and len(by["sample"]) == 8
    # generated ids never contain the specials (PAD 0, BOS 1, EOS 2)
    assert all(t > 2 for s in samples for t in s["token_ids"])


@pytest.mark.slow
def test_greedy_gen_ppl_is_below_pure_sampling(first_run):
    res, _ = first_run
    m = {r["decoder"]["name"]: r["metrics"] for r in res["results"]}
    assert m["greedy"]["gen/ppl"] < m["sample"]["gen/ppl"]


@pytest.mark.slow
def test_second_run_loads_the_cached_model(first_run, tmp_path, monkeypatch):
    res, _ = first_run
    cfg = compose([*TINY, "decoder=greedy"])
    trainings = []
    monkeypatch.setattr(model_store, "train", lambda *a, **k: trainings.append(a) or train(*a, **k))
    monkeypatch.setattr(model_store, "_LOADED", {})  # from the disk cache, not this process's
    res2 = run_experiment(cfg, out_dir=tmp_path)
    assert trainings == []
    meta = json.loads((tmp_path / "metrics.json").read_text())
    assert meta["model"]["cached"] is True
    assert res2["metrics"]["ppl/valid"] == pytest.approx(res["metrics"]["ppl/valid"], rel=1e-9)


ORACLE_COMPARE = "compare=[{name:greedy},{name:sample},{name:beam,beam_size:32}]"
HELDOUT = ["decode.prompts=heldout", "decode.num_prompts=6", "decode.prompt_len=2"]


@pytest.mark.slow
@pytest.mark.parametrize("prompts", [[], HELDOUT], ids=["unprompted", "heldout_prompts"])
def test_oracle_model_scores_equal_the_oracle_metrics(cache_dir, tmp_path, prompts):
    # Decoding the DPFSA's own distribution: the decoder's log-probs (gen/ppl_model) and the
    # oracle's exact conditional scoring (oracle/ppl) are one number for every row, human
    # included; a wide beam finds the exact (conditional) mode from Dijkstra.
    cfg = compose([*TINY, "model=oracle", ORACLE_COMPARE, *prompts])
    res = run_experiment(cfg, out_dir=tmp_path)
    rows = {r["decoder"]["name"]: r["metrics"] for r in res["results"]}
    assert list(rows) == ["greedy", "sample", "beam", "human"]
    for name, m in rows.items():
        assert m["gen/ppl_model"] == pytest.approx(m["oracle/ppl"], rel=1e-6), name
        assert m["oracle/impossible_prompt_rate"] == 0.0
        assert ("search/mode_found" in m) == (name != "human" and SPECS[name].nbest)
    assert rows["beam"]["search/mode_found"] == 1.0
    # the best beam's score is the mode's log-prob, prompt by prompt
    assert rows["beam"]["score/mean"] == pytest.approx(rows["beam"]["oracle/mode_logprob"])


def test_unknown_prompt_symbol_is_a_user_error(cache_dir, tmp_path):
    cfg = compose([*TINY, "decoder=greedy", "decode.prompts=[zzz]", "data.unknown=error"])
    with pytest.raises(UserError, match="z"):
        run_experiment(cfg, out_dir=tmp_path)


@pytest.mark.slow
def test_reference_model_rescoring_equals_the_decoders_own_logprobs(first_run, tmp_path):
    # With the run's own model as the reference, teacher-forced rescoring of the generations
    # (gen/ref_ppl) must reproduce the log-probs the decoder recorded (gen/ppl_model).
    res, out = first_run
    cache = json.loads((out / "metrics.json").read_text())["model"]["cache_dir"]
    cfg = compose([*TINY, "decoder=sample", f"metrics.reference_checkpoint={cache}"])
    res2 = run_experiment(cfg, out_dir=tmp_path)
    for row in res2["results"]:
        m = row["metrics"]
        assert m["gen/ref_ppl"] == pytest.approx(m["gen/ppl_model"], rel=1e-4)


@pytest.mark.slow
def test_reference_must_be_a_cached_model(cache_dir, tmp_path):
    cfg = compose([*TINY, "decoder=greedy", f"metrics.reference_checkpoint={tmp_path}"])
    with pytest.raises(UserError, match="reference_checkpoint"):
        run_experiment(cfg, out_dir=tmp_path)


@pytest.mark.slow
def test_logger_wandb_runs_a_wandb_run_and_disabled_writes_nothing(
    first_run, tmp_path, monkeypatch
):
    """The run makes the tracker the logger config asks for and finishes it: `logger=wandb`
    (offline) is a W&B run in the run dir, finished with exit code 0; `logger.mode=disabled`
    is no W&B run and writes nothing."""
    made, finished = [], []
    make = experiment.make_tracker
    monkeypatch.setattr(
        experiment, "make_tracker", lambda *a, **k: made.append(make(*a, **k)) or made[-1]
    )
    finish = tracking.WandbTracker.finish
    monkeypatch.setattr(
        tracking.WandbTracker,
        "finish",
        lambda t, exit_code=0: finished.append(exit_code) or finish(t, exit_code),
    )
    cfg = compose([*TINY, "decoder=greedy", "logger=wandb", "logger.mode=disabled"])
    run_experiment(cfg, out_dir=tmp_path / "disabled")
    assert isinstance(made[-1], tracking.NoOpTracker) and not finished
    assert not (tmp_path / "disabled" / "wandb").exists()

    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking, "_SET_FOR_JOB", {})
    monkeypatch.setenv("WANDB_MODE", "offline")  # conftest disables W&B for every other test
    cfg = compose([*TINY, "decoder=greedy", "logger=wandb", "logger.mode=offline"])
    run_experiment(cfg, out_dir=tmp_path / "offline")
    assert isinstance(made[-1], tracking.WandbTracker) and finished == [0]
    assert len(list((tmp_path / "offline" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1


@pytest.mark.slow
def test_heldout_prompts_are_continued_and_the_human_row_matches(first_run, tmp_path):
    cfg = compose(
        [
            *TINY,
            "decoder=sample",
            "decode.prompts=heldout",
            "decode.num_prompts=5",
            "decode.prompt_len=2",
            "decode.num_samples=2",
        ]
    )
    res = run_experiment(cfg, out_dir=tmp_path)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert sorted({s["prompt_index"] for s in samples}) == [0, 1, 2, 3, 4]
    assert len(samples) == 10
    # each text starts with its prompt: the first two symbols of a held-out sequence
    by_prompt = {}
    for s in samples:
        by_prompt.setdefault(s["prompt_index"], set()).add(s["text"][:2])
    assert all(len(heads) == 1 for heads in by_prompt.values())
    assert res["results"][-1]["decoder"]["name"] == "human"
    # the human row: as many held-out continuations as generations (5 prompts x 2 samples),
    # the first five continuing exactly the five prompts, each within the length budget
    from seqgen.data.corpus import load_corpus
    from seqgen.prompts import make_prompts

    corpus = load_corpus(cfg.data, int(cfg.seed))
    pr = make_prompts(cfg.decode, corpus)
    assert len(pr.human) == 10 and len(pr.prompts) == 5
    for p, hp in zip(pr.prompts, pr.human_prompts[:5]):
        assert np.array_equal(p, hp)
    assert all(len(p) + len(h) <= cfg.decode.max_len for p, h in zip(pr.human_prompts, pr.human))


@pytest.mark.slow
def test_text_stream_model_never_emits_eos_and_marks_its_prompts(cache_dir, tmp_path):
    # A text stream has no EOS, so a model trained on it must not end a sequence: every
    # decoder runs to max_len. Three training steps leave EOS near its initial probability
    # (about 1 in 10 here) unless the model pins it.
    rng = np.random.default_rng(0)
    lines = ["".join(rng.choice(list("abcd "), rng.integers(5, 25))) for _ in range(400)]
    (tmp_path / "t.txt").write_text("".join(f"{i % 7}{line}\n" for i, line in enumerate(lines)))
    out = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith(("data", "decode"))]
    cfg = compose(
        [
            *tiny,
            "data=text",
            f"data.path={tmp_path / 't.txt'}",
            "data.window=200",
            "data.test_fraction=0.2",
            "train.steps=3",
            "decode.prompts=heldout",
            "decode.num_prompts=4",
            "decode.prompt_len=4",
            "decode.num_samples=4",
            "decode.max_len=40",
            "decode.batch_size=64",
            "compare=[{name:sample},{name:beam,beam_size:3}]",
        ]
    )
    res = run_experiment(cfg, out_dir=out)
    for row in res["results"]:
        assert row["metrics"]["length/eos_rate"] == 0.0, row["decoder"]["name"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * (4 + 1)
    for s in samples:
        assert 2 not in s["token_ids"] and len(s["token_ids"]) + len(s["prompt"]) == 40
        assert len(s["prompt"]) == 4 and s["text"].startswith(s["prompt"])
    marked = (out / "samples" / "beam_beam_size_3.txt").read_text().split("\n" + "-" * 60 + "\n")
    for s, m in zip([s for s in samples if s["decoder"] == "beam(beam_size=3)"], marked):
        assert m.rstrip("\n") == (s["prompt"] + "<<model>>" + s["text"][4:]).rstrip("\n")
