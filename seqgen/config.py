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

import math
import re
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from seqgen.decoding import registry
from seqgen.decoding.common import LOGPROBS_MODES
from seqgen.decoding.knobs import DEFAULT_NAME, KNOBS
from seqgen.decoding.loop import LOOPS
from seqgen.errors import UserError
from seqgen.metrics.abc import ABC_SUBSET, ABC_TIMEOUT_S
from seqgen.models import CELLS
from seqgen.models.recurrence import BACKWARDS


@dataclass
class DataConfig:
    name: str = "folk"  # folk | text | synthetic
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
    level: str = "char"  # char | word | whitespace (pre-tokenized text) | abc
    line_eos: bool = False  # text: each newline is the end-of-sentence token EOS (PTB)
    unk_token: str = "<unk>"  # whitespace level: the corpus's own unknown marker, read as UNK
    min_count: int = 1  # rarer training symbols become UNK
    max_vocab: int | None = None  # at most this many types (EOS and UNK included)
    window: int = 2048  # text: block size (tokens, cut at line ends) of the seeded split
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    max_sequences: int | None = None  # cap the corpus (tiny runs, tests)
    # synthetic: a random deterministic probabilistic finite-state automaton (DPFSA)
    num_states: int = 8
    alphabet_size: int = 6
    num_train: int = 2000
    stop_prob: float = 0.15
    cache_dir: str | None = None  # download cache for presets
    unknown: str = "error"  # what an unknown symbol in a user's prompt does: error | unk


@dataclass
class ModelConfig:
    cell: str = "lstm"  # lstm | gru | rnn | oracle (the DPFSA's exact distribution)
    embed_size: int = 64
    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.1
    tie_weights: bool = False
    one_hot_input: bool = False


@dataclass
class TrainConfig:
    steps: int = 250
    batch_size: int = 32
    seq_len: int = 256
    lr: float = 1e-2
    weight_decay: float = 0.01
    warmup_steps: int = 20
    clip_norm: float = 1.0
    eval_every: int = 125
    eval_batches: int = 16
    checkpoint_every: int = 125
    log_every: int = 10
    data_parallel: bool = True
    progress: bool = True
    patience: int = 0  # evaluations without a better validation loss before stopping; 0 = off
    end_lr_ratio: float = 0.0  # the cosine schedule ends at end_lr_ratio * lr
    backward: str = "autodiff"  # recurrences' gradient: autodiff | fused (hand-written backward)


def _decoder_field(knob: Any) -> tuple[str, Any, Any]:
    if knob.type is dict:
        keys = Any if knob.steer else str  # logit_bias: token ids or symbols
        return knob.name, dict[keys, Any], field(default_factory=dict)
    if knob.type is list:
        return knob.name, list[Any], field(default_factory=list)
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
    name: str = "none"
    pattern: str | None = None  # regex: a Python regular expression (interegular's subset)


@dataclass
class DecodeConfig:
    num_samples: int = 1  # sequences per prompt for sampling; beams give their best
    max_len: int = 256  # prompt + continuation, in tokens
    prompts: Any = "heldout"  # none | heldout | a list of strings
    num_prompts: int = 100  # held-out prompts (prompts=heldout)
    prompt_len: int = 16  # tokens of each held-out prefix
    batch_size: int = 256  # rows decoded per compiled call (over all devices)
    shard: bool = True  # split the rows over every device (and host) when there is more than one
    loop: str = "auto"  # auto | scan | scan_unroll | masked | while: same outputs, speed differs
    # the most token positions one decoder's outputs may hold (rows x decode.max_len); a larger
    # decode is refused before any work: 1e8 positions are ~1.6 GB of ids and log-probs
    max_tokens: int = 100_000_000
    # the K most probable alternatives of every generated token in samples.jsonl (0 = none;
    # greedy and sample), from the model's distribution (raw) or the one sampled (processed)
    logprobs: int = 0
    logprobs_mode: str = "raw"
    prompt_logprobs: bool = False  # the model's log-prob of each prompt token in samples.jsonl


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "seqgen"
    entity: str | None = None
    group: str | None = None
    run_name: str | None = None
    mode: str = "offline"  # online | offline | disabled
    tags: list[str] = field(default_factory=list)


@dataclass
class MetricsConfig:
    self_bleu_max: int = 1000  # hypotheses scored by Self-BLEU
    abc_subset: int = ABC_SUBSET  # tunes parsed by music21 for abc/* metrics
    abc_timeout_s: float = (
        ABC_TIMEOUT_S  # music21's time per tune; a tune that runs out is unparsed
    )
    reference_checkpoint: str | None = None  # a cached model dir giving gen/ref_ppl


@dataclass
class OutputConfig:
    num_listen: int = 5  # tunes per decoder written as .abc and .mid
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
    seed: int = 0
    cache_dir: str | None = None  # trained-model cache; default $SEQGEN_CACHE or ~/.cache/seqgen
    cache_on_damage: str = "retrain"  # a damaged cache entry: retrain | error
    distributed: bool = False  # jax.distributed.initialize() for multi-host TPU pods / GPU clusters
    experiment_name: str = "default"


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

_CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": ("folk", "text", "synthetic"),
    "data.level": ("char", "word", "whitespace", "abc"),
    "data.unknown": ("error", "unk"),
    "model.cell": (*CELLS, "oracle"),
    "train.backward": BACKWARDS,
    "decode.loop": LOOPS,
    "decode.logprobs_mode": LOGPROBS_MODES,
    "constraint.name": ("none", "regex", "meter"),
    "logger.name": ("none", "wandb"),
    "logger.mode": ("online", "offline", "disabled"),
    "cache_on_damage": ("retrain", "error"),
}

# key -> (low, high, low_open, high_open); None = unbounded
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.window": (2, None, False, False),
    "decode.logprobs": (0, None, False, False),
    "data.valid_fraction": (0, 1, True, True),
    "data.test_fraction": (0, 1, True, True),
    "data.max_sequences": (3, None, False, False),
    "data.min_count": (1, None, False, False),
    "data.max_vocab": (2, None, False, False),
    "data.num_states": (1, None, False, False),
    "data.alphabet_size": (1, None, False, False),
    "data.num_train": (3, None, False, False),
    "data.stop_prob": (0, 1, True, False),
    "model.embed_size": (1, None, False, False),
    "model.hidden_size": (1, None, False, False),
    "model.num_layers": (1, None, False, False),
    "model.dropout": (0, 1, False, True),
    "train.steps": (0, None, False, False),
    "train.batch_size": (1, None, False, False),
    "train.seq_len": (2, None, False, False),
    "train.lr": (0, None, True, False),
    "train.weight_decay": (0, None, False, False),
    "train.warmup_steps": (0, None, False, False),
    "train.clip_norm": (0, None, True, False),
    "train.eval_every": (1, None, False, False),
    "train.eval_batches": (1, None, False, False),
    "train.checkpoint_every": (1, None, False, False),
    "train.log_every": (1, None, False, False),
    "train.patience": (0, None, False, False),
    "train.end_lr_ratio": (0, 1, False, False),
    "decode.num_samples": (1, None, False, False),
    "decode.max_len": (1, None, False, False),
    "decode.num_prompts": (1, None, False, False),
    "decode.prompt_len": (1, None, False, False),
    "decode.batch_size": (1, None, False, False),
    "decode.max_tokens": (1, None, False, False),
    "metrics.self_bleu_max": (2, None, False, False),
    "metrics.abc_subset": (0, None, False, False),
    "metrics.abc_timeout_s": (0, None, True, False),
    "output.num_listen": (0, None, False, False),
    "seed": (0, 2**32 - 1, False, False),  # numpy's and JAX's seeds are unsigned 32-bit
}


def _describe_range(lo, hi, lo_open, hi_open) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    return f"in {left}{lo}, {hi}{right}"


def _check_value(key: str, value: Any) -> None:
    """Check one leaf against its choices and range (the decoder knobs: `knobs.Knob.check`)."""
    choices = _CHOICES.get(key)
    if choices is not None and value not in choices:
        raise UserError(f"{key}={value!r} is not allowed; choose one of: {', '.join(choices)}")
    rng = _RANGES.get(key)
    if rng is None or value is None or isinstance(value, bool):
        return
    lo, hi, lo_open, hi_open = rng
    ok = not (isinstance(value, float) and math.isnan(value))
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        raise UserError(f"{key}={value} is out of range; allowed: {_describe_range(*rng)}")


def _walk(prefix: str, node: Any):
    if is_dataclass(node):
        for f in fields(node):
            yield from _walk(f"{prefix}.{f.name}" if prefix else f.name, getattr(node, f.name))
    elif isinstance(node, DictConfig):
        for k in node.keys():
            if not prefix and k == "hydra":
                continue
            yield from _walk(f"{prefix}.{k}" if prefix else str(k), node[k])
    else:
        yield prefix, node


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
        from seqgen.decoding.regex import compile_pattern

        compile_pattern(str(con.pattern))
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


def validate_config(cfg: Any) -> None:
    """Check every choice and range in a composed config; raise `UserError` with one line."""
    _check_known_keys(cfg)
    for key, value in _walk("", cfg):
        if isinstance(value, ListConfig | list) or key.startswith("decoder."):
            continue
        _check_value(key, value)
    for where, dec in _all_decoders(cfg):
        registry.validate_decoder(dec, where)  # knobs, rules between them, nested decoders
    _check_constraint(cfg)
    data, model = cfg.data, cfg.model
    if data.valid_fraction + data.test_fraction >= 1:
        raise UserError(
            "data.valid_fraction + data.test_fraction must be < 1 "
            f"(got {data.valid_fraction} + {data.test_fraction})"
        )
    if data.name == "text" and not (data.path or data.preset or data.train_path):
        raise UserError(
            "data=text needs data.path=/path/to/file.txt, data.train_path=... or "
            "data.preset=tinyshakespeare"
        )
    if model.cell == "oracle" and data.name != "synthetic":
        raise UserError(
            "model=oracle decodes the DPFSA's true distribution and needs data=synthetic"
        )
    if model.tie_weights and model.embed_size != model.hidden_size and not model.one_hot_input:
        raise UserError(
            "model.tie_weights=true needs model.embed_size == model.hidden_size "
            f"(got {model.embed_size} and {model.hidden_size})"
        )
    prompts = cfg.decode.prompts
    is_list = isinstance(prompts, ListConfig | list)
    if (prompts not in ("none", "heldout", None) and not is_list) or (is_list and not prompts):
        raise UserError(
            f"decode.prompts={prompts!r} is not allowed; use none, heldout, or a non-empty list "
            "of strings such as decode.prompts='[\"M:6/8 K:D\"]'"
        )


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
