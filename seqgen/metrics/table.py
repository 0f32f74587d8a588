"""The metric table: every metric once, with its keys, units, direction, when it applies and
where it appears.

A row (`Metric`) is a function of one `Generations` bundle that returns one float per key.
`compute` runs every row that applies; the console table's columns, the plot panels, the
report's and the sweep summary's columns (`shown`) and every axis label (`label_of`) are read
from the table, so a metric's key is written here and nowhere else. `register_metric` adds a
row from a user's own code, on the same footing as the built-ins.

Each row's function is (or calls) a function whose docstring names the paper and the exact
definition (`perplexity`, `diversity`, `repetition`, `length`, `oracle`, `search`, `utility`,
`constraint`, `abc`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from seqgen.errors import UserError
from seqgen.metrics import diversity
from seqgen.metrics.abc import abc_rates, key_rates
from seqgen.metrics.constraint import mass_removed
from seqgen.metrics.generations import Generations
from seqgen.metrics.length import eos_rate, length_stats
from seqgen.metrics.oracle import impossible_prompt_rate, mode_found_rate, oracle_summary
from seqgen.metrics.perplexity import generation_perplexity
from seqgen.metrics.repetition import REP_WINDOWS, rep_l, repetition_percent, seq_rep_n
from seqgen.metrics.search import beam_error_rate, exact_proven_rate
from seqgen.metrics.stream import StreamCounts
from seqgen.metrics.truncation import truncation_applies, truncation_metrics
from seqgen.metrics.utility import mbr_summary

# where a key appears besides results.jsonl (which holds every key computed)
TABLE, PLOT, REPORT, SUMMARY = "table", "plot", "report", "summary"
PLACES = (TABLE, PLOT, REPORT, SUMMARY)
EVERYWHERE = PLACES
# "human": neither higher nor lower is better, the human row's value is the target
BETTER = ("higher", "lower", "human", "none")


@dataclass(frozen=True)
class Unit:
    """A unit and the range its values lie in (NaN aside); the tests hold every key's values
    to its unit's range, so a key labelled with the wrong unit fails them."""

    name: str
    lo: float = -math.inf
    hi: float = math.inf
    log_scale: bool = False  # plotted on a log axis when decoders differ by orders of magnitude


SHARE = Unit("0-1", 0.0, 1.0)
PERCENT = Unit("%", 0.0, 100.0)
PPL = Unit("per token", 1.0, log_scale=True)
NATS = Unit("nats", 0.0)
NATS_PER_TOKEN = Unit("nats per token", 0.0)
LOGPROB = Unit("nats, a log-prob", hi=0.0)
TOKENS = Unit("tokens", 0.0)
SLOPE = Unit("-slope, log-log")
SECONDS = Unit("s", 0.0)
CALLS = Unit("step calls", 0.0)
SCORE = Unit("the decoder's score: see score/unit")


@dataclass(frozen=True)
class Key:
    """One number a metric reports: its key, what it counts, its unit, which way is better
    (`BETTER`) and where it appears (`PLACES`)."""

    name: str
    what: str
    unit: Unit
    better: str
    show: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The axis label and column tooltip: what it counts, in which unit."""
        return f"{self.what} ({self.unit.name})"


def _always(g: Generations) -> bool:
    return True


@dataclass(frozen=True)
class Metric:
    """One row: `fn(generations)` returns one float per key (a float for one key), computed
    when `applies(generations)`; `across` rows compare decoders and run once all have run
    (`compute(..., across=True)`). `stream(counts)`: the same values from a study's
    `StreamCounts` (None where they do not apply); a row without it is not computed for a
    study (`unstreamed`)."""

    keys: tuple[Key, ...]
    fn: Callable[[Generations], float | Sequence[float]]
    applies: Callable[[Generations], bool] = _always
    across: bool = False
    stream: Callable[[StreamCounts], float | Sequence[float] | None] | None = None

    def values(self, g: Generations) -> dict[str, float]:
        return self._named(self.fn(g))

    def _named(self, got: float | Sequence[float]) -> dict[str, float]:
        vals = tuple(got) if isinstance(got, tuple | list | np.ndarray) else (got,)
        names = ", ".join(k.name for k in self.keys)
        if len(vals) != len(self.keys):
            raise UserError(f"metric ({names}) returned {len(vals)} values for its keys")
        if not all(isinstance(v, int | float | np.number) for v in vals):
            raise UserError(f"metric ({names}) returned {vals!r}; allowed: one number per key")
        return {k.name: float(v) for k, v in zip(self.keys, vals)}


def _ppl(logprobs: str, eos: str) -> Callable[[Generations], float]:
    """`generation_perplexity` of the bundle's `logprobs` field (with its EOS field)."""

    def fn(g: Generations) -> float:
        return generation_perplexity(
            getattr(g, logprobs),
            lengths=g.packed.lengths,
            ended=g.ended,
            eos_logprob=getattr(g, eos),
        )

    return fn


def _oracle(g: Generations) -> tuple[float, float, float, float]:
    if g.ended is None:
        raise UserError("oracle metrics need `ended` (whether each sequence emitted EOS)")
    padded, lengths = g.packed.padded(0), g.packed.lengths
    return oracle_summary(g.oracle, padded, g.ended, lengths=lengths, prompts=g.prompts)


def _mode_found(g: Generations) -> float:
    if g.best_ended is None:
        raise UserError("search/mode_found needs best_ended together with best_sequences")
    return mode_found_rate(g.oracle, g.best_sequences, g.best_ended, best_prompts=g.best_prompts)


def _exact(g: Generations) -> tuple[float, float, float]:
    empty = [len(t) == 0 and e for t, e in zip(g.sequences, g.ended)]
    return exact_proven_rate(g.proven), float(np.mean(g.expansions)), float(np.mean(empty))


def _has(field: str) -> Callable[[Generations], bool]:
    return lambda g: getattr(g, field) is not None


def _abc(fn: Callable[..., tuple[float, float]], what: str) -> Callable[[Generations], tuple]:
    """An ABC check of the bundle's tunes on the seeded subset of `metrics.abc_subset`."""

    def run(g: Generations) -> tuple[float, float]:
        kw = {"subset": g.abc_subset, "seed": g.seed, "timeout_s": g.abc_timeout_s}
        return fn(g.texts, **kw, what=f"{what} {g.label}".rstrip())

    return run


def _is_folk(g: Generations) -> bool:
    return g.dataset == "folk" and g.texts is not None  # the texts are ABC tunes


def _k(name: str, what: str, unit: Unit, better: str, *show: str) -> Key:
    return Key(name, what, unit, better, show)


_H = "human"
_RS = (REPORT, SUMMARY)
METRICS: list[Metric] = [
    Metric(
        (_k("gen/ppl", "perplexity under softmax(logits/t)", PPL, _H, *EVERYWHERE),),
        _ppl("tempered_logprobs", "eos_tempered_logprobs"),
        _has("tempered_logprobs"),
        stream=lambda c: c.ppl("tempered"),
    ),
    Metric(
        (_k("gen/ppl_model", "perplexity under the model", PPL, _H),),
        _ppl("model_logprobs", "eos_model_logprobs"),
        _has("model_logprobs"),
        stream=lambda c: c.ppl("model"),
    ),
    Metric(
        (_k("gen/ref_ppl", "perplexity under the reference model", PPL, _H),),
        _ppl("ref_logprobs", "ref_eos_logprobs"),
        _has("ref_logprobs"),
    ),
    Metric(
        (_k("diversity/self_bleu4", "Self-BLEU-4", SHARE, _H, *EVERYWHERE),),
        lambda g: diversity.self_bleu(g.packed, num_samples=g.self_bleu_max, seed=g.seed),
        stream=lambda c: c.diversity.self_bleu(),
    ),
    Metric(
        (
            _k("diversity/distinct_1", "distinct unigrams / all", SHARE, _H),
            _k("diversity/distinct_2", "distinct bigrams / all", SHARE, _H, *EVERYWHERE),
            _k("diversity/distinct_3", "distinct 3-grams / all", SHARE, _H),
            _k("diversity/distinct_4", "distinct 4-grams / all", SHARE, _H, PLOT),
        ),
        lambda g: tuple(diversity.distinct_n(g.packed, n) for n in (1, 2, 3, 4)),
        stream=lambda c: tuple(c.diversity.distinct(n) for n in (1, 2, 3, 4)),
    ),
    Metric(
        (_k("diversity/ent_4", "4-gram entropy", NATS, _H),),
        lambda g: diversity.ngram_entropy(g.packed, 4),
        stream=lambda c: c.diversity.entropy(4),
    ),
    Metric(
        (_k("diversity/unique_seq", "unique sequences / all", SHARE, _H),),
        lambda g: diversity.unique_sequences(g.packed),
        stream=lambda c: c.diversity.unique(),
    ),
    Metric(
        (_k("repetition/seq_rep_4", "repeated 4-grams / all", SHARE, _H, *EVERYWHERE),),
        lambda g: seq_rep_n(g.packed, 4),
        stream=lambda c: c.repetition.seq_rep(),
    ),
    Metric(
        (_k("repetition/rep_pct", "generations ending in a loop", PERCENT, _H, *EVERYWHERE),),
        lambda g: repetition_percent(g.packed),
        stream=lambda c: c.repetition.rep_pct(),
    ),
    Metric(
        tuple(
            _k(f"repetition/rep_{w}", f"tokens seen in the previous {w}", SHARE, _H)
            for w in REP_WINDOWS
        ),
        lambda g: tuple(rep_l(g.packed).values()),
        stream=lambda c: tuple(c.repetition.rep_l().values()),
    ),
    Metric(
        (_k("zipf", "Zipf coefficient", SLOPE, _H, *EVERYWHERE),),
        lambda g: diversity.zipf_coefficient(g.packed, top=g.zipf_top),
        stream=lambda c: c.diversity.zipf(),
    ),
    Metric(
        (
            _k("length/mean", "continuation length", TOKENS, _H, *EVERYWHERE),
            _k("length/std", "continuation length std", TOKENS, _H),
        ),
        lambda g: length_stats(g.packed.lengths),
        stream=lambda c: c.length_stats(),
    ),
    Metric(
        (_k("length/eos_rate", "share ending with EOS", SHARE, _H, PLOT),),
        lambda g: eos_rate(g.ended),
        _has("ended"),
        stream=lambda c: c.eos_rate(),
    ),
    Metric(
        (
            _k("oracle/nll", "NLL under the true DPFSA", NATS_PER_TOKEN, "lower", *_RS),
            _k("oracle/ppl", "perplexity under the true DPFSA", PPL, "lower"),
            _k("oracle/entropy", "entropy of the true DPFSA", NATS_PER_TOKEN, "none"),
            _k("oracle/mode_logprob", "log-prob of the true mode", LOGPROB, "none"),
        ),
        _oracle,
        _has("oracle"),
    ),
    Metric(
        (_k("oracle/impossible_prompt_rate", "prompts impossible under p*", SHARE, "none"),),
        lambda g: impossible_prompt_rate(g.oracle, g.prompts),
        lambda g: g.oracle is not None and g.prompts is not None,
    ),
    Metric(
        (
            _k("oracle/trunc_precision", "kept tokens p* allows, per step", SHARE, "higher"),
            _k("oracle/trunc_recall", "p* mass the truncation keeps, per step", SHARE, "higher"),
            _k("oracle/off_support_rate", "sequences leaving p*'s support", SHARE, "lower"),
        ),
        lambda g: truncation_metrics(
            g.oracle, g.decoder, g.step_logits, g.sequences, g.ended, g.prompts
        ),
        lambda g: (
            g.oracle is not None
            and g.constraint_logmass is None  # a constraint masks before the processors
            and truncation_applies(g.decoder, g.step_logits)
        ),
    ),
    Metric(
        (_k("search/mode_found", "best beams that are the mode", SHARE, "higher", *_RS),),
        _mode_found,
        lambda g: g.oracle is not None and g.best_sequences is not None,
    ),
    Metric(
        (
            _k("abc/parse_rate", "tunes music21 parses", SHARE, "higher", PLOT, REPORT),
            _k("abc/bar_ok_rate", "parsed tunes with bars in time", SHARE, "higher", PLOT, REPORT),
        ),
        _abc(abc_rates, "ABC checks"),
        _is_folk,
        stream=lambda c: c.abc(abc_rates, "ABC checks"),
    ),
    Metric(
        (
            _k("abc/in_key_rate", "parsed tunes with every note in the K: scale", SHARE, _H),
            _k("abc/in_key_notes", "notes in the K: scale", SHARE, _H, REPORT),
        ),
        _abc(key_rates, "ABC key checks"),
        _is_folk,
        stream=lambda c: c.abc(key_rates, "ABC key checks"),
    ),
    Metric(
        (_k("score/mean", "mean score", SCORE, "higher", *_RS),),
        lambda g: float(np.mean(np.asarray(g.scores, np.float64))),
        _has("scores"),
        stream=lambda c: c.score_mean(),
    ),
    Metric(
        (
            _k("search/exact_proven", "prompts whose result is the proven mode", SHARE, "higher"),
            _k("search/expansions_mean", "step calls per prompt", CALLS, "lower"),
            _k("search/exact_empty", "prompts whose mode is the empty string", SHARE, "none"),
        ),
        _exact,
        _has("proven"),
    ),
    Metric(
        (
            _k("mbr/expected_utility", "expected utility of the choice", SHARE, "higher"),
            _k("mbr/utility_spread", "std of the candidates' expected utility", SHARE, "none"),
        ),
        lambda g: mbr_summary(g.expected_utility),
        _has("expected_utility"),
    ),
    Metric(
        (
            _k("constraint/mass_removed", "mass the constraint removed", SHARE, "lower"),
            _k("constraint/step_mass_removed", "mass removed per step", SHARE, "lower"),
        ),
        lambda g: mass_removed(g.constraint_logmass),
        _has("constraint_logmass"),
    ),
    Metric(
        (_k("constraint/prompts_left_out", "prompts the constraint rejects", SHARE, "none"),),
        lambda g: g.prompts_left_out,
        _has("prompts_left_out"),
    ),
    Metric(
        (_k("time/decode_s", "decode wall time", SECONDS, "lower", REPORT),),
        lambda g: g.decode_s,
        _has("decode_s"),
        stream=lambda c: c.decode_s,
    ),
    Metric(
        (_k("search/beam_error", "prompts where exact search beat it", SHARE, "lower"),),
        lambda g: beam_error_rate(g.sequence_logprobs(), *g.exact_mode),
        _has("exact_mode"),
        across=True,
    ),
]


def compute(
    generations: Generations | Sequence[Sequence[int]] | np.ndarray,
    reference: Sequence[Sequence[int]] | np.ndarray | None = None,
    *,
    across: bool = False,
) -> dict[str, float]:
    """Every metric of the table that applies to `generations`, as `{key: float}` (NaN where a
    metric is undefined, e.g. Self-BLEU of one sequence).

    `generations`: a `Generations` bundle, or just the continuations (token ids, one sequence
    each); `reference`: the human continuations of the same prompts, for metrics that compare
    with them (kept in `Generations.reference`). Which rows apply follows from what the bundle
    holds: `gen/ppl` needs `tempered_logprobs`, `oracle/*` an `oracle`, `abc/*` folk `texts`.
    With `across=True`, only the rows that compare decoders (`search/beam_error`).

    >>> from seqgen.metrics import Generations, compute
    >>> gen = Generations([[5, 6, 7, 8], [5, 6, 5, 6]], ended=[True, False])
    >>> m = compute(gen, reference=[[5, 7, 9]])
    >>> m["diversity/distinct_1"]  # 4 distinct tokens / 8 tokens
    0.5
    >>> m["length/eos_rate"], m["length/mean"]
    (0.5, 4.0)
    >>> "gen/ppl" in m  # no log-probs were given
    False
    """
    if not isinstance(generations, Generations):
        generations = Generations(generations)
    if reference is not None:
        generations = dataclasses.replace(generations, reference=reference)
    out: dict[str, float] = {}
    for row in METRICS:
        if row.across == across and row.applies(generations):
            out.update(row.values(generations))
    return out


def compute_stream(counts: StreamCounts) -> dict[str, float]:
    """The values of every row with a `stream` function from a study's counts, under the
    rows' keys (rows whose function returns None do not apply)."""
    out: dict[str, float] = {}
    for row in METRICS:
        got = None if row.stream is None else row.stream(counts)
        if got is not None:
            out.update(row._named(got))
    return out


def unstreamed() -> tuple[str, ...]:
    """The keys a study does not compute (rows without a `stream` function)."""
    return tuple(k.name for row in METRICS if row.stream is None for k in row.keys)


def all_keys() -> dict[str, Key]:
    """Every key of the table (registered metrics included), in table order."""
    return {k.name: k for row in METRICS for k in row.keys}


def shown(place: str) -> tuple[str, ...]:
    """The keys that appear in `place` (`TABLE`, `PLOT`, `REPORT` or `SUMMARY`), in order."""
    return tuple(k.name for row in METRICS for k in row.keys if place in k.show)


def label_of(key: str) -> str:
    """A key's axis label (what it counts and its unit); the key itself when unknown."""
    spec = all_keys().get(key)
    return key if spec is None else spec.label


def unit_of(key: str) -> Unit | None:
    """A key's unit (None when unknown). `SCORE` is the decoder's own: its name comes from
    the decoder (`seqgen.decoding.registry.score_unit`), so scores of different units never share an
    axis."""
    spec = all_keys().get(key)
    return None if spec is None else spec.unit


def log_scale(key: str) -> bool:
    """Whether a key's plots may use a log axis (its unit's `log_scale`)."""
    unit = unit_of(key)
    return unit is not None and unit.log_scale


_KEY = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?")


def register_metric(
    keys: str | Sequence[str],
    fn: Callable[[Generations], float | Sequence[float]],
    *,
    unit: str | Unit,
    better: str,
    what: str | None = None,
    applies: Callable[[Generations], bool] | None = None,
    show: Sequence[str] = (REPORT, SUMMARY),
) -> Metric:
    """Add a metric from your own code: one call, and its keys appear in `results.jsonl`, the
    report, the sweep summary and `compute` (the console table and plots when `show` asks).

    `keys`: its key, or one per value `fn` returns (`group/name`: letters, digits, `_.-`);
    `fn(generations)` returns a float, or one per key; `unit`: a unit name (or a `Unit`, with
    the range its values lie in); `better`: "higher", "lower", "human" (the human row's value
    is the target) or "none"; `what`: what it counts, for axis labels (default: the key);
    `applies(generations)`: when it is computed (default: always); `show`: any of "table",
    "plot", "report", "summary". A metric registered in the process that runs the experiment
    (the script or notebook that calls `run_experiment`, before it does) is computed for every
    decoder and the human row. Example (a file of your own)::

        import numpy as np
        from seqgen.metrics import Generations, register_metric

        def long_share(g: Generations) -> float:
            \"\"\"Share of continuations of at least 32 tokens.\"\"\"
            return float(np.mean(g.packed.lengths >= 32))

        register_metric("length/long_share", long_share, unit="0-1", better="none")
    """
    names = (keys,) if isinstance(keys, str) else tuple(keys)
    taken = all_keys()
    for name in names:
        if not isinstance(name, str) or not _KEY.fullmatch(name):
            raise UserError(f"metric key {name!r}: use group/name of letters, digits, _ . -")
        if name in taken:
            raise UserError(f"metric key {name!r} exists already; allowed: a new key")
    if better not in BETTER:
        raise UserError(f"better={better!r} for {names[0]}; allowed: {', '.join(BETTER)}")
    bad = [p for p in show if p not in PLACES]
    if bad:
        raise UserError(f"show={bad!r} for {names[0]}; allowed: {', '.join(PLACES)}")
    if not callable(fn):
        raise UserError(f"metric {names[0]}: fn must be a function of Generations")
    unit = unit if isinstance(unit, Unit) else Unit(str(unit))
    row = Metric(
        tuple(Key(n, what or n, unit, better, tuple(show)) for n in names),
        fn,
        applies or _always,
    )
    METRICS.append(row)
    return row
