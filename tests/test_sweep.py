"""Multiruns in subprocesses: summary and plots, a failing job, joblib, offline W&B."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from conftest import TINY, run_cli

pytestmark = pytest.mark.slow  # multiruns in subprocesses


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {"SEQGEN_CACHE": str(tmp_path_factory.mktemp("sweep_cache"))}


def _sweep_dir(root: Path) -> Path:
    dirs = [p for p in (root / "multirun").rglob("multirun.yaml")]
    assert dirs, f"no sweep dir under {root}"
    return dirs[0].parent


def test_a_jobs_data_dependent_mistake_stops_the_sweep_before_any_job(tmp_path, env):
    # 8 samples x 16 tokens are 128 positions, more than decode.max_tokens=100: only the
    # loaded corpus gives the prompt count, and the corpus is loaded before the first job
    args = ["-m", *TINY, "decoder=sample", "decode.max_tokens=500,200,100"]
    proc = run_cli(args, cwd=tmp_path, env=env)
    err = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-3000:]
    assert "decode.max_tokens=100" in err[0] and not (tmp_path / "multirun").exists()


def test_multirun_summary_plots_and_a_failed_job(tmp_path, env):
    # train.lr=1e30 diverges, which only training shows: that job fails, the others survive
    args = ["-m", *TINY, "output.plots=true", "decoder=sample", "train.lr=0.01,0.02,1e30"]
    proc = run_cli(args, cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    jobs_ok = {r["job"] for r in rows}
    assert len(jobs_ok) == 2
    assert {r["train.lr"] for r in rows if r["decoder"] != "human"} == {"0.01", "0.02"}
    md = (sweep / "summary.md").read_text()
    assert "Failed jobs (1)" in md and "diverged" in md
    assert (sweep / "plots" / "gen_ppl.png").stat().st_size > 1000


def test_joblib_multirun_runs_jobs_in_parallel_processes(tmp_path, env):
    args = ["-m", *TINY, "hydra/launcher=parallel", "decoder=sample", "decoder.temperature=0.5,1.0"]
    proc = run_cli(args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(open(_sweep_dir(tmp_path) / "summary.csv")))
    assert {r["decoder.temperature"] for r in rows if r["decoder"] != "human"} == {"0.5", "1.0"}


def test_submitit_local_multirun(tmp_path, env):
    # the same launcher family as SLURM (hydra/launcher=slurm), run on this machine
    args = ["-m", *TINY, "hydra/launcher=local", "decoder=greedy", "seed=0"]
    proc = run_cli(args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(open(_sweep_dir(tmp_path) / "summary.csv")))
    assert [r["decoder"] for r in rows] == ["greedy", "human"]


def test_offline_wandb_writes_its_files(tmp_path, env):
    import subprocess
    import sys

    args = [
        *TINY,
        "decoder=greedy",
        "logger=wandb",
        "logger.mode=offline",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    # no WANDB_MODE and no API key: the config alone must keep W&B offline
    full_env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_API_KEY")}
    full_env.update({**env, "PYTHONUNBUFFERED": "1"})
    proc = subprocess.run(
        [sys.executable, "-m", "seqgen.run", *args],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb"))
    # the run's report page, logged as wandb.Html, is the page the run wrote
    (logged,) = runs[0].glob("files/media/html/report_*.html")
    assert logged.read_text() == (tmp_path / "run" / "report.html").read_text()
