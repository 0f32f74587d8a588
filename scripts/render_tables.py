"""Render every results table (and the numbers the prose beside it quotes) in README.md and
experiments/*/README.md from the results files in the repository, so no number goes stale.

    python scripts/render_tables.py           # rewrite the rendered blocks in place
    python scripts/render_tables.py --check   # exit 1 and print a diff when a README is stale

A rendered block sits between `<!-- render:NAME -->` and `<!-- /render:NAME -->` in a README;
`BLOCKS` maps (README, NAME) to the function that renders it from its results files
(`results.jsonl`, `metrics.json`, `summary.csv`, a script's markdown table). After a new run,
copy its files over the experiment's `results/` (the default run: `docs/default_run/`) and run
this script; `tests/test_readme_tables.py` fails while a README differs from what it renders.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from seqgen.metrics import table as metric_table

ROOT = Path(__file__).resolve().parent.parent
EXP = "experiments"


# ---------------------------------------------------------------------------------------------
# Reading results files


def results(path: str) -> dict[str, dict[str, float]]:
    """`{label: metrics}` of a `results.jsonl` (the label, else the decoder's name)."""
    rows = [json.loads(x) for x in (ROOT / path).read_text().splitlines() if x.strip()]
    return {r["decoder"].get("label") or r["decoder"]["name"]: r["metrics"] for r in rows}


def metrics(path: str) -> dict[str, Any]:
    return json.loads((ROOT / path).read_text())


def summary(path: str) -> list[dict[str, str]]:
    with open(ROOT / path, newline="") as f:
        return list(csv.DictReader(f))


def md_table(path: str, after: str = "") -> list[list[str]]:
    """The body rows of the first markdown table in a file (after the line `after`)."""
    text = (ROOT / path).read_text()
    text = text[text.index(after) :] if after else text
    rows, started = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if started and not set(line) <= set("|- "):
                rows.append(cells)
            started = True
        elif started:
            break
    return rows


def num(v: Any, spec: str = ".3f") -> str:
    """A number as the tables show it; blank when absent or not finite."""
    if v is None or v == "":
        return ""
    v = float(v)
    return f"{v:{spec}}" if math.isfinite(v) else ""


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def by_label(
    src: dict[str, dict[str, float]],
    columns: Sequence[tuple[str, str, str]],
    labels: Sequence[tuple[str, str]] | None = None,
    first: str = "decoder",
) -> str:
    """One row per decoder (`labels`: (label in the file, name shown), default all in file
    order), one column per (header, metric key, format)."""
    labels = labels or [(k, k) for k in src]
    return table(
        [first, *(h for h, _, _ in columns)],
        [[shown, *(num(src[lb].get(k), f) for _, k, f in columns)] for lb, shown in labels],
    )


# ---------------------------------------------------------------------------------------------
# README.md: the default run (docs/default_run/, made by `python -m seqgen.run` on this code)

DEFAULT = "docs/default_run"
# the console table's columns, then the folk run's ABC checks
DEFAULT_COLUMNS = [
    (k, k, ".3f")
    for k in (*metric_table.shown(metric_table.TABLE), "abc/parse_rate", "abc/bar_ok_rate")
]


def default_model() -> str:
    m = metrics(f"{DEFAULT}/metrics.json")
    train = m["model"]["train"]
    return (
        f"The default run's table (2x128 LSTM, {m['model']['params']:,} parameters, `ppl/valid` "
        f"{m['ppl/valid']:.2f}, `ppl/test` {m['ppl/test']:.2f} per character, trained "
        f"{train['steps']} steps in {train['wall_time_s']:.0f} s; 100 distinct held-out tunes, "
        "each opening its whole header plus 16 characters of music, continued to 256; "
        f"`{DEFAULT}/`, whole run {m['wall_s']:.0f} s):"
    )


def default_timing() -> str:
    m = metrics(f"{DEFAULT}/metrics.json")
    train = m["model"]["train"]
    how = "with the model cached" if m["model"].get("cached") else "from a cold cache"
    return (
        f"{m['wall_s']:.0f} s {how} (training {train['wall_time_s']:.0f} s at "
        f"{train['tokens_per_s'] / 1000:.0f}k tokens/s)"
    )


def default_table() -> str:
    return by_label(results(f"{DEFAULT}/results.jsonl"), DEFAULT_COLUMNS)


def default_reading() -> str:
    r = results(f"{DEFAULT}/results.jsonl")
    g, b, h = r["greedy"], r["beam(beam_size=4)"], r["human"]
    nucleus = r["nucleus 0.95"]
    m_train = metrics(f"{DEFAULT}/metrics.json")["model"]["train"]["wall_time_s"]
    samplers = [r[k]["abc/bar_ok_rate"] for k in ("pure sampling", "top-k 40", "nucleus 0.95")]
    return (
        f"Greedy loops on {g['repetition/rep_pct']:.0f}% of the tunes and repeats most; beam "
        f"search (K=4) is the most probable (`gen/ppl` {b['gen/ppl']:.2f}) and ends its tunes "
        f"early ({b['length/mean']:.0f} characters against the human {h['length/mean']:.0f}); "
        "pure sampling and top-k 40 have the highest perplexity; nucleus 0.95 is closest to the "
        f"human row on `gen/ppl` ({nucleus['gen/ppl']:.2f} vs {h['gen/ppl']:.2f}), Self-BLEU "
        "and Zipf: the pattern of Holtzman et al. 2020, Table 1, on a small model trained "
        f"for {m_train:.0f} s. Sampled tunes keep their bars in time "
        f"{min(samplers):.0%}-{max(samplers):.0%} "
        f"of the time (`abc/bar_ok_rate`) against {h['abc/bar_ok_rate']:.2f} for the held-out "
        "tunes; and folk music repeats itself by design (the human `seq_rep_4` is "
        f"{h['repetition/seq_rep_4']:.2f}), so on this data repetition is a matter of degree."
    )


# ---------------------------------------------------------------------------------------------
# experiments/


def beam_curse() -> str:
    rows = [r for r in summary(f"{EXP}/beam_curse/results/summary.csv") if r["decoder"] != "human"]
    order = {"none": 0, "average": 1, "gnmt": 2}
    rows.sort(key=lambda r: (int(r["decoder.beam_size"]), order[r["decoder.length_penalty"]]))
    cols = [
        ("score/mean", ".4g"),
        ("length/mean", ".3g"),
        ("gen/ppl", ".2f"),
        ("repetition/rep_pct", ".1f"),
        ("repetition/seq_rep_4", ".3f"),
        ("diversity/self_bleu4", ".3f"),
    ]
    return table(
        ["beam", "length penalty", *(k for k, _ in cols)],
        [
            [r["decoder.beam_size"], r["decoder.length_penalty"], *(num(r[k], f) for k, f in cols)]
            for r in rows
        ],
    )


def char_rnn_model() -> str:
    m = metrics(f"{EXP}/char_rnn/results/metrics.json")
    obtained = (
        f"**{math.log(m['ppl/valid']):.3f} nats/char** (ppl {m['ppl/valid']:.2f}, "
        f"{m['bits/valid']:.2f} bits)"
    )
    test = f"{math.log(m['ppl/test']):.3f} nats/char (ppl {m['ppl/test']:.2f})"
    return table(
        ["", "obtained (CPU variant)", "char-rnn / nanoGPT (2x512 or larger, GPU)"],
        [["valid loss", obtained, "~1.47 nats/char"], ["test loss", test, ""]],
    )


def char_rnn_runtime() -> str:
    m = metrics(f"{EXP}/char_rnn/results/metrics.json")
    return (
        f"{m['wall_s'] / 60:.1f} min for the whole run (training "
        f"{m['model']['train']['wall_time_s'] / 60:.1f} min, {m['model']['params']:,} parameters)"
    )


# perplexity of the text, repetition, Self-BLEU: the columns of a degeneration reading
DEGENERATION_COLUMNS = [
    ("gen/ppl", "gen/ppl", ".2f"),
    ("seq_rep_4", "repetition/seq_rep_4", ".3f"),
    ("rep_pct", "repetition/rep_pct", ".0f"),
    ("Self-BLEU", "diversity/self_bleu4", ".3f"),
]


def char_rnn_decoders() -> str:
    return by_label(results(f"{EXP}/char_rnn/results/results.jsonl"), DEGENERATION_COLUMNS)


def truncation_oracle_table() -> str:
    """top-p against eta (and pure sampling) on the truncation-oracle frontier, both sizes."""
    keys = ("oracle/trunc_precision", "oracle/trunc_recall", "oracle/off_support_rate")
    rows = []
    for h in (16, 64):
        src = results(f"{EXP}/truncation_oracle/results/hidden_{h}.jsonl")
        for label in ("top-p 0.9", "top-p 0.95", "eta 0.05", "eta 0.02", "pure sampling"):
            rows.append([f"hidden {h}", label, *(num(src[label][k], ".4f") for k in keys)])
    return table(["model", "decoder", "precision", "recall", "off-support"], rows)


CONTRASTIVE = f"{EXP}/contrastive/results"


def contrastive_table() -> str:
    cols = [*DEGENERATION_COLUMNS, ("distinct_2", "diversity/distinct_2", ".3f")]
    return by_label(results(f"{CONTRASTIVE}/results.jsonl"), [*cols, ("Zipf", "zipf", ".2f")])


def contrastive_reading() -> str:
    cs = results(f"{CONTRASTIVE}/results.jsonl")

    def m(label: str, key: str, fmt: str) -> str:
        return num(cs[label][key], fmt)

    rep, ppl = "repetition/seq_rep_4", "gen/ppl"
    k4, k8, low = "contrastive k=4 a=0.6", "contrastive k=8 a=0.6", "contrastive k=4 a=0.3"
    return (
        f"contrastive search cuts seq_rep_4 (rep-4 / 100) from greedy's {m('greedy', rep, '.2f')} "
        f"and beam's {m('beam 4', rep, '.2f')} to {m(k4, rep, '.2f')} (k = 4) and "
        f"{m(k8, rep, '.2f')} (k = 8) at α = 0.6, and to {m(low, rep, '.2f')} at α = 0.3, at a "
        f"gen/ppl ({m(low, ppl, '.2f')}-{m(k8, ppl, '.2f')}) between greedy's "
        f"({m('greedy', ppl, '.2f')}) and pure sampling's ({m('pure sampling', ppl, '.2f')})."
    )


def contrastive_model() -> str:
    m = metrics(f"{CONTRASTIVE}/metrics.json")
    return (
        f"{m['model']['params']:,} parameters, held-out ppl {m['ppl/valid']:.2f} per character "
        f"(test {m['ppl/test']:.2f}), trained in {m['model']['train']['wall_time_s'] / 60:.1f} min"
    )


def degeneration_table() -> str:
    keys = [
        "gen/ppl",
        "diversity/self_bleu4",
        "zipf",
        "repetition/rep_pct",
        "repetition/seq_rep_4",
        "diversity/distinct_4",
        "length/mean",
        "abc/parse_rate",
        "abc/bar_ok_rate",
    ]
    src = results(f"{EXP}/degeneration/results/results.jsonl")
    return by_label(src, [(k, k, ".3f") for k in keys])


def degeneration_params() -> str:
    return f"{metrics(f'{EXP}/degeneration/results/metrics.json')['model']['params']:,}"


def _search_grid(folder: str, unit: str) -> str:
    src = results(f"{EXP}/exact_search/results/{folder}/results.jsonl")
    beams = [k for k in src if k.startswith("beam(")]
    exact = next(k for k in src if k.startswith("exact("))
    header = ["", *(k[len("beam(beam_size=") : -1].join(("beam ", "")) for k in beams)]
    header += ["exact", "human"]
    rows = [
        ("`search/beam_error`", "search/beam_error", ".2f", beams),
        ("score (log-prob), mean", "score/mean", ".1f", [*beams, exact]),
        (f"length/mean ({unit})", "length/mean", ".1f", [*beams, exact, "human"]),
        ("ends with EOS", "length/eos_rate", ".2f", [*beams, exact, "human"]),
    ]
    cells = []
    for name, key, fmt, which in rows:
        cells.append(
            [name, *(num(src[k].get(key), fmt) if k in which else "" for k in [*beams, exact])]
            + [num(src["human"].get(key), fmt) if "human" in which else ""]
        )
    return table(header, cells)


def exact_search_synthetic() -> str:
    runs = {w: results(f"{EXP}/exact_search/results/{w}/results.jsonl") for w in ("oracle", "lstm")}

    def cell(w: str, keys: Sequence[str], key: str, fmt: str) -> str:
        src = runs[w]
        return " / ".join(
            num(src[next(x for x in src if x.startswith(k))].get(key), fmt) for k in keys
        )

    ex = ("exact(",)
    spec = [
        ("`search/exact_proven` (exact)", ex, "search/exact_proven", ".2f"),
        ("`search/exact_empty`: mode = empty continuation", ex, "search/exact_empty", ".2f"),
        ("`search/expansions_mean` (exact)", ex, "search/expansions_mean", ".1f"),
        ("mode log-prob, mean (`score/mean` of exact)", ex, "score/mean", ".3f"),
        (
            "`search/beam_error`, beam 1 / 2 / 4 / 8 / 16 / 64",
            [f"beam(beam_size={k})" for k in (1, 2, 4, 8, 16, 64)],
            "search/beam_error",
            ".2f",
        ),
        (
            "length/mean: beam 1 / 2 / 4 / exact / human",
            ["beam(beam_size=1)", "beam(beam_size=2)", "beam(beam_size=4)", "exact(", "human"],
            "length/mean",
            ".2f",
        ),
    ]
    return table(
        ["", "oracle", "LSTM"],
        [[name, cell("oracle", k, key, f), cell("lstm", k, key, f)] for name, k, key, f in spec],
    )


def folk_rnn_table() -> str:
    cols = [
        ("gen/ppl", "gen/ppl", ".2f"),
        ("abc/parse_rate", "abc/parse_rate", ".2f"),
        ("abc/bar_ok_rate", "abc/bar_ok_rate", ".2f"),
        ("repetition/rep_pct", "repetition/rep_pct", ".0f"),
        ("length/mean", "length/mean", ".1f"),
        ("diversity/self_bleu4", "diversity/self_bleu4", ".3f"),
    ]
    labels = [
        ("folk-rnn sampling", "folk-rnn sampling (t=1)"),
        ("t=0.9", "sampling t=0.9"),
        ("beam(beam_size=4)", "beam 4"),
        ("human", "human"),
    ]
    return by_label(results(f"{EXP}/folk_rnn/results/results.jsonl"), cols, labels)


DRY_COLUMNS = [
    ("gen/ppl", "gen/ppl", ".2f"),
    ("rep_pct", "repetition/rep_pct", ".0f"),
    ("seq_rep_4", "repetition/seq_rep_4", ".3f"),
    ("distinct_4", "diversity/distinct_4", ".3f"),
]
DRY_ROWS = [
    ("greedy", "greedy"),
    ("greedy DRY 0.8", "greedy, DRY 0.8"),
    ("sampling t=0.8", "sampling t=0.8"),
    ("sampling t=0.8 DRY 0.8", "sampling t=0.8, DRY 0.8"),
    ("sampling t=0.9", "sampling t=0.9"),
    ("sampling t=0.9 DRY 0.8", "sampling t=0.9, DRY 0.8"),
    ("pure sampling", "pure sampling"),
    ("sampling DRY 0.8", "pure sampling, DRY 0.8"),
]


def dry_table(folder: str) -> str:
    """experiments/dry: with and without DRY at similar temperatures (`+experiment=dry`,
    `dry_shakespeare`), the repetition penalty's row where the run has one."""
    src = results(f"{EXP}/dry/results/{folder}/results.jsonl")
    rows = list(DRY_ROWS)
    if "rep. penalty 1.2 last 64" in src:
        rows.append(("rep. penalty 1.2 last 64", "repetition penalty 1.2, `penalty_last_n=64`"))
    rows.append(("human", "human (held-out continuations)"))
    return by_label(src, DRY_COLUMNS, rows)


def meter_table() -> str:
    runs = {
        c: results(f"{EXP}/meter_constraint/results/{c}/results.jsonl") for c in ("none", "meter")
    }
    cols = [
        ("abc/bar_ok_rate", ".2f"),
        ("abc/parse_rate", ".2f"),
        ("gen/ppl_model", ".2f"),
        ("constraint/mass_removed", ".3f"),
        ("constraint/step_mass_removed", ".3f"),
        ("repetition/rep_pct", ".0f"),
        ("length/mean", ".1f"),
    ]
    rows = [
        [dec, c, *(num(runs[c][dec].get(k), f) for k, f in cols)]
        for dec in ("pure sampling", "nucleus 0.95", "beam 4")
        for c in ("none", "meter")
    ]
    for c in ("none", "meter"):
        rows.append(
            ["human", f"({c} job's prompts)", *(num(runs[c]["human"].get(k), f) for k, f in cols)]
        )
    header = ["decoder", "constraint", "abc/bar_ok_rate", "abc/parse_rate"]
    header += ["gen/ppl (unconstrained model)", "constraint/mass_removed", "step mass removed"]
    return table(header + ["rep_pct", "length/mean"], rows)


def mbr_synthetic() -> str:
    path = f"{EXP}/mbr/results.md"
    per = {u: md_table(path, f"### utility = {u}:") for u in ("chrf", "bleu", "edit")}
    rows = []
    for i, r in enumerate(per["chrf"]):
        name = "MBR, N = M = 16" if r[0].startswith("mbr") else r[0]
        logp = r[2] + (" (cut, no EOS)" if r[0] == "greedy" else "")
        rows.append([name, *(num(per[u][i][1], ".3f") for u in per), logp, num(r[3], ".1f")])
    header = ["decoder", "chrF (token n-grams)", "sentence BLEU", "1 − norm. edit distance"]
    return table(header + ["log p*(y) (chrF run)", "length (chrF run)"], rows)


def mbr_folk() -> str:
    rows = md_table(f"{EXP}/mbr/results/folk/model_utility.md")
    names = {"beam_4": "beam 4", "exact": "exact (mode)", "mbr_chrf": "MBR chrF"}
    names |= {"mbr_bleu": "MBR BLEU", "mbr_edit": "MBR edit"}
    out = []
    for r in rows:
        logp = num(r[4], ".1f") + (" (cut, no EOS)" if r[0] == "greedy" else "")
        mean = [num(c.split("±")[0], ".3f") for c in r[1:4]]
        out.append([names.get(r[0], r[0]), *mean, logp, num(r[5], ".1f")])
    header = ["decoder", "chrF (token n-grams)", "sentence BLEU", "1 − norm. edit distance"]
    return table(header + ["log p(y)", "length"], out)


# ---------------------------------------------------------------------------------------------
# experiments/architecture: LSTM vs Transformer (multiruns over model=lstm,transformer)

ARCH = f"{EXP}/architecture/results"
ARCH_RUNS = [  # (data shown, model shown, job folder)
    ("folk", "LSTM", "folk/0"),
    ("folk", "Transformer", "folk/1"),
    ("Tiny Shakespeare", "LSTM", "tinyshakespeare/0"),
    ("Tiny Shakespeare", "Transformer", "tinyshakespeare/1"),
    ("Tiny Shakespeare", "Transformer, lr 3e-3", "tinyshakespeare_transformer_lr3e-3/0"),
]


def architecture_models() -> str:
    rows = []
    for data, model, job in ARCH_RUNS:
        m = metrics(f"{ARCH}/{job}/metrics.json")
        train = m["model"]["train"]
        rows.append([data, model, f"{m['model']['params']:,}", num(m["ppl/valid"]),
                     num(m["ppl/test"]), f"{train['tokens_per_s']:,.0f}",
                     f"{train['wall_time_s']:.0f}"])  # fmt: skip
    header = ["data", "model", "params", "ppl/valid", "ppl/test", "train tokens/s", "train s"]
    return table(header, rows)


def architecture_speed() -> str:
    # model, params, decoder, batch, compile s, decode s, tokens/s (its separator row has colons)
    rows = [r for r in md_table(f"{ARCH}/decode_speed.txt") if not r[0].startswith("-")]
    speed = {(r[0], r[2], r[3]): r[6] for r in rows}
    pairs = list(dict.fromkeys((r[0], r[2]) for r in rows))  # (model, decoder), in order
    return table(
        ["model", "decoder", "batch 1 tokens/s", "batch 64 tokens/s"],
        [[m, d, speed[(m, d, "1")], speed[(m, d, "64")]] for m, d in pairs],
    )


def architecture_table(folder: str) -> str:
    keys = ["gen/ppl", "diversity/self_bleu4", "diversity/distinct_2", "repetition/seq_rep_4",
            "repetition/rep_pct", "zipf", "length/mean"]  # fmt: skip
    rows = [[r["model"], r["decoder"], *(num(r[k]) for k in keys)]
            for r in summary(f"{ARCH}/{folder}/summary.csv")]  # fmt: skip
    return table(["model", "decoder", *keys], rows)


GUIDANCE = f"{EXP}/guidance/results"
GUIDANCE_COLUMNS = [
    ("gen/ppl (guided)", "gen/ppl", ".2f"),
    ("gen/ref_ppl (unguided model)", "gen/ref_ppl", ".2f"),
    ("abc/parse_rate", "abc/parse_rate", ".3f"),
    ("abc/bar_ok_rate", "abc/bar_ok_rate", ".3f"),
    ("abc/in_key_rate", "abc/in_key_rate", ".3f"),
    ("abc/in_key_notes", "abc/in_key_notes", ".3f"),
    ("seq_rep_4", "repetition/seq_rep_4", ".3f"),
    ("length/mean", "length/mean", ".1f"),
]


def guidance_table() -> str:
    return by_label(results(f"{GUIDANCE}/results.jsonl"), GUIDANCE_COLUMNS)


def guidance_runtime() -> str:
    m = metrics(f"{GUIDANCE}/metrics.json")
    return f"{m['wall_s'] / 60:.1f} min"


def guidance_reading() -> str:
    r = results(f"{GUIDANCE}/results.jsonl")
    rows = [r[k] for k in ("gamma 1 (unguided)", "gamma 1.5", "gamma 2", "gamma 3")]

    def seq(key: str, fmt: str) -> str:
        return " / ".join(num(m[key], fmt) for m in rows)

    return (
        f"no effect in the expected direction. Over γ = 1 / 1.5 / 2 / 3, `abc/bar_ok_rate` is "
        f"{seq('abc/bar_ok_rate', '.3f')} (people {num(r['human']['abc/bar_ok_rate'], '.3f')}), "
        f"`abc/in_key_rate` {seq('abc/in_key_rate', '.3f')} (people "
        f"{num(r['human']['abc/in_key_rate'], '.3f')}), `abc/in_key_notes` "
        f"{seq('abc/in_key_notes', '.3f')}, `gen/ppl` {seq('gen/ppl', '.2f')} and "
        f"`gen/ref_ppl` {seq('gen/ref_ppl', '.2f')}: the meter is kept slightly less often as "
        "γ grows, the key as often, and both perplexities barely move."
    )


def _guidance_overview() -> str:
    r = results(f"{GUIDANCE}/results.jsonl")
    lo, hi, h = r["gamma 1 (unguided)"], r["gamma 3"], r["human"]

    def move(key: str, fmt: str) -> str:
        return f"{num(lo[key], fmt)} → {num(hi[key], fmt)} (people {num(h[key], fmt)})"

    return (
        f"sampling, γ 1 → 3: bar_ok {move('abc/bar_ok_rate', '.2f')}, tunes in key "
        f"{move('abc/in_key_rate', '.2f')}, gen/ref_ppl {move('gen/ref_ppl', '.2f')}; "
        f"{guidance_runtime()} shared"
    )


def _rng(values: Sequence[float], fmt: str) -> str:
    lo, hi = f"{min(values):{fmt}}", f"{max(values):{fmt}}"
    return lo if lo == hi else f"{lo}-{hi}"


def overview() -> str:
    """README.md's table of reproductions: the obtained numbers read from each results file."""
    bc = [r for r in summary(f"{EXP}/beam_curse/results/summary.csv") if r["decoder"] != "human"]
    none = {int(r["decoder.beam_size"]): r for r in bc if r["decoder.length_penalty"] == "none"}
    avg = [r for r in bc if r["decoder.length_penalty"] == "average"]
    lo, hi = min(none), max(none)
    dg = results(f"{EXP}/degeneration/results/results.jsonl")
    dg_m = metrics(f"{EXP}/degeneration/results/metrics.json")
    fr = results(f"{EXP}/folk_rnn/results/results.jsonl")
    fr_m = metrics(f"{EXP}/folk_rnn/results/metrics.json")
    ex = {
        w: results(f"{EXP}/exact_search/results/{w}/results.jsonl")
        for w in ("oracle", "folk", "text")
    }
    empty = {
        w: next(v for k, v in r.items() if k.startswith("exact("))["search/exact_empty"]
        for w, r in ex.items()
    }
    text_err = [ex["text"][f"beam(beam_size={k})"]["search/beam_error"] for k in (1, 64)]
    mbr = {
        u: md_table(f"{EXP}/mbr/results.md", f"### utility = {u}:")
        for u in ("chrf", "bleu", "edit")
    }
    mbr_mode = " / ".join(num(mbr[u][2][1], ".3f") for u in mbr)
    mbr_best = " / ".join(num(mbr[u][4][1], ".3f") for u in mbr)
    folk_u = {
        r[0]: num(r[1].split("±")[0], ".3f")
        for r in md_table(f"{EXP}/mbr/results/folk/model_utility.md")
    }
    mt = {
        c: results(f"{EXP}/meter_constraint/results/{c}/results.jsonl") for c in ("none", "meter")
    }
    decs = ("pure sampling", "nucleus 0.95", "beam 4")
    bars = {c: " / ".join(num(mt[c][d]["abc/bar_ok_rate"], ".2f") for d in decs) for c in mt}
    removed = [mt["meter"][d]["constraint/mass_removed"] for d in decs]
    ch = metrics(f"{EXP}/char_rnn/results/metrics.json")
    arch = {i + 1: metrics(f"{ARCH}/{job}/metrics.json") for i, (_, _, job) in enumerate(ARCH_RUNS)}
    greedy1 = {
        r[0]: r[6] for r in md_table(f"{ARCH}/decode_speed.txt") if r[2:4] == ["greedy", "1"]
    }
    speed = [greedy1["lstm"], greedy1["transformer"]]
    to = {h: results(f"{EXP}/truncation_oracle/results/hidden_{h}.jsonl") for h in (16, 64)}
    cs, cs_m = results(f"{CONTRASTIVE}/results.jsonl"), metrics(f"{CONTRASTIVE}/metrics.json")
    cs_rep = " / ".join(
        num(cs[d]["repetition/seq_rep_4"], ".2f")
        for d in ("greedy", "beam 4", "contrastive k=4 a=0.6", "contrastive k=8 a=0.6")
    )

    def pr(h: int, label: str) -> str:
        m = to[h][label]
        return f"{m['oracle/trunc_precision']:.4f}/{m['oracle/trunc_recall']:.4f}"

    rows = [
        (
            "beam_curse",
            "`python -m seqgen.run +experiment=beam_sweep`",
            f"width {lo} to {hi} without normalization: mean score "
            f"{num(none[lo]['score/mean'], '.4g')} to {num(none[hi]['score/mean'], '.3g')}, length "
            f"{num(none[lo]['length/mean'], '.3g')} to {num(none[hi]['length/mean'], '.2g')} "
            "tokens; "
            "average normalization holds the length at the budget "
            f"({num(max(float(r['length/mean']) for r in avg), '.0f')}) and loops (rep_pct "
            f"{_rng([float(r['repetition/rep_pct']) for r in avg], '.0f')}); 3 min",
        ),
        (
            "degeneration",
            "`python -m seqgen.run +experiment=degeneration`",
            f"greedy/beam lowest gen/ppl ({dg['greedy']['gen/ppl']:.2f}/"
            f"{dg['beam 16']['gen/ppl']:.2f}) "
            f"and most repetition (rep_pct {dg['greedy']['repetition/rep_pct']:.0f}/"
            f"{dg['beam 16']['repetition/rep_pct']:.0f}), pure sampling highest "
            f"({dg['pure sampling']['gen/ppl']:.1f} vs human {dg['human']['gen/ppl']:.1f}); "
            "top-k 640 "
            "and pure sampling closest to human on Self-BLEU and Zipf; nucleus 0.95 *not* closest "
            f"here (small model, see README); {dg_m['wall_s'] / 60:.0f} min shared",
        ),
        (
            "folk_rnn",
            "`python -m seqgen.run +experiment=folk_rnn` (GPU) / `folk_rnn_cpu`",
            f"CPU variant ({fr_m['wall_s'] / 60:.0f} min shared): "
            f"{fr['folk-rnn sampling']['abc/parse_rate']:.0%} of sampled tunes parse as ABC, "
            f"{fr['folk-rnn sampling']['abc/bar_ok_rate']:.0%} keep every bar in time (human "
            f"{fr['human']['abc/bar_ok_rate']:.0%}); beam 4 keeps bars "
            f"({fr['beam(beam_size=4)']['abc/bar_ok_rate']:.2f}) by looping; the GPU recipe was "
            "not run; 5,599,881 parameters tested",
        ),
        (
            "exact_search",
            "`experiments/exact_search/run.sh`",
            f"every mode proven, on three data: DPFSA {empty['oracle']:.0%} empty modes (paper: "
            f"51.8%), Tiny Shakespeare lines (newline = EOS) {empty['text']:.0%} empty, folk tunes "
            f"a few-character close ({empty['folk']:.0%} empty); beam errors fall with K (text "
            f"{text_err[0]:.0%} at K=1 to {text_err[1]:.0%} at K=64) as its outputs shrink to "
            "the mode",
        ),
        (
            "mbr",
            "`experiments/mbr/run.sh`",
            f"10 DPFSA oracles, true expected utility: MBR (N = M = 16) {mbr_best} (chrF / BLEU / "
            f"edit) against the mode's {mbr_mode}; folk tunes under the model: MBR chrF "
            f"{folk_u['mbr_chrf']} against beam 4 {folk_u['beam_4']}, the mode {folk_u['exact']}, "
            f"ancestral {folk_u['ancestral']}",
        ),
        (
            "meter_constraint",
            "`experiments/meter_constraint/run.sh`",
            f"`constraint=meter`: bar check {bars['meter']} (sampling / nucleus / beam 4) against "
            f"{bars['none']} without, people {mt['none']['human']['abc/bar_ok_rate']:.2f}; the "
            f"mask removes {_rng([100 * x for x in removed], '.0f')}% of the sequence mass and "
            "fills bars with ornaments",
        ),
        (
            "architecture",
            "`experiments/architecture/run.sh` (`+experiment=architecture`, folk and Tiny "
            "Shakespeare)",
            f"LSTM {arch[1]['model']['params']:,} vs Transformer {arch[2]['model']['params']:,} "
            f"parameters, 200 steps: held-out ppl {arch[1]['ppl/valid']:.2f} / "
            f"{arch[2]['ppl/valid']:.2f} (folk), {arch[3]['ppl/valid']:.2f} / "
            f"{arch[4]['ppl/valid']:.2f} (Tiny Shakespeare); greedy decodes "
            f"{speed[0]} / {speed[1]} tokens/s at batch 1; the degeneration pattern on both",
        ),
        (
            "char_rnn",
            "`python -m seqgen.run +experiment=char_rnn_cpu data.preset=tinyshakespeare "
            "data.path=../shared/data/tinyshakespeare.txt`",
            f"CPU variant (2x256, 2,000 steps): valid {math.log(ch['ppl/valid']):.3f} nats/char "
            "(char-rnn/nanoGPT 1.47 on a GPU with 2x512); the text is one stream, the human row "
            f"the true 450-character continuation; {ch['wall_s'] / 60:.1f} min on a shared "
            "2-core CPU",
        ),
        (
            "guidance",
            "`experiments/guidance/run.sh`",
            _guidance_overview(),
        ),
        (
            "truncation_oracle",
            "`experiments/truncation_oracle/run.sh`",
            "truncation vs the DPFSA's true support, 7 methods x 4 settings, GRU hidden 16/64: "
            "eta does *not* dominate top-p (precision/recall top-p 0.9 "
            f"{pr(16, 'top-p 0.9')} vs eta 0.05 {pr(16, 'eta 0.05')} at 16; "
            f"{pr(64, 'top-p 0.9')} vs {pr(64, 'eta 0.05')} at 64); gaps within 200 samples' "
            "noise; 6.5 min shared",
        ),
        (
            "contrastive",
            "`python -m seqgen.run +experiment=contrastive "
            "data.path=../shared/data/tinyshakespeare.txt`",
            f"Su et al. 2022 on Tiny Shakespeare (2x128 LSTM): seq_rep_4 {cs_rep} (greedy / beam "
            f"4 / contrastive k=4, k=8 at alpha 0.6) at gen/ppl "
            f"{num(cs['contrastive k=4 a=0.6']['gen/ppl'], '.2f')}-"
            f"{num(cs['contrastive k=8 a=0.6']['gen/ppl'], '.2f')}, between greedy's "
            f"{num(cs['greedy']['gen/ppl'], '.2f')} and sampling's "
            f"{num(cs['pure sampling']['gen/ppl'], '.2f')}; every row still ends in a loop; "
            f"training {cs_m['model']['train']['wall_time_s'] / 60:.0f} min, decoding "
            f"{cs_m['wall_s'] / 60:.0f} min shared",
        ),
    ]
    return table(
        ["reproduction", "command", "obtained (2-core CPU)"],
        [[f"[`{n}`]({EXP}/{n}/README.md)", cmd, text] for n, cmd, text in rows],
    )


BLOCKS: dict[tuple[str, str], Callable[[], str]] = {
    ("README.md", "reproductions"): overview,
    ("README.md", "default-timing"): default_timing,
    ("README.md", "default-model"): default_model,
    ("README.md", "default-table"): default_table,
    ("README.md", "default-reading"): default_reading,
    (f"{EXP}/beam_curse/README.md", "table"): beam_curse,
    (f"{EXP}/char_rnn/README.md", "model"): char_rnn_model,
    (f"{EXP}/char_rnn/README.md", "runtime"): char_rnn_runtime,
    (f"{EXP}/char_rnn/README.md", "decoders"): char_rnn_decoders,
    (f"{EXP}/contrastive/README.md", "model"): contrastive_model,
    (f"{EXP}/contrastive/README.md", "table"): contrastive_table,
    (f"{EXP}/contrastive/README.md", "reading"): contrastive_reading,
    (f"{EXP}/degeneration/README.md", "params"): degeneration_params,
    (f"{EXP}/degeneration/README.md", "table"): degeneration_table,
    (f"{EXP}/truncation_oracle/README.md", "table"): truncation_oracle_table,
    (f"{EXP}/exact_search/README.md", "synthetic"): exact_search_synthetic,
    (f"{EXP}/exact_search/README.md", "folk"): lambda: _search_grid("folk", "characters"),
    (f"{EXP}/exact_search/README.md", "text"): lambda: _search_grid("text", "characters"),
    (f"{EXP}/folk_rnn/README.md", "table"): folk_rnn_table,
    (f"{EXP}/mbr/README.md", "synthetic"): mbr_synthetic,
    (f"{EXP}/mbr/README.md", "folk"): mbr_folk,
    (f"{EXP}/meter_constraint/README.md", "table"): meter_table,
    (f"{EXP}/dry/README.md", "folk"): lambda: dry_table("folk"),
    (f"{EXP}/dry/README.md", "shakespeare"): lambda: dry_table("shakespeare"),
    (f"{EXP}/guidance/README.md", "table"): guidance_table,
    (f"{EXP}/guidance/README.md", "runtime"): guidance_runtime,
    (f"{EXP}/guidance/README.md", "reading"): guidance_reading,
    (f"{EXP}/guidance/README.md", "memory"): lambda: (
        (ROOT / GUIDANCE / "header_memory.txt").read_text().strip()
    ),
    (f"{EXP}/architecture/README.md", "models"): architecture_models,
    (f"{EXP}/architecture/README.md", "speed"): architecture_speed,
    (f"{EXP}/architecture/README.md", "folk"): lambda: architecture_table("folk"),
    (f"{EXP}/architecture/README.md", "text"): lambda: architecture_table("tinyshakespeare"),
}


# ---------------------------------------------------------------------------------------------
# Rendering


def _pattern(name: str) -> re.Pattern[str]:
    n = re.escape(name)
    return re.compile(rf"(<!-- render:{n} -->)(.*?)(<!-- /render:{n} -->)", re.S)


# KEY may hold spaces (a label such as `beam 16`): it is everything between PATH and FORMAT
VALUE = re.compile(r"(<!-- render:value (\S+) (.+?) (\S+) -->)(.*?)(<!-- /render:value -->)")


def value(path: str, key: str, fmt: str) -> str:
    """One number quoted in prose: `<!-- render:value PATH KEY FORMAT -->`, KEY being
    `LABEL#metric` in a `results.jsonl`, `COLUMN=VALUE&...#metric` in a sweep's `summary.csv`
    (its first row with those values), a dotted path in a `metrics.json`."""
    if path.endswith(".csv"):
        where, metric = key.rsplit("#", 1)
        want = dict(kv.split("=", 1) for kv in where.split("&"))
        rows = [r for r in summary(path) if all(r.get(k) == v for k, v in want.items())]
        if not rows:
            raise SystemExit(f"{path}: no row with {where}")
        return num(rows[0][metric], fmt)
    if path.endswith(".jsonl"):
        label, metric = key.split("#")
        return num(results(path)[label][metric], fmt)
    v: Any = metrics(path)
    for part in key.split("."):
        v = v[part]
    return num(v, fmt)


def render(readme: str, text: str) -> str:
    """`text` (the README `readme`) with every block of `BLOCKS` and every quoted value rendered
    anew. A block that spans lines (a table) sits on lines of its own; an inline one (a number)
    stays inline."""
    text = VALUE.sub(lambda m: m[1] + value(m[2], m[3], m[4]) + m[6], text)
    for (path, name), fn in BLOCKS.items():
        if path != readme:
            continue
        found = _pattern(name).search(text)
        if found is None:
            raise SystemExit(f"{readme}: no <!-- render:{name} --> block")
        body = fn()
        inner = f"\n{body}\n" if found.group(2).startswith("\n") else body
        text = text[: found.start(2)] + inner + text[found.end(2) :]
    return text


def readmes() -> list[str]:
    return sorted({path for path, _ in BLOCKS})


def copy_default_run(run_dir: str | None) -> None:
    """`docs/default_run/`: `results.jsonl` and `metrics.json` (without this machine's paths) of
    `run_dir`, or of a fresh `python -m seqgen.run` when it is None."""
    import subprocess
    import tempfile

    if run_dir is None:
        run_dir = tempfile.mkdtemp(prefix="seqgen_default_")
        env = {**os.environ, "WANDB_MODE": "disabled"}
        cmd = [sys.executable, "-m", "seqgen.run", f"hydra.run.dir={run_dir}"]
        subprocess.run(cmd, check=True, env=env, cwd=run_dir)
    out = ROOT / DEFAULT
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").write_text((Path(run_dir) / "results.jsonl").read_text())
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    m.pop("outputs", None)
    m["model"].pop("cache_dir", None)
    (out / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    ap.add_argument(
        "--default-run",
        nargs="?",
        const="",
        metavar="RUN_DIR",
        help="first copy a default run's files into docs/default_run/ (no RUN_DIR: run it now)",
    )
    args = ap.parse_args(argv)
    if args.default_run is not None:
        copy_default_run(args.default_run or None)
    stale = 0
    for readme in readmes():
        old = (ROOT / readme).read_text()
        new = render(readme, old)
        if new == old:
            continue
        stale += 1
        if args.check:
            diff = difflib.unified_diff(old.splitlines(), new.splitlines(), readme, "rendered")
            print("\n".join(diff))
        else:
            (ROOT / readme).write_text(new)
            print(f"rendered {readme}")
    if args.check and stale:
        print(f"{stale} README(s) differ from their results files: run scripts/render_tables.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
