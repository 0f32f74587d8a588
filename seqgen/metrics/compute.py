"""`compute_metrics`: every metric that applies to one set of generations, as a flat dict.

Also `human_metrics` (the same metrics on held-out text, the "Human" row of Holtzman et al.
2020's Table 1), `length_metrics`, and `decode_output_inputs`, which turns a decoder's
`DecodeOutput` (duck-typed, `[B, N, T]` arrays) into the arguments of `compute_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from seqgen.errors import UserError
from seqgen.metrics._packed import SequencesLike, pack
from seqgen.metrics.abc import ABC_SUBSET, ABC_TIMEOUT_S, abc_metrics
from seqgen.metrics.diversity import SELF_BLEU_SAMPLES, ZIPF_TOP_TYPES, diversity_metrics
from seqgen.metrics.oracle import oracle_metrics
from seqgen.metrics.perplexity import generation_perplexity
from seqgen.metrics.repetition import repetition_metrics

ArrayLike = Sequence[float] | np.ndarray


def length_metrics(
    lengths: Sequence[int] | np.ndarray, ended: Sequence[bool] | np.ndarray | None = None
) -> dict[str, float]:
    """`length/mean`, `length/std` (population std, ddof = 0) of the generated continuation
    lengths in tokens (EOS not counted), and `length/eos_rate` = share of sequences that
    emitted EOS before max_len (only when `ended` is given)."""
    lens = np.asarray(lengths, np.float64)
    out = {
        "length/mean": float(lens.mean()) if lens.size else math.nan,
        "length/std": float(lens.std()) if lens.size else math.nan,
    }
    if ended is not None:
        ended_arr = np.asarray(ended, bool).reshape(-1)
        out["length/eos_rate"] = float(ended_arr.mean()) if ended_arr.size else math.nan
    return out


def compute_metrics(
    sequences: SequencesLike,
    *,
    lengths: Sequence[int] | np.ndarray | None = None,
    ended: Sequence[bool] | np.ndarray | None = None,
    tempered_logprobs: Sequence[np.ndarray] | np.ndarray | None = None,
    eos_tempered_logprobs: ArrayLike | None = None,
    model_logprobs: Sequence[np.ndarray] | np.ndarray | None = None,
    eos_model_logprobs: ArrayLike | None = None,
    ref_logprobs: Sequence[np.ndarray] | np.ndarray | None = None,
    ref_eos_logprobs: ArrayLike | None = None,
    oracle: Any = None,
    prompts: SequencesLike | None = None,
    best_sequences: SequencesLike | None = None,
    best_ended: Sequence[bool] | np.ndarray | None = None,
    best_prompts: SequencesLike | None = None,
    abc_texts: Sequence[str] | None = None,
    abc_subset: int = ABC_SUBSET,
    abc_timeout_s: float = ABC_TIMEOUT_S,
    label: str = "",
    seed: int = 0,
    self_bleu_max: int = SELF_BLEU_SAMPLES,
    zipf_top: int = ZIPF_TOP_TYPES,
    max_len: int | Sequence[int] | np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics that apply to one set of N generated continuations.

    Inputs (continuations only: the ids AFTER the prompt, no BOS / EOS / PAD):
    - `sequences`: list of N 1-D int arrays, or padded `[N, T]` with `lengths[N]`;
    - `ended` bool[N]: the sequence emitted EOS (before max_len). Needed for `length/eos_rate`,
      the oracle metrics and for counting EOS in the perplexities;
    - `tempered_logprobs` (-> `gen/ppl`), `model_logprobs` (-> `gen/ppl_model`),
      `ref_logprobs` (-> `gen/ref_ppl`): per-token log-probs aligned with `sequences` (same
      layout: list of 1-D arrays, or `[N, T]` read up to `lengths`); each with the EOS
      log-prob of ended sequences in `eos_tempered_logprobs`, `eos_model_logprobs`,
      `ref_eos_logprobs` (float[N], entries of non-ended sequences ignored);
    - `oracle` (-> `oracle/*`), scoring each sequence given its prompt in `prompts` (one per
      sequence, ids without BOS; None = unconditional); with `best_sequences` / `best_ended`
      / `best_prompts`, the top beam per prompt and that prompt (-> `search/mode_found`;
      `best_ended` and `best_prompts` default to `ended` and `prompts` when `best_sequences`
      has one entry per sequence, i.e. the generations are themselves the best beams);
    - `abc_texts`: decoded ABC tunes (-> `abc/*`, on a seeded subset of `abc_subset`, each
      tune given `abc_timeout_s` seconds of music21; `label` names them in the log line);
    - `seed`: Self-BLEU's hypothesis subset (at most `self_bleu_max`) and the ABC subset;
    - `max_len` (int or one per sequence): the continuation budget, only checked
      (a continuation longer than its budget is an error).
    Always computed: `diversity/*`, `zipf`, `repetition/*`, `length/mean`, `length/std`.
    Returns {key: float}; NaN where a metric is undefined (e.g. Self-BLEU of one sequence).
    """
    packed = pack(sequences, lengths)
    n = packed.num_sequences
    if ended is not None and np.asarray(ended).reshape(-1).shape != (n,):
        raise UserError(f"ended must have one flag per sequence ({n} sequences)")
    if max_len is not None and (packed.lengths > np.asarray(max_len)).any():
        raise ValueError("a continuation is longer than its max_len budget")
    if oracle is not None and best_sequences is not None and best_ended is None:
        if ended is None or len(best_sequences) != n:
            raise UserError("search/mode_found needs best_ended (one flag per best sequence)")
        best_ended = ended
    if oracle is not None and best_sequences is not None and best_prompts is None:
        if prompts is not None and len(best_sequences) != n:
            raise UserError("search/mode_found needs best_prompts (one per best sequence)")
        best_prompts = prompts
    out: dict[str, float] = {}
    ppl_inputs = {
        "gen/ppl": (tempered_logprobs, eos_tempered_logprobs),
        "gen/ppl_model": (model_logprobs, eos_model_logprobs),
        "gen/ref_ppl": (ref_logprobs, ref_eos_logprobs),
    }
    for key, (logprobs, eos) in ppl_inputs.items():
        if logprobs is not None:
            out[key] = generation_perplexity(
                logprobs, lengths=packed.lengths, ended=ended, eos_logprob=eos
            )
    out.update(
        diversity_metrics(packed, seed=seed, self_bleu_samples=self_bleu_max, zipf_top=zipf_top)
    )
    out.update(repetition_metrics(packed))
    out.update(length_metrics(packed.lengths, ended))
    if oracle is not None:
        if ended is None:
            raise UserError("oracle metrics need `ended` (whether each sequence emitted EOS)")
        out.update(
            oracle_metrics(
                oracle,
                packed.padded(0),
                ended,
                lengths=packed.lengths,
                prompts=prompts,
                best_sequences=best_sequences,
                best_ended=best_ended,
                best_prompts=best_prompts,
            )
        )
    if abc_texts is not None:
        what = f"ABC checks {label}".rstrip()
        out.update(
            abc_metrics(abc_texts, subset=abc_subset, seed=seed, timeout_s=abc_timeout_s, what=what)
        )
    return out


def human_metrics(
    sequences: SequencesLike,
    *,
    lengths: Sequence[int] | np.ndarray | None = None,
    ended: Sequence[bool] | np.ndarray | None = None,
    logprobs: Sequence[np.ndarray] | np.ndarray | None = None,
    eos_logprobs: ArrayLike | None = None,
    oracle: Any = None,
    abc_texts: Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """The same metrics on held-out (human) sequences: the reference row.

    Held-out sequences are complete, so `ended` defaults to all True. Without `logprobs`
    there is no `gen/ppl`; with the model's teacher-forced `logprobs` (+ `eos_logprobs`) of the
    held-out text, `gen/ppl` and `gen/ppl_model` are both the model's perplexity on it
    (t = 1), as in Holtzman et al. 2020's Human row. `search/mode_found` does not apply.
    """
    packed = pack(sequences, lengths)
    if ended is None:
        ended = np.ones(packed.num_sequences, bool)
    return compute_metrics(
        packed.padded(0),
        lengths=packed.lengths,
        ended=ended,
        tempered_logprobs=logprobs,
        eos_tempered_logprobs=eos_logprobs,
        model_logprobs=logprobs,
        eos_model_logprobs=eos_logprobs,
        oracle=oracle,
        abc_texts=abc_texts,
        **kwargs,
    )


def _output_reader(out: Any, best_only: bool):
    """`get(name)` (attribute or key, as numpy; None if absent) and `cut(arr, extra)`: the
    continuation of every selected row of a `[B, N, T]` array, `extra[i]` positions longer."""

    def get(name: str) -> np.ndarray | None:
        value = out.get(name) if isinstance(out, dict) else getattr(out, name, None)
        return None if value is None else np.asarray(value)

    columns = slice(0, 1) if best_only else slice(None)
    b, n = get("tokens")[:, columns].shape[:2]
    starts = np.repeat(get("prompt_lengths"), n)
    ends = get("lengths")[:, columns].reshape(-1)

    def cut(arr: np.ndarray, extra: np.ndarray | int = 0) -> list[np.ndarray]:
        rows = arr[:, columns].reshape(b * n, -1)
        stops = ends + extra
        return [rows[i, starts[i] : stops[i]] for i in range(b * n)]

    return get, columns, b, n, cut


def decode_output_inputs(out: Any, *, best_only: bool = False) -> dict[str, Any]:
    """`compute_metrics` keyword arguments from a decoder's `DecodeOutput` (an object with
    attributes, or a dict with the same keys).

    Reads `tokens [B, N, T]` (prompt, continuation, PAD), `lengths [B, N]` (incl. prompt,
    excl. EOS), `prompt_lengths [B]`, `ended [B, N]`, and when present `logprobs`,
    `tempered_logprobs` `[B, N, T]` (0 on prompt/pad), `eos_logprob [B, N]` and
    `eos_tempered_logprob [B, N]`. Continuations are cut out of every row
    (order: prompt-major, B * N sequences), with their `prompts`; `best_sequences` /
    `best_ended` / `best_prompts` are column 0 (beams are best first). With `best_only`, only
    column 0 is used as the generations too. Log-probs come back as float64, so that a
    sequence's log-prob is summed in double precision wherever it is summed.
    """
    get, columns, b, n, cut = _output_reader(out, best_only)
    tokens, lengths, prompt_lengths = get("tokens"), get("lengths"), get("prompt_lengths")
    ended = get("ended").astype(bool)
    kwargs: dict[str, Any] = {
        "sequences": cut(tokens),
        "ended": ended[:, columns].reshape(-1),
        "prompts": [tokens[i // n, 0, : prompt_lengths[i // n]] for i in range(b * n)],
        "best_sequences": [tokens[i, 0, prompt_lengths[i] : lengths[i, 0]] for i in range(b)],
        "best_ended": ended[:, 0],
        "best_prompts": [tokens[i, 0, : prompt_lengths[i]] for i in range(b)],
    }
    for attr, key in (("tempered_logprobs", "tempered_logprobs"), ("logprobs", "model_logprobs")):
        if get(attr) is not None:
            kwargs[key] = [row.astype(np.float64) for row in cut(get(attr))]
    for attr, key in (
        ("eos_logprob", "eos_model_logprobs"),
        ("eos_tempered_logprob", "eos_tempered_logprobs"),
    ):
        if get(attr) is not None:
            kwargs[key] = get(attr)[:, columns].reshape(-1)
    return kwargs


def decode_output_records(out: Any, *, best_only: bool = False) -> dict[str, list]:
    """What a decoder's output says of each generation besides the metrics' inputs, in the
    order of `decode_output_inputs`: `prompt_index`, `sample_index` (its column), `score`
    (of `scores [B, N]`) and, when the output has one, `constraint_logmass` cut to the
    continuation plus its EOS position when it ended (`decoding.constraint`)."""
    get, columns, b, n, cut = _output_reader(out, best_only)
    records: dict[str, list] = {
        "prompt_index": [i // n for i in range(b * n)],
        "sample_index": [i % n for i in range(b * n)],
        "score": [float(s) for s in get("scores")[:, columns].reshape(-1)],
    }
    if get("constraint_logmass") is not None:
        ended = get("ended")[:, columns].reshape(-1).astype(np.int64)
        records["constraint_logmass"] = cut(get("constraint_logmass"), ended)
    return records
