"""Recurrent language model (Flax NNX): stacked RNN / LSTM / GRU cells over token ids.

The model has two entry points that compute the same function:

- `__call__(tokens[B, T]) -> logits[B, T, V]`: teacher forcing, one `lax.scan` over time per
  layer. Each layer's input projection is computed for the whole sequence with one matmul
  outside the scan (the classic cuDNN trick); only the recurrent matmul stays in the loop.
- `step(carry, tokens[B]) -> (carry, logits[B, V])`: one token at a time, for decoding;
  `step_hidden` also returns the top layer's h [B, H] (the protocol's optional hidden state).

The cells are `nnx.SimpleCell`, `nnx.OptimizedLSTMCell` and `nnx.GRUCell`, used as parameter
containers: the recurrences below (`_RECURRENCES`) are exactly the cells' `__call__` with the input
projection split off, so a checkpoint is an ordinary NNX cell state. `tests/test_models.py` checks
the recurrences against the cells' own `__call__`.

With `one_hot_input=True` the first layer reads the one-hot vector of the token directly (no
embedding parameters), as folk-rnn does (Sturm et al., 2016: 3x512 LSTM, vocab 137, 5,599,881
parameters). Multiplying a one-hot vector by a kernel selects a row, so we gather the row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from seqgen.errors import UserError
from seqgen.models.protocol import ModelSpec, never_predicted, output_logits
from seqgen.models.recurrence import scan_layer
from seqgen.models.wavefront import PER_LAYER, WAVEFRONTS, stack_weights, wavefront

Array = jax.Array
Carry = Any  # tuple over layers of a cell carry: LSTM (c, h), GRU / RNN h; leaves [B, H]

CELLS = ("rnn", "lstm", "gru")


def _rnn_gates(carry: Array, x_proj: Array, hw: Array, bias: Array | None) -> tuple:
    """`nnx.SimpleCell`: h' = tanh(W_i x + b_i + W_h h); `x_proj` = W_i x + b_i, `hw` = h W_h."""
    h = jnp.tanh(x_proj + hw)
    return h, h


def _lstm_gates(carry: tuple[Array, Array], x_proj: Array, hw: Array, bias: Array) -> tuple:
    """`nnx.OptimizedLSTMCell` (no peepholes); `x_proj` = W_i x, `hw` = h W_h (+ `bias`, the
    bias of dense_h, added after the sum so the rounding is the cell's own)."""
    c, h = carry
    y = x_proj + hw + bias  # [B, 4H]
    i, f, g, o = jnp.split(y, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    return (new_c, new_h), new_h


def _gru_gates(carry: Array, x_proj: Array, hw: Array, bias: Array | None) -> tuple:
    """`nnx.GRUCell`: n = tanh(x_n + r * (W_hn h)), h' = (1 - z) n + z h; `x_proj` = W_i x + b_i,
    `hw` = h W_h = [hr, hz, hn]."""
    h = carry
    xr, xz, xn = jnp.split(x_proj, 3, axis=-1)
    hr, hz, hn = jnp.split(hw, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    new_h = (1.0 - z) * n + z * h
    return new_h, new_h


# A cell's step with its two matmuls split off: (carry, x_proj, hw, dense_h bias) -> (carry, h);
# the per-layer scans and the all-layer wavefront (`models.wavefront`) share these.
_GATES: dict[str, Callable[..., Any]] = {
    "rnn": _rnn_gates,
    "lstm": _lstm_gates,
    "gru": _gru_gates,
}


def _hidden(carry: Any) -> Array:
    return carry[1] if isinstance(carry, tuple) else carry


def _recurrence(cell_type: str) -> Callable[..., Any]:
    gates = _GATES[cell_type]

    def recur(cell: nnx.Module, carry: Any, x_proj: Array) -> tuple[Any, Array]:
        """One step of `cell` given its input projection `x_proj` (W_i x, + b_i if any)."""
        bias = cell.dense_h.bias
        hw = _hidden(carry) @ cell.dense_h.kernel[...]
        return gates(carry, x_proj, hw, None if bias is None else bias[...])

    return recur


_CELL_CLASSES: dict[str, type] = {
    "rnn": nnx.SimpleCell,
    "lstm": nnx.OptimizedLSTMCell,
    "gru": nnx.GRUCell,
}
_RECURRENCES: dict[str, Callable[..., Any]] = {name: _recurrence(name) for name in _GATES}


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
        from seqgen.config import check_model  # the ranges and rules of `model.*`, once

        if cell not in CELLS:
            raise UserError(f"model.cell={cell!r} is not supported; allowed: {', '.join(CELLS)}")
        if vocab_size < 1:
            raise UserError(f"vocab_size={vocab_size} must be >= 1")
        arch = dict(embed_size=embed_size, hidden_size=hidden_size, num_layers=num_layers)
        arch.update(dropout=dropout, tie_weights=tie_weights, one_hot_input=one_hot_input)
        check_model(arch)
        self.vocab_size = vocab_size
        self.cell_type = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.tie_weights = tie_weights
        self.one_hot_input = one_hot_input
        self.never_predicted = never_predicted(predict_eos)

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
        return output_logits(self, h)

    def _embed(self, tokens: Array) -> Array | None:
        return None if self.one_hot_input else self.embed(tokens)

    # --- public API -------------------------------------------------------------------------

    def init_carry(self, batch_size: int, max_len: int | None = None) -> Carry:
        """Zero carry: a tuple over layers; LSTM layers hold (c, h), others h; leaves [B, H].
        A recurrent carry has the same size at every step: `max_len` is not needed."""
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
        differentiated: "autodiff" or "fused" (one scan per layer, `models.recurrence`), or
        "wavefront" / "wavefront_fused" (all layers in one scan, `models.wavefront`).
        """
        batch, length = tokens.shape
        recur = _RECURRENCES[self.cell_type]
        carry0 = self.init_carry(batch)
        keep = self._keep_masks(rngs, (batch, length, self.hidden_size))
        x = self._embed(tokens)  # [B, T, E] or None (one-hot)
        drop = self.dropouts[0]  # the wavefront takes every mask up front; the dropout modules'
        streamed = keep is None and not drop.deterministic and drop.rate > 0  # own draws don't
        if backward in WAVEFRONTS and not streamed:  # all layers in one scan
            proj = jnp.swapaxes(self._input_proj(0, x, tokens), 0, 1)  # [T, B, G*H]
            masks = None if keep is None else jnp.swapaxes(keep[:-1], 1, 2)  # [L-1, T, B, H]
            stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *carry0)  # leaves [L, B, H]
            hs = wavefront(_GATES[self.cell_type], stack_weights(self.cells), stacked, proj, masks,
                           backward)  # fmt: skip
            return self._head(self._drop(self.num_layers - 1, jnp.swapaxes(hs, 0, 1), keep))
        backward = PER_LAYER.get(backward, backward)
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
        new_carry, _, logits = self.step_hidden(carry, tokens, rngs=rngs)
        return new_carry, logits

    def step_hidden(
        self, carry: Carry, tokens: Array, *, rngs: Array | None = None
    ) -> tuple[Carry, Array, Array]:
        """`step` and the top layer's h [B, H] it read the logits from (before dropout):
        (new carry, hidden [B, H], logits [B, V])."""
        recur = _RECURRENCES[self.cell_type]
        keep = self._keep_masks(rngs, (tokens.shape[0], self.hidden_size))
        x = self._embed(tokens)  # [B, E] or None
        new_carry = []
        for layer in range(self.num_layers):
            if layer > 0:
                x = self._drop(layer - 1, x, keep)
            c, x = recur(self.cells[layer], carry[layer], self._input_proj(layer, x, tokens))
            new_carry.append(c)
        hidden = x
        x = self._drop(self.num_layers - 1, x, keep)
        return tuple(new_carry), hidden, self._head(x)


# --- the models table's rows -----------------------------------------------------------------

# model.* fields the recurrent cells read (with `cell`: their cache identity, unchanged since
# before the models table, so cached models keep their keys)
RNN_FIELDS = ("embed_size", "hidden_size", "num_layers", "dropout", "tie_weights", "one_hot_input")
# Float32 values per hidden unit and token that one layer keeps for the backward pass, fitted by
# `scripts/calibrate_memory.py` (LSTM 21.6, GRU 17.4, RNN 9.2 on CPU, jax 0.10.2): the gates, their
# nonlinearities and derivatives, the carry, the layer input, dropout masks.
_FLOATS_PER_LAYER_H = {"lstm": 21, "gru": 17, "rnn": 9}


def _rnn_activations(cell: str) -> Callable[[Mapping[str, Any], int, int], float]:
    def floats(cfg: Mapping[str, Any], vocab_size: int, seq_len: int) -> float:
        """Per token: the embedding and its gradient (2E), per layer `_FLOATS_PER_LAYER_H` x H,
        and the logits, their softmax, gradient and the cross-entropy's intermediates (6V);
        within 0.8-1.2 of what XLA allocates for the sizes calibrate_memory.py compiles."""
        e, h, layers = int(cfg["embed_size"]), int(cfg["hidden_size"]), int(cfg["num_layers"])
        return 2 * e + layers * _FLOATS_PER_LAYER_H[cell] * h + 6 * vocab_size

    return floats


def _check_rnn(cfg: Mapping[str, Any], seq_len: int, max_len: int) -> None:
    if cfg["tie_weights"] and cfg["embed_size"] != cfg["hidden_size"] and not cfg["one_hot_input"]:
        raise UserError(
            "model.tie_weights=true needs model.embed_size == model.hidden_size "
            f"(got {cfg['embed_size']} and {cfg['hidden_size']})"
        )


def rnn_spec(cell: str) -> ModelSpec:
    """The models-table row of one recurrent cell."""

    def build(fields: Mapping[str, Any], vocab_size: int, **kw: Any) -> LanguageModel:
        return LanguageModel(vocab_size, cell=cell, **fields, **kw)

    return ModelSpec(cell, build, RNN_FIELDS, _rnn_activations(cell), _check_rnn)
