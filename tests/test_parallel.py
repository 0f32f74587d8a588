"""Data parallelism on 8 virtual CPU devices equals one device (run in a subprocess, since the
device count is fixed when JAX starts)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from seqgen.parallel import maybe_initialize_distributed

SCRIPT = textwrap.dedent(
    """
    import json, math
    from dataclasses import dataclass, replace
    import jax, numpy as np
    from flax import nnx
    from seqgen.errors import UserError
    from seqgen.models import LanguageModel
    from seqgen.parallel import make_mesh, shard_batch
    from seqgen.train import train
    from seqgen.data.batching import Batch

    assert jax.device_count() == 8, jax.devices()

    @dataclass(frozen=True)
    class Cfg:
        steps: int = 3
        lr: float = 1e-2
        weight_decay: float = 0.01
        warmup_steps: int = 1
        clip_norm: float = 1.0
        eval_every: int = 3
        eval_batches: int = 2
        checkpoint_every: int = 100
        log_every: int = 1
        data_parallel: bool = False
        progress: bool = False

    def batch(seed, b=16, t=6, v=10):
        rng = np.random.default_rng(seed)
        mask = (rng.random((b, t)) < 0.8).astype(np.float32)
        return Batch(rng.integers(0, v, (b, t)).astype(np.int32),
                     rng.integers(0, v, (b, t)).astype(np.int32), mask)

    class Rec:
        def __init__(self): self.m = []
        def log(self, metrics, step): self.m.append((step, metrics))

    def run(parallel):
        model = LanguageModel(10, cell="gru", embed_size=8, hidden_size=8, num_layers=2,
                              dropout=0.1, rngs=nnx.Rngs(0))
        rec = Rec()
        cfg = replace(Cfg(), data_parallel=parallel)
        model, summary = train(model, iter([batch(i) for i in range(3)]),
                               [batch(10), batch(11)], cfg, tracker=rec, seed=0)
        losses = [m["train/loss"] for _, m in rec.m if "train/loss" in m]
        return jax.tree.leaves(nnx.state(model, nnx.Param)), losses, summary

    p1, l1, s1 = run(False)
    p8, l8, s8 = run(True)
    out = {"loss_1": l1, "loss_8": l8, "valid_1": s1["valid/loss"], "valid_8": s8["valid/loss"],
           "max_param_diff": max(float(np.abs(a - b).max()) for a, b in zip(p1, p8))}

    mesh = make_mesh()
    sharded = shard_batch(batch(0), mesh)
    out["shards"] = len(sharded.inputs.addressable_shards)
    out["shard_rows"] = sharded.inputs.addressable_shards[0].data.shape[0]
    try:
        shard_batch(batch(0, b=12), mesh)
        out["indivisible"] = "no error"
    except UserError as e:
        out["indivisible"] = str(e)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def result():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "WANDB_MODE": "disabled",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_data_parallel_loss_and_update_equal_one_device(result):
    assert len(result["loss_1"]) == 3
    for a, b in zip(result["loss_1"], result["loss_8"]):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6)
    assert result["valid_1"] == pytest.approx(result["valid_8"], rel=1e-6, abs=1e-6)
    assert result["max_param_diff"] < 1e-6


def test_batch_is_split_over_the_mesh(result):
    assert result["shards"] == 8 and result["shard_rows"] == 2
    assert "not divisible" in result["indivisible"]


def test_distributed_is_opt_in():
    class Cfg:
        distributed = False

    assert maybe_initialize_distributed(Cfg()) is False
    assert maybe_initialize_distributed(object()) is False
