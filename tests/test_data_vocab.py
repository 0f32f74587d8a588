"""Vocab: specials first, exact round trips, UNK policy, JSON persistence."""

import json

import pytest

from seqgen.data.vocab import Vocab, detokenize, tokenize
from seqgen.errors import UserError
from seqgen.tokens import BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID, SPECIAL_TOKENS, UNK_ID

TEXTS = ["To be, or not to be:\nthat is the question.", "Whether 'tis nobler in the mind"]


def test_specials_come_first_and_ids_are_dense():
    v = Vocab.build(TEXTS, "char")
    assert tuple(v.symbols[:NUM_SPECIAL]) == SPECIAL_TOKENS
    assert len(v) == NUM_SPECIAL + len(set("".join(TEXTS)))
    ids = v.encode("".join(TEXTS))
    assert min(ids) == NUM_SPECIAL and max(ids) == len(v) - 1


def test_build_is_independent_of_text_order():
    assert Vocab.build(TEXTS, "word").symbols == Vocab.build(TEXTS[::-1], "word").symbols


def test_char_round_trip_is_exact():
    v = Vocab.build(TEXTS, "char")
    for t in TEXTS:
        assert v.decode(v.encode(t)) == t


def test_word_round_trip_up_to_spacing():
    v = Vocab.build(TEXTS, "word")
    for t in TEXTS:
        toks = v.tokenize(t)
        assert "\n" in toks or "\n" not in t
        assert tokenize(v.decode(v.encode(t)), "word") == toks
    assert tokenize("don't stop", "word") == ["don't", "stop"]
    assert detokenize(["a", "\n", "b", ","], "word") == "a\nb ,"


def test_decode_stops_at_eos_and_drops_pad_bos():
    v = Vocab.build(["ab"], "char")
    a, b = v.encode("ab")
    assert v.decode([BOS_ID, a, PAD_ID, b, EOS_ID, a, a]) == "ab"


def test_unknown_maps_to_unk_for_data():
    v = Vocab.build(["abc"], "char")
    assert v.encode("axb") == [v.id_of("a"), UNK_ID, v.id_of("b")]
    assert v.decode(v.encode("axb")) == "a<unk>b"


def test_unknown_raises_one_line_user_error_for_prompts():
    v = Vocab.build(["abc"], "char")
    with pytest.raises(UserError) as e:
        v.encode("ab\n", unknown="error")
    msg = str(e.value)
    assert "\n" not in msg and "'\\n'" in msg and "data.unknown=unk" in msg
    with pytest.raises(UserError, match="unknown"):
        v.encode("ab", unknown="ignore")


def test_special_strings_in_text_are_not_specials():
    v = Vocab.build(["<eos> x"], "word")
    assert EOS_ID not in v.encode("<eos> x")


def test_json_save_load(tmp_path):
    v = Vocab.build(["M:6/8\nK:Dmaj\n|: A2 B :|"], "abc")
    path = tmp_path / "vocab.json"
    v.save(path)
    obj = json.loads(path.read_text(encoding="utf-8"))  # plain JSON, not pickle
    assert obj["level"] == "abc" and obj["symbols"] == v.symbols
    assert Vocab.load(path) == v


def test_bad_level_is_user_error():
    with pytest.raises(UserError, match="allowed: char, word, whitespace, abc"):
        Vocab.build(["x"], "byte")


def test_whitespace_level_keeps_pre_tokenized_tokens_whole():
    line = " mr. <unk> said n't \n the u.s. \n"
    assert tokenize(line, "whitespace") == [
        "mr.",
        "<unk>",
        "said",
        "n't",
        "\n",
        "the",
        "u.s.",
        "\n",
    ]
    assert tokenize(line, "word")[:4] == ["mr", ".", "<", "unk"]  # raw-text words split them
    v = Vocab.build([line], "whitespace")
    assert v.encode(line)[1] == UNK_ID  # the marker is the vocabulary's own UNK
    assert tokenize(v.decode(v.encode(line)), "whitespace") == tokenize(line, "whitespace")
