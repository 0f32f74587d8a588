"""The multirun callback: when a sweep ends, one table and one plot per metric in the sweep dir.

Every job writes `results.jsonl` (or `failed.json`) into its own folder; `SweepSummary` reads them
all, so a failed job loses nothing of the others, and writes `summary.csv`, `summary.md` and
`plots/<metric>.png` (each metric against the swept knob, one line per value of a second swept
knob, the human row dashed; `score/mean` in one panel per length penalty, whose units differ)
and `report.html` (seqgen.report). With `logger=wandb` the summary is logged as its own run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from seqgen.decoding.registry import score_unit
from seqgen.metrics import table as metric_table
from seqgen.outputs import plain_numbers
from seqgen.report import write_sweep_report
from seqgen.tracking import make_tracker

log = logging.getLogger(__name__)

# Failed jobs of the multirun in this process (seqgen.run exits 1 when any failed).
FAILED_JOBS: list[dict[str, Any]] = []

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def record_failure(out_dir: Path, cfg: Any, exc: BaseException) -> None:
    """Write `failed.json` into a job's folder so the sweep summary can list it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
    }
    (out_dir / "failed.json").write_text(json.dumps(record, indent=2))


def _job_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    return [str(x) for x in OmegaConf.load(path)]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def collect(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Rows (one per job and decoder), failed jobs, and the knobs that vary across jobs."""
    jobs = sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").exists()),
        key=lambda p: int(p.name.split("_")[0]) if p.name.split("_")[0].isdigit() else 1 << 30,
    )
    rows, failed = [], []
    overrides_by_job: dict[str, dict[str, Any]] = {}
    for job in jobs:
        knobs = {}
        for o in _job_overrides(job):
            key, _, value = o.lstrip("+~").partition("=")
            knobs[key] = _parse_value(value)
        overrides_by_job[job.name] = knobs
        if (job / "failed.json").exists():
            err = json.loads((job / "failed.json").read_text())["error"]
            failed.append({"job": job.name, "error": err, **knobs})
            continue
        results = job / "results.jsonl"
        if not results.exists():
            failed.append({"job": job.name, "error": "no results.jsonl (job did not finish)"})
            continue
        for line in results.read_text().splitlines():
            rec = json.loads(line)
            dec = rec["decoder"]
            rows.append(
                {
                    "job": job.name,
                    **knobs,
                    "decoder": dec.get("label") or dec["name"],
                    **rec["metrics"],
                    # the human row has no score of its own
                    **({"score/unit": score_unit(dec)} if "score/mean" in rec["metrics"] else {}),
                }
            )
    swept = []
    all_keys = sorted({k for kn in overrides_by_job.values() for k in kn})
    for key in all_keys:
        values = {json.dumps(kn.get(key), sort_keys=True) for kn in overrides_by_job.values()}
        if len(values) > 1:
            swept.append(key)
    return rows, failed, swept


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def write_summary(sweep_dir: Path, *, plots: bool = True) -> dict[str, Any]:
    rows, failed, swept = collect(sweep_dir)
    shown = metric_table.shown(metric_table.SUMMARY)  # those the jobs have, in the table's order
    metric_keys = [k for k in shown if any(k in r for r in rows)]
    columns = ["job", *swept, "decoder", *metric_keys]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        all_cols = columns + sorted({k for r in rows for k in r} - set(columns))
        writer = csv.DictWriter(f, fieldnames=all_cols)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in all_cols})
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    if failed:
        lines += ["", f"## Failed jobs ({len(failed)})", ""]
        lines += [f"- `{fj['job']}`: {fj['error']}" for fj in failed]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    plot_paths = _plot(sweep_dir, rows, swept, metric_keys) if plots and swept else []
    report = write_sweep_report(sweep_dir, columns, rows, failed, _fmt)
    return {"rows": rows, "failed": failed, "swept": swept, "plots": plot_paths, "report": report}


def _plot(sweep_dir: Path, rows: list[dict], swept: list[str], metrics: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = swept[0]
    hue_key = swept[1] if len(swept) > 1 else None
    human = [r for r in rows if r["decoder"] == "human"]
    gen = [r for r in rows if r["decoder"] != "human"]
    out = sweep_dir / "plots"
    out.mkdir(exist_ok=True)
    paths = []
    numeric_x = all(isinstance(r.get(x_key), int | float) for r in gen)
    # a compare set (several decoders in one job): one line per decoder
    per_job: dict[str, set[str]] = {}
    for r in gen:
        per_job.setdefault(r["job"], set()).add(r["decoder"])
    several_decoders = any(len(decs) > 1 for decs in per_job.values())
    for metric in metrics:
        # score/mean: one panel per score unit (`registry.score_unit`: length penalty, Gumbel, ...)
        kinds: list[str | None] = [None]
        if metric_table.unit_of(metric) is metric_table.SCORE:
            kinds = list(dict.fromkeys(r["score/unit"] for r in gen if "score/unit" in r))
        fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.8), squeeze=False)
        drawn = False
        for ax, kind in zip(axes.flat, kinds):
            groups: dict[Any, list[dict]] = {}
            for r in gen:
                if r.get(metric) is None or (kind and r.get("score/unit") != kind):
                    continue
                hue = r.get(hue_key) if hue_key else None
                groups.setdefault((hue, r["decoder"] if several_decoders else None), []).append(r)
            for n, ((hue, dec), rs) in enumerate(groups.items()):
                rs = sorted(rs, key=lambda r: r.get(x_key) if numeric_x else str(r.get(x_key)))
                xs = [r.get(x_key) if numeric_x else str(r.get(x_key)) for r in rs]
                parts = [f"{hue_key.split('.')[-1]}={hue}"] if hue_key else []
                label = ", ".join(parts + ([dec] if dec else [])) or None
                # each line its own marker, later ones smaller: equal lines stay visible
                ax.plot(
                    xs,
                    [r[metric] for r in rs],
                    marker=MARKERS[n % len(MARKERS)],
                    markersize=max(3.0, 9.0 - 1.5 * n),
                    linestyle=LINESTYLES[n % len(LINESTYLES)],
                    alpha=0.85,
                    label=label,
                )
                drawn = True
            hv = [r[metric] for r in human if r.get(metric) is not None] if kind is None else []
            if hv:
                ax.axhline(sum(hv) / len(hv), color="gray", linestyle="--", label="human")
            if numeric_x and x_key.endswith("beam_size"):
                ax.set_xscale("log", base=2)
            ax.set_xlabel(x_key)
            ax.set_ylabel(kind or metric_table.label_of(metric))
            title = f"{metric} vs {x_key.split('.')[-1]}"
            ax.set_title(title + (f" ({kind})" if kind and len(kinds) > 1 else ""))
            ax.grid(alpha=0.3)
            plain_numbers(ax)
            if groups and (len(groups) > 1 or hv or hue_key):
                ax.legend(fontsize=8)
        if not drawn:
            plt.close(fig)
            continue
        fig.tight_layout()
        path = out / f"{metric.replace('/', '_')}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


class SweepSummary(Callback):
    """Hydra callback: writes the sweep summary when a multirun ends (`hydra.callbacks`)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        summary = write_summary(sweep_dir, plots=bool(config.get("output", {}).get("plots", True)))
        FAILED_JOBS.extend(summary["failed"])
        n_jobs = len({r["job"] for r in summary["rows"]})
        log.info(
            "sweep summary: %d jobs ok, %d failed -> %s",
            n_jobs,
            len(summary["failed"]),
            sweep_dir / "summary.md",
        )
        for fj in summary["failed"]:
            log.error("failed job %s: %s", fj["job"], fj["error"])
        self._log_wandb(config, sweep_dir, summary)
        log.info("sweep report: open %s", Path(summary["report"]).resolve().as_uri())

    @staticmethod
    def _log_wandb(config: DictConfig, sweep_dir: Path, summary: dict[str, Any]) -> None:
        logger_cfg = config.get("logger")
        if logger_cfg is None or logger_cfg.name != "wandb" or logger_cfg.mode == "disabled":
            return
        tracker = make_tracker(
            logger_cfg,
            config={"sweep_dir": str(sweep_dir), "swept": summary["swept"]},
            out_dir=sweep_dir,
            default_group=f"{config.get('experiment_name', 'sweep')}/{sweep_dir.name}",
            default_name=f"summary-{sweep_dir.name}",
            job_type="sweep_summary",
        )
        try:
            rows = summary["rows"]
            cols = sorted({k for r in rows for k in r})
            tracker.log_table("summary", cols, [[r.get(c) for c in cols] for r in rows])
            for p in summary["plots"]:
                tracker.log_image(f"plots/{Path(p).stem}", p)
            tracker.log_html("report", summary["report"])
            tracker.finish(0)
        except Exception:
            tracker.finish(1)
            raise
