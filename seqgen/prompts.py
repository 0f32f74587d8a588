"""The prompts a run decodes and the human row that matches them, built once per run.

`prepare_prompts(decode_cfg, corpus, ...)` is what the pipeline, `seqgen-sample` and the Python
API call: the prompts (`decode.prompts`: none, held-out openings, or typed texts), the human row
(held-out continuations under the same budget), and, with a constraint, the automaton and the
prompts it accepts. Preflight checks budgets on them and evaluation decodes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from seqgen.errors import UserError

log = logging.getLogger("seqgen")


@dataclass
class Prompts:
    prompts: list[np.ndarray]  # token ids without BOS
    human: list[np.ndarray]  # held-out continuations (the human row), cut to the budget
    human_prompts: list[np.ndarray]  # the prompt each human continuation follows
    human_ended: list[bool]
    constraint: Any = None  # the run's `Constraint` automaton (None without one)
    left_out: float | None = None  # share of the prompts the constraint rejected (None: none)
    # classifier-free guidance's context of each prompt (`unconditional_contexts`)
    unconditional: list[np.ndarray] | None = None


def prepare_prompts(
    decode_cfg: Any, corpus: Any, constraint_cfg: Any = None, unknown: str = "error"
) -> Prompts:
    """A run's prompts (`make_prompts`), with the constraint of `constraint_cfg` (None or
    `constraint=none`: no constraint) built over them and the prompts it rejects left out.

    Under the DPFSA oracle, prompts of probability 0 are named in one warning.
    """
    pr = make_prompts(decode_cfg, corpus, unknown)
    if corpus.oracle is not None:
        _warn_impossible_prompts(corpus.oracle, pr.prompts)
    constraint = build_constraint(constraint_cfg, corpus, pr.prompts)
    if constraint is not None:
        pr = replace(accepted_prompts(constraint, pr), constraint=constraint)
    return replace(pr, unconditional=unconditional_contexts(corpus, pr.prompts))


def unconditional_contexts(corpus: Any, prompts: list[np.ndarray]) -> list[np.ndarray]:
    """Classifier-free guidance's unconditional context of each prompt (`decoding.guidance`,
    Sanchez et al. 2023): the prompt without its conditioning. Folk tunes: the prompt without
    its header (the M:, L:, K: lines, `_header_length`), so the guided stream is the one that
    knows the meter and key; every other corpus (text, DPFSA strings): nothing, the prompt
    dropped (the unconditional stream starts from BOS alone)."""
    if corpus.name != "folk":
        return [p[:0] for p in prompts]
    return [p[_header_length(corpus, p) :] for p in prompts]


def make_prompts(decode_cfg: Any, corpus: Any, unknown: str = "error") -> Prompts:
    """The prompts to decode and the human row (held-out continuations) that matches them.

    `decode.prompts=heldout` takes openings of held-out (test, else valid) data, at most
    `decode.num_prompts`, each a distinct prompt, in held-out order (`_openings`):

    - sequences (DPFSA strings): the first `decode.prompt_len` tokens of a sequence longer
      than that;
    - folk tunes: the tune's whole header (M:, L:, K: lines) plus its first
      `decode.prompt_len` tokens of music (characters at level char, ABC tokens at level
      abc), from tunes with music left after it and a prompt shorter than `decode.max_len`;
    - text streams: `decode.prompt_len` tokens from a line start, followed in the text by the
      full budget of `decode.max_len` minus the prompt (or, with EOS in the stream, by the
      end of its line); the spans of different prompts do not overlap.

    When fewer than `decode.num_prompts` qualify, one warning says how many and why. The
    human row continues the chosen openings first, then further held-out openings (as many
    sequences as the generations), each cut at the generations' budget.
    """
    dcfg = decode_cfg
    max_len = int(dcfg.max_len)
    held = [np.asarray(s, np.int32) for s in corpus.test] or [
        np.asarray(s, np.int32) for s in corpus.valid
    ]
    if not held:
        raise UserError("the held-out split is empty: use a larger corpus or data.test_fraction")
    mode = dcfg.prompts
    n_samples = int(dcfg.num_samples)
    if mode in (None, "none"):
        prompts = [np.zeros((0,), np.int32)]
        human_src = _openings(corpus, held, 0, max_len)
    elif mode == "heldout":
        prompts, human_src = _heldout_prompts(dcfg, corpus, held, max_len)
    else:
        prompts = []
        for text in list(mode):
            # a literal "\n" typed on the command line is a line break (ABC headers need them)
            text = str(text).replace("\\n", "\n")
            ids = corpus.vocab.encode(text, unknown=unknown)
            if len(ids) >= max_len:  # as decode.prompt_len: room for a continuation
                raise UserError(
                    f"prompt {str(text)[:30]!r} is {len(ids)} tokens, which leaves no room "
                    f"for a continuation; allowed: prompts shorter than decode.max_len={max_len}"
                )
            prompts.append(np.asarray(ids, np.int32))
        human_src = _openings(corpus, held, 0, max_len)
    human_src = human_src[: len(prompts) * n_samples]
    return Prompts(
        prompts,
        [c for _, c, _ in human_src],
        [p for p, _, _ in human_src],
        [e for _, _, e in human_src],
    )


def _heldout_prompts(
    dcfg: Any, corpus: Any, held: list[np.ndarray], max_len: int
) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray, bool]]]:
    """`decode.prompts=heldout`: the first `decode.num_prompts` distinct openings, and the human
    row's sources (their own continuations first, then the other openings')."""
    plen = int(dcfg.prompt_len)
    if plen >= max_len:
        raise UserError(
            f"decode.prompt_len={plen} must be < decode.max_len={max_len} to leave room "
            "for a continuation"
        )
    openings = _openings(corpus, held, plen, max_len)
    distinct = _distinct(openings)
    if not distinct:
        raise UserError(
            f"no held-out opening qualifies for decode.prompt_len={plen} and "
            f"decode.max_len={max_len} ({_why(corpus, plen, max_len)}); lower "
            "decode.prompt_len or raise decode.max_len"
        )
    want = int(dcfg.num_prompts)
    if len(distinct) < want:
        log.warning(
            "decode.num_prompts=%d, but only %d distinct held-out openings qualify (%s): "
            "decoding %d prompts",
            want,
            len(distinct),
            _why(corpus, plen, max_len),
            len(distinct),
        )
    chosen = distinct[:want]
    prompts = [openings[i][0] for i in chosen]
    # the prompts' own continuations first, then other held-out openings' continuations
    taken = set(chosen)
    human_src = [openings[i] for i in chosen]
    human_src += [o for i, o in enumerate(openings) if i not in taken]
    return prompts, human_src


def _why(corpus: Any, plen: int, max_len: int) -> str:
    """Why an opening qualifies, in words, for the warning and the error."""
    if corpus.stream:
        follow = "the end of its line or " if corpus.has_eos else ""
        return (
            f"{plen} tokens from a line start followed by {follow}{max_len - plen} more "
            "tokens, not overlapping another opening"
        )
    if corpus.name == "folk":
        return (
            f"a tune's header plus {plen} tokens of music, with music after it and the "
            f"prompt shorter than decode.max_len={max_len}"
        )
    return f"a sequence longer than decode.prompt_len={plen} tokens"


def _openings(
    corpus: Any, held: list[np.ndarray], plen: int, max_len: int
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """(prompt, human continuation, ended) for every qualifying held-out opening, in order.

    The continuation is cut at the budget `max_len - len(prompt)`; `ended` says that EOS
    follows it within the budget.
    """
    if corpus.stream:
        out = _stream_openings(corpus, held, plen, max_len)
    else:
        out = []
        for s in held:
            head = _header_length(corpus, s) if plen > 0 else 0
            p, c = s[: head + plen], s[head + plen :]
            if plen > 0 and (len(c) == 0 or len(p) >= max_len):
                continue
            budget = max_len - len(p)
            out.append((p, c[:budget], len(c) < budget))
    return out


def _distinct(openings: list[tuple[np.ndarray, np.ndarray, bool]]) -> list[int]:
    """Indices of the first opening of each distinct prompt."""
    first: dict[bytes, int] = {}
    for i, (p, _, _) in enumerate(openings):
        first.setdefault(p.tobytes(), i)
    return list(first.values())


def _header_length(corpus: Any, seq: np.ndarray) -> int:
    """Folk tunes: tokens of the tune's header (M:, L:, K:); other sequences have none."""
    if corpus.name != "folk":
        return 0
    from seqgen.data.folk import header_length

    return header_length(corpus.vocab.decode_symbols(seq), corpus.vocab.level)


def _stream_openings(
    corpus: Any, held: list[np.ndarray], plen: int, max_len: int
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Openings of a text stream: line starts (a run's start, or after a newline / EOS) of
    non-empty lines, each followed by the full budget of text, or with EOS in the stream by
    the end of its line within the budget; scanned in order, spans never overlap."""
    from seqgen.tokens import EOS_ID

    newline = {EOS_ID}
    if "\n" in corpus.vocab:
        newline.add(corpus.vocab.id_of("\n"))
    out = []
    for s in held:
        breaks = np.isin(s, list(newline))
        starts = np.flatnonzero(np.concatenate([[True], breaks[:-1]]) & ~breaks)
        eos_at = np.flatnonzero(s == EOS_ID)
        free = 0  # the next opening starts at or after this position
        for j in map(int, starts):
            if j < free:
                continue
            c0 = j + plen
            k = int(np.searchsorted(eos_at, j))
            nxt = int(eos_at[k]) if k < len(eos_at) else len(s) + max_len  # the line's EOS
            if nxt < j + max_len:
                if nxt <= c0:  # the line ends inside the prompt
                    continue
                cont, ended, free = s[c0:nxt], True, nxt + 1
            elif j + max_len <= len(s):
                cont, ended, free = s[c0 : j + max_len], False, j + max_len
            else:
                continue
            out.append((s[j:c0], cont, ended))
    return out


def build_constraint(constraint_cfg: Any, corpus: Any, prompts: list[np.ndarray]) -> Any:
    """The `constraint` config as an automaton over the corpus' vocabulary (None for none)."""
    name = "none" if constraint_cfg is None else constraint_cfg.name
    if name == "regex":
        from seqgen.decoding.regex import regex_constraint

        return regex_constraint(str(constraint_cfg.pattern), corpus.vocab.symbols)
    if name == "meter":
        from seqgen.data.meter import meter_constraint

        return meter_constraint(corpus.vocab.symbols, prompts)
    return None


def accepted_prompts(constraint: Any, pr: Prompts) -> Prompts:
    """The prompts (and human rows) whose prompt the constraint accepts as a prefix, with the
    share of prompts left out (a held-out opening may break the constraint, e.g. a short bar)."""
    from seqgen.decoding.constraint import prefix_state

    def ok(p: np.ndarray) -> bool:
        return prefix_state(constraint, p) >= 0

    keep = [p for p in pr.prompts if ok(p)]
    if not keep:
        raise UserError(
            "the constraint rejects every prompt; allowed: prompts it accepts as a prefix "
            "(a smaller decode.prompt_len, or prompts that follow it)"
        )
    human = [i for i, p in enumerate(pr.human_prompts) if ok(p)]
    left_out = 1.0 - len(keep) / len(pr.prompts)
    if left_out > 0:
        log.warning("the constraint rejects %.1f%% of the prompts: left out", 100 * left_out)
    return Prompts(
        prompts=keep,
        human=[pr.human[i] for i in human],
        human_prompts=[pr.human_prompts[i] for i in human],
        human_ended=[pr.human_ended[i] for i in human],
        left_out=left_out,
    )


def _warn_impossible_prompts(oracle: Any, prompts: list[np.ndarray]) -> None:
    from seqgen.metrics.oracle import IMPOSSIBLE, prompt_states

    bad = int((prompt_states(oracle, prompts, len(prompts)) == IMPOSSIBLE).sum())
    if bad:
        log.warning(
            "%d of %d prompts have probability 0 under the DPFSA: their continuations are left "
            "out of oracle/* and search/mode_found (see oracle/impossible_prompt_rate)",
            bad,
            len(prompts),
        )
