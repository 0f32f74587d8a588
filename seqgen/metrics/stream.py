"""A study's counts: the metrics of many generations added chunk by chunk, in memory that does
not grow with their number (the distinct n-grams aside: `DiversityCounts`).

`StreamCounts.add` takes each decoded chunk's `Generations`; the metric table's rows with a
`stream` function read their values from it (`table.compute_stream`), so a study's keys are
the table's. Each value equals the one-bundle row's over all generations at once (to float64
rounding): perplexities and `score/mean` are pooled sums, lengths a histogram, `abc/*` the
same seeded subset of tunes (the ABC checks' draw, known in advance), the rest the counts of
`DiversityCounts` and `RepetitionCounts`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from seqgen.metrics.diversity import DiversityCounts
from seqgen.metrics.generations import Generations
from seqgen.metrics.length import length_stats
from seqgen.metrics.perplexity import perplexity_from_nll, pooled_logprob
from seqgen.metrics.repetition import RepetitionCounts

_LOGPROBS = {  # which log-probs each pooled perplexity reads: (per token, EOS)
    "tempered": ("tempered_logprobs", "eos_tempered_logprobs"),
    "model": ("model_logprobs", "eos_model_logprobs"),
}


class StreamCounts:
    """Everything a study's metrics count, over `num_sequences` generations in order.

    The token metrics count `rows` generations at a time (`decode.stream_rows`: their working
    set is bounded by it); `abc_subset` tunes drawn as `abc_rates` draws them are kept when
    `dataset` is "folk".
    """

    def __init__(
        self,
        num_sequences: int,
        *,
        rows: int,
        seed: int,
        self_bleu_samples: int,
        vocab_size: int,
        dataset: str | None = None,
        abc_subset: int = 0,
        abc_timeout_s: float = 0.0,
        label: str = "",
    ) -> None:
        self.num_sequences, self.rows, self.seed, self.label = num_sequences, rows, seed, label
        self.diversity = DiversityCounts(
            num_sequences, seed=seed, self_bleu_samples=self_bleu_samples, vocab_size=vocab_size
        )
        self.repetition = RepetitionCounts()
        self.pending: list[np.ndarray] = []
        self.logprob = {name: [0.0, 0] for name in _LOGPROBS}
        self.lengths = np.zeros(0, np.int64)  # histogram: bounded by decode.max_len
        self.ended = self.count = 0
        self.score = 0.0
        self.has_scores = True
        self.decode_s: float | None = None
        self.abc_timeout_s = abc_timeout_s
        self.abc_texts: dict[int, str] | None = None
        if dataset == "folk" and abc_subset > 0 and num_sequences:
            rng = np.random.default_rng(seed)  # abc_rates's draw over all the generations
            size = min(num_sequences, abc_subset)
            self.abc_chosen = set(map(int, rng.choice(num_sequences, size=size, replace=False)))
            self.abc_texts = {}

    def add(self, gen: Generations) -> None:
        """Count the next chunk of generations (the k-th is generation `count + k`)."""
        for name, (lps, eos) in _LOGPROBS.items():
            if getattr(gen, lps) is not None:
                total, count = pooled_logprob(
                    getattr(gen, lps), ended=gen.ended, eos_logprob=getattr(gen, eos)
                )
                self.logprob[name][0] += total
                self.logprob[name][1] += count
        hist = np.bincount(gen.packed.lengths)
        size = max(hist.size, self.lengths.size)
        self.lengths = np.pad(self.lengths, (0, size - self.lengths.size))
        self.lengths[: hist.size] += hist
        self.ended += int(np.sum(gen.ended))
        self.has_scores &= gen.scores is not None
        self.score += float(np.sum(gen.scores)) if gen.scores is not None else 0.0
        if self.abc_texts is not None and gen.texts is not None:
            for j, text in enumerate(gen.texts):
                if self.count + j in self.abc_chosen:
                    self.abc_texts[self.count + j] = text
        self.count += gen.num_sequences
        self.pending += list(gen.sequences)
        if len(self.pending) >= self.rows or self.count == self.num_sequences:
            self.diversity.add(self.pending)
            self.repetition.add(self.pending)
            self.pending = []

    def ppl(self, name: str) -> float | None:
        """The pooled perplexity of `_LOGPROBS[name]`; None when no chunk had those log-probs."""
        total, count = self.logprob[name]
        return perplexity_from_nll(-total, count)["ppl"] if count else None

    def length_stats(self) -> tuple[float, float]:
        return length_stats(np.repeat(np.arange(self.lengths.size), self.lengths))

    def eos_rate(self) -> float:
        return self.ended / self.count if self.count else math.nan

    def score_mean(self) -> float | None:
        return self.score / self.count if self.has_scores and self.count else None

    def abc(self, check: Callable[..., tuple[float, float]], what: str) -> tuple | None:
        """An ABC check of all the generations (`abc_rates`, `key_rates`): its seeded subset
        is all of the kept tunes. None without them (not folk, or `abc_subset` 0)."""
        if self.abc_texts is None:
            return None
        texts = [self.abc_texts[i] for i in sorted(self.abc_texts)]
        what = f"{what} {self.label}".rstrip()
        return check(texts, subset=len(texts), timeout_s=self.abc_timeout_s, what=what)
