"""Causal Transformer language model (Flax NNX): pre-LN decoder-only, GPT-2 style.

Radford et al. 2019 (GPT-2) block with the layer norm before each sub-layer (Xiong et al.
2020, "On Layer Normalization in the Transformer Architecture"): x + attn(LN(x)), then
x + MLP(LN(x)) with a 4x GELU MLP, a final LN and a linear head (optionally tied to the token
embedding, Press & Wolf 2017). Positions are learned (a table of `context` rows) or rotary
(RoPE, Su et al. 2021: q and k rotated by position-dependent angles, base 10000, on the two
halves of each head).

Entry points (`seqgen.models.protocol`):

- `__call__(tokens[B, T]) -> logits[B, T, V]`: all positions at once under a causal mask;
  every row starts at position 0 (a training window is an independent sequence: nothing is
  carried across windows, as with the recurrent models' zero carry);
- `init_carry(B, max_len)`: a fixed-size KV cache, per layer k and v [B, max_len, heads,
  head_dim] (batch first, so the decoders' row gathers and sharding apply to it as to any
  carry), and the position of the next token per row, int32[B];
- `step(carry, tokens[B])`: writes the token's k and v at each row's position (a one-hot mask,
  never a dynamic slice: rows of one batch may sit at different positions, as in exact
  search's pool) and attends over the positions up to it; `step_hidden` also returns the
  last hidden state after the final LN (the protocol's optional hidden state).

A position at or past `max_len` writes nothing (the one-hot mask is empty there); only a
scorer's last, discarded step reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from seqgen.errors import UserError
from seqgen.models.protocol import ModelSpec, never_predicted, output_logits

Array = jax.Array
POSITIONS = ("learned", "rope")
ROPE_BASE = 10000.0
_INIT = nnx.initializers.normal(0.02)  # GPT-2's embedding init


def _rope(x: Array, pos: Array) -> Array:
    """Rotary embedding of x [B, S, H, Dh] at positions pos [B, S] (rotate-half layout)."""
    half = x.shape[-1] // 2
    freq = ROPE_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [Dh/2]
    angle = pos.astype(jnp.float32)[..., None, None] * freq  # [B, S, 1, Dh/2]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def _attend(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """Softmax attention: q [B, S, H, Dh] over k, v [B, K, H, Dh] where mask [B, S, K]."""
    scores = jnp.einsum("bshd,bkhd->bhsk", q, k) / math.sqrt(q.shape[-1])
    scores = jnp.where(mask[:, None], scores, -jnp.inf)
    return jnp.einsum("bhsk,bkhd->bshd", jax.nn.softmax(scores, axis=-1), v)


class Block(nnx.Module):
    """One pre-LN decoder block's parameters."""

    def __init__(self, d: int, *, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(d, rngs=rngs)
        self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
        self.out = nnx.Linear(d, d, rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, rngs=rngs)
        self.mlp_in = nnx.Linear(d, 4 * d, rngs=rngs)
        self.mlp_out = nnx.Linear(4 * d, d, rngs=rngs)


class Transformer(nnx.Module):
    """Causal Transformer LM; `hidden_size` is d_model, split over `num_heads` heads.

    Logits of PAD and BOS (and EOS with `predict_eos=False`) are fixed to -1e9 as in the
    recurrent `LanguageModel`. Dropout (rate `dropout`, train mode only) is applied to the
    embedding sum and to each sub-layer's output before its residual add.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.0,
        tie_weights: bool = False,
        positions: str = "learned",
        context: int = 256,
        predict_eos: bool = True,
        rngs: nnx.Rngs,
    ):
        check_fields(
            {"hidden_size": hidden_size, "num_heads": num_heads, "positions": positions}
            | {"context": context, "num_layers": num_layers, "dropout": dropout}
        )
        d = hidden_size
        self.vocab_size, self.num_layers, self.num_heads = vocab_size, num_layers, num_heads
        self.head_dim, self.context, self.positions = d // num_heads, context, positions
        self.tie_weights = tie_weights
        self.never_predicted = never_predicted(predict_eos)
        self.embed = nnx.Embed(vocab_size, d, embedding_init=_INIT, rngs=rngs)
        learned = positions == "learned"
        self.pos_embed = nnx.Embed(context, d, embedding_init=_INIT, rngs=rngs) if learned else None
        self.blocks = nnx.List([Block(d, rngs=rngs) for _ in range(num_layers)])
        self.ln_f = nnx.LayerNorm(d, rngs=rngs)
        self.drop = nnx.Dropout(dropout, deterministic=True, rngs=rngs)
        if tie_weights:
            self.head_bias = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))
        else:
            self.head = nnx.Linear(d, vocab_size, rngs=rngs)

    # --- pieces shared by __call__ and step -------------------------------------------------

    def _inputs(self, tokens: Array, pos: Array) -> Array:
        """Token (+ learned position) embeddings [B, S, D] of tokens and positions [B, S]."""
        x = self.embed(tokens)
        if self.pos_embed is not None:
            # clipped: only a scorer's discarded last step can ask for position `context`
            x = x + self.pos_embed(jnp.minimum(pos, self.context - 1))
        return x

    def _qkv(self, blk: Block, x: Array, pos: Array) -> tuple[Array, Array, Array]:
        b, s, _ = x.shape
        q, k, v = jnp.split(blk.qkv(blk.ln1(x)), 3, axis=-1)
        q, k, v = (a.reshape(b, s, self.num_heads, self.head_dim) for a in (q, k, v))
        if self.positions == "rope":
            q, k = _rope(q, pos), _rope(k, pos)
        return q, k, v

    def _finish(self, blk: Block, x: Array, att: Array, keep: Any, site: int) -> Array:
        """The residual adds after attention output att [B, S, H, Dh], then the MLP."""
        b, s, _ = x.shape
        x = x + self._drop(blk.out(att.reshape(b, s, -1)), keep, site)
        mlp = blk.mlp_out(jax.nn.gelu(blk.mlp_in(blk.ln2(x))))
        return x + self._drop(mlp, keep, site + 1)

    def _head(self, x: Array) -> Array:
        return self._project(self.ln_f(x))

    def _project(self, x: Array) -> Array:
        """Logits of the final layer norm's output x [..., D]."""
        return output_logits(self, x)

    def _keep_masks(self, key: Array | None, shape: tuple[int, ...]) -> Array | None:
        """Scaled keep masks [2L + 1, *shape] for every dropout site from one draw."""
        if key is None or self.drop.deterministic or self.drop.rate == 0.0:
            return None
        rate = self.drop.rate
        keep = jax.random.bernoulli(key, 1.0 - rate, (2 * self.num_layers + 1, *shape))
        return keep.astype(jnp.float32) / (1.0 - rate)

    def _drop(self, x: Array, keep: Array | None, site: int) -> Array:
        if keep is None:  # eval mode: identity; train mode without a key: the module's stream
            return self.drop(x)
        return x * keep[site]

    # --- public API -------------------------------------------------------------------------

    def init_carry(self, batch_size: int, max_len: int | None = None) -> dict[str, Any]:
        """Empty KV cache for `max_len` positions (default: `context`) and position 0."""
        t = self.context if max_len is None else int(max_len)
        zeros = jnp.zeros((batch_size, t, self.num_heads, self.head_dim), jnp.float32)
        return {
            "kv": tuple((zeros, zeros) for _ in range(self.num_layers)),
            "pos": jnp.zeros((batch_size,), jnp.int32),
        }

    def __call__(
        self, tokens: Array, *, rngs: Array | None = None, backward: str = "autodiff"
    ) -> Array:
        """Teacher-forced logits [B, T, V] for int tokens [B, T] under a causal mask.
        `backward` (`train.backward`) is for recurrences: a Transformer is always autodiff."""
        b, t = tokens.shape
        if t > self.context:  # a static shape: refused before any work, never clamped
            raise UserError(
                f"a sequence of {t} tokens is longer than model.context={self.context}; "
                "raise model.context or lower train.seq_len"
            )
        pos = jnp.broadcast_to(jnp.arange(t), (b, t))
        keep = self._keep_masks(rngs, (b, t, self.embed.features))
        x = self._drop(self._inputs(tokens, pos), keep, 0)
        causal = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
        for i, blk in enumerate(self.blocks):
            q, k, v = self._qkv(blk, x, pos)
            x = self._finish(blk, x, _attend(q, k, v, causal), keep, 2 * i + 1)
        return self._head(x)

    def step(self, carry: dict[str, Any], tokens: Array) -> tuple[dict[str, Any], Array]:
        """One token per row at its own position: tokens [B] -> (new carry, logits [B, V])."""
        new_carry, x = self._step_features(carry, tokens)
        return new_carry, self._head(x)[:, 0]

    def step_hidden(
        self, carry: dict[str, Any], tokens: Array
    ) -> tuple[dict[str, Any], Array, Array]:
        """`step` and the last hidden state [B, D] after the final layer norm (Hugging Face's
        `last_hidden_state`, what contrastive search compares): (carry, hidden, logits)."""
        new_carry, x = self._step_features(carry, tokens)
        hidden = self.ln_f(x)  # [B, 1, D]
        return new_carry, hidden[:, 0], self._project(hidden)[:, 0]

    def _step_features(self, carry: dict[str, Any], tokens: Array) -> tuple[dict[str, Any], Array]:
        """The step's new carry and the last block's output [B, 1, D] (before the final LN)."""
        pos = carry["pos"]  # [B]
        t = carry["kv"][0][0].shape[1]
        here = (jnp.arange(t) == pos[:, None])[:, :, None, None]  # [B, T, 1, 1] write mask
        seen = (jnp.arange(t) <= pos[:, None])[:, None, :]  # [B, 1, T] attention mask
        x = self._drop(self._inputs(tokens[:, None], pos[:, None]), None, 0)  # [B, 1, D]
        kv = []
        for i, blk in enumerate(self.blocks):
            q, k, v = self._qkv(blk, x, pos[:, None])
            k_all = jnp.where(here, k, carry["kv"][i][0])  # k [B, 1, H, Dh] broadcast over T
            v_all = jnp.where(here, v, carry["kv"][i][1])
            kv.append((k_all, v_all))
            x = self._finish(blk, x, _attend(q, k_all, v_all, seen), None, 2 * i + 1)
        return {"kv": tuple(kv), "pos": pos + 1}, x


# --- the models table's row ------------------------------------------------------------------

FIELDS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "dropout",
    "tie_weights",
    "positions",
    "context",
)


def check_fields(cfg: Mapping[str, Any], seq_len: int = 0, max_len: int = 0) -> None:
    """The Transformer's rules: positions, heads dividing d_model, and `train.seq_len` and
    `decode.max_len` within `model.context` (the learned table's rows; also RoPE's limit, so
    a model is never asked for positions far past what it was built for)."""
    d, heads, positions = int(cfg["hidden_size"]), int(cfg["num_heads"]), cfg["positions"]
    context = int(cfg["context"])
    if positions not in POSITIONS:
        raise UserError(
            f"model.positions={positions!r} is not allowed; choose one of: {', '.join(POSITIONS)}"
        )
    if int(cfg["num_layers"]) < 1 or d < 1 or context < 1 or not 0 <= cfg["dropout"] < 1:
        raise UserError(
            "model.num_layers, model.hidden_size and model.context must be >= 1 and "
            f"model.dropout in [0, 1) (got {cfg['num_layers']}, {d}, {context}, {cfg['dropout']})"
        )
    if heads < 1 or d % heads != 0:
        raise UserError(
            f"model.num_heads={heads} must divide model.hidden_size={d}; allowed: a divisor"
        )
    if positions == "rope" and (d // heads) % 2 != 0:
        raise UserError(
            f"model.positions=rope needs an even head size (hidden_size / num_heads = "
            f"{d // heads}); allowed: num_heads with an even quotient"
        )
    for key, value in (("train.seq_len", seq_len), ("decode.max_len", max_len)):
        if value > context:
            raise UserError(
                f"{key}={value} is longer than model.context={context}, the positions the "
                f"Transformer has; raise model.context or lower {key}"
            )


def _activations(cfg: Mapping[str, Any], vocab_size: int, seq_len: int) -> float:
    """Per token: the embedding (D); per layer the two LN inputs, q/k/v, the attention output
    and its projection, the MLP's 4D pre- and post-GELU and output (about 14D) and one row of
    attention probabilities per head (heads x T); the logits, log-softmax and gradient (3V)."""
    d, layers, heads = int(cfg["hidden_size"]), int(cfg["num_layers"]), int(cfg["num_heads"])
    return d + layers * (14 * d + heads * seq_len) + 3 * vocab_size


def _build(fields: Mapping[str, Any], vocab_size: int, **kw: Any) -> Transformer:
    return Transformer(vocab_size, **fields, **kw)


SPEC = ModelSpec("transformer", _build, FIELDS, _activations, check_fields)
