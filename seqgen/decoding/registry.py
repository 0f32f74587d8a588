"""The decoders, written once: each one's function, the knobs it reads (static and traced, with
defaults and ranges in `knobs.KNOBS`), its rows per prompt, whether they are an n-best list, and
the knobs that name its row in tables.

`decode()` dispatches through `DECODERS`; the schema (`seqgen.config`), validation, preflight
and evaluation read `SPECS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seqgen.decoding.beam import beam, diverse_beam
from seqgen.decoding.common import DecodeOutput, get, validate_config
from seqgen.decoding.exact import exact
from seqgen.decoding.knobs import KNOBS
from seqgen.decoding.mbr import mbr
from seqgen.decoding.sampling import greedy, sample
from seqgen.decoding.stochastic_beam import stochastic_beam
from seqgen.errors import UserError

Decoder = Callable[..., DecodeOutput]

_PENALTIES = (
    "repetition_penalty",
    "penalize_prompt",
    "presence_penalty",
    "frequency_penalty",
    "no_repeat_ngram_size",
)
# sample's knobs, in the order that names its row (penalize_prompt does not)
_SAMPLER = (
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
    "min_tokens_to_keep",
    "min_length",
    "top_n_sigma",
    "mirostat_tau",
    "mirostat_lr",
)


@dataclass(frozen=True)
class DecoderSpec:
    """One decoder.

    fn:          the decoder (`decode()`'s signature).
    knobs:       the knobs its program reads (see `static` and `traced`).
    rows:        rows per prompt: a knob's name (`beam_size`), 1, or None for
                 `decode.num_samples`.
    nbest:       its rows are an n-best list, best first (only the first is "the" generation),
                 rather than samples.
    mode_search: it approximates the mode, so `search/beam_error` counts how often exact search
                 finds a better sequence.
    label_knobs: the knobs that name its row when they differ from their default (in order);
    label_always: ... and those named even at their default.
    """

    fn: Decoder
    knobs: tuple[str, ...]
    rows: str | int | None
    nbest: bool
    label_knobs: tuple[str, ...]
    label_always: tuple[str, ...] = ()
    mode_search: bool = False

    @property
    def static(self) -> tuple[str, ...]:
        return tuple(k for k in self.knobs if not KNOBS[k].traced)

    @property
    def traced(self) -> tuple[str, ...]:
        return tuple(k for k in self.knobs if KNOBS[k].traced)


# the toolkit conventions (eos_rule, finalize, early_stop, force_eos_at_max_len) name a row only
# when they differ from seqgen's default, so existing labels stay as they were
_CONVENTIONS = ("eos_rule", "finalize", "early_stop", "force_eos_at_max_len")
_BEAM = ("beam_size", "length_penalty", "alpha", "min_length", *_CONVENTIONS)

SPECS: dict[str, DecoderSpec] = {
    "greedy": DecoderSpec(
        greedy, (*_PENALTIES, "min_length"), 1, True, ("min_length",), mode_search=True
    ),
    "sample": DecoderSpec(sample, (*_SAMPLER, "penalize_prompt"), None, False, _SAMPLER),
    # beam names a row by no_repeat_ngram_size too, although its program does not read it
    "beam": DecoderSpec(
        beam,
        _BEAM,
        "beam_size",
        True,
        ("beam_size", "length_penalty", "alpha", "no_repeat_ngram_size", "min_length")
        + _CONVENTIONS,
        label_always=("beam_size",),
        mode_search=True,
    ),
    "stochastic_beam": DecoderSpec(
        stochastic_beam,
        ("beam_size", "temperature", "min_length"),
        "beam_size",
        False,
        ("beam_size", "temperature", "min_length"),
        label_always=("beam_size",),
    ),
    "diverse_beam": DecoderSpec(
        diverse_beam,
        (*_BEAM, "num_groups", "diversity_penalty"),
        "beam_size",
        True,
        ("beam_size", "num_groups", "diversity_penalty", "length_penalty", "min_length")
        + _CONVENTIONS,
        label_always=("beam_size",),
        mode_search=True,
    ),
    # exact names a row by min_length too, although its search does not read it
    "exact": DecoderSpec(
        exact,
        ("beam_size", "max_expansions", "expansions_per_step"),
        1,
        True,
        ("max_expansions", "beam_size", "min_length"),
    ),
    "mbr": DecoderSpec(
        mbr,
        ("num_candidates", "num_references", "candidates", "references", "utility"),
        "num_candidates",
        True,
        ("utility", "num_candidates", "num_references", "candidates", "references"),
    ),
}

DECODERS: dict[str, Decoder] = {name: spec.fn for name, spec in SPECS.items()}
DECODER_NAMES: tuple[str, ...] = tuple(SPECS)


def validate_decoder(dec: Any, where: str = "decoder", vocab_size: int | None = None) -> None:
    """The decoder's name, every knob and the rules between them; one `UserError` line naming
    `where` (`decoder` or `compare[i]`)."""
    name = get(dec, "name")
    if name not in SPECS:
        raise UserError(f"{where}.name={name!r} is unknown; allowed: {', '.join(SPECS)}")
    validate_config(dec, name, vocab_size, where)


def rows_per_prompt(dec: Any, num_samples: int) -> int:
    """How many rows the decoder returns per prompt (`decode.num_samples` for samplers)."""
    rows = SPECS[get(dec, "name")].rows
    if rows is None:
        return int(num_samples)
    return int(get(dec, rows)) if isinstance(rows, str) else rows


def label(dec: dict[str, Any]) -> str:
    """A short display name: `dec["label"]`, else the name and its label knobs that differ from
    their default (`beam(beam_size=4, length_penalty=gnmt)`)."""
    if dec.get("label"):
        return str(dec["label"])
    name = dec.get("name") or get(None, "name")
    spec = SPECS[name]
    knobs = [
        f"{k}={get(dec, k)}"
        for k in spec.label_knobs
        if k in spec.label_always or get(dec, k) != KNOBS[k].default
    ]
    return f"{name}({', '.join(knobs)})" if knobs else name
