"""Progress lines: elapsed time, ETA at the rate after the compile, tokens/s; a line at every
tenth and at least every `EVERY_S` seconds; a first and a last line even without progress."""

from __future__ import annotations

import logging

import pytest

from seqgen import progress
from seqgen.progress import Progress, clock


@pytest.fixture
def fake_clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    return now


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "seqgen"]


def test_clock_formats_minutes_and_hours():
    assert [clock(s) for s in (0, 59.6, 61, 3599, 3600, 7322)] == [
        "0:00", "1:00", "1:01", "59:59", "1:00:00", "2:02:02",
    ]  # fmt: skip


def test_plain_lines_carry_elapsed_eta_and_rate(fake_clock, caplog):
    caplog.set_level(logging.INFO, logger="seqgen")
    bar = Progress("train", 100, enabled=True)  # pytest's stdout is no terminal: plain lines
    fake_clock[0] = 5.0
    bar.compiled(1)  # 5 s for the compile and step 1
    fake_clock[0] = 14.0
    bar.update(10, 2.5, 1234.4)  # 9 steps in 9 s since the compile: 90 steps left = 90 s
    fake_clock[0] = 15.0
    bar.update(11, 2.4, 1000.0)  # not a tenth, 1 s after the last line: no line
    fake_clock[0] = 44.0
    bar.update(12, 2.3, 1000.0)  # 30 s since the last line: a line; 88 x 39 s / 11 = 312 s left
    fake_clock[0] = 105.0
    bar.update(100, 2.0, 900.0)
    bar.close()
    assert _lines(caplog) == [
        "train: compiling the first step (100 of 100 steps to go)",
        "train: compiled and ran the first step in 5.0 s",
        "train step 10/100 (10%): loss 2.5000, 1,234 tok/s, elapsed 0:14, ETA 1:30",
        "train step 12/100 (12%): loss 2.3000, 1,000 tok/s, elapsed 0:44, ETA 5:12",
        "train step 100/100 (100%): loss 2.0000, 900 tok/s, elapsed 1:45",
    ]


def test_without_progress_a_first_and_a_last_line(fake_clock, caplog):
    caplog.set_level(logging.INFO, logger="seqgen")
    bar = Progress("train", 20, start=5, enabled=False)
    bar.compiled(6)
    for step in range(7, 21):
        fake_clock[0] = float(step)
        bar.update(step, 1.5, 100.0)
    bar.close()
    lines = _lines(caplog)
    assert lines[0] == "train: compiling the first step (15 of 20 steps to go)"
    assert lines[1:] == [
        "train: compiled and ran the first step in 0.0 s",
        "train step 20/20 (100%): loss 1.5000, 100 tok/s, elapsed 0:20",
    ]


def test_still_running_speaks_during_one_long_call_and_ends_with_it(caplog):
    import threading
    import time

    from seqgen.progress import still_running

    caplog.set_level(logging.INFO, logger="seqgen")
    before = threading.active_count()
    done = [0]
    with still_running("decoding greedy", lambda: f"{done[0]} done", every=0.05):
        time.sleep(0.5)  # one long call: no loop of ours to print from
        done[0] = 3
        time.sleep(0.5)
    lines = [m for m in _lines(caplog) if m.startswith("decoding greedy: still running after")]
    assert len(lines) >= 3 and lines[0].endswith("(0 done)") and lines[-1].endswith("(3 done)")
    assert threading.active_count() == before
    time.sleep(0.15)
    assert len([m for m in _lines(caplog) if "still running" in m]) == len(lines)  # none after
