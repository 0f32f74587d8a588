"""Compare `preflight.training_bytes` with what XLA allocates for the compiled train step.

    python scripts/calibrate_memory.py

For each cell and a few sizes (batch, seq_len, hidden, layers) it compiles the train step
(`seqgen.train._train_step`, no data, no training) and prints XLA's memory analysis (arguments
+ outputs + temporaries) beside the estimate, and their ratio. `_FLOATS_PER_LAYER_H` in
`seqgen/models/lm.py` (the RNN rows) is fitted to these numbers; the estimate is meant to stay
within about 0.8-1.2 of XLA's, so a run refused for memory would not have fit.
"""

from __future__ import annotations

import os
from types import SimpleNamespace as NS

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from seqgen.models import LanguageModel  # noqa: E402
from seqgen.preflight import training_bytes  # noqa: E402
from seqgen.train import _compile_key, _train_step, hparams_from_cfg, make_optimizer  # noqa: E402

V = 100
SIZES = [  # (batch, seq_len, hidden, layers, embed)
    (32, 256, 128, 2, 64),
    (32, 2048, 128, 2, 64),
    (8, 4096, 256, 1, 64),
    (32, 256, 128, 8, 64),
    (64, 512, 512, 2, 256),
]


def xla_bytes(cell: str, B: int, T: int, H: int, L: int, E: int) -> int:
    model = LanguageModel(
        V, cell=cell, embed_size=E, hidden_size=H, num_layers=L, dropout=0.1, rngs=nnx.Rngs(0)
    )
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    hp = hparams_from_cfg(NS(steps=100))
    opt_state = make_optimizer(hp).init(params)
    batch = (jnp.zeros((B, T), jnp.int32),) * 2 + (jnp.ones((B, T), jnp.float32),)
    step = jax.jit(_train_step, static_argnums=(0, 1))
    args = (params, opt_state, rest, batch, np.zeros(2, np.uint32), np.int32(0), np.int32(-1))
    mem = step.lower(graphdef, _compile_key(hp), *args).compile().memory_analysis()
    return mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes


def main() -> None:
    print(f"jax {jax.__version__}, {jax.default_backend()}; V={V}")
    print("cell  batch seq_len hidden layers    XLA MB  estimate MB  XLA/estimate")
    for cell in ("lstm", "gru", "rnn"):
        for B, T, H, L, E in SIZES:
            got = xla_bytes(cell, B, T, H, L, E)
            m = NS(cell=cell, embed_size=E, hidden_size=H, num_layers=L, one_hot_input=False)
            est = training_bytes(m, NS(batch_size=B, seq_len=T), V)
            print(
                f"{cell:5} {B:5} {T:7} {H:6} {L:6} {got / 1e6:9.1f} {est / 1e6:12.1f} "
                f"{got / est:13.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
