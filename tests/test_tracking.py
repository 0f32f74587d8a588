"""Trackers: W&B offline runs write into their own job's folder, also in one process."""

import logging
import os
from pathlib import Path

import pytest

from seqgen import tracking
from seqgen.tracking import WandbTracker


@pytest.fixture
def clean_wandb_env(monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking, "_SET_FOR_JOB", {})
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_two_jobs_in_one_process_write_into_their_own_folders(tmp_path, clean_wandb_env, caplog):
    """An in-process multirun: job 1's files land in job 1's folder, not job 0's; each offline
    run ends with the `wandb sync` command that uploads it."""
    dirs = []
    for job in ("0", "1"):
        tracker = WandbTracker(config={"job": job}, project="p", out_dir=tmp_path / job)
        dirs.append(tracker.run.dir)
        tracker.log({"x": 1.0}, step=1)
        with caplog.at_level(logging.INFO, logger="seqgen"):
            tracker.finish()
    for job, run_dir in zip(("0", "1"), dirs):
        assert os.path.realpath(run_dir).startswith(os.path.realpath(tmp_path / job / "wandb"))
        sync_dir = Path(run_dir).parent  # <out_dir>/wandb/offline-run-.../files -> the run
        assert f"upload it with `wandb sync {sync_dir}`" in caplog.text
    assert "WANDB_DIR" not in os.environ
    assert os.environ["WANDB_DATA_DIR"] == str(tmp_path / "1" / "wandb" / ".data")


def test_a_wandb_dir_the_user_set_is_kept(tmp_path, clean_wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "mine-data"))
    (tmp_path / "mine").mkdir()
    tracker = WandbTracker(config={}, project="p", out_dir=tmp_path / "job")
    run_dir = tracker.run.dir
    tracker.finish()
    assert os.path.realpath(run_dir).startswith(os.path.realpath(tmp_path / "mine"))
    assert os.environ["WANDB_DATA_DIR"] == str(tmp_path / "mine-data")
