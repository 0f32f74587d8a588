"""What a run leaves behind: JSONL results and samples, readable samples (ABC and MIDI for folk
tunes, so a user can listen), PNG plots, the console table, and the tracker's copy of each.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from seqgen.metrics import table as metric_table
from seqgen.metrics.abc import ABC_TIMEOUT_S, call_with_deadline

log = logging.getLogger("seqgen")

# In samples/<decoder>.txt, between the prompt and what the model wrote after it.
MODEL_MARK = "<<model>>"


def slug(text: str) -> str:
    """A file name from a label: letters, digits, `._-`; never `.`, `..` or a hidden name, so a
    label cannot place files outside `samples/`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:80] or "decoder"


def _clean(v: Any) -> Any:
    """JSON-safe floats: NaN and inf become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def reset_outputs(out_dir: Path) -> None:
    """Start a run's result files empty (a rerun into the same folder does not append)."""
    for name in ("results.jsonl", "samples.jsonl"):
        (out_dir / name).unlink(missing_ok=True)


def write_decoder(
    output_cfg: Any,
    corpus: Any,
    result: dict[str, Any],
    samples: list[dict[str, Any]],
    out_dir: Path,
    abc_timeout_s: float = ABC_TIMEOUT_S,
) -> list[Path]:
    """Append one decoder's (or the human row's) result and samples as soon as they exist:
    `results.jsonl`, `samples.jsonl`, `samples/<label>.txt` and, for folk tunes, the first
    `output.num_listen` tunes as `.abc`/`.mid` (music21 given `abc_timeout_s` a tune:
    `metrics.abc_timeout_s`). Returns the tune files."""
    with open(out_dir / "results.jsonl", "a") as f:
        f.write(json.dumps(_clean(result)) + "\n")
    return write_samples(
        corpus.name, samples, out_dir, int(output_cfg.num_listen), timeout_s=abc_timeout_s
    )


def write_outputs(
    output_cfg: Any,
    results: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    out_dir: Path,
    tracker: Any,
) -> dict[str, Any]:
    """What needs every decoder: the plots, the tracker's copy of results, samples and plots,
    and `results.jsonl` rewritten whole, since some metrics (`search/beam_error`) compare
    decoders and exist only once all have run (`write_decoder` appended each row as it
    finished). The report page, which reads these files, is `seqgen.report`'s."""
    (out_dir / "results.jsonl").write_text("".join(json.dumps(_clean(r)) + "\n" for r in results))
    plots = []
    if output_cfg.plots:
        plots = plot_decoders(results, out_dir / "plots")
    for r in results:
        label = r["decoder"].get("label") or r["decoder"]["name"]
        tracker.log_summary({f"{label}/{k}": v for k, v in r["metrics"].items()})
    columns = ["decoder", "prompt_index", "sample_index", "score", "logprob", "prompt", "text"]
    tracker.log_table("samples", columns, [[s[c] for c in columns] for s in samples[:2000]])
    for p in plots:
        tracker.log_image(f"plots/{Path(p).stem}", p)
    return {"plots": [str(p) for p in plots]}


def marked_text(prompt: str, text: str) -> str:
    """`text` (prompt + continuation) with `MODEL_MARK` where the prompt ends.

    Every level's detokenizer writes the prompt's text as a prefix of the whole text (the
    continuation follows after a space or a line break, or directly for characters).
    """
    if not text.startswith(prompt):  # no detokenizer does this; never fail a run over a mark
        return text
    return prompt + MODEL_MARK + text[len(prompt) :]


def sample_separator(corpus_name: str) -> str:
    """What stands between two generations in `samples/<decoder>.txt` (and seqgen-sample's
    output): a blank line between folk tunes, a rule between texts."""
    return "\n\n" if corpus_name == "folk" else "\n" + "-" * 60 + "\n"


def write_samples(
    corpus_name: str,
    samples: list[dict[str, Any]],
    out_dir: Path,
    num_listen: int,
    timeout_s: float = ABC_TIMEOUT_S,
    append: bool = False,
) -> list[Path]:
    """Append `samples` to `samples.jsonl` and write `samples/<decoder>.txt` (`MODEL_MARK`
    where each prompt ends) and, for folk tunes, the first `num_listen` of each decoder as
    `.abc` and `.mid`; returns the tune files. `reset_outputs` starts a folder afresh.
    `append`: the samples continue a decoder's earlier ones (a study written chunk by chunk)."""
    if not samples:
        return []
    with open(out_dir / "samples.jsonl", "a") as f:
        for s in samples:
            f.write(json.dumps(_clean(s)) + "\n")
    sample_dir = out_dir / "samples"
    sample_dir.mkdir(exist_ok=True)
    by_decoder: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        by_decoder.setdefault(s["decoder"], []).append(s)
    listen = []
    sep = sample_separator(corpus_name)
    for label, rows in by_decoder.items():
        marked = (marked_text(r.get("prompt", ""), r["text"]) for r in rows)
        # every separator starts with a line break, the one that already ends the file
        with open(sample_dir / f"{slug(label)}.txt", "a" if append else "w") as f:
            f.write((sep[1:] if append else "") + sep.join(marked) + "\n")
        if corpus_name == "folk" and num_listen > 0:
            listen += write_tunes(sample_dir / slug(label), rows[:num_listen], timeout_s)
    return listen


def _tune_midi(abc: str, path: Path) -> tuple[Path | None, str | None]:
    """`write_midi` of a parsed tune; `(None, None)` when music21 does not parse it."""
    from seqgen.metrics.abc import parse_abc

    score = parse_abc.__wrapped__(abc)  # a score of its own: writing may change it, not the memo
    return (None, None) if score is None else write_midi(score, path)


def write_tunes(
    folder: Path, rows: list[dict[str, Any]], timeout_s: float = ABC_TIMEOUT_S
) -> list[Path]:
    """The first tunes of a decoder as `.abc` files and, for every one that music21 parses
    within `timeout_s` seconds (parse and MIDI together), `.mid`.

    The log says how many `.mid` were written, how many play their repeats once (music21 could
    not expand them) and why any tune has none.
    """
    from collections import Counter

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    outcome: Counter[str] = Counter()
    for i, r in enumerate(rows):
        abc = f"X:{i + 1}\nT:{r['decoder']} #{i + 1}\n{r['text'].strip()}\n"
        path = folder / f"tune_{i + 1:02d}.abc"
        path.write_text(abc)
        written.append(path)
        done, late = call_with_deadline(
            lambda abc=abc, path=path: _tune_midi(abc, path.with_suffix(".mid")), timeout_s
        )
        if late:
            outcome[f"music21 ran past {timeout_s:g} s"] += 1
            continue
        midi, how = done
        if how is None:  # a generated tune need not be valid ABC
            outcome["not ABC that music21 parses"] += 1
            continue
        if midi is not None:
            written.append(midi)
        outcome[how] += 1
    n_midi = outcome["midi"] + outcome[_MIDI_UNEXPANDED]
    why = ", ".join(f"{n} {k}" for k, n in sorted(outcome.items()) if k != "midi")
    log.info("%s: %d tunes, %d .mid%s", folder.name, len(rows), n_midi, f" ({why})" if why else "")
    return written


_MIDI_UNEXPANDED = "with repeats played once (music21 cannot expand them)"


def write_midi(score: Any, path: Path) -> tuple[Path | None, str]:
    """Write a parsed tune as MIDI: `(path, "midi")`, `(path, <repeats played once>)` or
    `(None, <why not>)`.

    Two music21 failures are avoided rather than given up on: its ABC reader can put one
    TimeSignature (or key, tempo) object in two measures, which the MIDI writer refuses to
    move twice, so later occurrences become copies; and repeats that `expandRepeats` calls
    badly formed are played once, as written, from the flattened parts.
    """
    import copy

    from music21 import stream

    seen: set[int] = set()
    for site in list(score.recurse(streamsOnly=True, includeSelf=True)):
        for el in list(site.getElementsByClass(_CONDUCTOR_CLASSES)):
            if id(el) in seen:
                site.replace(el, copy.deepcopy(el))
            seen.add(id(el))
    try:
        return Path(score.write("midi", fp=str(path))), "midi"
    except Exception as exc:
        first = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
    try:
        flat = stream.Score()
        for part in score.parts or [score]:
            flat.insert(0, part.flatten())
        return Path(flat.write("midi", fp=str(path))), _MIDI_UNEXPANDED
    except Exception as exc:
        log.debug("%s is not playable: %s; unexpanded: %s", path, first, exc)
        return None, f"MIDI failed ({first})"


_CONDUCTOR_CLASSES = ("TimeSignature", "KeySignature", "MetronomeMark")


def plain_numbers(ax: Any) -> None:
    """Tick labels that read as the values themselves: no offset or multiplier text (matplotlib
    writes `1e-7-1.83498` for values that agree to 7 digits), and a flat line's axis widened
    to +-5% of its value so its ticks differ in the first digits."""
    from matplotlib.ticker import ScalarFormatter

    if ax.get_yscale() != "linear":
        return
    lo, hi = ax.get_ylim()
    mid = (lo + hi) / 2
    if hi - lo <= 1e-6 * max(abs(mid), 1e-12):
        pad = 0.05 * abs(mid) or 1.0
        ax.set_ylim(mid - pad, mid + pad)
    fmt = ScalarFormatter(useOffset=False)
    fmt.set_scientific(False)
    ax.yaxis.set_major_formatter(fmt)


def plot_decoders(results: list[dict[str, Any]], folder: Path) -> list[Path]:
    """One panel per metric: a bar per decoder, the human row as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    gen = [r for r in results if r["decoder"]["name"] != "human"]
    human = next((r for r in results if r["decoder"]["name"] == "human"), None)
    shown = metric_table.shown(metric_table.PLOT)
    metrics = [m for m in shown if any(_finite(r["metrics"].get(m)) for r in results)]
    if not metrics or not gen:
        return []
    ncols = 3
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    labels = [r["decoder"].get("label") or r["decoder"]["name"] for r in gen]
    for ax, m in zip(axes.flat, metrics):
        vals = [r["metrics"].get(m) for r in gen]
        vals = [v if _finite(v) else 0.0 for v in vals]
        ax.bar(range(len(vals)), vals, color="tab:blue")
        if human is not None and _finite(human["metrics"].get(m)):
            ax.axhline(human["metrics"][m], color="tab:red", linestyle="--", label="human")
            ax.legend(fontsize=7)
        ax.set_title(m, fontsize=10)
        ax.set_ylabel(metric_table.label_of(m), fontsize=8)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
        if metric_table.log_scale(m) and max(vals, default=0) > 50 * max(
            min(vals, default=1), 1e-9
        ):
            ax.set_yscale("log")
        plain_numbers(ax)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    path = folder / "decoders.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def print_results_table(results: list[dict[str, Any]], model_metrics: dict[str, float]) -> None:
    """The console table: one row per decoder plus the human row."""
    from rich.console import Console
    from rich.table import Table

    title = "seqgen: decoders vs human"
    if "ppl/valid" in model_metrics:
        title += f"  (model ppl/valid {model_metrics['ppl/valid']:.3f})"
    table = Table(title=title)
    table.add_column("decoder", style="bold")
    columns = metric_table.shown(metric_table.TABLE)
    for c in columns:
        table.add_column(c, justify="right")
    for r in results:
        label = r["decoder"].get("label") or r["decoder"]["name"]
        cells = []
        for c in columns:
            v = r["metrics"].get(c)
            cells.append(f"{v:.3f}" if _finite(v) else "-")
        table.add_row(label, *cells, style="italic" if label == "human" else None)
    Console(width=160).print(table)
