"""How much the default model still reads a tune's header after its opening: each sampled tune
(`samples.jsonl` of the guidance run) is scored under the model with and without its header
lines (`seqgen.load(...).score`), and the mean |log p(with) - log p(without)| per character is
printed for the first 20 characters after the header and for the rest.

    python experiments/guidance/header_memory.py experiments/guidance/run [N]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

import seqgen

HEADER = re.compile(r"(?:[^\n]*\n)*?K:[^\n]*\n")  # up to and including the K: line
FIRST = 20


def main(run_dir: str, n: int = 40) -> None:
    rows = [json.loads(x) for x in (Path(run_dir) / "samples.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows if r["decoder"] == rows[0]["decoder"]][:n]
    heads = [HEADER.match(t).end() for t in texts]
    model = seqgen.load(run_dir)
    with_h = model.score(texts).token_logprobs
    without = model.score([t[h:] for t, h in zip(texts, heads)]).token_logprobs
    first, rest = [], []
    for a, b, h in zip(with_h, without, heads):
        d = np.abs(np.asarray(a)[h:][: len(b)] - np.asarray(b)[: len(a) - h])
        first.append(d[:FIRST])
        rest.append(d[FIRST:])
    print(f"{len(texts)} tunes of {rows[0]['decoder']}: mean |delta log p| per character")
    print(f"first {FIRST} characters after the header: {np.concatenate(first).mean():.3f} nats")
    print(f"after them:                              {np.concatenate(rest).mean():.3f} nats")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
