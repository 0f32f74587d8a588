"""Every decoder knob, written once: its type, default, range or choices, and static vs traced.

The Hydra schema (`seqgen.config.DecoderConfig` is generated from `KNOBS`), the validation of
`decoder` and of every `compare[i]` (`check`), the decoders' accessors (`common.get`,
`common.traced_knobs`) and the row labels (`seqgen.decoding.registry`) all read this table.
It imports nothing of the decoders, so `common.py` can read it.

Static vs traced (a decision, written down once):
- static (a new value compiles a new program): sizes and counts (`top_k`, `beam_size`,
  `num_groups`, ...), the length-penalty formula, and *which* processors are switched on (a
  processor at its neutral value -- `top_p=1`, `min_p=0`, ... -- is left out of the program,
  which saves a sort per step);
- traced (sweeping them reuses the compiled program): the continuous knobs, and `min_length`
  (a count, but it only enters a comparison). Beside the knobs: `max_len`, `num_samples`,
  `vocab_size` and the `step_fn` object are static; the PRNG key, prompts and params traced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqgen.errors import UserError

_INF = math.inf
# below it softmax(logits / t) is greedy to float32 precision (a logit gap of 0.1 leaves
# exp(-100), below float32's smallest number), and gen/ppl, the perplexity under it,
# overflows wherever a processor picks a token other than the argmax: t = 0 is that limit
TEMPERATURE_MIN = 1e-3


@dataclass(frozen=True)
class Knob:
    """One decoder knob (and, in `seqgen.config`, one field of the run's schema). `low`/`high`
    bound numbers (`*_open`: the bound itself is refused; a float is always finite);
    `vocab_high`: an integer at most the vocabulary size; `choices`: the allowed strings."""

    name: str
    type: type  # float | int | bool | str | dict | tuple (a list in the config, of `item`s)
    default: Any
    traced: bool = False
    low: float = -_INF
    high: float = _INF
    low_open: bool = False
    high_open: bool = False
    vocab_high: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""
    # the value at which its processor does nothing: the processor is compiled in only when
    # one of its knobs is away from it (`processor_table`); None: the knob switches nothing
    neutral: Any = None
    # a tuple knob is a list in the config (default too) and a tuple in a program's static key;
    # `item`: its elements' type (int: token ids, in [0, V))
    item: type | None = None
    # a steering knob (`steering`): token-id entries or text, checked and frozen there
    steer: bool = False
    # a float knob whose 0 is a limit of its own (temperature's greedy): values in
    # (0, zero_gap) are refused, as they mean that limit without reaching it numerically
    zero_gap: float = 0.0

    def check(self, value: Any, where: str = "decoder", vocab_size: int | None = None) -> None:
        """Raise one `UserError` line naming `where.name`, the value and what is allowed."""
        key = f"{where}.{self.name}" if where else self.name
        if self.steer:
            from seqgen.decoding.steering import check_value  # it imports JAX; this file not

            check_value(self.name, value, where, vocab_size)
        elif self.choices:
            if value not in self.choices:
                raise UserError(f"{key}={value!r} is unknown; allowed: {', '.join(self.choices)}")
        elif self.type is tuple:
            self._check_items(value, key, vocab_size)
        elif self.type is bool:
            if not isinstance(value, bool | np.bool_):
                raise UserError(f"{key}={value!r}; allowed: true or false")
        elif self.type is int:
            hi = vocab_size if self.vocab_high and vocab_size is not None else None
            hi = self.high if hi is None and self.high < _INF else hi
            is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
            if not is_int or value < self.low or (hi is not None and value > hi):
                lo = int(self.low)
                allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
                raise UserError(f"{key}={value!r} is out of range; allowed: {allowed}")
        elif self.type is float:
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise UserError(f"{key}={value!r} is not a number") from None
            ok_lo = v > self.low if self.low_open else v >= self.low
            ok_hi = v < self.high if self.high_open else v <= self.high
            if not (ok_lo and ok_hi and math.isfinite(v)):  # NaN fails both; inf is no number
                raise UserError(f"{key}={value!r} is out of range; allowed: {self.allowed()}")
            if 0 < v < self.zero_gap:
                raise UserError(
                    f"{key}={value!r} is 0 in effect but overflows float32 ({self.doc}); "
                    f"allowed: {self.allowed()}"
                )

    def _check_items(self, value: Any, key: str, vocab_size: int | None) -> None:
        seq = isinstance(value, Sequence) and not isinstance(value, str)
        if not seq or not all(isinstance(x, self.item) for x in value):
            raise UserError(f"{key}={value!r}; allowed: {self.allowed()}")
        if self.item is int and any(x < 0 or x >= (vocab_size or math.inf) for x in value):
            hi = "V" if vocab_size is None else vocab_size
            raise UserError(f"{key}={list(value)} has an id out of range; allowed: [0, {hi})")

    def allowed(self) -> str:
        """The allowed values in words: `[0.0, 1.0)`, `an integer >= 1`, `none, average`."""
        if self.choices:
            return ", ".join(self.choices)
        if self.type is tuple:
            return "a list of token ids" if self.item is int else f"a list of {self.item.__name__}"
        if self.type is bool:
            return "true or false"
        if self.type is int:
            if self.high < _INF:
                return f"an integer in [{int(self.low)}, {int(self.high)}]"
            return f"an integer >= {int(self.low)}" + (" and <= V" if self.vocab_high else "")
        if self.type is float:
            lb = "(" if self.low_open or self.low == -_INF else "["
            rb = ")" if self.high_open or self.high == _INF else "]"
            if self.zero_gap:
                return f"0 or [{self.zero_gap:g}, {float(self.high)}{rb}"
            return f"{lb}{float(self.low)}, {float(self.high)}{rb}"
        if self.steer:
            return "token ids or text (see seqgen.decoding.steering)"
        return "a dict of decoder knobs"


def _f(name: str, default: float, low=-_INF, high=_INF, lo_open=False, hi_open=False, doc=""):
    """A traced float knob."""
    return Knob(name, float, default, True, low, high, lo_open, hi_open, doc=doc)


def _off(name: str, default: float, low=-_INF, high=_INF, lo_open=False, hi_open=False, doc=""):
    """A traced float knob that switches its processor off at its default."""
    return Knob(name, float, default, True, low, high, lo_open, hi_open, doc=doc, neutral=default)


def _i(name: str, default: int, low: int, *, traced=False, vocab_high=False, doc="", neutral=None):
    """An integer knob (static unless `traced`)."""
    return Knob(name, int, default, traced, low, vocab_high=vocab_high, doc=doc, neutral=neutral)


def _steer(name: str, type_: type, doc: str, switch: bool = True) -> Knob:
    """A steering knob: empty by default (its processor row off), static (part of the
    program's key). `switch=False`: a knob of no processor row (the loop's `stop`)."""
    return Knob(name, type_, type_(), doc=doc, neutral=type_() if switch else None, steer=True)


# greedy and sample read these (`steering`); the beams refuse them
_STEERING = (
    _steer("stop", list, "stop sequences: token ids or text (HF stop_strings, vLLM stop)", False),
    Knob("include_stop", bool, False, doc="keep a matched stop sequence in the output"),
    _steer("bad_words", list, "sequences never generated (vLLM bad_words, HF bad_words_ids)"),
    _steer("allowed_tokens", list, "only these tokens and EOS (vLLM allowed_token_ids)"),
    _steer("logit_bias", dict, "{token: bias} added to the logits (vLLM logit_bias)"),
    _steer("sequence_bias", list, "[[sequence, bias], ...] (HF sequence_bias)"),
)

# In the order of the schema's fields (and so of every config dump).
KNOBS: dict[str, Knob] = {
    k.name: k
    for k in (
        Knob(
            "temperature",
            float,
            1.0,
            True,
            0.0,
            high_open=True,
            doc="0 = greedy",
            zero_gap=TEMPERATURE_MIN,
        ),
        _i("top_k", 0, 0, neutral=0, doc="0 = off; >= V keeps every token (Fan et al. 2018)"),
        _off("top_p", 1.0, 0.0, 1.0, lo_open=True, doc="nucleus (Holtzman et al. 2020)"),
        _off("typical_p", 1.0, 0.0, 1.0, lo_open=True, doc="locally typical (Meister et al. 2023)"),
        _off("min_p", 0.0, 0.0, 1.0, doc="min-p (Nguyen et al. 2024)"),
        _off("epsilon", 0.0, 0.0, 1.0, hi_open=True, doc="epsilon sampling (Hewitt et al. 2022)"),
        _off("eta", 0.0, 0.0, 1.0, hi_open=True, doc="eta sampling (Hewitt et al. 2022)"),
        _i("min_tokens_to_keep", 1, 1, vocab_high=True, doc="every truncation keeps this many"),
        _i("min_length", 0, 0, traced=True, doc="EOS forbidden before this many new tokens"),
        _off("repetition_penalty", 1.0, 0.0, lo_open=True, hi_open=True, doc="CTRL; 1 = off"),
        Knob("penalize_prompt", bool, True, traced=True, doc="prompt tokens count for penalties"),
        _off("presence_penalty", 0.0, lo_open=True, hi_open=True),
        _off("frequency_penalty", 0.0, lo_open=True, hi_open=True),
        _i("no_repeat_ngram_size", 0, 0, neutral=0, doc="0 = off"),
        *_STEERING,
        _i("beam_size", 4, 1),
        Knob("length_penalty", str, "none", choices=("none", "average", "gnmt", "power")),
        _f("alpha", 0.6, 0.0, hi_open=True, doc="exponent of gnmt and power"),
        Knob(
            "eos_rule",
            str,
            "any",
            choices=("any", "top_k"),
            doc="beam: EOS admitted from all 2K candidates (t5x) or only ranked < K (HF, fairseq)",
        ),
        Knob(
            "finalize",
            str,
            "score",
            choices=("score", "finished_first"),
            doc="beam: finished and cut by one score (HF) or finished first (t5x, praxis)",
        ),
        Knob(
            "early_stop",
            str,
            "exact",
            choices=("exact", "k_finished"),
            doc="beam: exact stopping rule, or stop once K hypotheses finished (fairseq, HF)",
        ),
        Knob(
            "force_eos_at_max_len",
            bool,
            False,
            doc="beam: only EOS at the last position, so every hypothesis ends (fairseq)",
        ),
        _steer("force", list, "beam: phrases every hypothesis contains; [a, b] = a or b", False),
        _i("num_groups", 1, 1, doc="diverse beam: groups, dividing beam_size"),
        _f("diversity_penalty", 0.0, 0.0, hi_open=True, doc="diverse beam: Hamming lambda"),
        _off("top_n_sigma", 0.0, 0.0, hi_open=True, doc="0 = off (Tang et al. 2024)"),
        _off("mirostat_tau", 0.0, 0.0, hi_open=True, doc="target surprise, bits; 0 = off (v2)"),
        _f("mirostat_lr", 0.1, 0.0, lo_open=True, hi_open=True, doc="Mirostat's eta"),
        # llama.cpp's samplers (`llama_samplers.py`), with llama.cpp's defaults
        _off("dry_multiplier", 0.0, 0.0, doc="DRY: penalty scale; 0 = off"),
        _f("dry_base", 1.75, 1.0, doc="DRY: penalty growth per extra repeated token"),
        _i("dry_allowed_length", 2, 1, traced=True, doc="DRY: repeats this long go unpenalized"),
        Knob(
            "dry_sequence_breakers",
            tuple,
            [],
            doc='DRY: token ids a repeat cannot cross (llama.cpp: the ids of \\n : " *)',
            item=int,
        ),
        _off("xtc_probability", 0.0, 0.0, 1.0, doc="XTC: chance per step; 0 = off"),
        _f("xtc_threshold", 0.1, 0.0, 1.0, doc="XTC: top choices have p >= this; > 0.5 = off"),
        _off("dynatemp_range", 0.0, 0.0, doc="dynamic temperature in [t - range, t + range]"),
        _f("dynatemp_exponent", 1.0, 0.0, doc="dynamic temperature: entropy exponent"),
        _i("penalty_last_n", 0, 0, doc="penalties count the last n tokens; 0 = all (llama.cpp 64)"),
        Knob("order", tuple, [], doc="processor order (sampler chain); [] = the table's", item=str),
        _f("penalty_alpha", 0.6, 0.0, 1.0, doc="contrastive: degeneration penalty (Su et al.)"),
        _i("max_expansions", 2000, 1, doc="exact: node budget per prompt"),
        _i("expansions_per_step", 16, 1, doc="exact: frontier nodes per batched step"),
        _i("num_candidates", 16, 1, doc="mbr: hypotheses"),
        _i("num_references", 16, 1, doc="mbr: pseudo-references"),
        Knob("candidates", dict, {}, doc="mbr: the hypotheses' decoder knobs ({} = ancestral)"),
        Knob("references", dict, {}, doc="mbr: the pseudo-references' decoder knobs"),
        Knob("utility", str, "chrf", choices=("chrf", "bleu", "edit"), doc="mbr"),
        # the decoders whose row says `guidance` read it (`guidance.py`, `registry.run`)
        _off("guidance_scale", 1.0, 0.0, hi_open=True, doc="CFG gamma, 1 = off (Sanchez+ 2023)"),
    )
}

DEFAULT_NAME = "sample"  # the decoder of a config that names none

# A decoder config's fields beside the knobs.
CONFIG_FIELDS = ("name", "label")

# mbr's nested decoder configs, which take every knob but themselves.
NESTED_FIELDS = ("candidates", "references")


def traced_names() -> tuple[str, ...]:
    """The knobs passed into the compiled program as traced float32 scalars (a user's
    processor may have added some, so this is read when a program is built)."""
    return tuple(k.name for k in KNOBS.values() if k.traced)


def nested_knobs() -> tuple[str, ...]:
    """The knobs mbr's nested decoder configs (`candidates`, `references`) accept."""
    return tuple(k for k in KNOBS if k not in NESTED_FIELDS)


def add_knob(knob: Knob) -> None:
    """Add a user's knob (`processor_table.register_processor` validates it first): the
    schema, the validation and the accessors read `KNOBS` when they run, so it is one of them."""
    if knob.name in KNOBS or knob.name in CONFIG_FIELDS:
        raise UserError(f"knob {knob.name!r} already exists; choose another name")
    KNOBS[knob.name] = knob
