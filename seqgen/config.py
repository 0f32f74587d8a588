"""Typed config schemas, registered in Hydra's ConfigStore, and their validation.

OmegaConf checks keys and types when Hydra merges `conf/` and the command-line overrides into
these dataclasses; `validate_config` checks ranges and choices. Both kinds of mistake reach the
user as one line (`seqgen.errors.UserError`), never a traceback.

The decoder knobs -- names, defaults, ranges, static or traced -- are written once, in
`seqgen.decoding.knobs`, and `DecoderConfig` is generated from them; the decoders themselves
(which knobs each reads, its rows, its label) in `seqgen.decoding.registry`. Sizes
(`decode.max_len`, `decode.num_samples`, `decoder.beam_size`, ...) change array shapes and
recompile; continuous knobs are traced and sweeping them reuses one compile.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from seqgen.decoding import registry
from seqgen.decoding.common import LOGPROBS_MODES
from seqgen.decoding.knobs import DEFAULT_NAME, KNOBS, NESTED_FIELDS, Knob
from seqgen.decoding.loop import LOOPS
from seqgen.errors import UserError
from seqgen.metrics.abc import ABC_SUBSET, ABC_TIMEOUT_S
from seqgen.models import CELL_CHOICES, has_hidden
from seqgen.models import check_model as check_cell
from seqgen.models.recurrence import BACKWARDS
from seqgen.models.transformer import POSITIONS
from seqgen.plugins import import_exported
from seqgen.settings import setting

MAX_LEN = 1_000_000  # the largest decode.max_len (see DecodeConfig)
CORPORA = ("folk", "text", "synthetic")


_INF = math.inf


def _int(default: int | None, low: float = -_INF, high: float = _INF) -> Any:
    """A field holding an integer in [low, high] (None where the field is optional)."""
    return field(default=default, metadata={"knob": {"type": int, "low": low, "high": high}})


def _float(default: float, low=-_INF, high=_INF, *, lo_open=False, hi_open=False) -> Any:
    """A field holding a finite float between `low` and `high` (`*_open`: bound excluded)."""
    rng = {"low": low, "high": high, "low_open": lo_open, "high_open": hi_open}
    return field(default=default, metadata={"knob": {"type": float, **rng}})


def _one_of(default: str, choices: tuple[str, ...]) -> Any:
    """A field holding one of `choices`."""
    # a tuple, or a sequence read when checked (model.cell: the models table, registered rows too)
    return field(default=default, metadata={"knob": {"type": str, "choices": choices}})


# Every field's range or choices sits beside it (`_int`, `_float`, `_one_of`) and is checked by
# `seqgen.decoding.knobs.Knob.check`, the decoder knobs' checker: one range language.
@dataclass
class DataConfig:
    name: str = _one_of("folk", CORPORA)
    # folk: music21's bundled ABC collections; by default its public-domain ones (the
    # licenses: data/folk.COLLECTION_LICENSES)
    collections: list[str] = field(
        default_factory=lambda: ["oneills1850", "ryansMammoth", "airdsAirs", "miscFolk"]
    )
    # text: a local UTF-8 file, or a named preset that is downloaded once and checksummed
    path: str | None = None
    preset: str | None = None
    # text, pre-split: a split without a file is carved out of the training file
    train_path: str | None = None  # instead of path
    valid_path: str | None = None
    test_path: str | None = None
    level: str = _one_of("char", ("char", "word", "whitespace", "abc"))
    line_eos: bool = False  # text: each newline is the end-of-sentence token EOS (PTB)
    unk_token: str = "<unk>"  # whitespace level: the corpus's own unknown marker, read as UNK
    min_count: int = _int(1, 1)  # rarer training symbols become UNK
    max_vocab: int | None = _int(None, 2)  # at most this many types (EOS and UNK included)
    window: int = _int(2048, 2)  # text: block size (tokens, cut at line ends) of the seeded split
    valid_fraction: float = _float(0.05, 0, 1, lo_open=True, hi_open=True)
    test_fraction: float = _float(0.05, 0, 1, lo_open=True, hi_open=True)
    max_sequences: int | None = _int(None, 3)  # cap the corpus (tiny runs, tests)
    # synthetic: a random deterministic probabilistic finite-state automaton (DPFSA)
    num_states: int = _int(8, 1)
    alphabet_size: int = _int(6, 1)
    num_train: int = _int(2000, 3)
    stop_prob: float = _float(0.15, 0, 1, lo_open=True)
    cache_dir: str | None = None  # download cache for presets
    unknown: str = _one_of("error", ("error", "unk"))  # an unknown symbol in a user's prompt


@dataclass
class ModelConfig:
    # a row of seqgen.models.MODELS (lstm | gru | rnn | transformer | a registered model), or
    # oracle (the DPFSA's exact distribution); each cell reads the fields its row names
    cell: str = _one_of("lstm", CELL_CHOICES)
    embed_size: int = _int(64, 1)  # recurrent cells; the Transformer embeds in hidden_size
    hidden_size: int = _int(128, 1)  # the Transformer's d_model
    num_layers: int = _int(2, 1)
    dropout: float = _float(0.1, 0, 1, hi_open=True)
    tie_weights: bool = False
    one_hot_input: bool = False  # recurrent cells
    num_heads: int = _int(4, 1)  # Transformer: attention heads (divide hidden_size)
    positions: str = _one_of("learned", POSITIONS)  # Transformer: learned | rope
    context: int = _int(256, 1)  # Transformer: positions (train.seq_len, decode.max_len fit)


@dataclass
class TrainConfig:
    steps: int = _int(250, 0)
    batch_size: int = _int(32, 1)
    seq_len: int = _int(256, 2)
    lr: float = _float(1e-2, 0, lo_open=True)
    weight_decay: float = _float(0.01, 0)
    warmup_steps: int = _int(20, 0)  # at most train.steps
    clip_norm: float = _float(1.0, 0, lo_open=True)
    eval_every: int = _int(125, 1)
    eval_batches: int = _int(16, 1)
    checkpoint_every: int = _int(125, 1)
    log_every: int = _int(10, 1)
    data_parallel: bool = True
    progress: bool = True
    patience: int = _int(0, 0)  # evaluations without a better validation loss before stopping
    end_lr_ratio: float = _float(0.0, 0, 1)  # the cosine schedule ends at end_lr_ratio * lr
    # recurrences' schedule and gradient: fused (per layer, hand-written backward; the fastest
    # on the quiet 2-core CPU in 5 of 6 rows of README "Training") | autodiff (JAX's, the
    # reference) | wavefront | wavefront_fused (all layers in one scan; models.wavefront)
    backward: str = _one_of("fused", BACKWARDS)


def _decoder_field(knob: Any) -> tuple[str, Any, Any]:
    if knob.type is dict:
        keys = Any if knob.steer else str  # logit_bias: token ids or symbols
        return knob.name, dict[keys, Any], field(default_factory=dict)
    if knob.type is list:
        return knob.name, list[Any], field(default_factory=list)
    if knob.type is tuple:  # a list in the config; read as a tuple (hashable: a static key)
        return knob.name, list[knob.item], field(default_factory=lambda: list(knob.default))
    return knob.name, knob.type, field(default=knob.default)


def _decoder_config() -> type:
    """One decoder: its name, every knob of `seqgen.decoding.knobs.KNOBS` with its default, and
    a display name for tables and plots (default: derived, `seqgen.decoding.registry.label`).
    Built again by `register_configs` when a user's processor or decoder added knobs."""
    cls = make_dataclass(
        "DecoderConfig",
        [
            ("name", str, field(default=DEFAULT_NAME)),
            *(_decoder_field(k) for k in KNOBS.values()),
            ("label", str | None, field(default=None)),
        ],
    )
    cls.__module__ = __name__
    return cls


DecoderConfig = _decoder_config()


@dataclass
class ConstraintConfig:
    # an automaton every decoded sequence follows (seqgen.decoding.constraint): none | regex
    # (character vocabularies: the text fully matches `pattern`) | meter (data.level=abc: every
    # full bar lasts what the tune's M: and L: say; seqgen.data.meter)
    name: str = _one_of("none", ("none", "regex", "meter"))
    pattern: str | None = None  # regex: a Python regular expression (interegular's subset)


@dataclass
class DecodeConfig:
    num_samples: int = _int(1, 1)  # sequences per prompt for sampling; beams give their best
    # prompt + continuation, in tokens; at most MAX_LEN, since the positions are decoded one
    # after another (1e6 steps of a small LSTM take minutes on a CPU; 1e7 would look hung)
    max_len: int = _int(256, 1, MAX_LEN)
    prompts: Any = "heldout"  # none | heldout | a list of strings
    num_prompts: int = _int(100, 1)  # held-out prompts (prompts=heldout)
    prompt_len: int = _int(16, 1)  # tokens of each held-out prefix
    batch_size: int = _int(256, 1)  # rows decoded per compiled call (over all devices)
    shard: bool = True  # split the rows over every device (and host) when there is more than one
    loop: str = _one_of("auto", LOOPS)  # same outputs, speed differs
    # the most token positions one decoder's outputs may hold (rows x decode.max_len); a larger
    # decode is refused before any work: 1e8 positions are ~1.6 GB of ids and log-probs
    max_tokens: int = _int(100_000_000, 1)
    # a decoder with more rows (kept generations) than this is a study: its samples go to disk
    # chunk by chunk and its token metrics are counted in chunks of this many rows
    stream_rows: int = _int(16384, 1)
    # the K most probable alternatives of every generated token in samples.jsonl (0 = none;
    # greedy and sample), from the model's distribution (raw) or the one sampled (processed)
    logprobs: int = _int(0, 0)
    logprobs_mode: str = _one_of("raw", LOGPROBS_MODES)
    prompt_logprobs: bool = False  # the model's log-prob of each prompt token in samples.jsonl


@dataclass
class LoggerConfig:
    name: str = _one_of("none", ("none", "wandb"))
    project: str = "seqgen"
    entity: str | None = None
    group: str | None = None
    run_name: str | None = None
    mode: str = _one_of("offline", ("online", "offline", "disabled"))
    tags: list[str] = field(default_factory=list)


@dataclass
class MetricsConfig:
    self_bleu_max: int = _int(1000, 2)  # hypotheses scored by Self-BLEU
    abc_subset: int = _int(ABC_SUBSET, 0)  # tunes parsed by music21 for abc/* metrics
    # music21's time per tune; a tune that runs out is unparsed
    abc_timeout_s: float = _float(ABC_TIMEOUT_S, 0, lo_open=True)
    reference_checkpoint: str | None = None  # a cached model dir giving gen/ref_ppl


@dataclass
class OutputConfig:
    num_listen: int = _int(5, 0)  # tunes per decoder written as .abc and .mid
    plots: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decoder: DecoderConfig | None = None  # one decoder; None evaluates `compare`
    compare: list[DecoderConfig] = field(default_factory=list)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    constraint: ConstraintConfig = field(default_factory=ConstraintConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = _int(0, 0, 2**32 - 1)  # numpy's and JAX's seeds are unsigned 32-bit
    cache_dir: str | None = None  # trained-model cache; default $SEQGEN_CACHE or ~/.cache/seqgen
    cache_on_damage: str = _one_of("retrain", ("retrain", "error"))  # a damaged cache entry
    distributed: bool = False  # jax.distributed.initialize() for multi-host TPU pods / GPU clusters
    experiment_name: str = "default"
    # user extensions imported before the config is validated: dotted module names or paths to
    # .py files that call register_processor/decoder/metric/model (OmegaConf checks the type;
    # each entry is checked by importing it, seqgen.plugins.import_plugin, one line if it fails)
    plugins: list[str] = field(default_factory=list)


GROUP_SCHEMAS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "decoder": DecoderConfig,
    "decode": DecodeConfig,
    "constraint": ConstraintConfig,
    "logger": LoggerConfig,
    "metrics": MetricsConfig,
    "output": OutputConfig,
}


def register_configs() -> None:
    """Register the schema so `conf/config.yaml` can list `config_schema` first (with the knobs
    of every processor and decoder registered by then: `Config`'s annotations name
    `DecoderConfig`, which OmegaConf resolves in this module when it reads them)."""
    global DecoderConfig
    if {f.name for f in fields(DecoderConfig)} != {"name", "label", *KNOBS}:
        DecoderConfig = GROUP_SCHEMAS["decoder"] = _decoder_config()
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for name in registry.registered():  # `decoder=NAME` for a user's decoder
        store.store(group="decoder", name=name, node={"name": name})


# ---------------------------------------------------------------------------------------------
# Range and choice validation (types and keys are checked by OmegaConf while merging).


@functools.cache
def field_knobs(schema: type) -> dict[str, Knob]:
    """The range or choices of each field of a schema dataclass that has one, as a `Knob`."""
    return {
        f.name: Knob(f.name, default=f.default, **f.metadata["knob"])
        for f in fields(schema)
        if "knob" in f.metadata
    }


def check_fields(schema: type, node: Any, where: str = "") -> None:
    """Check each field of `node` (a config group, a dataclass or a namespace) against the range
    or choices beside it in `schema`; a field `node` leaves out or sets to None is not checked
    (OmegaConf allows None only where the schema's type is optional)."""
    for name, knob in field_knobs(schema).items():
        value = setting(node, name, None)
        if value is not None:
            knob.check(value, where)


def schema_default(schema: type, name: str) -> Any:
    """The default of field `name` of a schema dataclass."""
    f = schema.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not MISSING else f.default


def unknown_key_message(full_key: str) -> str:
    """One line for a key the schema does not have, with the likely intended key if close."""
    import difflib

    parent, _, name = full_key.rpartition(".")
    schema = GROUP_SCHEMAS.get(re.sub(r"^compare\[\d+\]$", "decoder", parent)) if parent else Config
    allowed = [f.name for f in fields(schema)] if schema else []
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean '{parent + '.' if parent else ''}{close[0]}'?)" if close else ""
    where = f" in {parent}" if parent else ""
    return f"unknown key '{full_key}'{hint}; allowed keys{where}: {', '.join(allowed)}"


def _check_known_keys(cfg: Any) -> None:
    """`+key=value` adds a key past the schema's struct check; refuse keys it does not have."""
    if not isinstance(cfg, DictConfig):
        return
    nodes = [("", cfg, Config)]
    nodes += [(g, cfg.get(g), schema) for g, schema in GROUP_SCHEMAS.items()]
    nodes += [
        (f"compare[{i}]", dec, DecoderConfig) for i, dec in enumerate(cfg.get("compare") or [])
    ]
    for prefix, node, schema in nodes:
        if not isinstance(node, DictConfig):
            continue
        known = {f.name for f in fields(schema)} | ({"hydra"} if not prefix else set())
        for k in node.keys():
            if k not in known:
                raise UserError(unknown_key_message(f"{prefix}.{k}" if prefix else str(k)))


def _check_constraint(cfg: Any) -> None:
    """constraint=regex needs a compilable pattern and data.level=char; meter data.level=abc;
    exact search takes no constraint."""
    con = cfg.get("constraint")
    if con is None or con.name == "none":
        return
    level = cfg.data.get("level")
    if con.name == "regex":
        if not con.pattern:
            raise UserError("constraint=regex needs constraint.pattern=REGEX; allowed: a regex")
        if level != "char":
            raise UserError(f"constraint=regex needs data.level=char (got {level}); allowed: char")
        from seqgen.decoding.regex import shortest_match

        shortest, max_len = shortest_match(str(con.pattern)), int(cfg.decode.max_len)
        if shortest is None:
            raise UserError(
                f"constraint.pattern={con.pattern!r} matches no string; allowed: a pattern "
                "that some text fully matches"
            )
        if shortest > max_len:
            raise UserError(
                f"constraint.pattern={con.pattern!r} needs at least {shortest} characters, more "
                f"than decode.max_len={max_len}; allowed: decode.max_len >= {shortest}"
            )
    if con.name == "meter" and (cfg.data.name != "folk" or level != "abc"):
        raise UserError(
            f"constraint=meter needs data=folk with data.level=abc (got {cfg.data.name}, "
            f"{level}); allowed: data=folk data.level=abc"
        )
    for where, dec in _all_decoders(cfg):
        registry.check_constraint(dec, where)


def _all_decoders(cfg: Any) -> list[tuple[str, Any]]:
    """`decoder` (when set) and every `compare[i]`, with the name the user knows each by."""
    one = [("decoder", cfg.decoder)] if cfg.get("decoder") is not None else []
    return one + [(f"compare[{i}]", dec) for i, dec in enumerate(cfg.get("compare") or [])]


def check_knobs_read(dec: Any, where: str = "decoder") -> None:
    """A knob set away from its default on a decoder that does not read it (`decoder=greedy
    decoder.top_p=0.5`) is a mistake, not a no-op: one line naming the knobs the decoder reads
    (`seqgen.decoding.registry`)."""
    from seqgen.decoding.common import get

    name = get(dec, "name")
    reads = registry.spec(dec, where).knobs
    for knob in KNOBS.values():
        value = get(dec, knob.name)
        if knob.name not in reads and value != knob.default:
            raise UserError(
                f"{where}.{knob.name}={value!r} is not read by decoder {name}; allowed: the "
                f"knobs {name} reads: {', '.join(reads)}"
            )


def _check_decoders(cfg: Any) -> None:
    for where, dec in _all_decoders(cfg):
        registry.validate_decoder(dec, where)  # knobs, rules between them, nested decoders
        check_knobs_read(dec, where)
        for sub in NESTED_FIELDS:  # mbr's nested decoders read only their own knobs too
            if dec.get(sub):
                check_knobs_read(registry.nested_config(dec, sub, where), f"{where}.{sub}")
        _check_min_length(cfg, dec, where)
        _check_hidden(cfg, dec, where)


def _check_hidden(cfg: Any, dec: Any, where: str) -> None:
    """A decoder that reads the model's hidden states needs a model that has them, and its
    carry takes `registry.carry_len` steps (one past decode.max_len), which the cell's own
    rules (a Transformer's context) must allow."""
    if not registry.needs_hidden(dec):
        return
    if not has_hidden(cfg.model):
        raise UserError(
            f"{where}.name={dec.name} needs the model's hidden states, which "
            f"model.cell={cfg.model.cell} does not provide; allowed: a model with "
            "step_hidden (rnn, lstm, gru, transformer)"
        )
    try:
        check_cell(cfg.model, 0, registry.carry_len(dec, cfg.decode.max_len))
    except UserError as exc:
        raise UserError(
            f"{where}.name={dec.name} feeds each candidate one step past decode.max_len: {exc}"
        ) from None


def _check_min_length(cfg: Any, dec: Any, where: str) -> None:
    """EOS is forbidden for `min_length` new tokens; a budget without room for them and an EOS
    would cut every sequence."""
    from seqgen.decoding.common import get

    max_len, min_length = int(cfg.decode.max_len), int(get(dec, "min_length"))
    prompt = int(cfg.decode.prompt_len) if cfg.decode.prompts == "heldout" else 0
    if min_length and prompt + min_length >= max_len:
        raise UserError(
            f"{where}.min_length={min_length} leaves no room for EOS within decode.max_len="
            f"{max_len} (prompts of {prompt} tokens); allowed: min_length < {max_len - prompt}"
        )


def check_data(data: Any) -> None:
    """The data group's ranges, the rules between its keys, and no key the corpus ignores."""
    from seqgen.data.corpus import KEYS_READ

    check_fields(DataConfig, data, "data")
    name = setting(data, "name", "folk")
    vf = setting(data, "valid_fraction", schema_default(DataConfig, "valid_fraction"))
    tf = setting(data, "test_fraction", schema_default(DataConfig, "test_fraction"))
    if vf + tf >= 1:
        raise UserError(f"data.valid_fraction + data.test_fraction must be < 1 (got {vf} + {tf})")
    has = [k for k in ("path", "preset", "train_path") if setting(data, k, None)]
    if name == "text" and not has:
        raise UserError(
            "data=text needs data.path=/path/to/file.txt, data.train_path=... or "
            "data.preset=tinyshakespeare"
        )
    for f in fields(DataConfig):
        value = setting(data, f.name, None)
        if f.name not in ("name", *KEYS_READ[name]) and value not in (None, f.default):
            if f.default_factory is not MISSING and list(value) == f.default_factory():
                continue
            raise UserError(
                f"data.{f.name}={value} is not read by data={name}; allowed: the keys "
                f"data={name} reads: {', '.join(KEYS_READ[name])}"
            )


def check_model(model: Any, data_name: str | None = None) -> None:
    """The model group's ranges and the rules between its keys."""
    check_fields(ModelConfig, model, "model")
    if setting(model, "cell", "lstm") == "oracle" and data_name not in (None, "synthetic"):
        raise UserError(
            "model=oracle decodes the DPFSA's true distribution and needs data=synthetic"
        )
    if setting(model, "tie_weights", False):
        embed = setting(model, "embed_size", schema_default(ModelConfig, "embed_size"))
        hidden = setting(model, "hidden_size", schema_default(ModelConfig, "hidden_size"))
        if setting(model, "one_hot_input", False):
            raise UserError(
                "model.tie_weights=true needs an embedding; allowed with model.one_hot_input=false"
            )
        if embed != hidden:
            raise UserError(
                "model.tie_weights=true needs model.embed_size == model.hidden_size "
                f"(got {embed} and {hidden}); allowed: equal sizes, or model.tie_weights=false"
            )


def check_train(train: Any) -> None:
    """The train group's ranges and the rules between its keys."""
    check_fields(TrainConfig, train, "train")
    steps = setting(train, "steps", schema_default(TrainConfig, "steps"))
    warmup = setting(train, "warmup_steps", schema_default(TrainConfig, "warmup_steps"))
    if warmup > steps:
        raise UserError(
            f"train.warmup_steps={warmup} is more than train.steps={steps}; "
            f"allowed: 0 <= warmup_steps <= {steps}"
        )


def _check_prompts(cfg: Any) -> None:
    prompts = cfg.decode.prompts
    is_list = isinstance(prompts, ListConfig | list)
    if (prompts not in ("none", "heldout", None) and not is_list) or (is_list and not prompts):
        raise UserError(
            f"decode.prompts={prompts!r} is not allowed; use none, heldout, or a non-empty list "
            "of strings such as decode.prompts='[\"M:6/8 K:D\"]'"
        )


def _check_experiment_name(name: str) -> None:
    """`experiment_name` names a folder under outputs/ (and multirun/): one plain name."""
    if not name or name in (".", "..") or re.search(r"[/\\\x00]", name):
        raise UserError(
            f"experiment_name={name!r} is not a plain folder name; allowed: a name without "
            "'/', '\\' or NUL that is not '.' or '..' (it names the folder under outputs/)"
        )


def validate_config(cfg: Any) -> None:
    """Check every choice, range and rule of a composed config; raise `UserError` with one
    line. Each rule is checked here (and only here), before any data is read."""
    _check_known_keys(cfg)
    check_fields(Config, cfg)
    for group in ("decode", "constraint", "logger", "metrics", "output"):
        check_fields(GROUP_SCHEMAS[group], cfg.get(group), group)
    _check_experiment_name(str(cfg.experiment_name))
    _check_decoders(cfg)
    _check_constraint(cfg)
    check_data(cfg.data)
    check_model(cfg.model, cfg.data.name)
    check_cell(cfg.model, cfg.train.seq_len, cfg.decode.max_len)  # the cell's row's own rules
    check_train(cfg.train)
    _check_prompts(cfg)


# Keys that configs saved by an older seqgen may hold and this schema no longer has (read by
# nothing when they were removed): dropped when a saved run's config or a cache entry's
# meta.json is loaded, so old runs and cached models stay usable.
RETIRED_KEYS = ("data.max_len",)


def drop_retired(saved: Any) -> Any:
    """A saved config (DictConfig or plain dict) without the RETIRED_KEYS."""
    node = OmegaConf.create(saved) if not isinstance(saved, DictConfig) else saved.copy()
    with open_dict(node):
        for key in RETIRED_KEYS:
            group, _, name = key.rpartition(".")
            parent = OmegaConf.select(node, group) if group else node
            if isinstance(parent, DictConfig) and name in parent:
                parent.pop(name)
    return node


def to_dict(node: Any) -> dict:
    """A plain, resolved dict of a config node (for hashing, JSON and W&B)."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    if is_dataclass(node):
        return OmegaConf.to_container(OmegaConf.structured(node), resolve=True)  # type: ignore
    return dict(node)


# A multirun job in a launcher's process: the command line's plugins, imported here (Hydra
# unpickles the job's config, which names `DecoderConfig`, before anything else runs).
import_exported()
