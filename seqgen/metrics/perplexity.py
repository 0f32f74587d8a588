"""Perplexity and bits per token: held-out (training) and of generated text.

One pure reduction, `perplexity_from_nll`, serves both the training evaluation (`ppl/valid`,
`bits/valid`, `ppl/test`, `bits/test`) and the generation metrics (`gen/ppl`,
`gen/ppl_model`, `gen/ref_ppl`), so the two can never drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from seqgen.errors import UserError

LN2 = math.log(2.0)


def perplexity_from_nll(total_nll: float, num_tokens: float) -> dict[str, float]:
    """Perplexity and bits per token from a summed negative log-likelihood (nats).

    ppl = exp(total_nll / num_tokens), bits = total_nll / num_tokens / ln 2 (Shannon 1948;
    the usual LM definition, e.g. Mikolov et al. 2010). Each target token counts once,
    EOS included when it is a target. `num_tokens == 0` gives NaN for both.
    """
    if num_tokens <= 0:
        return {"ppl": math.nan, "bits": math.nan}
    mean_nll = float(total_nll) / float(num_tokens)
    ppl = math.exp(mean_nll) if mean_nll < 709.0 else math.inf  # exp overflows past ~709
    return {"ppl": ppl, "bits": mean_nll / LN2}


def pooled_logprob(
    logprobs: Sequence[np.ndarray] | np.ndarray,
    *,
    lengths: Sequence[int] | np.ndarray | None = None,
    ended: Sequence[bool] | np.ndarray | None = None,
    eos_logprob: Sequence[float] | np.ndarray | None = None,
) -> tuple[float, int]:
    """Sum of per-token log-probs over all sequences and the number of tokens summed.

    `logprobs` is a list of 1-D arrays (one per sequence, aligned with its generated tokens)
    or a padded `[N, T]` array with `lengths[N]` (entries at positions >= length are ignored).
    The EOS decision: a sequence that ended with EOS contributes `eos_logprob[i]` as one more
    token (EOS was generated, so it is scored like any other token); a sequence cut at
    max_len contributes no EOS term. `ended` with any True entry requires `eos_logprob`.
    """
    if isinstance(logprobs, np.ndarray) and logprobs.ndim == 2:
        arr = np.asarray(logprobs, np.float64)
        lens = np.full(arr.shape[0], arr.shape[1]) if lengths is None else np.asarray(lengths)
        if lens.shape != (arr.shape[0],):
            raise UserError(f"lengths must have shape ({arr.shape[0]},), got {lens.shape}")
        mask = np.arange(arr.shape[1])[None, :] < lens[:, None]
        total, count, n = float(arr[mask].sum()), int(mask.sum()), arr.shape[0]
    else:
        rows = [np.asarray(r, np.float64).reshape(-1) for r in logprobs]
        if lengths is not None:
            if len(rows) != len(lengths) or any(r.size < k for r, k in zip(rows, lengths)):
                raise UserError("each log-prob row must cover its sequence (one per token)")
            rows = [r[: int(k)] for r, k in zip(rows, lengths)]
        total, count, n = float(sum(r.sum() for r in rows)), sum(r.size for r in rows), len(rows)
    if ended is not None:
        ended_arr = np.asarray(ended, bool).reshape(-1)
        if ended_arr.shape != (n,):
            raise UserError(f"ended must have one flag per sequence ({n}), got {ended_arr.shape}")
        if ended_arr.any():
            if eos_logprob is None:
                raise UserError("ended sequences need eos_logprob (the EOS token's log-prob)")
            eos = np.asarray(eos_logprob, np.float64).reshape(-1)
            if eos.shape != (n,):
                raise UserError(f"eos_logprob must have one value per sequence ({n})")
            total += float(eos[ended_arr].sum())
            count += int(ended_arr.sum())
    return total, count


def generation_perplexity(
    logprobs: Sequence[np.ndarray] | np.ndarray,
    *,
    lengths: Sequence[int] | np.ndarray | None = None,
    ended: Sequence[bool] | np.ndarray | None = None,
    eos_logprob: Sequence[float] | np.ndarray | None = None,
) -> float:
    """Perplexity of generated text, Holtzman et al. 2020 (ICLR), Table 1.

    exp(-(1/K) * sum of log p(x_t | x_<t)) pooled over all K generated tokens of all
    sequences (not a mean of per-sequence perplexities). Which distribution p is decided by
    the caller's log-probs:
    - `gen/ppl`: the decoder's `tempered_logprobs`, log softmax(logits / t) before any
      truncation (top-k, top-p, ...) and without renormalizing; for t = 1 (or greedy/beam)
      this is the model's own distribution;
    - `gen/ppl_model`: the decoder's `logprobs`, the unmodified model (t = 1);
    - `gen/ref_ppl`: log-probs of the same tokens under a reference model (caller computes).
    EOS is included exactly when the sequence ended with EOS (see `pooled_logprob`).
    """
    total, count = pooled_logprob(logprobs, lengths=lengths, ended=ended, eos_logprob=eos_logprob)
    return perplexity_from_nll(-total, count)["ppl"]
