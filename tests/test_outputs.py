"""MIDI for every tune that parses: the two music21 failures seen on generated tunes are avoided,
and the log counts what was written."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
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


def test_plain_numbers_on_lines_that_agree_to_seven_digits():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from seqgen.outputs import plain_numbers

    fig, (raw, plain) = plt.subplots(1, 2)
    ys = [1.8349800, 1.8349801]  # two sweep values that score the same to 7 digits
    for ax in (raw, plain):
        ax.plot([1, 2], ys, marker="o")
    plain_numbers(plain)
    fig.canvas.draw()
    assert raw.yaxis.get_offset_text().get_text()  # matplotlib's default: an offset like 1e-7
    assert plain.yaxis.get_offset_text().get_text() == ""
    ticks = [float(t.get_text().replace("\u2212", "-")) for t in plain.get_yticklabels()]
    lo, hi = plain.get_ylim()
    assert lo < ys[0] < ys[1] < hi and hi - lo >= 0.05 * ys[0]  # widened to +-5%, so ...
    assert len({round(t, 2) for t in ticks}) == len(ticks)  # ... ticks differ in 2 decimals
    plt.close(fig)


@pytest.mark.slow  # waits out a music21 deadline: the full suite runs it
def test_write_tunes_gives_up_midi_for_a_tune_past_its_deadline(tmp_path, caplog):
    # music21 spends minutes in `bestTimeSignature` on this generated tune
    slow = "M:6/8\nL:1/8\nK:Gmin\nd/2-c/2 | (BAG) f (F BAA E3432|d>a|BBBF d)3dG"
    good = "M:6/8\nL:1/8\nK:D\nA|dfa afd|e2f gfe|dfa afd|e3 d2:|\n"
    parse_abc(good)  # music21's import is not part of any tune's time
    rows = [{"decoder": "d", "text": t} for t in (good, slow)]
    with caplog.at_level(logging.INFO, logger="seqgen"):
        written = write_tunes(tmp_path / "d", rows, timeout_s=2.0)
    assert sorted(p.name for p in written) == ["tune_01.abc", "tune_01.mid", "tune_02.abc"]
    assert "d: 2 tunes, 1 .mid (1 music21 ran past 2 s)" in caplog.text


# ---------------------------------------------------------------- the metric table

GOOD_TUNE = "M:6/8\nL:1/8\nK:D\nA|dfa afd|e2f gfe|dfa afd|e3 d2:|\n"  # parses, bars in time


def _full_bundle():
    """Generations for which every row of the table applies, with values worked out by hand.

    Continuations 5 6 7 5 6 7 (ends in 2 copies of a 3-token block: a loop), 5 6 (cut at
    max_len), 8 8 8 8 (4 copies of a 1-token block: no loop by Holtzman's rule), the empty
    string; 12 tokens and 3 EOS. Every token and EOS has p = 1/2 tempered, 1/4 under the
    model, 1/8 under the reference model.
    """
    from seqgen.data.synthetic import DPFSA
    from seqgen.metrics import Generations
    from seqgen.tokens import UNK_ID

    seqs = [[5, 6, 7, 5, 6, 7], [5, 6], [8, 8, 8, 8], []]
    ended = [True, False, True, True]

    def lps(p):
        return [np.full(len(s), math.log(p)) for s in seqs], np.full(4, math.log(p))

    (tlp, teos), (mlp, meos), (rlp, reos) = lps(1 / 2), lps(1 / 4), lps(1 / 8)
    # one state, symbols 4..8 with p = .1 each, stop .5: the mode is the empty string
    oracle = DPFSA(np.zeros((1, 5), np.int64), np.full((1, 5), 0.1), np.array([0.5]))
    return Generations(
        seqs,
        ended=ended,
        prompts=[[], [], [UNK_ID], []],  # the third is impossible under the DPFSA
        scores=[-1.0, -2.0, -3.0, -6.0],
        tempered_logprobs=tlp,
        eos_tempered_logprobs=teos,
        model_logprobs=mlp,
        eos_model_logprobs=meos,
        ref_logprobs=rlp,
        ref_eos_logprobs=reos,
        reference=[[5, 6]],
        texts=[GOOD_TUNE] * 4,
        dataset="folk",
        oracle=oracle,
        best_sequences=[[], [5]],
        best_ended=[True, True],
        best_prompts=[[], []],
        proven=np.array([True, False]),
        expansions=np.array([3, 5]),
        expected_utility=np.array([[0.6, 0.2], [0.8, 0.4]]),
        exact_mode=(np.array([-100.0, 0.0, 0.0, -1.0]), np.array([True, True, False, True])),
        constraint_logmass=[np.log([0.5, 0.8]), np.log([1.0]), np.zeros(0), np.log([0.5])],
        prompts_left_out=0.25,
        decode_s=1.5,
        max_len=6,
        decoder={"name": "sample", "top_k": 2},
        step_logits=lambda p, s, e: [_UNK_AND_5[: len(x) + int(f)] for x, f in zip(s, e)],
    )


_UNK_AND_5 = np.zeros((8, 9), np.float32)  # logits: top-2 keeps UNK (3) and 5 at every step
_UNK_AND_5[:, [3, 5]] = 1.0


HAND = {
    "gen/ppl": 2.0,  # 15 tokens at p = 1/2
    "gen/ppl_model": 4.0,
    "gen/ref_ppl": 8.0,
    "diversity/distinct_1": 4 / 12,  # types 5 6 7 8 over 12 tokens
    "diversity/unique_seq": 1.0,
    "repetition/rep_pct": 25.0,  # one loop in four
    "length/mean": 3.0,
    "length/eos_rate": 0.75,
    "oracle/impossible_prompt_rate": 0.25,
    "oracle/mode_logprob": math.log(0.5),  # the empty string, from the one state
    "search/mode_found": 0.5,  # [] is the mode, [5] is not
    "abc/parse_rate": 1.0,
    "abc/bar_ok_rate": 1.0,
    "score/mean": -3.0,
    "search/exact_proven": 0.5,
    "search/expansions_mean": 4.0,
    "search/exact_empty": 0.25,  # the empty string that ended
    "mbr/expected_utility": 0.7,  # (.6 + .8) / 2
    "mbr/utility_spread": 0.2,  # std of {.6, .2} and of {.8, .4}: .2 each
    "constraint/mass_removed": (0.6 + 0 + 0 + 0.5) / 4,  # 1 - .5 * .8, 0, 0 (no step), .5
    "constraint/prompts_left_out": 0.25,
    "time/decode_s": 1.5,
    "oracle/trunc_precision": 0.5,  # {UNK, 5}: 5 is allowed, UNK never
    "oracle/trunc_recall": 0.1,  # p*(5) in the one state
    "oracle/off_support_rate": 0.0,  # every token is a symbol, every EOS allowed
    # proven prompts 0, 1, 3: 7 ln(1/4) > -100; -inf (not ended) < 0; ln(1/4) < -1: 2 of 3
    "search/beam_error": 2 / 3,
}


def _all_values():
    from seqgen.metrics import compute

    gen = _full_bundle()
    within, across = compute(gen), compute(gen, across=True)
    assert not set(within) & set(across)
    # a constraint masks before the processors, so the kept sets need a bundle without one
    trunc = compute(dataclasses.replace(gen, constraint_logmass=None))
    trunc = {k: v for k, v in trunc.items() if k not in within}
    return {**within, **across, **trunc}


def test_every_key_of_the_table_has_a_unit_a_direction_and_known_places():
    from seqgen.metrics import table

    keys = [k for row in table.METRICS for k in row.keys]
    assert len({k.name for k in keys}) == len(keys)  # a key is defined once
    for k in keys:
        assert k.unit.name and k.unit.lo < k.unit.hi, k.name
        assert k.better in table.BETTER, k.name
        assert set(k.show) <= set(table.PLACES), k.name
        assert table.label_of(k.name) == f"{k.what} ({k.unit.name})"
    # what the console table shows, the report and the sweep summary show too
    for place in (table.REPORT, table.SUMMARY):
        assert set(table.shown(table.TABLE)) <= set(table.shown(place))


def test_every_row_applies_to_a_full_bundle_and_every_value_lies_in_its_unit():
    from seqgen.metrics import table

    values = _all_values()
    assert set(values) == set(table.all_keys())  # every key any row produces, and no other
    for key, spec in table.all_keys().items():
        v = values[key]
        assert math.isnan(v) or spec.unit.lo <= v <= spec.unit.hi, (key, v, spec.unit)
    assert max(values["repetition/rep_pct"], values["search/expansions_mean"]) > 1  # not shares


def test_hand_computed_values_through_the_table():
    values = _all_values()
    for key, want in HAND.items():
        assert values[key] == pytest.approx(want, rel=1e-12), key
    # the third row's prompt is impossible: rows 1, 2, 4 hold 6 + 2 + 0 tokens at p = .1 and
    # 2 EOS at p = .5 (row 2 was cut)
    nll = -(8 * math.log(0.1) + 2 * math.log(0.5)) / 10
    assert values["oracle/nll"] == pytest.approx(nll, rel=1e-12)
    assert values["oracle/ppl"] == pytest.approx(math.exp(nll), rel=1e-12)


def test_a_wrong_unit_breaks_the_range_check(monkeypatch):
    """The range check above can fail: rep_pct labelled a share (0-1) is caught."""
    import dataclasses

    from seqgen.metrics import table

    rows = list(table.METRICS)
    i = next(i for i, r in enumerate(rows) if r.keys[0].name == "repetition/rep_pct")
    wrong = dataclasses.replace(rows[i].keys[0], unit=table.SHARE)
    rows[i] = dataclasses.replace(rows[i], keys=(wrong,))
    monkeypatch.setattr(table, "METRICS", rows)
    with pytest.raises(AssertionError, match="rep_pct"):
        test_every_row_applies_to_a_full_bundle_and_every_value_lies_in_its_unit()


def test_the_readme_metrics_table_gives_every_key_its_unit_and_direction():
    from conftest import ROOT

    from seqgen.metrics import table

    lines = (ROOT / "README.md").read_text().splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith("| `")]
    for key, spec in table.all_keys().items():
        row = next((r for r in rows if f"`{key}`" in r[0]), None)
        assert row is not None, f"README's metrics table has no row for {key}"
        assert spec.unit.name in row[1] and spec.better in row[2], key
