"""Two JAX processes x 4 CPU devices (`python -m seqgen.launch`, gloo) equal one process x 8
devices: the multi-host path, run for real on one machine. Slow (three subprocess runs):
`python -m pytest -m slow tests/test_multiprocess.py`."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, TINY

pytestmark = pytest.mark.slow

# Rows that do not divide the 8 devices (13 samples, 3 beams); a model trained data-parallel.
RUN = [
    *TINY,
    "train.data_parallel=true",
    "train.steps=6",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "decode.num_samples=13",
    "output.num_listen=0",
    "compare=[{name: beam, beam_size: 3}, {name: sample, top_p: 0.9}]",
]


def _run(args: list[str], cache, env: dict | None = None, timeout: int = 600):
    full_env = {
        **os.environ,
        "SEQGEN_CACHE": str(cache),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _params(cache) -> dict[str, np.ndarray]:
    import jax
    import orbax.checkpoint as ocp

    from seqgen.checkpoint import ModelCache

    root = cache / "models"
    (key,) = [p.name for p in root.iterdir() if p.is_dir()]
    ModelCache(root).check(key)  # complete and as its checksums say: written once, not torn
    tree = ocp.StandardCheckpointer().restore(root / key / "model")
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree.leaves_with_path(tree)}


def test_two_processes_equal_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    eight = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    ref = _run(["-m", "seqgen.run", *RUN, f"hydra.run.dir={one}"], tmp_path / "c1", eight)
    assert ref.returncode == 0, ref.stderr[-3000:]
    launch = ["-m", "seqgen.launch", "--processes", "2", "--devices", "4"]
    res = _run([*launch, *RUN, f"hydra.run.dir={two}"], tmp_path / "c2")
    assert res.returncode == 0, res.stderr[-3000:]

    # training: the same parameters to float32 rounding (the all-reduce crosses processes)
    p1, p2 = _params(tmp_path / "c1"), _params(tmp_path / "c2")
    assert p1.keys() == p2.keys()
    for k in p1:
        np.testing.assert_allclose(p2[k], p1[k], rtol=1e-5, atol=1e-6, err_msg=k)

    # decoding: every row once, the same tokens (so lengths) bit for bit, scores to 1e-5
    s1, s2 = _lines(one / "samples.jsonl"), _lines(two / "samples.jsonl")
    assert len(s2) == len(s1) == 1 + 13  # beam's best of its 3 beams, 13 samples
    for a, b in zip(s1, s2):
        assert (a["decoder"], a["sample_index"], a["token_ids"]) == (
            b["decoder"],
            b["sample_index"],
            b["token_ids"],
        )
        assert abs(a["score"] - b["score"]) < 1e-5 and abs(a["logprob"] - b["logprob"]) < 1e-5

    # metrics: computed once (one line per decoder + human), over every row (same values; the
    # lengths and EOS rate are exact, so `ended` agrees row for row in count)
    r1, r2 = _lines(one / "results.jsonl"), _lines(two / "results.jsonl")
    assert [r["decoder"]["label"] for r in r2] == [r["decoder"]["label"] for r in r1]
    for a, b in zip(r1, r2):
        for k, v in a["metrics"].items():
            if k.startswith("time/"):
                continue
            w = b["metrics"][k]  # NaN is written as null
            assert (v is None and w is None) or w == pytest.approx(v, rel=1e-5, abs=1e-6), k
        assert b["metrics"]["length/eos_rate"] == a["metrics"]["length/eos_rate"]

    # the log says where each phase ran; only process 0 wrote the run folder
    log = (two / "run.log").read_text()
    assert "training on 8 devices (cpu), 2 processes" in log
    assert "decoding beam(beam_size=3): 3 rows on 8 devices (cpu), 2 processes" in log
    assert "training on 8 devices (cpu)\n" in (one / "run.log").read_text()
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())

    # the entry is loaded, and restored by both processes, when a run asks for it again
    again = [*RUN, "compare=[{name: greedy}]", f"hydra.run.dir={tmp_path / 'again'}"]
    res = _run([*launch, *again], tmp_path / "c2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "model: loaded from cache" in (tmp_path / "again" / "run.log").read_text()
    assert _params(tmp_path / "c2").keys() == p2.keys()  # still the one entry


FAIL = textwrap.dedent(
    """
    import sys
    import jax
    from jax.experimental import multihost_utils
    from seqgen.parallel import exit_process, maybe_initialize_distributed

    class Cfg:
        distributed = True

    maybe_initialize_distributed(Cfg())
    if jax.process_index() == 1:  # a crash in this one only, ended as seqgen.run ends it
        print("error: what went wrong in process 1", file=sys.stderr, flush=True)
        exit_process(3)
    multihost_utils.sync_global_devices("never reached by process 1")  # waits for it
    """
)


def test_a_failure_in_one_process_ends_both(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAIL)
    code = f"import seqgen.launch as L; raise SystemExit(L.launch([], program=[{str(script)!r}]))"
    res = _run(["-c", code], tmp_path / "cache", timeout=120)  # a hang fails, not waits
    assert res.returncode == 3, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-2:] == [
        "error: what went wrong in process 1",  # the failed process's reason, then the launcher's
        "error: process 1 of 2 exited with status 3; stopped the others",
    ]
    assert "Traceback" not in res.stderr  # process 0 was stopped, not left to time out
