"""A metric added from a user's own code (this file, one `register_metric` call) appears in
results.jsonl, the console table, the report, the sweep summary and `seqgen.metrics.compute`,
like a built-in."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, compose

from seqgen.errors import UserError
from seqgen.metrics import Generations, compute, register_metric, table

KEY = "user/even_length"


def even_length_share(g: Generations) -> float:
    """Share of the continuations with an even number of tokens (a toy metric)."""
    return float(np.mean(g.packed.lengths % 2 == 0))


@pytest.fixture
def user_metric(monkeypatch):
    monkeypatch.setattr(table, "METRICS", list(table.METRICS))  # registered for this test only
    return register_metric(
        KEY,
        even_length_share,
        unit="0-1",
        better="none",
        what="even-length continuations",
        show=("table", "report", "summary"),
    )


def test_a_registered_metric_is_computed_with_its_unit(user_metric):
    # lengths 2, 1, 0, 4: three are even
    out = compute(Generations([[5, 6], [7], [], [5, 6, 7, 8]]))
    assert out[KEY] == 0.75
    assert table.label_of(KEY) == "even-length continuations (0-1)"
    assert KEY in table.shown("table") and KEY not in table.shown("plot")


def test_registering_mistakes_are_one_line_errors(user_metric):
    with pytest.raises(UserError, match="exists already"):
        register_metric(KEY, even_length_share, unit="0-1", better="none")
    with pytest.raises(UserError, match="exists already"):
        register_metric("gen/ppl", even_length_share, unit="0-1", better="none")
    with pytest.raises(UserError, match="allowed: higher, lower, human, none"):
        register_metric("user/x", even_length_share, unit="0-1", better="up")
    with pytest.raises(UserError, match="allowed: table, plot, report, summary"):
        register_metric("user/x", even_length_share, unit="0-1", better="none", show=("web",))
    with pytest.raises(UserError, match="group/name"):
        register_metric("user x", even_length_share, unit="0-1", better="none")
    two = register_metric(("user/a", "user/b"), lambda g: 1.0, unit="0-1", better="none")
    with pytest.raises(UserError, match="returned 1 values"):
        compute(Generations([[5]]))
    table.METRICS.remove(two)
    register_metric("user/none", lambda g: None, unit="0-1", better="none")
    with pytest.raises(UserError, match="one number per key"):
        compute(Generations([[5]]))


@pytest.mark.slow  # trains a model: the full suite runs it
def test_a_registered_metric_runs_through_the_pipeline(user_metric, cache_dir, tmp_path, capsys):
    from seqgen.experiment import run_experiment
    from seqgen.sweep import write_summary

    job = tmp_path / "sweep" / "0"
    run_experiment(compose([*TINY, "decoder=sample"]), out_dir=job)
    rows = [json.loads(line) for line in (job / "results.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (job / "samples.jsonl").read_text().splitlines()]
    assert [r["decoder"]["name"] for r in rows] == ["sample", "human"]
    # by hand from the written samples: the continuations' lengths
    even = np.mean([len(s["token_ids"]) % 2 == 0 for s in samples])
    assert rows[0]["metrics"][KEY] == pytest.approx(even, rel=1e-12)
    assert 0 <= rows[1]["metrics"][KEY] <= 1  # the human row has it too
    assert KEY in capsys.readouterr().out  # the console table asked for it
    report = (job / "report.html").read_text()
    assert 'title="even-length continuations (0-1)"' in report
    # the sweep summary of a one-job sweep holds it as a column
    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text("- decoder=sample\n")
    write_summary(tmp_path / "sweep", plots=False)
    header = (tmp_path / "sweep" / "summary.md").read_text().splitlines()[2]
    assert f"| {KEY} |" in header


def test_a_study_names_a_registered_metric_it_skips(user_metric, caplog):
    """A study computes the table's streamed rows; a registered row has none, so the study's
    one warning names it (and none of the built-ins that do not apply to this run)."""
    from types import SimpleNamespace

    from seqgen.evaluate import _warn_study_metrics

    dec = compose([*TINY, "decoder=sample"]).decoder
    corpus = SimpleNamespace(oracle=None)
    with caplog.at_level("WARNING", logger="seqgen"):
        _warn_study_metrics(SimpleNamespace(stream_rows=5), dec, corpus, None, None)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.split("not computed: ")[1].startswith(f"{KEY} (")
