"""The processor table (`decoding/processor_table.py`): the order docs show is the table's, a
row is compiled in exactly when one of its knobs leaves its neutral value, the program's static
key holds sizes but not traced values, and the sampling decoders' knobs are the rows'."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

from seqgen.decoding import guidance
from seqgen.decoding import processor_table as table
from seqgen.decoding.common import DEFAULTS
from seqgen.decoding.knobs import KNOBS
from seqgen.decoding.registry import SPECS
from seqgen.errors import UserError

# a valid value away from each switch knob's neutral value
AWAY = {
    "top_k": 5,
    "top_p": 0.9,
    "typical_p": 0.9,
    "min_p": 0.1,
    "epsilon": 0.1,
    "eta": 0.1,
    "repetition_penalty": 1.2,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "no_repeat_ngram_size": 2,
    "top_n_sigma": 1.0,
    "mirostat_tau": 3.0,
    "dry_multiplier": 0.8,
    "xtc_probability": 0.5,
    "dynatemp_range": 0.5,
    "allowed_tokens": [4, 5],
    "bad_words": [[4, 5]],
    "logit_bias": {4: 1.0},
    "sequence_bias": [[[4, 5], -1.0]],
}
BUILTIN_ORDER = (
    "min_length", "allowed_tokens", "bad_words", "logit_bias", "sequence_bias",
    "repetition_penalty", "presence_frequency_penalty", "no_repeat_ngram", "dry", "dynatemp",
    "temperature", "top_k", "top_p", "typical_p", "min_p", "epsilon", "eta", "top_n_sigma",
    "xtc", "mirostat",
)  # fmt: skip


def flags(vocab_size=None, stages=table.STAGES, **knobs):
    return table.flags_from_cfg(lambda k: knobs.get(k, DEFAULTS[k]), vocab_size, stages)


def test_readme_shows_the_tables_order():
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"^Processor order: `([^`]+)`", readme, re.M)
    assert shown is not None and shown.group(1) == table.render_order()
    # the processor table lists the rows in the same order
    start = readme.index("| processor | stage |")
    rows = re.findall(r"^\| `(\w+)` \|", readme[start : readme.index("\n\n", start)], re.M)
    assert tuple(rows) == tuple(table.ORDER)
    conf = (ROOT / "conf" / "decoder" / "sample.yaml").read_text()
    assert "->" not in conf  # the config points to the one rendering instead of a copy


def test_order_and_stages():
    assert tuple(table.ORDER) == BUILTIN_ORDER
    stages = [table.STAGES.index(table.PROCESSORS[n].stage) for n in table.ORDER]
    assert stages == sorted(stages)  # stages never go back


def test_a_row_is_on_exactly_when_its_knob_leaves_neutral():
    always = tuple(n for n in table.ORDER if not any(
        KNOBS[k].neutral is not None for k in table.PROCESSORS[n].knobs))  # fmt: skip
    assert always == ("min_length", "temperature")
    assert flags().order == always
    switches = {k for k in KNOBS if KNOBS[k].neutral is not None}
    # every switch knob belongs to this test, but guidance's: it switches the step function
    # (`guidance.guide`), not a processor row, and test_decoding_guidance holds it
    assert switches == set(AWAY) | {guidance.KNOB}
    for knob, value in AWAY.items():
        on = set(flags(**{knob: value}).order) - set(always)
        want = {n for n in table.ORDER if knob in table.PROCESSORS[n].knobs}
        assert on == want, knob
    # top-k at or above the vocabulary keeps every token: not compiled in
    assert "top_k" in flags(vocab_size=10, top_k=9).order
    assert "top_k" not in flags(vocab_size=10, top_k=10).order
    # greedy applies the penalty stage only
    g = flags(stages=table.PENALTY_STAGES, top_p=0.9, repetition_penalty=1.2)
    assert g.order == ("min_length", "repetition_penalty")


def test_static_key_holds_sizes_not_traced_values():
    assert flags(top_p=0.9) == flags(top_p=0.5)  # traced: one program for a sweep
    assert flags(top_k=5) != flags(top_k=6)  # a size: a program each
    assert dict(flags(top_k=5).static) == {"top_k": 5, "min_tokens_to_keep": 1}
    assert dict(flags(no_repeat_ngram_size=3).static) == {"no_repeat_ngram_size": 3}
    f = flags(top_p=0.9, mirostat_tau=3.0)
    assert not f.needs("counts") and not f.needs("history") and f.stateful() == ("mirostat",)
    # the penalties read the history too: `penalty_last_n` counts a window of it
    f = flags(repetition_penalty=1.2, penalty_last_n=4)
    assert f.needs("counts") and f.needs("history") and dict(f.static)["penalty_last_n"] == 4
    assert flags(xtc_probability=0.5).needs("key") and not flags(top_p=0.9).needs("key")
    assert not flags().needs("counts")


def test_sampling_decoders_read_the_rows_knobs():
    rows = {k for n in table.ORDER for k in table.PROCESSORS[n].knobs}
    loop = {"stop", "include_stop", "order", guidance.KNOB}  # the loop's and the step's
    assert set(SPECS["sample"].knobs) == rows | loop
    penalty = {
        k for n in table.ORDER if table.PROCESSORS[n].stage == "penalty"
        for k in table.PROCESSORS[n].knobs
    }  # fmt: skip
    assert set(SPECS["greedy"].knobs) == penalty | loop


def test_an_order_is_data_and_checked():
    swapped = list(BUILTIN_ORDER)
    i, j = swapped.index("top_k"), swapped.index("top_p")
    swapped[i], swapped[j] = swapped[j], swapped[i]
    on = {"top_k": 5, "top_p": 0.9}
    f = table.flags_from_cfg(lambda k: on.get(k, DEFAULTS[k]), order=swapped)
    assert f.order == ("min_length", "temperature", "top_p", "top_k")
    # a partial order: the named rows swap places, the others keep theirs; the `order` knob
    f = table.flags_from_cfg(lambda k: {**on, "order": ["top_p", "top_k"]}.get(k, DEFAULTS[k]))
    assert f.order == ("min_length", "temperature", "top_p", "top_k")
    assert table.check_order([]) == BUILTIN_ORDER
    with pytest.raises(UserError, match="unknown"):
        table.check_order(["top_k", "nope"])
    with pytest.raises(UserError, match="cannot run after"):
        table.check_order(["temperature", *[n for n in BUILTIN_ORDER if n != "temperature"]])
