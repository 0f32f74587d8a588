"""The models table: one `ModelSpec` row per `model.cell` value.

`model.cell`'s choices (config validation), building a model (training, the cache, loading a
model folder), the cache identity of its config, the config checks and preflight's memory
estimate all read this table. A new model is one module with a `ModelSpec` and one row here,
or, from a user's own code, one `register_model(spec)` call before the run:

    from seqgen.models import ModelSpec, register_model
    register_model(ModelSpec("bigram", build, ("embed_size",), activation_floats))

`model=oracle` (the DPFSA's exact distribution) is not a network and not a row: it needs the
corpus, and `seqgen.experiment` builds it there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from flax import nnx

from seqgen.errors import UserError
from seqgen.models import lm, transformer
from seqgen.models.protocol import ModelSpec, count_params, provides_hidden

MODELS: dict[str, ModelSpec] = {
    "rnn": lm.rnn_spec("rnn"),
    "lstm": lm.rnn_spec("lstm"),
    "gru": lm.rnn_spec("gru"),
    "transformer": transformer.SPEC,
}
ORACLE = "oracle"


class _CellChoices(Sequence[str]):
    """`model.cell`'s allowed values, read from MODELS when asked (a model registered after
    import counts), then `oracle`."""

    def _names(self) -> tuple[str, ...]:
        return (*MODELS, ORACLE)

    def __getitem__(self, i: Any) -> Any:
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


CELL_CHOICES = _CellChoices()


def register_model(spec: ModelSpec, *, replace: bool = False) -> None:
    """Add a row to the models table; `model.cell=<spec.name>` then trains, caches and decodes
    it like a built-in. A taken name needs `replace=True`."""
    if not isinstance(spec, ModelSpec):
        raise UserError(f"register_model takes a ModelSpec (got {type(spec).__name__})")
    if not spec.name or spec.name == ORACLE or (spec.name in MODELS and not replace):
        raise UserError(
            f"model name {spec.name!r} is taken or empty; allowed: a new name "
            f"(taken: {', '.join(CELL_CHOICES)}), or replace=True"
        )
    MODELS[spec.name] = spec


def unregister_model(name: str) -> None:
    """Remove a row added by `register_model` (tests clean up with it)."""
    MODELS.pop(name, None)


def model_spec(cell: str) -> ModelSpec:
    """The row of `cell`, or one UserError line naming the allowed cells."""
    if cell not in MODELS:
        raise UserError(f"model.cell={cell!r} is not a model; allowed: {', '.join(MODELS)}")
    return MODELS[cell]


def model_fields(model_cfg: Any) -> dict[str, Any]:
    """The `model.*` values the configured cell reads, by name, in its row's order."""
    spec = model_spec(str(_get(model_cfg, "cell")))
    return {name: _get(model_cfg, name) for name in spec.fields}


def model_identity(model_cfg: Any) -> dict[str, Any]:
    """`cell` and the fields it reads: the model's cache identity and `meta.json` record (for
    the recurrent cells exactly the model config of before the table, so their keys hold)."""
    if str(_get(model_cfg, "cell")) == ORACLE:
        return {"cell": ORACLE}
    return {"cell": str(_get(model_cfg, "cell")), **model_fields(model_cfg)}


def build_model(model_cfg: Any, vocab_size: int, seed: int, predict_eos: bool = True) -> Any:
    """The configured model; `predict_eos=False` for a text stream without EOS targets."""
    spec = model_spec(str(_get(model_cfg, "cell")))
    return spec.build(
        model_fields(model_cfg), vocab_size, predict_eos=predict_eos, rngs=nnx.Rngs(seed)
    )


def check_model(model_cfg: Any, seq_len: int, max_len: int) -> None:
    """The cell's own rules (its row's `check`), before any data is read."""
    cell = str(_get(model_cfg, "cell"))
    if cell == ORACLE:
        return
    spec = model_spec(cell)
    if spec.check is not None:
        spec.check(model_fields(model_cfg), int(seq_len), int(max_len))


def estimate_params(model_cfg: Any, vocab_size: int) -> int:
    """The configured model's exact parameter count, built abstractly (no arrays allocated).

    A stack of L > 2 identical layers has P(L) = P(1) + (L - 1) (P(2) - P(1)): two small
    abstract builds instead of one of L layers (2,000 layers would take minutes to trace)."""
    fields = model_fields(model_cfg)
    layers = int(fields.get("num_layers", 0) or 0)

    def count(n: int | None) -> int:
        cfg = dict(model_identity(model_cfg), **({} if n is None else {"num_layers": n}))
        return count_params(nnx.eval_shape(lambda: build_model(cfg, vocab_size, 0)))

    if layers <= 2:
        return count(None)
    one, two = count(1), count(2)
    return one + (layers - 1) * (two - one)


def has_hidden(model_cfg: Any) -> bool:
    """Whether the configured model provides the protocol's optional hidden state (built
    abstractly, no arrays; the oracle has none)."""
    if str(_get(model_cfg, "cell")) == ORACLE:
        return False
    return provides_hidden(nnx.eval_shape(lambda: build_model(model_cfg, 8, 0)))


def training_bytes(model_cfg: Any, seq_len: int, rows: int, vocab_size: int) -> int:
    """A lower estimate of one device's float32 training memory for `rows` x `seq_len` tokens:
    parameters, gradients and AdamW's two moments (4 copies), plus the activations the row's
    `activation_floats` keeps per token for the backward pass."""
    spec = model_spec(str(_get(model_cfg, "cell")))
    per_token = spec.activation_floats(model_fields(model_cfg), vocab_size, seq_len)
    params = estimate_params(model_cfg, vocab_size)
    return int(4 * (4 * params + rows * seq_len * per_token))


def _get(cfg: Any, name: str) -> Any:
    if isinstance(cfg, Mapping):
        if name not in cfg:
            raise UserError(f"the model config has no field model.{name}, which its cell reads")
        return cfg[name]
    if not hasattr(cfg, name):
        raise UserError(f"the model config has no field model.{name}, which its cell reads")
    return getattr(cfg, name)
