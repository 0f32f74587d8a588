"""MIDI for every tune that parses: the two music21 failures seen on generated tunes are avoided,
and the log counts what was written."""

from __future__ import annotations

import logging
import math

import pytest

pytest.importorskip("music21")

from seqgen.metrics.abc import parse_abc  # noqa: E402
from seqgen.outputs import write_midi, write_tunes  # noqa: E402

# An overlong first bar (7/8 in 6/8: music21 splits it and files its one TimeSignature object
# in two measures, which its MIDI writer refuses), a repeated M: field, and a repeat.
# Notes with the repeat played twice: 7 + 6 + 2 * (6 + 6) = 37.
OVERLONG_BAR = "M:6/8\nL:1/8\nK:D\nfdB egcA|EFG AFD|\nM:6/8\n|:ABc def|edc BAG:|\n"
# A `[|]:|` that music21's expandRepeats calls badly formed: played once, 4 bars of 6 notes.
BAD_REPEATS = "M:6/8\nL:1/8\nK:D\nABc def|edc BAG:|\n|:ABc def|edc BAG[|]:|\n"


def _midi_pitches(path):
    from music21 import converter

    return [n.pitch.midi for n in converter.parse(str(path)).recurse().notes]


def test_shared_time_signature_gets_midi_with_repeats_expanded(tmp_path):
    midi, how = write_midi(parse_abc(OVERLONG_BAR), tmp_path / "t.mid")
    assert how == "midi" and midi is not None and midi.exists()
    pitches = _midi_pitches(midi)
    assert len(pitches) == 37
    once = [n.pitch.midi for n in parse_abc(OVERLONG_BAR).recurse().notes]  # 25 as written
    assert pitches == once[:13] + once[13:] * 2


def test_badly_formed_repeats_are_played_once(tmp_path):
    midi, how = write_midi(parse_abc(BAD_REPEATS), tmp_path / "t.mid")
    assert midi is not None and "played once" in how
    written = [n.pitch.midi for n in parse_abc(BAD_REPEATS).recurse().notes]
    assert len(written) == 24
    assert _midi_pitches(midi) == written


def test_write_tunes_logs_how_many_mid_and_why(tmp_path, caplog):
    rows = [
        {"decoder": "d", "text": OVERLONG_BAR},
        {"decoder": "d", "text": BAD_REPEATS},
        {"decoder": "d", "text": "no tune here"},
    ]
    with caplog.at_level(logging.INFO, logger="seqgen"):
        written = write_tunes(tmp_path / "d", rows)
    names = sorted(p.name for p in written)
    assert names == ["tune_01.abc", "tune_01.mid", "tune_02.abc", "tune_02.mid", "tune_03.abc"]
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("d: "))
    assert line.startswith("d: 3 tunes, 2 .mid (")
    assert "1 not ABC" in line and "1 with repeats played once" in line


# ---------------------------------------------------------------- result and sample files


def test_write_decoder_appends_a_row_and_its_samples_as_they_exist(tmp_path):
    import json

    from omegaconf import OmegaConf

    from seqgen.outputs import MODEL_MARK, reset_outputs, write_decoder

    output_cfg = OmegaConf.create({"num_listen": 0})
    corpus = type("C", (), {"name": "text"})()
    result = {"decoder": {"name": "sample", "label": "t=0.7/x"}, "metrics": {"gen/ppl": math.nan}}
    samples = [
        {"decoder": "t=0.7/x", "prompt": "ab", "text": "abcd", "score": -math.inf},
        {"decoder": "t=0.7/x", "prompt": "", "text": "ef", "score": -1.5},
    ]
    (tmp_path / "results.jsonl").write_text("stale\n")
    reset_outputs(tmp_path)  # a rerun into the folder starts afresh
    assert write_decoder(output_cfg, corpus, result, samples, tmp_path) == []  # no tunes: not folk
    write_decoder(output_cfg, corpus, {**result, "metrics": {"gen/ppl": 2.0}}, [], tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["metrics"]["gen/ppl"] for r in rows] == [None, 2.0]  # NaN is null in JSON
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert [json.loads(x)["score"] for x in lines] == [None, -1.5]
    # the label cannot leave samples/: '/' becomes '_'; the prompt's end is marked
    txt = (tmp_path / "samples" / "t_0.7_x.txt").read_text()
    assert txt == f"ab{MODEL_MARK}cd\n" + "-" * 60 + f"\n{MODEL_MARK}ef\n"


@pytest.mark.parametrize(
    "label, want", [("beam(beam_size=4)", "beam_beam_size_4"), ("../..", "decoder"), (".x", "x")]
)
def test_slug_keeps_files_inside_their_folder(label, want):
    from seqgen.outputs import slug

    assert slug(label) == want


def test_score_kind_names_the_unit_of_score_mean():
    from seqgen.outputs import SCORE_UNITS, score_kind

    assert score_kind({"name": "beam", "length_penalty": "gnmt"}) == "gnmt"
    assert score_kind({"name": "sample"}) == "none"
    assert score_kind({"name": "stochastic_beam", "length_penalty": "average"}) == "gumbel"
    assert {"none", "gnmt", "gumbel"} <= set(SCORE_UNITS)
