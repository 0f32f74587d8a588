"""Recurrent language models (Flax NNX)."""

from seqgen.models.lm import (
    CELLS,
    LanguageModel,
    count_params,
    make_init_carry_fn,
    make_step_fn,
)

__all__ = ["CELLS", "LanguageModel", "count_params", "make_init_carry_fn", "make_step_fn"]
