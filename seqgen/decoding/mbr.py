"""Sampling-based minimum Bayes risk (MBR) decoding.

Eikema & Aziz 2020 ("Is MAP decoding all you need? The inadequacy of the mode in neural
machine translation", COLING) and Freitag et al. 2022 ("High quality rather than high model
probability: minimum Bayes risk decoding with neural metrics", TACL): instead of the mode,
pick the hypothesis with the highest expected utility under the model,

    y_MBR = argmax_{h in H} (1 / M) sum_{j=1..M} u(h, r_j),   r_j ~ p(. | x),

with N hypotheses H and M pseudo-references r_j both drawn from the model by any decoder of
the registry (default: ancestral sampling). Utilities (`seqgen.metrics.utility`, on the
continuations' token ids): chrF over token n-grams, smoothed sentence BLEU, 1 - normalized edit
distance. The two draws are two jitted decodes; the N x M utility matrix of a prompt is one
vectorized numpy computation (no loop over pairs).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqgen.decoding.common import DecodeOutput, DecodeRequest, Prepared, get


def mbr(req: DecodeRequest) -> DecodeOutput:
    """MBR decoding (see the module docstring). `num_candidates` hypotheses come from the
    decoder config `candidates`, `num_references` pseudo-references from `references` (each a
    dict of decoder knobs, default `{}` = ancestral sampling), drawn with the keys
    fold_in(key, 0) and fold_in(key, 1); `utility` is chrf | bleu | edit.

    Returns the candidates of each prompt sorted by expected utility, best first (the MBR
    choice is row 0), with scores = their expected utility (1/M) sum_j u(h, r_j) on [0, 1];
    every other field is the candidate's own (tokens, log-probs under the model). Ties keep
    the candidates' draw order. `num_samples` is ignored. A `constraint` applies to the
    candidates and the references alike (both are drawn with it).
    """
    from seqgen.decoding.registry import run

    return run("mbr", req)


def launch(req: DecodeRequest, prep: Prepared) -> DecodeOutput:
    """Draw the candidates and references, rank the candidates by expected utility."""
    from seqgen.decoding import decode
    from seqgen.decoding.registry import nested_config
    from seqgen.metrics.utility import UTILITY_FUNCTIONS

    cfg = req.cfg
    nested = {f: nested_config(cfg, f) for f in ("candidates", "references")}
    draws = {}
    for i, (f, n_field) in enumerate(
        (("candidates", "num_candidates"), ("references", "num_references"))
    ):
        out = decode(
            req.step_fn,
            req.params,
            req.init_carry,
            prep.prompts,
            prep.prompt_lengths,
            cfg=nested[f],
            max_len=req.max_len,
            num_samples=int(get(cfg, n_field)),
            key=jax.random.fold_in(prep.key, i),
            vocab_size=req.vocab_size,
            prompt_ids=prep.prompt_ids,
            constraint=req.constraint,
            loop=req.loop,
            guidance_prompts=req.guidance_prompts,  # a nested decoder may be guided
            guidance_lengths=req.guidance_lengths,
        )
        draws[f] = jax.tree.map(np.asarray, out)
    cand, ref = draws["candidates"], draws["references"]
    utility = UTILITY_FUNCTIONS[str(get(cfg, "utility"))]
    plen = np.asarray(prep.prompt_lengths)

    def continuations(out: DecodeOutput, b: int) -> list[np.ndarray]:
        return [out.tokens[b, n, plen[b] : out.lengths[b, n]] for n in range(out.tokens.shape[1])]

    order, expected = [], []
    for b in range(prep.batch):
        eu = utility(continuations(cand, b), continuations(ref, b)).mean(axis=1)  # [N]
        o = np.argsort(-eu, kind="stable")
        order.append(o)
        expected.append(eu[o])
    order_arr = np.stack(order)  # [B, N]

    def pick(x: Any) -> Any:
        if x is None or np.ndim(x) < 2:
            return x
        idx = order_arr.reshape(order_arr.shape + (1,) * (np.ndim(x) - 2))
        return jnp.asarray(np.take_along_axis(x, idx, axis=1))

    fields = {f: pick(getattr(cand, f)) for f in DecodeOutput.__dataclass_fields__}
    fields.update(
        prompt_lengths=jnp.asarray(cand.prompt_lengths),
        scores=jnp.asarray(np.stack(expected), jnp.float32),
        gumbel_scores=None,
        kappa=None,
        inclusion_probs=None,
    )
    return DecodeOutput(**fields)
