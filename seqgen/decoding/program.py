"""A scan decoder's program: its traced inputs as one pytree (`ProgramInputs`, which
`parallel.row_parallel` splits over devices), the static options every program takes
(`ProgramOptions`), and `launch`, which builds both from a validated request.

A program is `fn(inputs: ProgramInputs, *, opts: ProgramOptions, **its_own_static)` decorated
with `row_parallel`; its keyword-only arguments are static.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax

from seqgen.decoding.common import DecodeOutput, DecodeRequest, Prepared, StepFn, traced_knobs
from seqgen.decoding.loop import resolve_loop


class ProgramInputs(NamedTuple):
    """The traced inputs of a scan decoder's program, as one pytree. `parallel.row_parallel`
    splits the fields it names in `ROW_ARGS` (rows on axis 0) over the devices and replicates
    the others. The deterministic decoders get `prompt_ids = key = None`."""

    params: Any
    init_carry: Any  # pytree, every leaf [B, ...]
    prompts: jax.Array  # [B, T]
    prompt_lengths: jax.Array  # [B]
    prompt_ids: jax.Array | None  # [B]: each row's key is derived from its prompt's id
    key: jax.Array | None
    knobs: dict[str, jax.Array]  # `traced_knobs`
    constraint: Any  # a `constraint.Constraint`, or None

    @classmethod
    def of(cls, req: DecodeRequest, prep: Prepared, *, keyed: bool) -> ProgramInputs:
        """The inputs of a validated request (`keyed=False`: no prompt ids, no key)."""
        ids, key = (prep.prompt_ids, prep.key) if keyed else (None, None)
        return cls(
            req.params, req.init_carry, prep.prompts, prep.prompt_lengths, ids, key,
            traced_knobs(req.cfg), req.constraint,
        )  # fmt: skip


@dataclass(frozen=True)
class ProgramOptions:
    """The static arguments every scan decoder's program takes from the request as it is."""

    step_fn: StepFn
    max_len: int
    vocab_size: int
    loop: str  # a resolved `loop.LOOPS` name

    @classmethod
    def of(cls, req: DecodeRequest) -> ProgramOptions:
        return cls(req.step_fn, req.max_len, req.vocab_size, resolve_loop(req.loop))


def launch(
    program: Callable[..., DecodeOutput],
    req: DecodeRequest,
    prep: Prepared,
    *,
    keyed: bool,
    **static: Any,
) -> DecodeOutput:
    """Run `program` on a validated request: `keyed=False` (the deterministic decoders) passes
    no prompt ids and no key; `static` are the program's own static arguments."""
    return program(ProgramInputs.of(req, prep, keyed=keyed), opts=ProgramOptions.of(req), **static)
