"""examples/tour.py runs end to end as a script (as CI runs it): train, generate, score, plot."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_the_tour_runs_and_scoring_gives_back_the_decoders_logprobs(cache_dir, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "TOUR_OUT": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tour.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "same log-probs as the decoder: True" in proc.stdout
    assert "banned symbol drawn: False" in proc.stdout  # the registered processor ran
    assert (tmp_path / "tour.png").stat().st_size > 0
