"""The precision/recall frontier of truncation against the true support (Hewitt et al. 2022).

Reads results.jsonl files of `+experiment=truncation_oracle` (one per model size), prints each
decoder's oracle/trunc_* values and whether eta dominates top-p, and draws one panel per file:
x = oracle/trunc_recall, y = oracle/trunc_precision, one line per method over its settings.

    python experiments/truncation_oracle/plot.py results/hidden_*.jsonl --out frontier.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

P, R, OFF = "oracle/trunc_precision", "oracle/trunc_recall", "oracle/off_support_rate"


def load(path: Path) -> dict[str, list[tuple[str, float, float, float]]]:
    """{method: [(setting, precision, recall, off-support rate)]}; a label is `method setting`
    (`pure sampling` stands alone)."""
    out = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        m, label = row["metrics"], row["decoder"].get("label", "")
        if m.get(P) is None:
            continue  # the human row has no kept sets
        method, _, setting = label.rpartition(" ") if label != "pure sampling" else (label, "", "")
        out[method].append((setting, m[P], m[R], m[OFF]))
    return out


def dominated(point: tuple, others: list[tuple]) -> bool:
    """Some other point is at least as good on precision and recall (weak Pareto dominance)."""
    return any(o[1] >= point[1] and o[2] >= point[2] for o in others)


def gap_at_recall(curve: list[tuple], points: list[tuple]) -> list[tuple[str, float, float]]:
    """For each point inside the curve's recall range: (setting, recall, the point's precision
    minus the curve's, linearly interpolated at the point's recall). > 0: the point is above."""
    import numpy as np

    xs = sorted((c[2], c[1]) for c in curve)
    r, p = np.array([x[0] for x in xs]), np.array([x[1] for x in xs])
    return [
        (pt[0], pt[2], pt[1] - float(np.interp(pt[2], r, p)))
        for pt in points
        if r.min() <= pt[2] <= r.max()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("frontier.png"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.results), figsize=(6 * len(args.results), 5))
    axes = [axes] if len(args.results) == 1 else axes
    for ax, path in zip(axes, args.results):
        runs = load(path)
        print(f"## {path.stem}")
        print("| method | setting | trunc_precision | trunc_recall | off_support_rate |")
        print("|---|---|---|---|---|")
        for method, pts in runs.items():
            for s, p, r, off in pts:
                print(f"| {method} | {s} | {p:.4f} | {r:.4f} | {off:.3f} |")
            ax.plot([x[2] for x in pts], [x[1] for x in pts], "o-", label=method)
            for s, p, r, _ in pts:
                ax.annotate(s, (r, p), fontsize=6)
        eta, top_p = runs.get("eta", []), runs.get("top-p", [])
        beaten = sum(dominated(x, eta) for x in top_p)
        beats = sum(dominated(x, top_p) for x in eta)
        print(
            f"\n{path.stem}: {beaten}/{len(top_p)} top-p points weakly dominated by an eta point; "
            f"{beats}/{len(eta)} eta points weakly dominated by a top-p point\n"
        )
        for s, r, gap in gap_at_recall(top_p, eta):
            print(f"eta {s}: recall {r:.4f}, precision minus top-p's there {gap:+.4f}")
        ax.set(xlabel="oracle/trunc_recall (true mass kept, 0-1)", title=path.stem)
        ax.set(ylabel="oracle/trunc_precision (kept tokens p* allows, 0-1)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
