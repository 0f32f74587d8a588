"""Decode with each configured decoder, score the generations, and build the human row.

The human row is held-out data under the same budget: as many sequences as the generations,
cut to the same length limit, and continuing the same prompts when prompts are used.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from seqgen.config import to_dict
from seqgen.errors import UserError

log = logging.getLogger("seqgen")

# Decoders whose N outputs per prompt are an n-best list (only the best counts as "the"
# generation) rather than N samples.
NBEST_DECODERS = ("beam", "diverse_beam", "greedy")


@dataclass
class Prompts:
    prompts: list[np.ndarray]  # token ids without BOS
    human: list[np.ndarray]  # held-out continuations (the human row), cut to the budget
    human_prompts: list[np.ndarray]  # the prompt each human continuation follows
    human_ended: list[bool]


def decoder_label(dec: Any) -> str:
    """A short display name: the label, else the name and the knobs that differ from default."""
    from seqgen.config import DecoderConfig

    d = to_dict(dec)
    if d.get("label"):
        return str(d["label"])
    defaults = to_dict(DecoderConfig())
    name = d["name"]
    relevant = {
        "greedy": (),
        "sample": (
            "temperature",
            "top_k",
            "top_p",
            "typical_p",
            "min_p",
            "epsilon",
            "eta",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
            "no_repeat_ngram_size",
        ),
        "beam": ("beam_size", "length_penalty", "alpha", "no_repeat_ngram_size"),
        "stochastic_beam": ("beam_size", "temperature"),
        "diverse_beam": ("beam_size", "num_groups", "diversity_penalty", "length_penalty"),
    }[name]
    knobs = [f"{k}={d[k]}" for k in relevant if d.get(k) != defaults.get(k)]
    if name in ("beam", "stochastic_beam", "diverse_beam") and "beam_size" not in str(knobs):
        knobs.insert(0, f"beam_size={d['beam_size']}")
    return f"{name}({', '.join(knobs)})" if knobs else name


def make_prompts(cfg: Any, corpus: Any) -> Prompts:
    dcfg = cfg.decode
    max_len = int(dcfg.max_len)
    held = [np.asarray(s, np.int32) for s in corpus.test] or [
        np.asarray(s, np.int32) for s in corpus.valid
    ]
    if not held:
        raise UserError("the held-out split is empty: use a larger corpus or data.test_fraction")
    mode = dcfg.prompts
    n_samples = _samples_per_prompt(cfg)
    if mode in (None, "none"):
        prompts = [np.zeros((0,), np.int32)]
        human_src = [(np.zeros((0,), np.int32), s) for s in held]
    elif mode == "heldout":
        plen = int(dcfg.prompt_len)
        if plen >= max_len:
            raise UserError(
                f"decode.prompt_len={plen} must be < decode.max_len={max_len} to leave room "
                "for a continuation"
            )
        long_enough = [s for s in held if len(s) > plen]
        if not long_enough:
            raise UserError(
                f"no held-out sequence is longer than decode.prompt_len={plen}; lower it"
            )
        chosen = long_enough[: int(dcfg.num_prompts)]
        prompts = [s[:plen] for s in chosen]
        # the prompts' own continuations first, then other held-out sequences' continuations
        human_src = [(s[:plen], s[plen:]) for s in long_enough]
    else:
        prompts = []
        for text in list(mode):
            # a literal "\n" typed on the command line is a line break (ABC headers need them)
            text = str(text).replace("\\n", "\n")
            ids = corpus.vocab.encode(text, unknown=cfg.data.unknown)
            if len(ids) > max_len:
                raise UserError(
                    f"prompt {str(text)[:30]!r} is {len(ids)} tokens, longer than "
                    f"decode.max_len={max_len}"
                )
            prompts.append(np.asarray(ids, np.int32))
        human_src = [(np.zeros((0,), np.int32), s) for s in held]
    n_human = len(prompts) * n_samples
    human, human_prompts, human_ended = [], [], []
    for p, c in human_src[:n_human]:
        budget = max_len - len(p)
        human_prompts.append(p)
        human.append(c[:budget])
        human_ended.append(len(c) < budget)
    return Prompts(prompts, human, human_prompts, human_ended)


def _samples_per_prompt(cfg: Any) -> int:
    return int(cfg.decode.num_samples)


def _n_outputs(dec: Any, num_samples: int) -> int:
    if dec.name in ("beam", "stochastic_beam", "diverse_beam"):
        return int(dec.beam_size)
    if dec.name == "greedy":
        return 1
    return num_samples


def decode_all(
    cfg: Any, dec: Any, model: Any, prompts: list[np.ndarray], key: jax.Array
) -> dict[str, Any]:
    """Decode every prompt with one decoder, in chunks of `decode.batch_size` rows.

    Each row's randomness is folded from its global prompt index and sample index, so chunking
    does not change what a row generates, nor does `decode.shard` (the rows of each call split
    over every device of every host when there is more than one).
    """
    from seqgen.decoding import decode
    from seqgen.parallel import make_mesh, replicate

    mesh = make_mesh() if cfg.decode.shard and jax.device_count() > 1 else None
    params = model.params if mesh is None else replicate(model.params, mesh)  # once, not per call

    max_len = int(cfg.decode.max_len)
    n_out = _n_outputs(dec, int(cfg.decode.num_samples))
    per_call = max(1, int(cfg.decode.batch_size) // max(1, n_out))
    outs = []
    for start in range(0, len(prompts), per_call):
        chunk = prompts[start : start + per_call]
        p_len = np.array([len(p) for p in chunk], np.int32)
        width = max(1, int(p_len.max()))
        arr = np.zeros((len(chunk), width), np.int32)
        for i, p in enumerate(chunk):
            arr[i, : len(p)] = p
        out = decode(
            model.step_fn,
            params,
            model.init_carry(len(chunk)),
            arr,
            p_len,
            cfg=dec,
            max_len=max_len,
            num_samples=n_out if dec.name == "sample" else int(cfg.decode.num_samples),
            key=key,
            vocab_size=model.vocab_size,
            prompt_ids=np.arange(start, start + len(chunk), dtype=np.int32),
            mesh=mesh,
        )
        outs.append(jax.tree.map(np.asarray, out))
    return {
        f: np.concatenate([getattr(o, f) for o in outs], axis=0)
        for f in (
            "tokens",
            "lengths",
            "ended",
            "logprobs",
            "tempered_logprobs",
            "processed_logprobs",
            "eos_logprob",
            "eos_tempered_logprob",
            "scores",
        )
        if hasattr(outs[0], f)
    }


def _extract(out: dict[str, Any], prompts: list[np.ndarray], keep: int) -> dict[str, list]:
    """Continuations (after each prompt, no BOS/EOS/PAD) and their per-token log-probs."""
    res: dict[str, list] = {
        k: []
        for k in (
            "prompt_index",
            "sample_index",
            "prompt",
            "tokens",
            "ended",
            "logprobs",
            "tempered",
            "eos_logprob",
            "eos_tempered",
            "score",
        )
    }
    n = out["tokens"].shape[1]
    for b, p in enumerate(prompts):
        pl = len(p)
        for k in range(min(keep, n)):
            end = int(out["lengths"][b, k])
            res["prompt_index"].append(b)
            res["sample_index"].append(k)
            res["prompt"].append(p)
            res["tokens"].append(out["tokens"][b, k, pl:end].astype(np.int32))
            res["ended"].append(bool(out["ended"][b, k]))
            res["logprobs"].append(out["logprobs"][b, k, pl:end].astype(np.float64))
            res["tempered"].append(out["tempered_logprobs"][b, k, pl:end].astype(np.float64))
            eos = out.get("eos_logprob")
            res["eos_logprob"].append(float(eos[b, k]) if eos is not None else 0.0)
            eos_t = out.get("eos_tempered_logprob")
            res["eos_tempered"].append(
                float(eos_t[b, k]) if eos_t is not None else res["eos_logprob"][-1]
            )
            res["score"].append(float(out["scores"][b, k]))
    return res


def _reference_scores(reference: Any, prompts, conts, ended) -> dict[str, Any]:
    """`gen/ref_ppl` inputs: the continuations scored under the reference model."""
    if reference is None:
        return {}
    from seqgen.experiment import score_sequences

    lps, eos = score_sequences(reference, list(prompts), list(conts), list(ended))
    return {"ref_logprobs": lps, "ref_eos_logprobs": eos}


def evaluate_decoders(
    cfg: Any, corpus: Any, model: Any, reference: Any = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Results (one per decoder, then `human`) and samples (one per generated sequence)."""
    from seqgen.metrics import compute_metrics

    decoders = [cfg.decoder] if cfg.get("decoder") is not None else list(cfg.compare)
    if not decoders:
        raise UserError("nothing to decode: give decoder=NAME or a non-empty `compare` list")
    pr = make_prompts(cfg, corpus)
    if corpus.oracle is not None:
        _warn_impossible_prompts(corpus.oracle, pr.prompts)
    key = jax.random.key(int(cfg.seed))
    is_abc = corpus.name == "folk"
    results, samples = [], []
    common = {
        "seed": int(cfg.seed),
        "oracle": corpus.oracle,
        "self_bleu_max": int(cfg.metrics.self_bleu_max),
        "abc_subset": int(cfg.metrics.abc_subset),
    }
    for i, dec in enumerate(decoders):
        label = decoder_label(dec)
        t0 = time.time()
        out = decode_all(cfg, dec, model, pr.prompts, jax.random.fold_in(key, i))
        t_dec = time.time() - t0
        keep = _kept_per_prompt(cfg, dec, out["tokens"].shape[1])
        gen = _extract(out, pr.prompts, keep)
        texts = [
            corpus.vocab.decode(np.concatenate([p, t]))
            for p, t in zip(gen["prompt"], gen["tokens"])
        ]
        metrics = compute_metrics(
            gen["tokens"],
            ended=gen["ended"],
            tempered_logprobs=gen["tempered"],
            model_logprobs=gen["logprobs"],
            eos_tempered_logprobs=gen["eos_tempered"],
            eos_model_logprobs=gen["eos_logprob"],
            abc_texts=texts if is_abc else None,
            max_len=[int(cfg.decode.max_len) - len(p) for p in gen["prompt"]],
            prompts=gen["prompt"],
            best_sequences=gen["tokens"] if dec.name in NBEST_DECODERS else None,
            **_reference_scores(reference, gen["prompt"], gen["tokens"], gen["ended"]),
            **common,
        )
        metrics["score/mean"] = float(np.mean(gen["score"]))
        metrics["time/decode_s"] = t_dec
        log.info("decoded %-28s %5d sequences in %.1f s", label, len(gen["tokens"]), t_dec)
        results.append({"decoder": {**to_dict(dec), "label": label}, "metrics": metrics})
        for j in range(len(gen["tokens"])):
            samples.append(
                {
                    "decoder": label,
                    "prompt_index": gen["prompt_index"][j],
                    "sample_index": gen["sample_index"][j],
                    "token_ids": gen["tokens"][j].tolist(),
                    "text": texts[j],
                    "score": gen["score"][j],
                    "logprob": float(np.sum(gen["logprobs"][j]) + gen["eos_logprob"][j]),
                }
            )
    results.append(human_row(cfg, corpus, model, pr, common, is_abc, reference))
    return results, samples


def _kept_per_prompt(cfg: Any, dec: Any, n: int) -> int:
    """How many of a prompt's N outputs count as its generations in the metrics.

    n-best decoders (greedy, beam, diverse beam): the best one. Stochastic beam: its K samples
    without replacement when there is no prompt (one prompt, K distinct sequences), else the
    top one by perturbed log-prob, so that every decoder and the human row have one
    continuation per prompt. Sampling: all `decode.num_samples`.
    """
    if dec.name in NBEST_DECODERS:
        return 1
    if dec.name == "stochastic_beam" and cfg.decode.prompts not in (None, "none"):
        return 1
    return n


def _warn_impossible_prompts(oracle: Any, prompts: list[np.ndarray]) -> None:
    from seqgen.metrics.oracle import IMPOSSIBLE, prompt_states

    bad = int((prompt_states(oracle, prompts, len(prompts)) == IMPOSSIBLE).sum())
    if bad:
        log.warning(
            "%d of %d prompts have probability 0 under the DPFSA: their continuations are left "
            "out of oracle/* and search/mode_found (see oracle/impossible_prompt_rate)",
            bad,
            len(prompts),
        )


def human_row(
    cfg: Any,
    corpus: Any,
    model: Any,
    pr: Prompts,
    common: dict,
    is_abc: bool,
    reference: Any = None,
) -> dict[str, Any]:
    from seqgen.experiment import score_sequences
    from seqgen.metrics import compute_metrics

    lps, eos = score_sequences(model, pr.human_prompts, pr.human, pr.human_ended)
    texts = [
        corpus.vocab.decode(np.concatenate([p, t])) for p, t in zip(pr.human_prompts, pr.human)
    ]
    metrics = compute_metrics(
        pr.human,
        ended=pr.human_ended,
        tempered_logprobs=lps,
        model_logprobs=lps,
        eos_tempered_logprobs=eos,
        eos_model_logprobs=eos,
        abc_texts=texts if is_abc else None,
        max_len=[int(cfg.decode.max_len) - len(p) for p in pr.human_prompts],
        prompts=pr.human_prompts,
        **_reference_scores(reference, pr.human_prompts, pr.human, pr.human_ended),
        **common,
    )
    return {"decoder": {"name": "human", "label": "human"}, "metrics": metrics}
