"""The decode driver: a run's prompts through one decoder, in chunks of rows, and the
generations cut out of its output (for the metrics, and as `samples.jsonl` records).

The pipeline (`evaluate.py`) and the Python API (`seqgen.api`, which `seqgen-sample` uses)
decode through `decode_all` with `decoder_key`, so the same seed, decoder and prompts give the
same tokens in all of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from seqgen.config import to_dict
from seqgen.decoding import registry
from seqgen.metrics import Generations, decode_output_inputs, decode_output_records

log = logging.getLogger("seqgen")


def decoder_label(dec: Any) -> str:
    """A short display name: the label, else the name and the knobs that differ from default."""
    return registry.label(to_dict(dec))


OUTPUT_FIELDS = (
    "tokens",
    "lengths",
    "ended",
    "logprobs",
    "tempered_logprobs",
    "processed_logprobs",
    "eos_logprob",
    "eos_tempered_logprob",
    "scores",
    "proven",
    "expansions",
    "constraint_logmass",
    "stopped",
    "top_ids",
    "top_logprobs",
    "prompt_logprobs",
)


def decode_chunks(
    decode_cfg: Any,
    dec: Any,
    model: Any,
    prompts: list[np.ndarray],
    key: jax.Array,
    constraint: Any = None,
    unconditional: list[np.ndarray] | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Decode every prompt with one decoder, in chunks of `decode.batch_size` rows: yields
    `(index of the chunk's first prompt, its outputs as numpy)` as each compiled call ends.

    Each row's randomness is folded from its global prompt index and sample index, so chunking
    does not change what a row generates, nor does `decode.shard` (the rows of each call split
    over every device of every host when there is more than one). `decode_cfg`: the `decode`
    config; `constraint`: a `Constraint` or None; `unconditional`: each prompt's context for
    classifier-free guidance (`prompts.unconditional_contexts`; None: BOS only), read only
    when `dec.guidance_scale` != 1.
    """
    from seqgen.decoding import decode
    from seqgen.parallel import describe_devices, make_mesh, replicate

    mesh = make_mesh() if decode_cfg.shard and jax.device_count() > 1 else None
    params = model.params if mesh is None else replicate(model.params, mesh)  # once, not per call

    max_len = int(decode_cfg.max_len)
    carry_len = registry.carry_len(dec, max_len)
    n_out = registry.rows_per_prompt(dec, int(decode_cfg.num_samples))
    per_call = max(1, int(decode_cfg.batch_size) // max(1, n_out))
    n_chunks = -(-len(prompts) // per_call)
    label = decoder_label(dec)
    log.info("decoding %s: %d rows on %s", label, len(prompts) * n_out, describe_devices(mesh))
    t0 = time.time()
    for done, start in enumerate(range(0, len(prompts), per_call), start=1):
        arr, p_len = _padded(prompts[start : start + per_call])
        ctx = None if unconditional is None else _padded(unconditional[start : start + per_call])
        out = decode(
            model.step_fn,
            params,
            model.init_carry(len(p_len), carry_len),  # a KV cache holds the decoder's steps
            arr,
            p_len,
            cfg=dec,
            max_len=max_len,
            num_samples=int(decode_cfg.num_samples),  # rows of the decoders that sample
            key=key,
            vocab_size=model.vocab_size,
            prompt_ids=np.arange(start, start + len(p_len), dtype=np.int32),
            constraint=constraint,
            mesh=mesh,
            loop=decode_cfg.get("loop", "auto"),
            logprobs=int(decode_cfg.get("logprobs", 0)),
            logprobs_mode=str(decode_cfg.get("logprobs_mode", "raw")),
            prompt_logprobs=bool(decode_cfg.get("prompt_logprobs", False)),
            guidance_prompts=None if ctx is None else ctx[0],
            guidance_lengths=None if ctx is None else ctx[1],
        )
        fields = {f: getattr(out, f, None) for f in OUTPUT_FIELDS}
        yield start, {f: np.asarray(v) for f, v in fields.items() if v is not None}
        if n_chunks > 1:  # progress of a long decode, one line per compiled call
            log.info(
                "decoding %s: chunk %d/%d (%d of %d prompts) after %.1f s",
                label,
                done,
                n_chunks,
                min(start + per_call, len(prompts)),
                len(prompts),
                time.time() - t0,
            )


def _padded(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Token rows as int32[n, max(1, longest)] (zeros after each) and their lengths [n]."""
    lengths = np.array([len(p) for p in rows], np.int32)
    arr = np.zeros((len(rows), max(1, int(lengths.max()))), np.int32)
    for i, p in enumerate(rows):
        arr[i, : len(p)] = p
    return arr, lengths


def decode_all(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Every output of `decode_chunks(decode_cfg, dec, model, prompts, key, constraint=None,
    unconditional=None)`, concatenated over the chunks."""
    outs = [out for _, out in decode_chunks(*args, **kwargs)]
    return {f: np.concatenate([o[f] for o in outs], axis=0) for f in outs[0]}


def decoder_key(seed: int, index: int) -> jax.Array:
    """The PRNG key of the `index`-th decoder of a run (0 for a run with one `decoder=`)."""
    return jax.random.fold_in(jax.random.key(int(seed)), index)


def generations(
    decode_cfg: Any,
    dec: Any,
    corpus: Any,
    prompts: list[np.ndarray],
    out: dict[str, Any],
    **fields: Any,
) -> tuple[Generations, dict[str, list], list[str]]:
    """A decode's generations as the metrics count them (a `Generations` bundle with `fields`
    added; the n-best decoders' `best_*` only for them), their records
    (`decode_output_records`) and their texts (prompt included)."""
    out = {**out, "prompt_lengths": np.array([len(p) for p in prompts], np.int32)}
    best_only = _kept_per_prompt(decode_cfg, dec, out["tokens"].shape[1]) == 1
    gen = decode_output_inputs(out, best_only=best_only)
    if not registry.spec(dec).nbest:  # search/mode_found is about n-best lists
        gen = {k: v for k, v in gen.items() if not k.startswith("best_")}
    texts = [
        corpus.vocab.decode(np.concatenate([p, t]))
        for p, t in zip(gen["prompts"], gen["sequences"])
    ]
    budget = [int(decode_cfg.max_len) - len(p) for p in gen["prompts"]]
    bundle = Generations(**gen, texts=texts, max_len=budget, **fields)
    return bundle, decode_output_records(out, best_only=best_only), texts


def sample_records(
    label: str, gen: Generations, rec: dict[str, list], texts: list[str], vocab: Any
) -> list[dict[str, Any]]:
    """One `samples.jsonl` object per generated sequence (`prompt`: the prompt's text)."""
    return [
        {
            "decoder": label,
            "prompt_index": rec["prompt_index"][j],
            "sample_index": rec["sample_index"][j],
            "token_ids": gen.sequences[j].tolist(),
            "prompt": vocab.decode(gen.prompts[j]),
            "text": texts[j],
            "score": rec["score"][j],
            "logprob": float(np.sum(gen.model_logprobs[j]) + gen.eos_model_logprobs[j]),
            **_logprob_records(rec, j),
        }
        for j in range(len(gen.sequences))
    ]


def _logprob_records(rec: dict[str, list], j: int) -> dict[str, Any]:
    """`top_logprobs` (decode.logprobs=K): per generated token (EOS's included when the row
    ended at EOS) the K most probable [token id, log-prob] pairs, most probable first;
    `prompt_logprobs` (decode.prompt_logprobs=true): the model's log-prob of each prompt token."""
    out = {}
    if "prompt_logprobs" in rec:
        out["prompt_logprobs"] = [round(lp, 6) for lp in rec["prompt_logprobs"][j].tolist()]
    if "top_ids" in rec:
        pairs = zip(rec["top_ids"][j].tolist(), rec["top_logprobs"][j].tolist())
        out["top_logprobs"] = [[[i, round(lp, 6)] for i, lp in zip(*p)] for p in pairs]
    return out


def _kept_per_prompt(decode_cfg: Any, dec: Any, n: int) -> int:
    """How many of a prompt's N outputs count as its generations in the metrics
    (`registry.kept_per_prompt`: n-best decoders their best; stochastic beam its best when there
    are prompts, so every decoder and the human row have one continuation per prompt)."""
    return registry.kept_per_prompt(dec, n, prompted=decode_cfg.prompts not in (None, "none"))
