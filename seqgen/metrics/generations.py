"""`Generations`: one set of generated continuations and everything a metric may read of them.

The metric table (`seqgen.metrics.table`) scores one `Generations` bundle; a metric is a
function of the bundle, so adding one never changes a signature. `from_decode_output` builds a
bundle from a decoder's `DecodeOutput` (duck-typed, `[B, N, T]` arrays) and
`decode_output_records` reads what else the output says of each generation (for samples.jsonl).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqgen.errors import UserError
from seqgen.metrics._packed import Packed, SequencesLike, pack
from seqgen.metrics.abc import ABC_SUBSET, ABC_TIMEOUT_S
from seqgen.metrics.diversity import SELF_BLEU_SAMPLES, ZIPF_TOP_TYPES

Rows = Sequence[np.ndarray]  # one 1-D array per sequence


@dataclass(frozen=True)
class Generations:
    """N generated continuations (the ids AFTER the prompt: no BOS / EOS / PAD) and what the
    metrics read of them. Only `sequences` is required; a metric applies when what it reads is
    there (`seqgen.metrics.table`).

    - `sequences`: N 1-D int arrays, or padded `[N, T]` with `lengths[N]`;
    - `ended` bool[N]: the sequence emitted EOS before max_len;
    - `prompts`: the prompt each continues (ids without BOS; None: unconditional);
    - `scores` float[N]: the score the decoder ranked by;
    - `tempered_logprobs`, `model_logprobs`, `ref_logprobs`: per-token log-probs aligned with
      `sequences` under softmax(logits / t) before truncation, the model (t = 1), a reference
      model; `eos_*` float[N]: the EOS log-prob of ended sequences (others ignored);
    - `reference`: the human continuations of the same prompts (the human row), token ids;
    - `vocab`, `texts` (prompt + continuation, decoded), `dataset` (`data.name`, e.g. "folk":
      the texts are ABC tunes);
    - `oracle`: the true distribution (synthetic data, `seqgen.metrics.oracle`);
    - `best_sequences`, `best_ended`, `best_prompts`: an n-best decoder's top sequence per
      prompt (`best_ended`, `best_prompts` default to `ended`, `prompts` when there is one best
      sequence per sequence);
    - `proven`, `expansions` [B]: exact search's proof flag and step calls per prompt;
    - `expected_utility` [B, N]: MBR's candidates' expected utilities, best first;
    - `exact_mode`: (log-prob, proven) [B] of exact search's result per prompt, given to an
      n-best decoder decoded beside it (`search/beam_error`, computed once all decoders ran);
    - `constraint_logmass`: per sequence, log of the allowed mass at each generated step
      (EOS step included); `prompts_left_out`: share of prompts the constraint rejected;
    - `decode_s`: the decode's wall time;
    - `decoder`: the decoder's config, `step_logits(prompts, sequences, ended)`: the model's raw
      logits [len + ended, V] at each generated step (`seqgen.scoring.step_logits`); with an
      `oracle`, `oracle/trunc_*` rerun the sampler's processors on them;
    - `max_len` (int or one per sequence): the continuation budget, only checked;
    - `seed`, `self_bleu_max`, `zipf_top`, `abc_subset`, `abc_timeout_s` (music21's time per
      tune): the metrics' settings; `label` names the generations in log lines.
    """

    sequences: SequencesLike
    lengths: Sequence[int] | np.ndarray | None = None
    ended: Sequence[bool] | np.ndarray | None = None
    prompts: SequencesLike | None = None
    scores: Sequence[float] | np.ndarray | None = None
    tempered_logprobs: Rows | np.ndarray | None = None
    eos_tempered_logprobs: Sequence[float] | np.ndarray | None = None
    model_logprobs: Rows | np.ndarray | None = None
    eos_model_logprobs: Sequence[float] | np.ndarray | None = None
    ref_logprobs: Rows | np.ndarray | None = None
    ref_eos_logprobs: Sequence[float] | np.ndarray | None = None
    reference: SequencesLike | None = None
    vocab: Any = None
    texts: Sequence[str] | None = None
    dataset: str | None = None
    oracle: Any = None
    best_sequences: SequencesLike | None = None
    best_ended: Sequence[bool] | np.ndarray | None = None
    best_prompts: SequencesLike | None = None
    proven: np.ndarray | None = None
    expansions: np.ndarray | None = None
    expected_utility: np.ndarray | None = None
    exact_mode: tuple[np.ndarray, np.ndarray] | None = None
    constraint_logmass: Rows | None = None
    prompts_left_out: float | None = None
    decode_s: float | None = None
    decoder: Any = None
    step_logits: Callable[..., Rows] | None = None
    max_len: int | Sequence[int] | np.ndarray | None = None
    seed: int = 0
    self_bleu_max: int = SELF_BLEU_SAMPLES
    zipf_top: int = ZIPF_TOP_TYPES
    abc_subset: int = ABC_SUBSET
    abc_timeout_s: float = ABC_TIMEOUT_S
    label: str = ""

    def __post_init__(self) -> None:
        n = self.packed.num_sequences
        if self.ended is not None and np.asarray(self.ended).reshape(-1).shape != (n,):
            raise UserError(f"ended must have one flag per sequence ({n} sequences)")
        if self.max_len is not None and (self.packed.lengths > np.asarray(self.max_len)).any():
            raise ValueError("a continuation is longer than its max_len budget")
        best = self.best_sequences
        if best is not None and self.best_ended is None and self.ended is not None:
            if len(best) != n:
                raise UserError("best_sequences need best_ended (one flag per best sequence)")
            object.__setattr__(self, "best_ended", self.ended)
        if best is not None and self.best_prompts is None and self.prompts is not None:
            if len(best) != n:
                raise UserError("best_sequences need best_prompts (one per best sequence)")
            object.__setattr__(self, "best_prompts", self.prompts)

    @functools.cached_property
    def packed(self) -> Packed:
        """The continuations packed once (`_packed.pack`): the count metrics share its n-grams."""
        return pack(self.sequences, self.lengths)

    @property
    def num_sequences(self) -> int:
        return self.packed.num_sequences

    def sequence_logprobs(self) -> np.ndarray:
        """float64 [N]: each sequence's log-prob under the model, EOS included; -inf for a
        sequence that did not end (an unfinished hypothesis is no complete string)."""
        lps, eos = self.model_logprobs, self.eos_model_logprobs
        best = np.array([np.sum(lp) + e for lp, e in zip(lps, eos)])
        return np.where(np.asarray(self.ended, bool), best, -np.inf)


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
    """`Generations` fields from a decoder's `DecodeOutput` (an object with attributes, or a
    dict with the same keys).

    Reads `tokens [B, N, T]` (prompt, continuation, PAD), `lengths [B, N]` (incl. prompt,
    excl. EOS), `prompt_lengths [B]`, `ended [B, N]`, `scores [B, N]` and when present
    `logprobs`, `tempered_logprobs` `[B, N, T]` (0 on prompt/pad), `eos_logprob [B, N]`,
    `eos_tempered_logprob [B, N]`, `proven`, `expansions [B]` and `constraint_logmass`.
    Continuations are cut out of every row (order: prompt-major, B * N sequences), with their
    `prompts`; `best_sequences` / `best_ended` / `best_prompts` are column 0 (beams are best
    first). With `best_only`, only column 0 is used as the generations too. Log-probs come
    back as float64, so that a sequence's log-prob is summed in double precision wherever it
    is summed; the constraint's log-masses are cut to the continuation plus its EOS position
    when it ended.
    """
    get, columns, b, n, cut = _output_reader(out, best_only)
    tokens, lengths, prompt_lengths = get("tokens"), get("lengths"), get("prompt_lengths")
    ended = get("ended").astype(bool)
    fields: dict[str, Any] = {
        "sequences": cut(tokens),
        "ended": ended[:, columns].reshape(-1),
        "prompts": [tokens[i // n, 0, : prompt_lengths[i // n]] for i in range(b * n)],
        "best_sequences": [tokens[i, 0, prompt_lengths[i] : lengths[i, 0]] for i in range(b)],
        "best_ended": ended[:, 0],
        "best_prompts": [tokens[i, 0, : prompt_lengths[i]] for i in range(b)],
    }
    if get("scores") is not None:
        fields["scores"] = get("scores")[:, columns].reshape(-1)
    for attr, key in (("tempered_logprobs", "tempered_logprobs"), ("logprobs", "model_logprobs")):
        if get(attr) is not None:
            fields[key] = [row.astype(np.float64) for row in cut(get(attr))]
    for attr, key in (
        ("eos_logprob", "eos_model_logprobs"),
        ("eos_tempered_logprob", "eos_tempered_logprobs"),
    ):
        if get(attr) is not None:
            fields[key] = get(attr)[:, columns].reshape(-1)
    for key in ("proven", "expansions"):
        if get(key) is not None:
            fields[key] = get(key)
    if get("constraint_logmass") is not None:
        eos_step = ended[:, columns].reshape(-1).astype(np.int64)
        fields["constraint_logmass"] = cut(get("constraint_logmass"), eos_step)
    return fields


def decode_output_records(out: Any, *, best_only: bool = False) -> dict[str, list]:
    """What a decoder's output says of each generation besides the metrics' inputs, in the
    order of `decode_output_inputs`: `prompt_index`, `sample_index` (its column), `score`
    (of `scores [B, N]`) and, when the output has them, `prompt_logprobs` and `top_ids` /
    `top_logprobs` (`decode.prompt_logprobs`, `decode.logprobs`)."""
    get, columns, b, n, cut = _output_reader(out, best_only)
    records: dict[str, list] = {
        "prompt_index": [i // n for i in range(b * n)],
        "sample_index": [i % n for i in range(b * n)],
        "score": [float(s) for s in get("scores")[:, columns].reshape(-1)],
    }
    if get("prompt_logprobs") is not None:  # [B, T] -> per row its prompt's [P]
        plp, plen = get("prompt_logprobs"), get("prompt_lengths")
        records["prompt_logprobs"] = [plp[i // n, : plen[i // n]] for i in range(b * n)]
    if get("top_ids") is not None:  # [B, N, T, K] -> per row [L, K] (decode.logprobs)
        eos_step = get("ended")[:, columns].reshape(-1).astype(bool)
        if get("stopped") is not None:  # a stop sequence ends a row without an EOS step
            eos_step = eos_step & ~get("stopped")[:, columns].reshape(-1)
        for name in ("top_ids", "top_logprobs"):
            arr = get(name)
            per_k = [cut(arr[..., k], eos_step.astype(np.int64)) for k in range(arr.shape[-1])]
            records[name] = [np.stack([c[i] for c in per_k], -1) for i in range(b * n)]
    return records
