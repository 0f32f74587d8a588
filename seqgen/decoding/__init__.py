"""Decoders for any step function `step_fn(params, carry, tokens[B]) -> (carry, logits[B, V])`.

`decode(...)` takes the one entry path of `registry.run`: it validates the config (UserError
before any compile), prepares the inputs and runs the program of the decoder `cfg.name`
(`registry.py`: every fact about each decoder; `register_decoder` adds one). Each
decoder is one `jax.jit` program around a `lax.scan` over `max_len` positions (BOS, then the
forced prompt, then the continuation), run by the one loop driver of `loop.py` (`loop=`: scan,
unrolled scan, masked scan or while loop, the same outputs); each decoder takes one
`DecodeRequest`. See `knobs.py` for each knob's default, range and whether it is static or
traced, `processor_table.py` for the logits processors in their order (`register_processor`
adds one).

    greedy            argmax after the penalties
    sample            ancestral sampling through the logits processors (Holtzman et al. 2020, ...)
    beam              beam search, finished pool, exact stopping, length normalization
    stochastic_beam   Gumbel-top-k stochastic beam search (Kool et al. 2019)
    diverse_beam      diverse beam search with Hamming diversity (Vijayakumar et al. 2018)
    exact             exact MAP search, best-first branch and bound (Stahlberg & Byrne 2019)
    mbr               sampling-based minimum Bayes risk (Eikema & Aziz 2020; Freitag et al. 2022)
    contrastive       contrastive search over the model's hidden states (Su et al. 2022)

`decoder.guidance_scale` (classifier-free guidance, Sanchez et al. 2023; `guidance.py`) wraps
the step function for the decoders whose registry row takes it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from seqgen.decoding import processor_table, processors
from seqgen.decoding.beam import beam, diverse_beam
from seqgen.decoding.common import (
    DEFAULTS,
    DecodeOutput,
    DecodeRequest,
    Prepared,
    StepFn,
    get,
    validate_knobs,
)
from seqgen.decoding.constraint import Constraint, make_constraint
from seqgen.decoding.contrastive import contrastive
from seqgen.decoding.exact import exact
from seqgen.decoding.knobs import Knob
from seqgen.decoding.loop import LOOPS
from seqgen.decoding.mbr import mbr
from seqgen.decoding.processor_table import (
    Context,
    Processor,
    ProcessorFlags,
    flags_from_cfg,
    process_logits,
    register_processor,
    render_order,
)
from seqgen.decoding.processors import (
    epsilon,
    eta,
    min_p,
    mirostat_truncate,
    mirostat_update,
    no_repeat_ngram,
    presence_frequency_penalty,
    repetition_penalty,
    temperature,
    top_k,
    top_n_sigma,
    top_p,
    typical_p,
)
from seqgen.decoding.registry import SPECS, Decoder, DecoderSpec, register_decoder, run
from seqgen.decoding.sampling import greedy, sample
from seqgen.decoding.stochastic_beam import stochastic_beam
from seqgen.errors import UserError
from seqgen.parallel import decode_mesh


def decode(
    step_fn: StepFn,
    params: Any,
    init_carry: Any,
    prompts: Any = None,
    prompt_lengths: Any = None,
    *,
    cfg: Any,
    max_len: int,
    num_samples: int = 1,
    key: Any = None,
    vocab_size: int,
    prompt_ids: Any = None,
    constraint: Constraint | None = None,
    mesh: Any = None,
    loop: str = "auto",
    logprobs: int = 0,
    logprobs_mode: str = "raw",
    prompt_logprobs: bool = False,
    guidance_prompts: Any = None,
    guidance_lengths: Any = None,
) -> DecodeOutput:
    """Decode with the decoder named `cfg.name` (`registry.SPECS`, built-in or registered).

    step_fn:        pure `(params, carry, tokens[B]) -> (carry, logits[B, V])`; pass the SAME
                    function object each call, or the program is compiled again.
    init_carry:     pytree, every leaf with leading axis B (number of prompts).
    prompts:        int[B, P], left-aligned, PAD-padded, without BOS; None = start from BOS.
    prompt_lengths: int[B] (0 = BOS only); None = all P.
    cfg:            any object with the fields of `config.DecoderConfig` (missing = default).
    max_len:        total prompt + continuation budget (BOS not counted).
    num_samples:    rows per prompt for `sample` (N); beam methods return beam_size rows.
    key:            a PRNG key or an int seed (None = 0).
    prompt_ids:     int[B] global prompt indices for the per-row keys (None = 0..B-1); pass
                    them when decoding in chunks so that the result equals one big batch.
    constraint:     a `Constraint` automaton (see `constraint.py`) every row must follow,
                    prompt included; None = unconstrained. Not supported by `exact`.
    mesh:           a `seqgen.parallel.make_mesh()` mesh: the rows are split over its devices
                    (padded to a multiple of its size and trimmed; `parallel.row_parallel`);
                    the tokens equal the one-device result. None = the mesh of an enclosing
                    decode (a decoder that calls decode, like a reranker), else one device.
    loop:           the loop variant, one of `loop.LOOPS` (`auto`: chosen per backend); every
                    variant gives the same outputs bit for bit, only the speed differs.
    logprobs:       K > 0: at every position the K most probable tokens and their log-probs
                    (`DecodeOutput.top_ids`, `top_logprobs`); greedy and sample only.
    logprobs_mode:  `raw` (default, vLLM's): the model's distribution, log softmax(logits);
                    `processed`: the one actually sampled, after the processors (penalties,
                    temperature, truncation; greedy: after its penalties).
    prompt_logprobs: the model's log-prob of every prompt token (`DecodeOutput`).
    guidance_prompts: int[B, U] the unconditional contexts of classifier-free guidance
                    (`cfg.guidance_scale` != 1; `guidance.py`), each at most its prompt's
                    length, PAD-padded; None = BOS only (the prompt dropped).
    guidance_lengths: int[B]; None = all U.
    """
    req = DecodeRequest(
        step_fn,
        params,
        init_carry,
        prompts,
        prompt_lengths,
        max_len=max_len,
        vocab_size=vocab_size,
        cfg=cfg,
        num_samples=num_samples,
        key=key,
        prompt_ids=prompt_ids,
        constraint=constraint,
        loop=loop,
        logprobs=logprobs,
        logprobs_mode=logprobs_mode,
        prompt_logprobs=prompt_logprobs,
        guidance_prompts=guidance_prompts,
        guidance_lengths=guidance_lengths,
    )
    with decode_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        return run(get(cfg, "name"), req)


__all__ = [
    "SPECS",
    "Constraint",
    "Context",
    "Decoder",
    "DecoderSpec",
    "Knob",
    "make_constraint",
    "DEFAULTS",
    "LOOPS",
    "DecodeOutput",
    "DecodeRequest",
    "Prepared",
    "Processor",
    "ProcessorFlags",
    "StepFn",
    "UserError",
    "beam",
    "contrastive",
    "decode",
    "diverse_beam",
    "epsilon",
    "exact",
    "eta",
    "flags_from_cfg",
    "greedy",
    "mbr",
    "min_p",
    "mirostat_truncate",
    "mirostat_update",
    "no_repeat_ngram",
    "presence_frequency_penalty",
    "process_logits",
    "processor_table",
    "processors",
    "register_decoder",
    "register_processor",
    "render_order",
    "repetition_penalty",
    "run",
    "sample",
    "stochastic_beam",
    "temperature",
    "top_k",
    "top_n_sigma",
    "top_p",
    "typical_p",
    "validate_knobs",
]
