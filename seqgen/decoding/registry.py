"""The decoders, written once: every fact about a decoder lives in its `DecoderSpec` row --
its program, the knobs it reads (static and traced, with defaults and ranges in
`knobs.KNOBS`; the sampling decoders' come from the processor table), the rules between its
knobs, constraint support, its rows per prompt and how many of them the metrics keep, the unit
of its score, its search metrics, whether it may be MBR's nested decoder, and the knobs that
name its row in tables.

`run(name, req)` is the one entry path (validate, prepare, run the program) that `decode()`
and every decoder function take. No decoder name is compared outside this module: the
pipeline asks the row (`spec`, `score_unit`, `kept_per_prompt`, `search_metrics`, ...).
`register_decoder` adds a user's decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seqgen.decoding import guidance, steering
from seqgen.decoding import processor_table as table
from seqgen.decoding.beam import launch_diverse
from seqgen.decoding.common import (
    DEFAULTS,
    DecodeOutput,
    DecodeRequest,
    Prepared,
    check_logprobs,
    get,
    prepare,
    validate_knobs,
)
from seqgen.decoding.contrastive import launch as launch_contrastive
from seqgen.decoding.exact import launch as launch_exact
from seqgen.decoding.exact import state_bytes as exact_state_bytes
from seqgen.decoding.forced import launch as launch_beam
from seqgen.decoding.knobs import DEFAULT_NAME, KNOBS, NESTED_FIELDS, Knob, add_knob
from seqgen.decoding.loop import resolve_loop
from seqgen.decoding.mbr import launch as launch_mbr
from seqgen.decoding.sampling import launch_greedy, launch_sample
from seqgen.decoding.stochastic_beam import launch as launch_stochastic_beam
from seqgen.errors import UserError

Decoder = Callable[[DecodeRequest], DecodeOutput]
Launch = Callable[[DecodeRequest, Prepared], DecodeOutput]
Get = Callable[[str], Any]

# score/mean is the score a decoder ranks by; its unit depends on the length penalty, so
# scores in different units never share an axis.
LENGTH_PENALTY_UNITS = {
    "none": "mean log-prob (nats per sequence)",
    "average": "mean log-prob / length (nats per token)",
    "gnmt": "mean log-prob / ((5+L)/6)^alpha (nats)",
    "power": "mean log-prob / L^alpha (nats)",
}


def _logprob_unit(get_: Get) -> str:
    return LENGTH_PENALTY_UNITS["none"]


def _length_penalty_unit(get_: Get) -> str:
    return LENGTH_PENALTY_UNITS[str(get_("length_penalty"))]


@dataclass(frozen=True)
class DecoderSpec:
    """One decoder.

    fn:          its program: `fn(req, prep) -> DecodeOutput` for a validated request.
    own_knobs:   the knobs its program reads besides the processors'.
    rows:        rows per prompt: a knob's name (`beam_size`), 1, or None for
                 `decode.num_samples`.
    nbest:       its rows are an n-best list, best first (only the first is "the" generation
                 and the metrics keep it), rather than samples.
    label_knobs: the knobs that name its row when they differ from their default (in order);
                 None: its knobs. `label_always`: ... and those named even at their default.
    processors:  the stages of `processor_table` it applies (its knobs come with them).
    keyed:       it reads the PRNG key and `prompt_ids` (the deterministic ones do not).
    constraints: it supports `constraint=` automata.
    nestable:    it may be MBR's candidate or reference decoder.
    one_per_prompt: with prompts, the metrics keep its best row only (stochastic beam's K
                 samples without replacement are one prompt's set), so every decoder and the
                 human row have one continuation per prompt.
    guidance:    it takes `decoder.guidance_scale` (classifier-free guidance, `guidance.py`):
                 `run` hands its program the guided step function in place of the model's.
    mode_search: it approximates the mode, so `search/beam_error` counts how often exact search
                 finds a better sequence. `finds_mode`: its result is that exact mode.
    check:       `check(get, where)`: the rules between its knobs; one `UserError` line.
    score_unit:  `score_unit(get) -> str`, the unit of its `scores`.
    metric_inputs: `metric_inputs(out) -> {Generations field: value}`, what only its outputs
                 mean (`out`: the decode outputs as arrays; MBR's scores are its candidates'
                 expected utilities, which `mbr/*` read).
    state_bytes: `state_bytes(get, carry_row_bytes, prompts, vocab_size) -> int`, the carries
                 its program holds at once when that is not one per returned row (exact
                 search's pool, contrastive search's top_k candidates); None: one per row.
    """

    fn: Launch
    own_knobs: tuple[str, ...]
    rows: str | int | None
    nbest: bool
    label_knobs: tuple[str, ...] | None = None
    label_always: tuple[str, ...] = ()
    processors: tuple[str, ...] = ()
    keyed: bool = True
    constraints: bool = True
    nestable: bool = True
    one_per_prompt: bool = False
    mode_search: bool = False
    finds_mode: bool = False
    check: Callable[[Get, str], None] | None = None
    score_unit: Callable[[Get], str] = _logprob_unit
    metric_inputs: Callable[[dict], dict[str, Any]] | None = None
    state_bytes: Callable[[Get, int, int, int], int] | None = None
    logprobs: bool = False  # it returns the top-K alternatives (`decode(logprobs=K)`)
    # it reads the step's hidden state (`common.hidden_step`): refused for a model without
    # one, and its carry takes one step past max_len (`carry_len`)
    hidden: bool = False
    guidance: bool = False

    @property
    def knobs(self) -> tuple[str, ...]:
        """Every knob its program reads (the processors' read when asked: a user may add some)."""
        own = (*self.own_knobs, guidance.KNOB) if self.guidance else self.own_knobs
        return tuple(dict.fromkeys((*table.stage_knobs(self.processors), *own)))

    @property
    def static(self) -> tuple[str, ...]:
        return tuple(k for k in self.knobs if not KNOBS[k].traced)

    @property
    def traced(self) -> tuple[str, ...]:
        return tuple(k for k in self.knobs if KNOBS[k].traced)

    @property
    def labels(self) -> tuple[str, ...]:
        if self.label_knobs is None:
            return self.knobs
        return (*self.label_knobs, guidance.KNOB) if self.guidance else self.label_knobs


def _check_stochastic_beam(get_: Get, where: str) -> None:
    if float(get_("temperature")) == 0.0:
        raise UserError(
            f"{where}.temperature=0 is not allowed for stochastic_beam; allowed: (0, inf)"
        )


def _check_groups(get_: Get, where: str) -> None:
    beam_size, num_groups = int(get_("beam_size")), int(get_("num_groups"))
    if beam_size % num_groups != 0:
        raise UserError(
            f"{where}.num_groups={num_groups} must divide {where}.beam_size={beam_size}; "
            "allowed: a divisor of beam_size"
        )


def _check_exact(get_: Get, where: str) -> None:
    if get_("length_penalty") != "none":
        raise UserError(
            f"{where}.length_penalty must be none for exact (it finds argmax log p(y | x))"
        )


def _check_mbr(get_: Get, where: str) -> None:
    cfg = {f: get_(f) for f in NESTED_FIELDS}
    for f in NESTED_FIELDS:
        validate_decoder(nested_config(cfg, f, where), f"{where}.{f}")


def _check_contrastive(get_: Get, where: str) -> None:
    if int(get_("top_k")) < 1:
        raise UserError(
            f"{where}.top_k={get_('top_k')} is out of range for contrastive; allowed: an "
            "integer >= 1 (the candidates per step)"
        )


def _mbr_unit(get_: Get) -> str:
    return f"mean expected utility, {get_('utility')} (0-1)"


# the toolkit conventions (eos_rule, finalize, early_stop, force_eos_at_max_len) name a row only
# when they differ from seqgen's default, so existing labels stay as they were
_CONVENTIONS = ("eos_rule", "finalize", "early_stop", "force_eos_at_max_len")
_BEAM = ("beam_size", "length_penalty", "alpha", "min_length", *_CONVENTIONS)

_STOP = ("stop", "include_stop")  # the sampling loop's end condition (`steering`)


def _beam_row(
    fn: Launch,
    own_knobs: tuple[str, ...],
    labels: tuple[str, ...],
    last: tuple[str, ...] = (),
    **facts: Any,
) -> DecoderSpec:
    """A beam search's row: its n-best of `beam_size` hypotheses, deterministic, a mode search
    scored by its length penalty, named by `labels`, the toolkit conventions it follows and
    `last`."""
    return DecoderSpec(
        fn,
        own_knobs,
        "beam_size",
        True,
        labels + _CONVENTIONS + last,
        label_always=("beam_size",),
        keyed=False,
        mode_search=True,
        score_unit=_length_penalty_unit,
        **facts,
    )


SPECS: dict[str, DecoderSpec] = {
    "greedy": DecoderSpec(
        launch_greedy,
        (*_STOP, "order"),
        1,
        True,
        ("min_length",),
        processors=table.PENALTY_STAGES,
        keyed=False,
        mode_search=True,
        logprobs=True,
        guidance=True,
    ),
    "sample": DecoderSpec(
        launch_sample,
        (*_STOP, "order"),
        None,
        False,
        processors=table.STAGES,
        logprobs=True,
        guidance=True,
    ),
    # beam names a row by no_repeat_ngram_size too, although its program does not read it
    # beam with `force` is lexically constrained beam search (`forced.py`)
    "beam": _beam_row(
        launch_beam,
        (*_BEAM, "force"),
        ("beam_size", "length_penalty", "alpha", "no_repeat_ngram_size", "min_length"),
        last=("force",),
        guidance=True,
    ),
    "stochastic_beam": DecoderSpec(
        launch_stochastic_beam,
        ("beam_size", "temperature", "min_length"),
        "beam_size",
        False,
        label_always=("beam_size",),
        one_per_prompt=True,
        check=_check_stochastic_beam,
        guidance=True,
        score_unit=lambda get_: "mean perturbed log-prob G (nats per sequence)",
    ),
    "diverse_beam": _beam_row(
        launch_diverse,
        (*_BEAM, "num_groups", "diversity_penalty"),
        ("beam_size", "num_groups", "diversity_penalty", "length_penalty", "min_length"),
        check=_check_groups,
        guidance=True,
    ),
    # exact names a row by min_length too, although its search does not read it
    "exact": DecoderSpec(
        launch_exact,
        ("beam_size", "max_expansions", "expansions_per_step"),
        1,
        True,
        ("max_expansions", "beam_size", "min_length"),
        keyed=False,
        constraints=False,
        nestable=False,
        finds_mode=True,
        check=_check_exact,
        state_bytes=exact_state_bytes,
    ),
    "contrastive": DecoderSpec(
        launch_contrastive,
        ("top_k", "penalty_alpha"),
        1,
        True,
        label_always=("top_k", "penalty_alpha"),
        keyed=False,
        constraints=False,
        nestable=False,
        check=_check_contrastive,
        hidden=True,
        # the row and its top_k candidates, fed at once
        state_bytes=lambda get_, carry, prompts, v: prompts * (1 + int(get_("top_k"))) * carry,
    ),
    "mbr": DecoderSpec(
        launch_mbr,
        ("num_candidates", "num_references", "candidates", "references", "utility"),
        "num_candidates",
        True,
        ("utility", "num_candidates", "num_references", "candidates", "references"),
        nestable=False,
        check=_check_mbr,
        score_unit=_mbr_unit,
        metric_inputs=lambda out: {"expected_utility": out["scores"]},
    ),
}


BUILTIN: tuple[str, ...] = tuple(SPECS)


def names() -> tuple[str, ...]:
    """The decoder names, built-in and registered."""
    return tuple(SPECS)


def registered() -> tuple[str, ...]:
    """The decoders a user added (`register_decoder`): they have no `conf/decoder/*.yaml`."""
    return tuple(n for n in SPECS if n not in BUILTIN)


def spec(dec: Any, where: str = "decoder") -> DecoderSpec:
    """The row of decoder config `dec` (its `name`; unset = the default decoder)."""
    name = get(dec, "name")
    if name not in SPECS:
        raise UserError(f"{where}.name={name!r} is unknown; allowed: {', '.join(SPECS)}")
    return SPECS[name]


def validate_decoder(dec: Any, where: str = "decoder", vocab_size: int | None = None) -> None:
    """The decoder's name, every knob and the rules between them; one `UserError` line naming
    `where` (`decoder` or `compare[i]`). Without a `vocab_size` (a config checked before its
    corpus is read) the vocabulary bound is left out."""
    row = spec(dec, where)
    validate_knobs(dec, vocab_size, where)
    table.check_order(get(dec, "order"), f"{where}.order")
    steering.check_unread(row.knobs, lambda k: get(dec, k), get(dec, "name"), where, readers)
    check_guidance(dec, where)
    if row.check is not None:
        row.check(lambda k: get(dec, k), where)


def searches_mode(dec: Any) -> bool:
    """Decoder `dec` approximates the model's mode, so `search/beam_error` holds it to exact
    search's: a `mode_search` row without forced words (a forced beam searches only the
    sequences that contain its phrases, whose best is below the mode by design)."""
    return spec(dec).mode_search and not get(dec, "force")


def readers(knob: str) -> list[str]:
    """The decoders whose program reads `knob`."""
    return [n for n, s in SPECS.items() if knob in s.knobs]


def check_guidance(dec: Any, where: str = "decoder", name: str | None = None) -> None:
    """Refuse `guidance_scale != 1` for a decoder (`name`, else `dec`'s) whose row does not
    take guidance, in one line."""
    name = get(dec, "name") if name is None else name
    if guidance.on(dec) and not SPECS[name].guidance:
        ok = ", ".join(n for n, s in SPECS.items() if s.guidance)
        raise UserError(
            f"{where}.guidance_scale={get(dec, guidance.KNOB)} is not supported by decoder "
            f"{name}; allowed: {ok} (or guidance_scale=1)"
        )


def check_constraint(dec: Any, where: str = "decoder") -> None:
    """Refuse a decoder that does not support `constraint=` automata, in one line."""
    if not spec(dec, where).constraints:
        ok = ", ".join(n for n, s in SPECS.items() if s.constraints)
        raise UserError(
            f"{where}.name={get(dec, 'name')} is not supported with a constraint; "
            f"allowed: constraint=none, or {ok}"
        )


def nested_config(cfg: Any, field: str, where: str = "decoder") -> dict[str, Any]:
    """The nested decoder config `<where>.<field>` (mbr's candidates / references) as a dict,
    named `sample` unless given; unknown keys and decoders that cannot nest are a UserError."""
    raw = get(cfg, field)
    nested = dict(raw.items()) if hasattr(raw, "items") else None
    if nested is None:
        raise UserError(f"{where}.{field}={raw!r}; allowed: a dict of decoder knobs")
    nested.setdefault("name", DEFAULT_NAME)
    for k in nested:
        if k not in DEFAULTS or k in NESTED_FIELDS:
            raise UserError(
                f"{where}.{field}.{k} is not a decoder knob; allowed: the decoder.* knobs"
            )
    if not spec(nested, f"{where}.{field}").nestable:
        raise UserError(
            f"{where}.{field}.name={nested['name']!r} is not allowed; use a sampler or beam decoder"
        )
    return nested


def run(name: str, req: DecodeRequest) -> DecodeOutput:
    """The one entry path of every decoder: validate the knobs and the rules between them,
    check constraint support, prepare the inputs (`common.prepare`), run the program.
    Every mistake is one `UserError` line before any compile."""
    row = spec({"name": name})
    resolve_loop(req.loop)  # an unknown loop is a UserError before any work
    validate_knobs(req.cfg, req.vocab_size)
    table.check_order(get(req.cfg, "order"), "decoder.order")
    steering.check_unread(row.knobs, lambda k: get(req.cfg, k), name, readers=readers)
    check_logprobs(req, name, row.logprobs)
    check_guidance(req.cfg, name=name)
    if row.check is not None:
        row.check(lambda k: get(req.cfg, k), "decoder")
    if req.constraint is not None:
        check_constraint({"name": name})
    num_samples = req.num_samples if row.rows is None else 1
    prep = prepare(req, num_samples=num_samples, keyed=row.keyed)
    if guidance.on(req.cfg):  # the program runs the guided step function (`guidance.guide`)
        req = guidance.guide(req, prep)
    return row.fn(req, prep)


def carry_len(dec: Any, max_len: int) -> int:
    """The steps a decoder's initial carry must hold (a KV cache's size): `max_len`, one more
    for a decoder that feeds each candidate to read its hidden state (contrastive)."""
    return int(max_len) + int(spec(dec).hidden)


def needs_hidden(dec: Any) -> bool:
    """Whether decoder `dec` reads the model's hidden states (`common.hidden_step`)."""
    return spec(dec).hidden


def rows_per_prompt(dec: Any, num_samples: int) -> int:
    """How many rows the decoder returns per prompt (`decode.num_samples` for samplers)."""
    rows = spec(dec).rows
    if rows is None:
        return int(num_samples)
    return int(get(dec, rows)) if isinstance(rows, str) else rows


def state_bytes(
    dec: Any, carry_row_bytes: int, prompts: int, vocab_size: int, num_samples: int
) -> int:
    """A lower estimate of decoder `dec`'s device memory for `prompts` prompts per call: the
    carries it holds (`carry_row_bytes` each, for `carry_len` steps), one per row it returns
    (`rows_per_prompt`), or as many as its program holds at once (its row's `state_bytes`);
    twice that under classifier-free guidance, whose carry holds an unconditional stream too."""
    row = spec(dec)
    if row.state_bytes is not None:
        need = row.state_bytes(lambda k: get(dec, k), carry_row_bytes, prompts, vocab_size)
    else:
        need = prompts * rows_per_prompt(dec, num_samples) * carry_row_bytes
    return 2 * need if guidance.on(dec) else need


def kept_per_prompt(dec: Any, n: int, prompted: bool) -> int:
    """How many of a prompt's n outputs count as its generations in the metrics: n-best
    decoders their best; `one_per_prompt` ones their best when there are prompts; else all."""
    row = spec(dec)
    return 1 if row.nbest or (prompted and row.one_per_prompt) else n


def score_unit(dec: Any) -> str:
    """The unit of decoder `dec`'s scores (`score/mean`), in words."""
    return spec(dec).score_unit(lambda k: get(dec, k))


def metric_inputs(dec: Any, out: dict) -> dict[str, Any]:
    """What only decoder `dec`'s outputs mean, for the metrics (MBR's expected utilities)."""
    row = spec(dec)
    return {} if row.metric_inputs is None else row.metric_inputs(out)


def label(dec: dict[str, Any]) -> str:
    """A short display name: `dec["label"]`, else the name and its label knobs that differ from
    their default (`beam(beam_size=4, length_penalty=gnmt)`)."""
    if dec.get("label"):
        return str(dec["label"])
    name = dec.get("name") or get(None, "name")
    row = SPECS[name]
    knobs = [
        f"{k}={get(dec, k)}"
        for k in row.labels
        if k in row.label_always or get(dec, k) != KNOBS[k].default
    ]
    return f"{name}({', '.join(knobs)})" if knobs else name


def register_decoder(
    name: str, fn: Launch, *, knobs: tuple[Knob | str, ...] = (), **facts: Any
) -> DecoderSpec:
    """Add a user's decoder (one call, from the user's own code): `decoder=<name>` in the Hydra
    config (compare lists included) and `decode(cfg={"name": name, ...})` then run it through
    the one entry path, and the pipeline reads its facts like a built-in's.

    fn:    `fn(req: DecodeRequest, prep: common.Prepared) -> DecodeOutput` (it may call
           `seqgen.decoding.decode` for other decoders, as MBR does).
    knobs: new `knobs.Knob`s (each becomes a `decoder.<knob>` field) or existing knob names.
    facts: the other `DecoderSpec` fields (`rows` and `nbest` are required).
    Refused with one `UserError` line: a name clash, an unknown fact or knob, a bad `rows`.
    """
    where = f"register_decoder({name!r})"
    if not isinstance(name, str) or not name.isidentifier() or name in SPECS:
        raise UserError(
            f"{where}: the name clashes or is not an identifier; taken: {', '.join(SPECS)}"
        )
    if not callable(fn):
        raise UserError(f"{where}: fn is not callable; allowed: fn(req, prep) -> DecodeOutput")
    allowed = set(DecoderSpec.__dataclass_fields__) - {"fn", "own_knobs"}
    unknown = set(facts) - allowed
    if unknown or not {"rows", "nbest"} <= set(facts):
        raise UserError(
            f"{where}: facts {sorted(unknown)} unknown or rows/nbest missing; allowed: "
            f"{', '.join(sorted(allowed))}"
        )
    new = [k for k in knobs if not isinstance(k, str)]
    for k in new:
        table.check_new_knob(k, where)
    names_ = tuple(k if isinstance(k, str) else k.name for k in knobs)
    rows = facts["rows"]
    known = set(KNOBS) | {k.name for k in new}
    ok_rows = rows is None or (isinstance(rows, int) and rows >= 1) or rows in known
    bad_knob = [k for k in knobs if isinstance(k, str) and k not in KNOBS]
    if not ok_rows or bad_knob:
        raise UserError(
            f"{where}: rows={rows!r} or knobs {bad_knob} invalid; allowed: rows None, an "
            "integer >= 1 or a knob name; knobs: Knob objects or existing knob names"
        )
    for k in new:
        add_knob(k)
        DEFAULTS[k.name] = k.default
    row = DecoderSpec(fn, names_, **facts)
    SPECS[name] = row
    return row
