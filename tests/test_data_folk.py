"""Folk corpus: tune splitting, header filtering, multi-voice handling, collection errors."""

import os
import re
from collections import Counter

import pytest

from seqgen.config import DataConfig
from seqgen.data.folk import (
    COLLECTION_LICENSES,
    collection_files,
    corpus_dir,
    load_tunes,
    parse_abc_file,
)
from seqgen.errors import UserError

DEFAULT_COLLECTIONS = DataConfig().collections  # the schema's default

FILE = """% file comment before any tune
X:1
T:Title One
R:reel
M: 6/8
L:1/8
Q:1/4=120
K: D % key comment
|: AB c2 | d4 :|
[P:B]\\
N:a note inside the body
de f2 | g4 |]

X:2
T:Two voices
M:2/4
L:1/8
V:1
V:2
K:G
V:1
ga bg | a4 :|
V:2
GA BG | A4 :|
[V:1] c'2 b2 | a4 |]
[V:2] C2 B,2 | A,4 |]

X:3
T:No key
ABc|

X:4
T:Empty body
M:C
K:Am

X:5
K:Em
EFG|

free text after a blank line
ABC|
"""


def test_parse_keeps_mlk_and_body_only():
    skipped = Counter()
    tunes = parse_abc_file(FILE, skipped)
    assert tunes[0] == "M:6/8\nL:1/8\nK:Dmaj\n|: AB c2 | d4 :|\nde f2 | g4 |]"
    assert skipped == {"no_key": 1, "empty_body": 1}
    assert tunes[2] == "K:Emin\nEFG|"  # a blank line ends the tune


def test_multi_voice_keeps_first_voice():
    tune = parse_abc_file(FILE)[1]
    assert tune == "M:2/4\nL:1/8\nK:Gmaj\nga bg | a4 :|\nc'2 b2 | a4 |]"


@pytest.fixture(scope="module")
def default_tunes():
    return load_tunes(DEFAULT_COLLECTIONS)


def test_every_tune_is_counted(default_tunes):
    tunes, stats = default_tunes
    n_x = 0
    for c in DEFAULT_COLLECTIONS:
        for path in collection_files(c):
            with open(path, "rb") as f:
                n_x += sum(
                    1
                    for ln in f.read().decode("utf-8", "replace").splitlines()
                    if ln.startswith("X:")
                )
    assert len(tunes) > 4000
    assert len(tunes) + sum(stats["skipped"].values()) == n_x


def test_tunes_hold_no_metadata_or_comments(default_tunes):
    for t in default_tunes[0]:
        lines = t.splitlines()
        assert any(ln.startswith("K:") for ln in lines)
        assert not any(re.match(r"^[A-Za-z+]:", ln) and ln[0] not in "MLK" for ln in lines), t
        assert "%" not in t and "`" not in t
        assert any(not re.match(r"^[MLK]:", ln) for ln in lines)  # a body


def test_noncommercial_collection_only_when_listed(default_tunes):
    assert {COLLECTION_LICENSES[c] for c in DEFAULT_COLLECTIONS} == {"public domain"}
    assert "essenFolksong" not in DEFAULT_COLLECTIONS
    assert default_tunes[1]["collections"] == list(DEFAULT_COLLECTIONS)
    tunes, stats = load_tunes(["essenFolksong"], max_tunes=5)
    assert len(tunes) == 5 and stats["collections"] == ["essenFolksong"]


def test_max_tunes_caps_in_file_order(default_tunes):
    tunes, _ = load_tunes(DEFAULT_COLLECTIONS, max_tunes=7)
    assert tunes == default_tunes[0][:7]


def test_corpus_dir_is_music21s():
    assert os.path.isdir(os.path.join(corpus_dir(), "oneills1850"))


def test_bad_collections_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown folk collection 'bach'.*allowed: oneills1850"):
        load_tunes(["bach"])
    with pytest.raises(UserError, match="data.collections is empty"):
        load_tunes([])
    (tmp_path / "miscFolk").mkdir()
    (tmp_path / "miscFolk" / "a.abc").write_text("% nothing\nT:no tune\n")
    with pytest.raises(UserError, match="no ABC tunes"):
        load_tunes(["miscFolk"], root=str(tmp_path))
    (tmp_path / "airdsAirs").mkdir()
    with pytest.raises(UserError, match="no .abc files"):
        load_tunes(["airdsAirs"], root=str(tmp_path))
