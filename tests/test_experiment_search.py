"""exact and mbr through the pipeline (Hydra config -> run_experiment -> metrics) on the DPFSA's
true distribution, and their config errors as one line."""

from __future__ import annotations

import pytest
from conftest import TINY, compose

from seqgen.errors import UserError
from seqgen.experiment import run_experiment

pytestmark = pytest.mark.slow  # exact search and MBR through the whole pipeline

COMPARE = (
    "compare=[{name:beam,beam_size:1},{name:exact},"
    "{name:mbr,num_candidates:4,num_references:4,utility:edit,candidates:{top_p:0.9}}]"
)


def test_exact_and_mbr_in_the_pipeline(cache_dir, tmp_path):
    cfg = compose([*TINY, "model=oracle", COMPARE])
    res = {
        r["decoder"]["name"]: r["metrics"] for r in run_experiment(cfg, out_dir=tmp_path)["results"]
    }
    assert res["exact"]["search/exact_proven"] == 1.0
    assert res["exact"]["search/mode_found"] == 1.0  # the proven mode is Dijkstra's
    # one prompt: greedy (beam 1) misses the mode exactly when it is a search error
    assert res["beam"]["search/beam_error"] == 1.0 - res["beam"]["search/mode_found"]
    assert 0.0 <= res["mbr"]["mbr/expected_utility"] <= 1.0
    assert res["mbr"]["mbr/utility_spread"] >= 0.0


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("+decoder.candidates.top_pp=0.9", "decoder.candidates.top_pp"),
        ("+decoder.references.top_p=1.5", "decoder.references.top_p=1.5"),
        ("decoder.utility=meteor", "decoder.utility"),
    ],
)
def test_mbr_config_errors_before_any_work(override, needle):
    from seqgen.config import validate_config

    cfg = compose([*TINY, "decoder=mbr", override])
    with pytest.raises(UserError, match=needle.replace(".", r"\.")):
        validate_config(cfg)
