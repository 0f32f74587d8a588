"""Recurrent language model (Flax NNX): stacked RNN / LSTM / GRU cells over token ids.

The model has two entry points that compute the same function:

- `__call__(tokens[B, T]) -> logits[B, T, V]`: teacher forcing, one `lax.scan` over time per
  layer. Each layer's input projection is computed for the whole sequence with one matmul
  outside the scan (the classic cuDNN trick); only the recurrent matmul stays in the loop.
- `step(carry, tokens[B]) -> (carry, logits[B, V])`: one token at a time, for decoding.

The cells are `nnx.SimpleCell`, `nnx.OptimizedLSTMCell` and `nnx.GRUCell`, used as parameter
containers: the recurrences below (`_RECURRENCES`) are exactly the cells' `__call__` with the input
projection split off, so a checkpoint is an ordinary NNX cell state. `tests/test_models.py` checks
the recurrences against the cells' own `__call__`.

With `one_hot_input=True` the first layer reads the one-hot vector of the token directly (no
embedding parameters), as folk-rnn does (Sturm et al., 2016: 3x512 LSTM, vocab 137, 5,599,881
parameters). Multiplying a one-hot vector by a kernel selects a row, so we gather the row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from seqgen.errors import UserError
from seqgen.models.recurrence import scan_layer
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID

Array = jax.Array
Carry = Any  # tuple over layers of a cell carry: LSTM (c, h), GRU / RNN h; leaves [B, H]

CELLS = ("rnn", "lstm", "gru")
# PAD and BOS are never a target, so the head gives them this logit (large negative, never
# -inf: no NaN in log-softmax arithmetic); the model's distribution is over the other ids.
NEVER_PREDICTED = (PAD_ID, BOS_ID)
MASKED_LOGIT = -1e9


def _rnn_recur(cell: nnx.SimpleCell, carry: Array, x_proj: Array) -> tuple[Array, Array]:
    """`nnx.SimpleCell`: h' = tanh(W_i x + b_i + W_h h); `x_proj` = W_i x + b_i."""
    h = jnp.tanh(x_proj + carry @ cell.dense_h.kernel[...])
    return h, h


def _lstm_recur(
    cell: nnx.OptimizedLSTMCell, carry: tuple[Array, Array], x_proj: Array
) -> tuple[tuple[Array, Array], Array]:
    """`nnx.OptimizedLSTMCell` (no peepholes); `x_proj` = W_i x (the bias is in dense_h)."""
    c, h = carry
    y = x_proj + h @ cell.dense_h.kernel[...] + cell.dense_h.bias[...]  # [B, 4H]
    i, f, g, o = jnp.split(y, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    return (new_c, new_h), new_h


def _gru_recur(cell: nnx.GRUCell, carry: Array, x_proj: Array) -> tuple[Array, Array]:
    """`nnx.GRUCell`: n = tanh(x_n + r * (W_hn h)), h' = (1 - z) n + z h; `x_proj` = W_i x + b_i."""
    h = carry
    xr, xz, xn = jnp.split(x_proj, 3, axis=-1)
    hr, hz, hn = jnp.split(h @ cell.dense_h.kernel[...], 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    new_h = (1.0 - z) * n + z * h
    return new_h, new_h


_CELL_CLASSES: dict[str, type] = {
    "rnn": nnx.SimpleCell,
    "lstm": nnx.OptimizedLSTMCell,
    "gru": nnx.GRUCell,
}
_RECURRENCES: dict[str, Callable[..., Any]] = {
    "rnn": _rnn_recur,
    "lstm": _lstm_recur,
    "gru": _gru_recur,
}


class LanguageModel(nnx.Module):
    """Stacked recurrent LM: [embedding | one-hot] -> num_layers cells -> dense head.

    The logits of PAD and BOS are fixed to -1e9: they are never targets, so the model never
    predicts them (decoders need no special case for them). With `predict_eos=False` (a text
    stream without end-of-sentence tokens, where EOS is never a target) EOS is fixed the same
    way: training, perplexity and every decoder see a distribution over stream tokens only,
    and no decoder can end a sequence before `max_len`.

    Dropout (rate `dropout`) is applied to the input of every layer above the first and to the
    input of the head, only in train mode (`model.train()`); the model is built in eval mode.
    With `tie_weights=True` the head reuses the embedding matrix (plus its own bias), which
    needs `embed_size == hidden_size`.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        cell: str = "lstm",
        embed_size: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        tie_weights: bool = False,
        one_hot_input: bool = False,
        predict_eos: bool = True,
        rngs: nnx.Rngs,
    ):
        if cell not in CELLS:
            raise UserError(f"model.cell={cell!r} is not supported; allowed: {', '.join(CELLS)}")
        if vocab_size < 1 or hidden_size < 1 or num_layers < 1:
            raise UserError(
                f"vocab_size={vocab_size}, hidden_size={hidden_size}, num_layers={num_layers}: "
                "each must be >= 1"
            )
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.dropout={dropout} is out of range; allowed: 0 <= dropout < 1")
        if one_hot_input and tie_weights:
            raise UserError(
                "model.tie_weights=true needs an embedding; "
                "it cannot be combined with one_hot_input=true"
            )
        if tie_weights and embed_size != hidden_size:
            raise UserError(
                f"model.tie_weights=true needs embed_size == hidden_size "
                f"(got embed_size={embed_size}, hidden_size={hidden_size})"
            )
        if not one_hot_input and embed_size < 1:
            raise UserError(f"model.embed_size={embed_size} must be >= 1")
        self.vocab_size = vocab_size
        self.cell_type = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.tie_weights = tie_weights
        self.one_hot_input = one_hot_input
        self.never_predicted = NEVER_PREDICTED + (() if predict_eos else (EOS_ID,))

        self.embed = None if one_hot_input else nnx.Embed(vocab_size, embed_size, rngs=rngs)
        in_size = vocab_size if one_hot_input else embed_size
        cell_cls = _CELL_CLASSES[cell]
        self.cells = nnx.List(
            [
                cell_cls(in_size if i == 0 else hidden_size, hidden_size, rngs=rngs)
                for i in range(num_layers)
            ]
        )
        # One dropout site per layer above the first, plus one before the head.
        self.dropouts = nnx.List(
            [nnx.Dropout(dropout, deterministic=True, rngs=rngs) for _ in range(num_layers)]
        )
        if tie_weights:
            self.head_bias = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))
        else:
            self.head = nnx.Linear(hidden_size, vocab_size, rngs=rngs)

    # --- pieces shared by __call__ and step -------------------------------------------------

    def _input_proj(self, layer: int, x: Array, tokens: Array | None = None) -> Array:
        """Input projection of `layer` for inputs x [..., in] (or token ids for one-hot)."""
        dense_i = self.cells[layer].dense_i
        if layer == 0 and self.one_hot_input:
            proj = dense_i.kernel[...][tokens]  # one_hot(tokens) @ kernel, without the matmul
        else:
            proj = x @ dense_i.kernel[...]
        if dense_i.bias is not None:
            proj = proj + dense_i.bias[...]
        return proj

    def _keep_masks(self, key: Array | None, shape: tuple[int, ...]) -> Array | None:
        """Scaled keep masks [L, *shape] for all dropout sites from ONE draw (a threefry draw
        is slow to compile on CPU, one per site adds seconds); None when not needed."""
        drop = self.dropouts[0]
        if key is None or drop.deterministic or drop.rate == 0.0:
            return None
        keep = jax.random.bernoulli(key, 1.0 - drop.rate, (self.num_layers, *shape))
        return keep.astype(jnp.float32) / (1.0 - drop.rate)

    def _drop(self, i: int, x: Array, keep: Array | None) -> Array:
        if keep is None:  # eval mode: identity; train mode without a key: the module's stream
            return self.dropouts[i](x)
        return x * keep[i]

    def _head(self, h: Array) -> Array:
        if self.tie_weights:
            logits = h @ self.embed.embedding[...].T + self.head_bias[...]
        else:
            logits = self.head(h)
        never = jnp.isin(jnp.arange(self.vocab_size), jnp.asarray(self.never_predicted))
        return jnp.where(never, MASKED_LOGIT, logits)

    def _embed(self, tokens: Array) -> Array | None:
        return None if self.one_hot_input else self.embed(tokens)

    # --- public API -------------------------------------------------------------------------

    def init_carry(self, batch_size: int) -> Carry:
        """Zero carry: a tuple over layers; LSTM layers hold (c, h), others h; leaves [B, H]."""
        zeros = jnp.zeros((batch_size, self.hidden_size), jnp.float32)
        if self.cell_type == "lstm":
            return tuple((zeros, zeros) for _ in range(self.num_layers))
        return tuple(zeros for _ in range(self.num_layers))

    def __call__(
        self, tokens: Array, *, rngs: Array | None = None, backward: str = "autodiff"
    ) -> Array:
        """Teacher-forced logits [B, T, V] for int tokens [B, T], starting from a zero carry.

        `rngs`: optional dropout key (used only in train mode); without it the dropout layers
        draw from the stream given at construction. `backward`: how the recurrences are
        differentiated, "autodiff" or "fused" (`seqgen.models.recurrence`; same forward).
        """
        batch, length = tokens.shape
        recur = _RECURRENCES[self.cell_type]
        carry0 = self.init_carry(batch)
        keep = self._keep_masks(rngs, (batch, length, self.hidden_size))
        x = self._embed(tokens)  # [B, T, E] or None (one-hot)
        for layer in range(self.num_layers):
            if layer > 0:
                x = self._drop(layer - 1, x, keep)
            proj = self._input_proj(layer, x, tokens)  # [B, T, G*H]
            hs = scan_layer(  # [T, B, H]
                recur, self.cell_type, self.cells[layer], carry0[layer],
                jnp.swapaxes(proj, 0, 1), backward,
            )  # fmt: skip
            x = jnp.swapaxes(hs, 0, 1)  # [B, T, H]
        x = self._drop(self.num_layers - 1, x, keep)
        return self._head(x)

    def step(
        self, carry: Carry, tokens: Array, *, rngs: Array | None = None
    ) -> tuple[Carry, Array]:
        """One time step: tokens [B] -> (new carry, logits [B, V])."""
        recur = _RECURRENCES[self.cell_type]
        keep = self._keep_masks(rngs, (tokens.shape[0], self.hidden_size))
        x = self._embed(tokens)  # [B, E] or None
        new_carry = []
        for layer in range(self.num_layers):
            if layer > 0:
                x = self._drop(layer - 1, x, keep)
            c, x = recur(self.cells[layer], carry[layer], self._input_proj(layer, x, tokens))
            new_carry.append(c)
        x = self._drop(self.num_layers - 1, x, keep)
        return tuple(new_carry), self._head(x)


def make_step_fn(model: LanguageModel) -> tuple[Callable[..., tuple[Carry, Array]], nnx.State]:
    """Split `model` once; return a pure `step_fn(params, carry, tokens)` and its `params`.

    `params` is the `nnx.Param` state of the model (the only arrays a decoder needs to pass
    around); the remaining state (dropout RNG streams, unused in eval mode) is closed over.
    The model is put in eval mode first (no dropout while decoding). `step_fn` is jittable
    and preserves the carry's shapes.
    """
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def step_fn(params: nnx.State, carry: Carry, tokens: Array) -> tuple[Carry, Array]:
        return nnx.merge(graphdef, params, rest).step(carry, tokens)

    return step_fn, params


def make_init_carry_fn(model: LanguageModel) -> Callable[[int], Carry]:
    """`init_carry(batch_size)` that does not hold on to the model's parameters."""
    hidden, layers, lstm = model.hidden_size, model.num_layers, model.cell_type == "lstm"

    def init_carry(batch_size: int) -> Carry:
        zeros = jnp.zeros((batch_size, hidden), jnp.float32)
        return tuple(((zeros, zeros) if lstm else zeros) for _ in range(layers))

    return init_carry


def count_params(model: nnx.Module) -> int:
    """Number of scalar parameters (`nnx.Param` leaves only)."""
    params = nnx.state(model, nnx.Param)
    return int(sum(x.size for x in jax.tree.leaves(params)))
