"""Stopping and steering: stop sequences, logit bias, bad words, allowed tokens, sequence bias.

The knobs (in `knobs.KNOBS`, checked by `check_value`) take token-id entries or text:

  decoder.stop=[...]           stop sequences (HF `stop_strings`, vLLM `stop`): a row that has
                               generated one ends as if it had emitted EOS (`ended`); the stop
                               tokens stay in the output with `decoder.include_stop=true` and are
                               cut (tokens, length, log-probs and score) otherwise (vLLM's
                               default, `include_stop_str_in_output=False`).
  decoder.bad_words=[...]      sequences never generated (vLLM `bad_words`, HF `bad_words_ids`).
  decoder.allowed_tokens=[...] only these tokens (and EOS) may be generated (vLLM
                               `allowed_token_ids`).
  decoder.logit_bias={tok: b}  x_v += b (vLLM / OpenAI `logit_bias`).
  decoder.sequence_bias=[[seq, b], ...]  x_v += b where v completes seq after its prefix
                               (HF `sequence_bias`).

An entry is a list of token ids or a text; a text is tokenized with the run's vocabulary by the
pipeline (`resolve`; a symbol it lacks is one `UserError` line naming it). `decode()` itself
takes ids only. Matching is over the token sequence: with a vocabulary of multi-character
tokens (`data.level=abc`, words) a text matches where the tokenizer's split of it occurs, not
at an arbitrary character overlap.

Bias rows are processors of the penalty stage (`processor_table`), so greedy applies them too;
stop sequences are an end condition of the sampling loop (`sampling`), matched against a
fixed-size buffer of the last `max(len(stop))` generated tokens (JIT-safe). Beam decoders read
none of these knobs and refuse them (`check_unread`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig

from seqgen.errors import UserError
from seqgen.tokens import EOS_ID

# the steering knobs, each empty by default; a decoder that does not read one refuses it
SEQUENCE_KNOBS = ("stop", "bad_words", "allowed_tokens", "sequence_bias")
# `force` (beam's forced words) shares their grammar and checks; its search is `forced.py`
KNOB_NAMES = (*SEQUENCE_KNOBS, "logit_bias", "force")

Ids = tuple[int, ...]


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _entry(x: Any, where: str, vocab_size: int | None) -> None:
    """One entry: a text (`resolve` makes it ids), or a non-empty list of token ids in range."""
    if isinstance(x, str):
        if not x:
            raise UserError(f"{where}: an empty text; allowed: a text or a list of token ids")
        return
    ids = [x] if _is_int(x) else list(x) if isinstance(x, Sequence | np.ndarray) else None
    hi = vocab_size if vocab_size is not None else None
    if not ids or not all(_is_int(i) and i >= 0 and (hi is None or i < hi) for i in ids):
        bound = "" if hi is None else f" < {hi}"
        raise UserError(f"{where}={x!r}; allowed: a text or a non-empty list of token ids{bound}")


def _pairs(name: str, value: Any) -> list[tuple[Any, Any]]:
    """(entry, bias) pairs of logit_bias (a mapping) and sequence_bias (a list of pairs)."""
    if name == "logit_bias":
        if not isinstance(value, Mapping):
            raise UserError(f"decoder.logit_bias={value!r}; allowed: a dict {{token: bias}}")
        return list(value.items())
    pairs = []
    for p in value:
        if isinstance(p, str) or len(p) != 2:
            raise UserError(f"decoder.sequence_bias entry {p!r}; allowed: [sequence, bias]")
        pairs.append((p[0], p[1]))
    return pairs


def check_value(name: str, value: Any, where: str, vocab_size: int | None) -> None:
    """Check a steering knob's value, one `UserError` line: texts, or token ids (< vocab_size
    when given). `freeze` (when a program is built) refuses texts `resolve` did not turn to ids."""
    key = f"{where}.{name}"
    if name == "force":
        from seqgen.decoding.forced import check_value as check_force  # it imports this file

        return check_force(value, where, vocab_size)
    if isinstance(value, str) or not isinstance(value, Sequence | Mapping):
        raise UserError(f"{key}={value!r}; allowed: a list (a dict for logit_bias)")
    if name in ("logit_bias", "sequence_bias"):
        for entry, bias in _pairs(name, value):
            _entry(entry, key, vocab_size)
            if name == "logit_bias" and not (_is_int(entry) or isinstance(entry, str)):
                raise UserError(f"{key}: key {entry!r}; allowed: a token id or a symbol")
            if isinstance(bias, bool) or not isinstance(bias, int | float) or np.isnan(bias):
                raise UserError(f"{key}: bias {bias!r} of {entry!r} is not a number")
        return
    for entry in value:
        _entry(entry, key, vocab_size)
        if name == "allowed_tokens" and not (_is_int(entry) or isinstance(entry, str)):
            raise UserError(f"{key}: {entry!r}; allowed: single tokens (an id or a symbol)")


def _ids(entry: Any, name: str = "") -> Ids:
    if isinstance(entry, str):
        raise UserError(
            f"decoder.{name}={entry!r} is text; decode() takes token ids (text is tokenized with "
            "the run's vocabulary by seqgen.load / seqgen.run / the CLI)"
        )
    return (int(entry),) if _is_int(entry) else tuple(int(i) for i in entry)


def freeze(name: str, value: Any) -> Any:
    """The hashable form a compiled program keys on: stop / bad_words a tuple of id tuples,
    allowed_tokens a sorted id tuple, logit_bias / sequence_bias ((ids, bias), ...)."""
    if name in ("logit_bias", "sequence_bias"):
        return tuple(sorted((_ids(e, name), float(b)) for e, b in _pairs(name, value)))
    if name == "allowed_tokens":
        return tuple(sorted({_ids(i, name)[0] for i in value}))
    return tuple(sorted({_ids(e, name) for e in value}))


def resolve(dec: Any, vocab: Any) -> Any:
    """The decoder config `dec` with its steering texts as token ids of `vocab` (a
    `seqgen.data.vocab.Vocab`): `dec` itself when it has none, else a copy of the same kind
    (a DictConfig stays one); a symbol the vocabulary lacks is one `UserError` line."""

    def ids(x: Any, name: str, one: bool = False) -> Any:
        if not isinstance(x, str):
            return x
        missing = [s for s in vocab.tokenize(x) if s not in vocab]
        if missing:
            raise UserError(
                f"decoder.{name}: {x!r} has {missing[0]!r}, not in the {len(vocab)}-symbol "
                "vocabulary; allowed: text of the vocabulary's symbols, or token ids"
            )
        got = vocab.encode(x, unknown="error")
        if one and len(got) != 1:
            raise UserError(f"decoder.{name}: {x!r} is {len(got)} tokens; allowed: one token")
        return got[0] if one else got

    get = dec.get if isinstance(dec, Mapping) else lambda k: getattr(dec, k, None)
    changes: dict[str, Any] = {}
    for name in KNOB_NAMES:
        value = get(name)
        if not value:
            continue
        if name == "logit_bias":
            changes[name] = {ids(k, name, one=True): b for k, b in value.items()}
        elif name == "sequence_bias":
            changes[name] = [[ids(p[0], name), p[1]] for p in value]
        elif name == "force":
            from seqgen.decoding.forced import resolve as resolve_force

            changes[name] = resolve_force(value, lambda x: ids(x, "force"))
        else:
            changes[name] = [ids(e, name, one=name == "allowed_tokens") for e in value]
    if not changes:
        return dec
    if isinstance(dec, DictConfig):
        out = copy.deepcopy(dec)
        for k, v in changes.items():
            out[k] = v
        return out
    return {**(dict(dec) if isinstance(dec, Mapping) else vars(dec)), **changes}


def check_unread(
    read: Sequence[str],
    get: Any,
    decoder: str,
    where: str = "decoder",
    readers: Callable[[str], Sequence[str]] | None = None,
) -> None:
    """Refuse a steering knob set for a decoder whose program does not read it; `readers(knob)`
    names the decoders that do (the registry's)."""
    for name in KNOB_NAMES:
        if name not in read and get(name):
            ok = ", ".join(readers(name)) if readers is not None else "greedy, sample"
            raise UserError(
                f"{where}.{name} is not supported by decoder {decoder}; allowed: {ok} "
                f"(or {where}.{name} empty)"
            )


# ---------------------------------------------------------------- the processors


def allowed_tokens(logits: jax.Array, allowed: Ids) -> jax.Array:
    """vLLM `allowed_token_ids`: every token outside `allowed` (EOS always allowed, so a row
    can end) gets -inf. logits [R, V]."""
    keep = np.zeros(logits.shape[-1], bool)
    keep[list(allowed)] = True
    keep[EOS_ID] = True
    return jnp.where(jnp.asarray(keep), logits, -jnp.inf)


def logit_bias(logits: jax.Array, entries: tuple[tuple[Ids, float], ...]) -> jax.Array:
    """vLLM / OpenAI `logit_bias`: x_v += b_v for the single tokens given. logits [R, V]."""
    bias = np.zeros(logits.shape[-1], np.float32)
    for ids, b in entries:
        bias[ids[0]] += b  # single tokens (`check_value`)
    return logits + jnp.asarray(bias)


def sequence_bias(
    logits: jax.Array, history: jax.Array, t: Any, entries: tuple[tuple[Ids, float], ...]
) -> jax.Array:
    """Hugging Face `SequenceBiasLogitsProcessor` / `NoBadWordsLogitsProcessor`: for each
    (s_1..s_m, b), x_{s_m} += b at position t when x_{t-m+1..t-1} = s_1..s_{m-1} (m = 1:
    always); b = -inf bans the sequence (bad words). Prompt tokens count as history, as in HF.
    logits [R, V]; history [R, T] tokens so far (positions >= t ignored); t scalar.
    Fixed shapes: each entry compares a static-length slice ending at t - 1."""
    r, length = history.shape
    add = jnp.zeros(logits.shape, jnp.float32)
    for ids, b in entries:
        m = len(ids)
        hit = jnp.ones((r,), bool)
        if m > 1:
            if m - 1 > length:
                continue
            start = jnp.clip(t - (m - 1), 0, length - (m - 1))
            window = jax.lax.dynamic_slice_in_dim(history, start, m - 1, axis=1)  # [R, m-1]
            hit = jnp.all(window == jnp.asarray(ids[:-1], history.dtype), axis=1) & (t >= m - 1)
        add = add.at[:, ids[-1]].add(jnp.where(hit, jnp.float32(b), 0.0))
    return logits + add  # -inf + finite = -inf; a banned token stays banned


# ---------------------------------------------------------------- stop sequences


def stop_width(stops: tuple[Ids, ...]) -> int:
    """The match buffer's width: the longest stop sequence (0: no stop sequences)."""
    return max((len(s) for s in stops), default=0)


def stop_match(recent: jax.Array, made: jax.Array, stops: tuple[Ids, ...]) -> jax.Array:
    """Which stop sequence (its length; 0: none) ends the generated tokens. recent [R, W] the
    last W generated tokens (newest last), made [R] how many tokens the row has generated.
    A stop sequence lies inside the continuation (vLLM matches output text only); the longest
    one that matches wins, so its tokens are the ones `include_stop=false` cuts."""
    w = recent.shape[1]
    hit_len = jnp.zeros(recent.shape[:1], jnp.int32)
    for s in sorted(stops, key=len):
        m = len(s)
        hit = jnp.all(recent[:, w - m :] == jnp.asarray(s, recent.dtype), axis=1) & (made >= m)
        hit_len = jnp.where(hit, m, hit_len)
    return hit_len
