"""Data parallelism on 8 virtual CPU devices equals one device (run in a subprocess, since the
device count is fixed when JAX starts): training, and sharded decoding for every decoder
(5 prompts x 3 samples: neither count divides 8, so padding and trimming are exercised)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from seqgen.parallel import maybe_initialize_distributed

pytestmark = pytest.mark.slow  # 8 virtual devices in subprocesses

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


def run_on_8_devices(script: str) -> dict:
    """Run `script` in a fresh Python on 8 virtual CPU devices; its `RESULT{json}` line."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "WANDB_MODE": "disabled",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.fixture(scope="module")
def result():
    return run_on_8_devices(SCRIPT)


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


def test_distributed_initializes_once_per_process(monkeypatch):
    """The jobs of an in-process multirun each call it; JAX allows one initialize."""
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))

    class Cfg:
        distributed = True
        coordinator_address = "10.0.0.1:1234"

    assert maybe_initialize_distributed(Cfg()) is True
    assert maybe_initialize_distributed(Cfg()) is True
    assert calls == [{"coordinator_address": "10.0.0.1:1234", "num_processes": None,
                      "process_id": None}]  # fmt: skip


DECODE_SCRIPT = textwrap.dedent(
    """
    import json, re
    import jax, jax.numpy as jnp, numpy as np
    from omegaconf import OmegaConf
    from types import SimpleNamespace as NS
    from seqgen.decoding import decode
    from seqgen.decoding.sampling import _sample_program
    from seqgen.decoding import processor_table as table
    from seqgen.decoding.common import DecodeRequest, get, prepare, traced_knobs
    from seqgen.decoding.program import ProgramInputs, ProgramOptions
    from seqgen.driver import decode_all
    from seqgen.metrics import Generations, compute, decode_output_inputs, decode_output_records
    from seqgen.parallel import make_mesh

    assert jax.device_count() == 8, jax.devices()
    V, H, B, N, T = 7, 4, 5, 3, 10

    def step_fn(params, carry, tok):  # a one-layer tanh RNN
        h = jnp.tanh(carry @ params["w"] + params["e"][tok])
        return h, h @ params["o"]

    k = jax.random.split(jax.random.key(0), 3)
    params = {"w": jax.random.normal(k[0], (H, H)), "e": jax.random.normal(k[1], (V, H)),
              "o": 2.0 * jax.random.normal(k[2], (H, V))}
    prompts = np.array([[3, 4], [5, 0], [0, 0], [6, 3], [4, 0]], np.int32)
    lengths = np.array([2, 1, 0, 2, 1], np.int32)
    mesh = make_mesh()
    DECODERS = {
        "greedy": {"name": "greedy"},
        "sample": {"name": "sample", "top_p": 0.9},
        "beam": {"name": "beam", "beam_size": 3},
        "stochastic_beam": {"name": "stochastic_beam", "beam_size": 3},
        "diverse_beam": {"name": "diverse_beam", "beam_size": 4, "num_groups": 2,
                         "diversity_penalty": 0.5},
    }

    def compare(a, b):
        res = {"exact": [], "float_diff": {}, "shape": list(b.tokens.shape)}
        for f in a.__dataclass_fields__:
            x, y = getattr(a, f), getattr(b, f)
            if x is None:
                continue
            x, y = np.asarray(x), np.asarray(y)
            if x.dtype.kind == "f":
                fin = np.isfinite(x)
                same_inf = bool(np.array_equal(fin, np.isfinite(y)) and
                                np.array_equal(x[~fin], y[~fin]))
                res["float_diff"][f] = (float(np.max(np.abs(x[fin] - y[fin]), initial=0.0))
                                        if same_inf else "inf mismatch")
            elif np.array_equal(x, y):
                res["exact"].append(f)
        return res

    out = {}
    for name, cfg in DECODERS.items():
        kw = dict(cfg=cfg, max_len=T, num_samples=N, key=jax.random.key(1), vocab_size=V)
        one = decode(step_fn, params, jnp.zeros((B, H)), prompts, lengths, **kw)
        eight = decode(step_fn, params, jnp.zeros((B, H)), prompts, lengths, mesh=mesh, **kw)
        out[name] = compare(one, eight)
        out[name]["sharded"] = len(eight.tokens.sharding.device_set) if hasattr(
            eight.tokens, "sharding") else 0

    # a constraint is replicated and its per-row state and outputs split with the rows
    from seqgen.decoding.regex import regex_constraint
    con = regex_constraint("(ab|c)+", ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c"])
    kw = dict(cfg=DECODERS["beam"], max_len=T, vocab_size=V, constraint=con)
    one = decode(step_fn, params, jnp.zeros((B, H)), None, None, **kw)
    eight = decode(step_fn, params, jnp.zeros((B, H)), None, None, mesh=mesh, **kw)
    out["beam_constraint"] = compare(one, eight)
    out["beam_constraint"]["sharded"] = len(eight.tokens.sharding.device_set)

    # the compiled sharded program has no cross-device communication
    cfg = DECODERS["sample"]
    prep = prepare(DecodeRequest(step_fn, params, jnp.zeros((B, H)), prompts, lengths,
                                 max_len=T, vocab_size=V, key=jax.random.key(1)), num_samples=N)
    hlo = _sample_program.lower_sharded(
        mesh, ProgramInputs(params, jnp.zeros((B, H)), prep.prompts, prep.prompt_lengths,
                            prep.prompt_ids, prep.key, traced_knobs(cfg), None),
        opts=ProgramOptions(step_fn, T, V, "scan"), num_samples=N,
        flags=table.flags_from_cfg(lambda k: get(cfg, k)), greedy=False,
    ).compile().as_text()
    out["collectives"] = sorted(set(re.findall(
        r"all-reduce|all-gather|collective-permute|all-to-all|reduce-scatter", hlo)))
    out["local_rows"] = re.findall(r"s32\\[(\\d+),10\\]", hlo)[:1]

    # the pipeline's decode_all with decode.shard on and off: the same samples and metrics
    # (batch_size 15 = one call of the 5 prompts x 3 samples: the programs compiled above)
    model = NS(step_fn=step_fn, params=params, vocab_size=V,
               init_carry=lambda b, max_len=None: jnp.zeros((b, H)))
    plist = [p[:n] for p, n in zip(prompts, lengths)]
    metrics = {}
    for shard in (False, True):
        pcfg = OmegaConf.create({"max_len": T, "num_samples": N, "batch_size": 15,
                                 "shard": shard})
        dec = OmegaConf.create({"name": "sample", "top_p": 0.9})
        res = decode_all(pcfg, dec, model, plist, jax.random.key(3))
        res["prompt_lengths"] = lengths
        gen = decode_output_inputs(res)
        m = compute(Generations(**gen, max_len=[T - len(p) for p in gen["prompts"]]))
        metrics[shard] = {"tokens": [t.tolist() for t in gen["sequences"]], "metrics": m,
                          "score": decode_output_records(res)["score"]}
    out["pipeline"] = metrics
    print("RESULT" + json.dumps(out))
    """
)

NAMES = ("greedy", "sample", "beam", "stochastic_beam", "diverse_beam", "beam_constraint")


@pytest.fixture(scope="module")
def decode_result():
    return run_on_8_devices(DECODE_SCRIPT)


@pytest.mark.parametrize("name", NAMES)
def test_sharded_decode_equals_one_device(decode_result, name):
    r = decode_result[name]
    assert r["sharded"] == 8  # the output was produced on all 8 devices
    assert r["shape"][0] == 5  # padding rows trimmed
    # integer outputs (tokens, lengths, ended, prompt lengths) are identical bit for bit
    assert {"tokens", "lengths", "ended", "prompt_lengths"} <= set(r["exact"])
    # floats: the same -inf slots; finite values equal up to float32 rounding (XLA's CPU
    # matrix products round differently for a per-device batch of 1 or 2 and of 5, the same
    # tolerance as the chunking invariance test in test_decoding_sampling.py)
    for field, diff in r["float_diff"].items():
        assert diff != "inf mismatch", field
        assert diff < 1e-5, (field, diff)


def test_sharded_program_has_no_communication(decode_result):
    assert decode_result["collectives"] == []
    # each device decodes 1 of the 8 prompts (5 padded to 8): its prompts are int32[1, 10]
    assert decode_result["local_rows"] == ["1"]


def test_pipeline_sharded_equals_one_device(decode_result):
    off, on = decode_result["pipeline"]["false"], decode_result["pipeline"]["true"]
    assert on["tokens"] == off["tokens"] and len(on["tokens"]) == 15
    assert on["score"] == pytest.approx(off["score"], rel=1e-5, abs=1e-5)
    assert on["metrics"].keys() == off["metrics"].keys()
    for key, value in off["metrics"].items():
        assert on["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
