"""Decode with each configured decoder, score the generations, and build the human row.

The human row is held-out data under the same budget: as many sequences as the generations,
cut to the same length limit, and continuing the same prompts when prompts are used.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from seqgen.config import to_dict
from seqgen.decoding import registry
from seqgen.decoding.steering import resolve as resolve_steering
from seqgen.errors import UserError
from seqgen.metrics import Generations, compute, decode_output_inputs, decode_output_records
from seqgen.progress import still_running
from seqgen.scoring import score_sequences, step_logits

log = logging.getLogger("seqgen")


@dataclass
class Prompts:
    prompts: list[np.ndarray]  # token ids without BOS
    human: list[np.ndarray]  # held-out continuations (the human row), cut to the budget
    human_prompts: list[np.ndarray]  # the prompt each human continuation follows
    human_ended: list[bool]


def decoder_label(dec: Any) -> str:
    """A short display name: the label, else the name and the knobs that differ from default."""
    return registry.label(to_dict(dec))


def make_prompts(cfg: Any, corpus: Any) -> Prompts:
    """The prompts to decode and the human row (held-out continuations) that matches them.

    `decode.prompts=heldout` takes openings of held-out (test, else valid) data, at most
    `decode.num_prompts`, each a distinct prompt, in held-out order (`_openings`):

    - sequences (DPFSA strings): the first `decode.prompt_len` tokens of a sequence longer
      than that;
    - folk tunes: the tune's whole header (M:, L:, K: lines) plus its first
      `decode.prompt_len` tokens of music (characters at level char, ABC tokens at level
      abc), from tunes with music left after it and a prompt shorter than `decode.max_len`;
    - text streams: `decode.prompt_len` tokens from a line start, followed in the text by the
      full budget of `decode.max_len` minus the prompt (or, with EOS in the stream, by the
      end of its line); the spans of different prompts do not overlap.

    When fewer than `decode.num_prompts` qualify, one warning says how many and why. The
    human row continues the chosen openings first, then further held-out openings (as many
    sequences as the generations), each cut at the generations' budget.
    """
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
        human_src = _openings(corpus, held, 0, max_len)
    elif mode == "heldout":
        plen = int(dcfg.prompt_len)
        if plen >= max_len:
            raise UserError(
                f"decode.prompt_len={plen} must be < decode.max_len={max_len} to leave room "
                "for a continuation"
            )
        openings = _openings(corpus, held, plen, max_len)
        distinct = _distinct(openings)
        if not distinct:
            raise UserError(
                f"no held-out opening qualifies for decode.prompt_len={plen} and "
                f"decode.max_len={max_len} ({_why(corpus, plen, max_len)}); lower "
                "decode.prompt_len or raise decode.max_len"
            )
        want = int(dcfg.num_prompts)
        if len(distinct) < want:
            log.warning(
                "decode.num_prompts=%d, but only %d distinct held-out openings qualify (%s): "
                "decoding %d prompts",
                want,
                len(distinct),
                _why(corpus, plen, max_len),
                len(distinct),
            )
        chosen = distinct[:want]
        prompts = [openings[i][0] for i in chosen]
        # the prompts' own continuations first, then other held-out openings' continuations
        taken = set(chosen)
        human_src = [openings[i] for i in chosen]
        human_src += [o for i, o in enumerate(openings) if i not in taken]
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
        human_src = _openings(corpus, held, 0, max_len)
    human_src = human_src[: len(prompts) * n_samples]
    return Prompts(
        prompts,
        [c for _, c, _ in human_src],
        [p for p, _, _ in human_src],
        [e for _, _, e in human_src],
    )


def _why(corpus: Any, plen: int, max_len: int) -> str:
    """Why an opening qualifies, in words, for the warning and the error."""
    if corpus.stream:
        follow = "the end of its line or " if corpus.has_eos else ""
        return (
            f"{plen} tokens from a line start followed by {follow}{max_len - plen} more "
            "tokens, not overlapping another opening"
        )
    if corpus.name == "folk":
        return (
            f"a tune's header plus {plen} tokens of music, with music after it and the "
            f"prompt shorter than decode.max_len={max_len}"
        )
    return f"a sequence longer than decode.prompt_len={plen} tokens"


def _openings(
    corpus: Any, held: list[np.ndarray], plen: int, max_len: int
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """(prompt, human continuation, ended) for every qualifying held-out opening, in order.

    The continuation is cut at the budget `max_len - len(prompt)`; `ended` says that EOS
    follows it within the budget.
    """
    if corpus.stream:
        out = _stream_openings(corpus, held, plen, max_len)
    else:
        out = []
        for s in held:
            head = _header_length(corpus, s) if plen > 0 else 0
            p, c = s[: head + plen], s[head + plen :]
            if plen > 0 and (len(c) == 0 or len(p) >= max_len):
                continue
            budget = max_len - len(p)
            out.append((p, c[:budget], len(c) < budget))
    return out


def _distinct(openings: list[tuple[np.ndarray, np.ndarray, bool]]) -> list[int]:
    """Indices of the first opening of each distinct prompt."""
    first: dict[bytes, int] = {}
    for i, (p, _, _) in enumerate(openings):
        first.setdefault(p.tobytes(), i)
    return list(first.values())


def _header_length(corpus: Any, seq: np.ndarray) -> int:
    """Folk tunes: tokens of the tune's header (M:, L:, K:); other sequences have none."""
    if corpus.name != "folk":
        return 0
    from seqgen.data.folk import header_length

    return header_length(corpus.vocab.decode_symbols(seq), corpus.vocab.level)


def _stream_openings(
    corpus: Any, held: list[np.ndarray], plen: int, max_len: int
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Openings of a text stream: line starts (a run's start, or after a newline / EOS) of
    non-empty lines, each followed by the full budget of text, or with EOS in the stream by
    the end of its line within the budget; scanned in order, spans never overlap."""
    from seqgen.tokens import EOS_ID

    newline = {EOS_ID}
    if "\n" in corpus.vocab:
        newline.add(corpus.vocab.id_of("\n"))
    out = []
    for s in held:
        breaks = np.isin(s, list(newline))
        starts = np.flatnonzero(np.concatenate([[True], breaks[:-1]]) & ~breaks)
        eos_at = np.flatnonzero(s == EOS_ID)
        free = 0  # the next opening starts at or after this position
        for j in map(int, starts):
            if j < free:
                continue
            c0 = j + plen
            k = int(np.searchsorted(eos_at, j))
            nxt = int(eos_at[k]) if k < len(eos_at) else len(s) + max_len  # the line's EOS
            if nxt < j + max_len:
                if nxt <= c0:  # the line ends inside the prompt
                    continue
                cont, ended, free = s[c0:nxt], True, nxt + 1
            elif j + max_len <= len(s):
                cont, ended, free = s[c0 : j + max_len], False, j + max_len
            else:
                continue
            out.append((s[j:c0], cont, ended))
    return out


def _samples_per_prompt(cfg: Any) -> int:
    return int(cfg.decode.num_samples)


def build_constraint(cfg: Any, corpus: Any, prompts: list[np.ndarray]) -> Any:
    """The `constraint` config as an automaton over the corpus' vocabulary (None for none)."""
    con = cfg.get("constraint")
    name = "none" if con is None else con.name
    if name == "regex":
        from seqgen.decoding.regex import regex_constraint

        return regex_constraint(str(con.pattern), corpus.vocab.symbols)
    if name == "meter":
        from seqgen.data.meter import meter_constraint

        return meter_constraint(corpus.vocab.symbols, prompts)
    return None


def accepted_prompts(constraint: Any, pr: Prompts) -> tuple[Prompts, float]:
    """The prompts (and human rows) whose prompt the constraint accepts as a prefix, and the
    share of prompts left out (a held-out opening may break the constraint, e.g. a short bar)."""
    from seqgen.decoding.constraint import prefix_state

    def ok(p: np.ndarray) -> bool:
        return prefix_state(constraint, p) >= 0

    keep = [p for p in pr.prompts if ok(p)]
    if not keep:
        raise UserError(
            "the constraint rejects every prompt; allowed: prompts it accepts as a prefix "
            "(a smaller decode.prompt_len, or prompts that follow it)"
        )
    human = [i for i, p in enumerate(pr.human_prompts) if ok(p)]
    left_out = 1.0 - len(keep) / len(pr.prompts)
    if left_out > 0:
        log.warning("the constraint rejects %.1f%% of the prompts: left out", 100 * left_out)
    return (
        Prompts(
            prompts=keep,
            human=[pr.human[i] for i in human],
            human_prompts=[pr.human_prompts[i] for i in human],
            human_ended=[pr.human_ended[i] for i in human],
        ),
        left_out,
    )


def decode_all(
    cfg: Any,
    dec: Any,
    model: Any,
    prompts: list[np.ndarray],
    key: jax.Array,
    constraint: Any = None,
) -> dict[str, Any]:
    """Decode every prompt with one decoder, in chunks of `decode.batch_size` rows.

    Each row's randomness is folded from its global prompt index and sample index, so chunking
    does not change what a row generates, nor does `decode.shard` (the rows of each call split
    over every device of every host when there is more than one). `constraint`: a `Constraint`
    or None.
    """
    from seqgen.decoding import decode
    from seqgen.parallel import make_mesh, replicate

    mesh = make_mesh() if cfg.decode.shard and jax.device_count() > 1 else None
    params = model.params if mesh is None else replicate(model.params, mesh)  # once, not per call

    max_len = int(cfg.decode.max_len)
    n_out = registry.rows_per_prompt(dec, int(cfg.decode.num_samples))
    per_call = max(1, int(cfg.decode.batch_size) // max(1, n_out))
    n_chunks = -(-len(prompts) // per_call)
    outs = []
    t0 = time.time()
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
            num_samples=int(cfg.decode.num_samples),  # rows of the decoders that sample
            key=key,
            vocab_size=model.vocab_size,
            prompt_ids=np.arange(start, start + len(chunk), dtype=np.int32),
            constraint=constraint,
            mesh=mesh,
            loop=cfg.decode.get("loop", "auto"),
            logprobs=int(cfg.decode.get("logprobs", 0)),
            logprobs_mode=str(cfg.decode.get("logprobs_mode", "raw")),
            prompt_logprobs=bool(cfg.decode.get("prompt_logprobs", False)),
        )
        outs.append(jax.tree.map(np.asarray, out))
        if n_chunks > 1:  # progress of a long decode, one line per compiled call
            log.info(
                "decoding %s: chunk %d/%d (%d of %d prompts) after %.1f s",
                decoder_label(dec),
                len(outs),
                n_chunks,
                min(start + per_call, len(prompts)),
                len(prompts),
                time.time() - t0,
            )
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
            "proven",
            "expansions",
            "constraint_logmass",
            "stopped",
            "top_ids",
            "top_logprobs",
            "prompt_logprobs",
        )
        if getattr(outs[0], f, None) is not None
    }


def _reference_scores(reference: Any, gen: Generations) -> Generations:
    """The generations with their log-probs under the reference model (`gen/ref_ppl`)."""
    if reference is None:
        return gen
    lps, eos = score_sequences(reference, list(gen.prompts), list(gen.sequences), list(gen.ended))
    return dataclasses.replace(gen, ref_logprobs=lps, ref_eos_logprobs=eos)


def evaluate_decoders(
    cfg: Any,
    corpus: Any,
    model: Any,
    reference: Any = None,
    on_result: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Results (one per decoder, then `human`) and samples (one per generated sequence).

    `on_result(result, samples)` is called as soon as each decoder (then the human row, with no
    samples) is done, so a caller can write it before the next decoder starts.
    """
    decoders = [cfg.decoder] if cfg.get("decoder") is not None else list(cfg.compare)
    if not decoders:
        raise UserError("nothing to decode: give decoder=NAME or a non-empty `compare` list")
    pr = make_prompts(cfg, corpus)
    if corpus.oracle is not None:
        _warn_impossible_prompts(corpus.oracle, pr.prompts)
    constraint = build_constraint(cfg, corpus, pr.prompts)
    left_out = None  # constraint/prompts_left_out
    if constraint is not None:
        pr, left_out = accepted_prompts(constraint, pr)
    results, samples = [], []
    beams: list[tuple[int, Generations]] = []  # the mode-search rows, for search/beam_error
    exact_mode = None
    common = metric_settings(cfg, corpus, pr)
    for i, dec in enumerate(decoders):
        label = decoder_label(dec)
        t0 = time.time()
        key = decoder_key(int(cfg.seed), i)
        with still_running(f"decoding {label}"):  # a compile or one long chunk: not silent
            steered = resolve_steering(dec, corpus.vocab)  # texts as the vocabulary's ids
            out = decode_all(cfg, steered, model, pr.prompts, key, constraint)
        t_dec = time.time() - t0
        fields = {
            "decode_s": t_dec,
            "prompts_left_out": left_out,
            "decoder": dec,  # with step_logits: the sampler's kept sets (oracle/trunc_*)
            "step_logits": functools.partial(step_logits, model),
            **registry.metric_inputs(dec, out),
        }
        fields["label"] = label
        gen, rec, texts = generations(cfg, dec, corpus, pr.prompts, out, **fields, **common)
        gen = _reference_scores(reference, gen)
        if registry.spec(dec).mode_search:
            beams.append((len(results), gen))
        if registry.spec(dec).finds_mode:  # exact search: the mode each beam is held to
            exact_mode = (gen.sequence_logprobs(), gen.proven)
        log.info("decoded %-28s %5d sequences in %.1f s", label, gen.num_sequences, t_dec)
        t0 = time.time()
        metrics = compute(gen)
        log.info(
            "metrics %-28s %5d sequences in %.1f s", label, gen.num_sequences, time.time() - t0
        )
        results.append({"decoder": {**to_dict(dec), "label": label}, "metrics": metrics})
        first = len(samples)
        samples += sample_records(label, gen, rec, texts, corpus.vocab)
        if on_result is not None:
            on_result(results[-1], samples[first:])
    if exact_mode is not None:  # rows that compare decoders; write_outputs rewrites the file
        for i, gen in beams:
            gen = dataclasses.replace(gen, exact_mode=exact_mode)
            results[i]["metrics"].update(compute(gen, across=True))
    t0 = time.time()
    with still_running("scoring the human row"):
        results.append(human_row(cfg, corpus, model, pr, common, reference))
    log.info("metrics %-28s %5d sequences in %.1f s", "human", len(pr.human), time.time() - t0)
    if on_result is not None:
        on_result(results[-1], [])
    return results, samples


def metric_settings(cfg: Any, corpus: Any, pr: Prompts) -> dict[str, Any]:
    """What every `Generations` bundle of a run shares: the metrics' settings, the corpus'
    name, vocabulary and oracle, and the human continuations (the reference)."""
    return {
        "seed": int(cfg.seed),
        "self_bleu_max": int(cfg.metrics.self_bleu_max),
        "abc_subset": int(cfg.metrics.abc_subset),
        "abc_timeout_s": float(cfg.metrics.abc_timeout_s),
        "dataset": corpus.name,
        "vocab": corpus.vocab,
        "oracle": corpus.oracle,
        "reference": pr.human,
    }


def decoder_key(seed: int, index: int) -> jax.Array:
    """The PRNG key of the `index`-th decoder of a run (0 for a run with one `decoder=`)."""
    return jax.random.fold_in(jax.random.key(int(seed)), index)


def generations(
    cfg: Any,
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
    best_only = _kept_per_prompt(cfg, dec, out["tokens"].shape[1]) == 1
    gen = decode_output_inputs(out, best_only=best_only)
    if not registry.spec(dec).nbest:  # search/mode_found is about n-best lists
        gen = {k: v for k, v in gen.items() if not k.startswith("best_")}
    texts = [
        corpus.vocab.decode(np.concatenate([p, t]))
        for p, t in zip(gen["prompts"], gen["sequences"])
    ]
    budget = [int(cfg.decode.max_len) - len(p) for p in gen["prompts"]]
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


def _kept_per_prompt(cfg: Any, dec: Any, n: int) -> int:
    """How many of a prompt's N outputs count as its generations in the metrics
    (`registry.kept_per_prompt`: n-best decoders their best; stochastic beam its best when there
    are prompts, so every decoder and the human row have one continuation per prompt)."""
    return registry.kept_per_prompt(dec, n, prompted=cfg.decode.prompts not in (None, "none"))


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
    cfg: Any, corpus: Any, model: Any, pr: Prompts, common: dict, reference: Any = None
) -> dict[str, Any]:
    """The human row: the metrics of the held-out continuations (`make_prompts`), scored by
    the model (teacher-forced log-probs: `gen/ppl` and `gen/ppl_model` are the model's
    perplexity on them, t = 1, as in Holtzman et al. 2020's Human row). Held-out text is no
    n-best list and has no decoder score, so `search/mode_found` and `score/mean` do not
    apply."""
    lps, eos = score_sequences(model, pr.human_prompts, pr.human, pr.human_ended)
    texts = [
        corpus.vocab.decode(np.concatenate([p, t])) for p, t in zip(pr.human_prompts, pr.human)
    ]
    gen = Generations(
        pr.human,
        ended=pr.human_ended,
        prompts=pr.human_prompts,
        tempered_logprobs=lps,
        eos_tempered_logprobs=eos,
        model_logprobs=lps,
        eos_model_logprobs=eos,
        texts=texts,
        max_len=[int(cfg.decode.max_len) - len(p) for p in pr.human_prompts],
        label="human",
        **common,
    )
    metrics = compute(_reference_scores(reference, gen))
    return {"decoder": {"name": "human", "label": "human"}, "metrics": metrics}
