"""Expected utility under the MODEL of each decoder's outputs in a finished seqgen run (the
second half of the MBR reproduction: Eikema & Aziz 2020's comparison on a trained LSTM, where
the true distribution is unknown and the model's own samples stand in for it).

For every decoder row y of the run's `samples.jsonl` and every utility u of
`seqgen.metrics.utility`, it estimates E_{r ~ p_model(. | prompt)}[u(y, r)] by the mean of
u(y, r_j) over the rows of the run's reference sampler (`--references`, a `{name: sample}`
compare entry decoded with its own key, so independent of MBR's candidates and
pseudo-references), averages over a decoder's rows for one prompt, then over prompts, and
prints one markdown table (mean, the standard error over prompts, the model log-probability
and the length of the outputs).

    python experiments/mbr/model_utility.py experiments/mbr/results/folk --references references
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from seqgen.metrics.utility import UTILITY_FUNCTIONS


def load_rows(run_dir: Path) -> dict[str, dict[int, list[dict]]]:
    rows: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    with open(run_dir / "samples.jsonl") as f:
        for line in f:
            r = json.loads(line)
            rows[r["decoder"]][int(r["prompt_index"])].append(r)
    return rows


def best_rows(by_prompt: dict[int, list[dict]], keep_all: bool) -> dict[int, list[dict]]:
    """A sampler's rows are all its generations; an n-best decoder's generation is its first."""
    return by_prompt if keep_all else {p: rs[:1] for p, rs in by_prompt.items()}


def table(rows, references: str, samplers: set[str]) -> str:
    refs = rows[references]
    out = ["| decoder | " + " | ".join(UTILITY_FUNCTIONS) + " | log p(y) | length |"]
    out.append("|---" * (len(UTILITY_FUNCTIONS) + 3) + "|")
    for label, by_prompt in rows.items():
        if label == references:
            continue
        gen = best_rows(by_prompt, label in samplers)
        cells = []
        for fn in UTILITY_FUNCTIONS.values():
            per_prompt = []
            for p, rs in gen.items():
                hyps = [np.asarray(r["token_ids"], np.int64) for r in rs]
                ref = [np.asarray(r["token_ids"], np.int64) for r in refs[p]]
                per_prompt.append(float(fn(hyps, ref).mean()))
            v = np.array(per_prompt)
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1) / np.sqrt(len(v)):.4f}")
        lp = np.mean([r["logprob"] for rs in gen.values() for r in rs])
        ln = np.mean([len(r["token_ids"]) for rs in gen.values() for r in rs])
        out.append(f"| {label} | " + " | ".join(cells) + f" | {lp:.1f} | {ln:.1f} |")
    n_ref = int(np.mean([len(v) for v in refs.values()]))
    return (
        f"E_(r ~ model)[u(y, r)] over {n_ref} reference samples per prompt, "
        f"{len(refs)} prompts (± standard error over prompts)\n\n" + "\n".join(out)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--references", default="references", help="label of the reference sampler")
    ap.add_argument(
        "--samplers",
        default="ancestral",
        help="comma-separated labels whose every row is a generation (others: the first row)",
    )
    args = ap.parse_args()
    rows = load_rows(args.run_dir)
    if args.references not in rows:
        raise SystemExit(f"error: no decoder labelled {args.references!r}; have {sorted(rows)}")
    print(table(rows, args.references, set(args.samplers.split(","))))


if __name__ == "__main__":
    main()
