"""The report page: one self-contained `report.html` per run and per sweep that opens offline.

A run's page holds the config in brief, the results table (every decoder and the human row),
the plots (PNG as data URIs) and, for each decoder, its first `output.num_listen` samples with
the prompt marked. Folk tunes are drawn as sheet music with a play button, as folkrnn.org does,
by abcjs (MIT, `seqgen/static/abcjs-basic-min.js`, inlined). abcjs's own synth fetches a
soundfont over the network, so the play button here is a small Web Audio synth fed by abcjs's
note events instead: it plays offline, with a plain tone. A sweep's page holds `summary.md`'s
table and the plots against the swept knob, with a link to each job's page.

The page reads only the files a run already wrote (`config.yaml`, `metrics.json`,
`results.jsonl`, `samples.jsonl`, `plots/*.png`), so it shows what the files say. After
rendering, a script writes `<div id="render-status">` with `data-done`, `data-tunes` (tunes
drawn), `data-svgs` (tunes with an SVG), `data-notes` (tunes whose SVG has notes) and
`data-errors` (script errors seen), which the browser test reads.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import struct
from importlib import resources
from pathlib import Path
from typing import Any

from seqgen.metrics import table as metric_table
from seqgen.outputs import slug


def _static(name: str) -> str:
    return (resources.files("seqgen") / "static" / name).read_text(encoding="utf-8")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "-" if v is None else _esc(v)
    if not math.isfinite(v):
        return "-"
    return f"{v:,.3f}" if abs(v) < 1e5 else f"{v:.3g}"


def _label(rec: dict[str, Any]) -> str:
    return rec["decoder"].get("label") or rec["decoder"]["name"]


def _img(path: Path) -> str:
    raw = path.read_bytes()
    width, height = struct.unpack(">II", raw[16:24])  # the PNG's IHDR chunk
    wide = ' class="wide"' if width > 2 * height else ""  # side-by-side panels: a row of its own
    data = base64.b64encode(raw).decode("ascii")
    return f'<img{wide} alt="{_esc(path.stem)}" src="data:image/png;base64,{data}">'


def split_prompt(row: dict[str, Any], vocab: Any = None) -> tuple[str, str]:
    """(prompt, continuation) of a sample row: its `prompt` field (text or token ids) when it
    has one, else the text before the decoded continuation (`token_ids` hold the continuation)."""
    text = row["text"]
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        prompt = vocab.decode(prompt) if vocab is not None else None
    if prompt is None and vocab is not None:
        cont = vocab.decode(row["token_ids"])
        if cont and text.endswith(cont):
            prompt = text[: len(text) - len(cont)]
        elif not cont:
            prompt = text
    if isinstance(prompt, str) and text.startswith(prompt):
        return prompt, text[len(prompt) :]
    return "", text


def _page(title: str, body: str, *, abcjs: bool) -> str:
    script = f"<script>{_static('abcjs-basic-min.js')}</script>" if abcjs else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<script>{_ERROR_HOOK}</script>
<style>{_CSS}</style>
{script}
</head><body>
<main>
{body}
</main>
<div id="render-status" data-done="0"></div>
<script>{_RENDER_JS}</script>
</body></html>
"""


_NUMBER = re.compile(r"^(-|nan|inf|[-+]?[\d,]*\.?\d+(e[-+]?\d+)?)?$")


def _header(name: str) -> str:
    """A column name as two short lines: `group/` or `decoder.` above the rest (which may
    break after `_`), so a wide table fits the page."""
    for sep in ("/", "."):
        if sep in name:
            head, rest = name.rsplit(sep, 1) if sep == "." else name.split(sep, 1)
            return f"<small>{_esc(head)}{sep}</small><br>{_esc(rest).replace('_', '_<wbr>')}"
    return _esc(name).replace("_", "_<wbr>")


def _table(columns: list[str], rows: list[list[str]], row_classes: list[str]) -> str:
    """Numbers right-aligned, text columns (any cell not a number) left-aligned; the first
    column stays in view when the table scrolls sideways."""
    text = [
        any(not _NUMBER.match(re.sub(r"<[^>]*>", "", row[j]).strip()) for row in rows)
        for j in range(len(columns))
    ]
    cls = [' class="text"' if t else "" for t in text]
    head = "".join(
        f'<th{cls[j]} title="{_esc(metric_table.label_of(c))}">{_header(c)}</th>'
        for j, c in enumerate(columns)
    )
    body = "".join(
        f'<tr class="{rc}">'
        + "".join(f"<td{cls[j]}>{cell}</td>" for j, cell in enumerate(row))
        + "</tr>"
        for row, rc in zip(rows, row_classes)
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _plots(folder: Path) -> str:
    pngs = sorted(folder.glob("*.png")) if folder.exists() else []
    if not pngs:
        return ""
    cls = "plots" if len(pngs) == 1 else "plots two"
    return (
        f'<h2 id="plots">Plots</h2><div class="{cls}">' + "".join(_img(p) for p in pngs) + "</div>"
    )


def _architecture(model: dict[str, Any]) -> str:
    """`LSTM 2 x 128, embedding 64`: the cell, layers x width, and the sizes its row of the
    models table reads besides (a cell this process does not know: the first part only)."""
    from seqgen.models import MODELS

    spec = MODELS.get(str(model["cell"]))
    fields = spec.fields if spec is not None else ()
    parts = [f"{str(model['cell']).upper()} {model.get('num_layers')} x {model.get('hidden_size')}"]
    if "embed_size" in fields:
        parts.append(f"embedding {model.get('embed_size')}")
    if "num_heads" in fields:
        parts.append(f"{model.get('num_heads')} heads, {model.get('positions')} positions")
    return ", ".join(parts)


def _config_brief(cfg: dict[str, Any], metrics: dict[str, Any], labels: list[str]) -> str:
    data, model = cfg.get("data", {}), cfg.get("model", {})
    train, dec = cfg.get("train", {}), cfg.get("decode", {})
    source = data.get("preset") or data.get("path") or ", ".join(data.get("collections") or [])
    info = metrics.get("model", {})
    level = f"({data['level']}-level)" if data.get("level") else ""
    if model.get("cell") == "oracle":
        arch = "oracle: the DPFSA's exact distribution"
    elif model.get("cell"):
        arch = _architecture(model)
    else:
        arch = str(model.get("name", "oracle"))
    if info.get("params"):
        arch += f", {info['params']:,} parameters"
    trained = "loaded from the cache" if info.get("cached") else "trained in this run"
    prompts = dec.get("prompts")
    if prompts == "heldout":
        prompts = f"{dec.get('num_prompts')} held-out openings of {dec.get('prompt_len')} tokens"
    items = [
        ("experiment", f"{cfg.get('experiment_name', '')}, seed {cfg.get('seed')}"),
        ("data", " ".join(x for x in (data.get("name"), level, source) if x)),
        ("model", f"{arch}; {trained}"),
        (
            "train",
            f"{train.get('steps')} steps, batch {train.get('batch_size')} x "
            f"{train.get('seq_len')}, lr {train.get('lr')}",
        ),
        (
            "model perplexity",
            f"valid {_num(metrics.get('ppl/valid'))}, test {_num(metrics.get('ppl/test'))} "
            "per token",
        ),
        (
            "decode",
            f"prompts: {prompts}; max_len {dec.get('max_len')}; "
            f"{dec.get('num_samples')} per prompt",
        ),
        ("decoders", ", ".join(labels)),
    ]
    if "wall_s" in metrics:
        items.append(("wall time", f"{metrics['wall_s']:.1f} s"))
    rows = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items)
    return f"<dl>{rows}</dl>"


def write_report(out_dir: str | Path, vocab: Any = None) -> Path:
    """Write `<out_dir>/report.html` from the files the run wrote there; returns its path."""
    import yaml

    out_dir = Path(out_dir)
    cfg = yaml.safe_load((out_dir / "config.yaml").read_text()) or {}
    metrics_path = out_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    results = _read_jsonl(out_dir / "results.jsonl")
    samples = _read_jsonl(out_dir / "samples.jsonl")
    is_folk = cfg.get("data", {}).get("name") == "folk"
    num_listen = int(cfg.get("output", {}).get("num_listen", 5))
    labels = [_label(r) for r in results if r["decoder"]["name"] != "human"]

    shown = metric_table.shown(metric_table.REPORT)  # those a run has, in the table's order
    columns = [c for c in shown if any(_finite(r["metrics"].get(c)) for r in results)]
    table = _table(
        ["decoder", *columns],
        [[_esc(_label(r))] + [_num(r["metrics"].get(c)) for c in columns] for r in results],
        ["human" if r["decoder"]["name"] == "human" else "" for r in results],
    )
    exp = cfg.get("experiment_name", "run")
    plots = _plots(out_dir / "plots")
    samples_html, shown = _samples_html(samples, labels, out_dir, vocab, is_folk, num_listen)
    sections = [("config", "Config"), ("results", "Results")] + ([("plots", "Plots")] * bool(plots))
    parts = [
        f"<h1>seqgen: {_esc(exp)} <small>{_esc(out_dir.name)}</small></h1>",
        _contents(sections, shown),
        "<h2 id='config'>Config</h2>",
        _config_brief(cfg, metrics, labels),
        "<h2 id='results'>Results</h2>",
        table,
        '<p class="note">Hover a column name for its unit. The human row scores held-out data '
        "with the same metrics.</p>",
        plots,
        samples_html,
    ]
    path = out_dir / "report.html"
    path.write_text(_page(f"seqgen {exp}: {out_dir.name}", "\n".join(parts), abcjs=is_folk))
    return path


def _anchor(label: str, i: int | None = None) -> str:
    return f"dec-{slug(label)}" + ("" if i is None else f"-{i + 1}")


def _contents(sections: list[tuple[str, str]], shown: dict[str, int]) -> str:
    """The contents list: the page's sections, then each decoder with a link to each card."""
    items = [f'<li><a href="#{a}">{_esc(t)}</a></li>' for a, t in sections]
    if shown:
        decs = "".join(
            f'<li><a href="#{_anchor(lb)}">{_esc(lb)}</a> '
            + " ".join(f'<a class="num" href="#{_anchor(lb, i)}">{i + 1}</a>' for i in range(n))
            + "</li>"
            for lb, n in shown.items()
        )
        items.append(f'<li><a href="#samples">Samples</a><ul>{decs}</ul></li>')
    return f'<nav class="toc"><b>Contents</b><ul>{"".join(items)}</ul></nav>'


def _card(label: str, i: int, row: dict[str, Any], out_dir: Path, vocab: Any, is_folk: bool) -> str:
    """One sample as a collapsible card; a folk tune with its sheet music, play button and
    files (the page's script collapses every card but each decoder's first once drawn)."""
    prompt, cont = split_prompt(row, vocab)
    pre = f'<pre><span class="prompt">{_esc(prompt)}</span>{_esc(cont)}</pre>'
    meta = f"prompt {row.get('prompt_index')}, sample {row.get('sample_index')}"
    head = f'<span class="num">#{i + 1}</span> {_esc(label)} &middot; {meta}'
    ident = f'id="{_anchor(label, i)}" data-first="{int(i == 0)}"'
    if not is_folk:
        return f'<details class="sample" {ident} open><summary>{head}</summary>{pre}</details>'
    abc = f"X:{i + 1}\n{row['text'].strip()}\n"
    stem = f"samples/{slug(label)}/tune_{i + 1:02d}"
    links = " ".join(
        f'<a href="{_esc(stem + ext)}">{ext[1:]}</a>'
        for ext in (".abc", ".mid")
        if (out_dir / (stem + ext)).exists()
    )
    return (
        f'<details class="tune" {ident} data-abc="{_esc(abc)}" open>'
        f"<summary>{head} {links}</summary>"
        '<div class="tune-head"><button class="play" type="button">&#9654; play</button></div>'
        f'<div class="notation"></div>{pre}</details>'
    )


def _samples_html(
    samples: list[dict[str, Any]],
    labels: list[str],
    out_dir: Path,
    vocab: Any,
    is_folk: bool,
    num_listen: int,
) -> tuple[str, dict[str, int]]:
    """The samples section, and how many cards each decoder has (for the contents list)."""
    by_decoder: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        by_decoder.setdefault(s["decoder"], []).append(s)
    if not by_decoder or num_listen <= 0:
        return "", {}
    what = "tunes" if is_folk else "samples"
    out = [
        f"<h2 id='samples'>Samples</h2><p class='note'>The first {num_listen} {what} of each "
        'decoder, one card each (click a title to open or close it); <span class="prompt">the '
        "prompt</span> is marked, the rest is the continuation."
        + (
            " Each tune is drawn by abcjs, a few bars a line; &#9654; plays it with a plain "
            "synthesized tone (offline, no soundfont); the .abc and .mid links open the files "
            "of this run."
            if is_folk
            else ""
        )
        + "</p>"
    ]
    shown = {}
    for label in [lb for lb in labels if lb in by_decoder]:
        rows = by_decoder[label][:num_listen]
        shown[label] = len(rows)
        out.append(
            f'<section id="{_anchor(label)}"><h3>{_esc(label)} '
            '<button class="toggle" type="button" data-open="1">open all</button> '
            '<button class="toggle" type="button" data-open="0">close all</button></h3>'
            '<div class="cards">'
        )
        out += [_card(label, i, row, out_dir, vocab, is_folk) for i, row in enumerate(rows)]
        out.append("</div></section>")
    return "\n".join(out), shown


def write_sweep_report(
    sweep_dir: str | Path,
    columns: list[str],
    rows: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    fmt: Any,
) -> Path:
    """Write `<sweep_dir>/report.html`: the summary table (each job linking to its own page),
    failed jobs, and the plots against the swept knob."""
    sweep_dir = Path(sweep_dir)

    def cell(r: dict[str, Any], c: str) -> str:
        if c == "job" and (sweep_dir / str(r["job"]) / "report.html").exists():
            return f'<a href="{_esc(r["job"])}/report.html">{_esc(r["job"])}</a>'
        return _esc(fmt(r.get(c)))

    human, shown = _human_once(rows, columns)
    parts = [
        f"<h1>seqgen sweep <small>{_esc(sweep_dir)}</small></h1>",
        f"<p>{len({r['job'] for r in rows})} jobs; each job links to its own page. The human "
        "row (held-out data, the same in every job that decodes the same prompts) is shown once "
        "for each distinct set of values, with the jobs it stands for.</p>",
        _table(
            columns,
            [[_esc(jobs)] + [cell(r, c) for c in columns[1:]] for r, jobs in human]
            + [[cell(r, c) for c in columns] for r in shown],
            ["human"] * len(human) + [""] * len(shown),
        ),
    ]
    if failed:
        parts.append(f"<h2>Failed jobs ({len(failed)})</h2><ul>")
        parts += [f"<li><code>{_esc(f['job'])}</code>: {_esc(f['error'])}</li>" for f in failed]
        parts.append("</ul>")
    parts.append(_plots(sweep_dir / "plots"))
    path = sweep_dir / "report.html"
    path.write_text(_page(f"seqgen sweep {sweep_dir.name}", "\n".join(parts), abcjs=False))
    return path


def _human_once(
    rows: list[dict[str, Any]], columns: list[str]
) -> tuple[list[tuple[dict[str, Any], str]], list[dict[str, Any]]]:
    """The human rows, one per distinct set of metric values with the jobs it stands for (its
    swept-knob cells blank where the jobs differ), and the other rows."""
    metric_cols = columns[columns.index("decoder") + 1 :] if "decoder" in columns else columns
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("decoder") == "human":
            key = json.dumps([r.get(c) for c in metric_cols], default=str)
            groups.setdefault(key, []).append(r)
    human = []
    for group in groups.values():
        merged = {c: v for c, v in group[0].items() if all(g.get(c) == v for g in group)}
        jobs = [str(g["job"]) for g in group]
        human.append((merged, jobs[0] if len(jobs) == 1 else f"{len(jobs)} jobs: {_span(jobs)}"))
    return human, [r for r in rows if r.get("decoder") != "human"]


def _span(jobs: list[str]) -> str:
    """`0-3, 7` for numbered job folders; the names joined otherwise."""
    if not all(j.isdigit() for j in jobs):
        return ", ".join(jobs)
    nums, runs = sorted(map(int, jobs)), []
    for n in nums:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# Collects script errors from the start (also those of abcjs itself) for the status element.
_ERROR_HOOK = """
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
window.addEventListener('unhandledrejection', function (e) {
  window.__errors.push('unhandled rejection: ' + String(e.reason));
});
(function () {
  var orig = console.error;
  console.error = function () {
    window.__errors.push(Array.prototype.join.call(arguments, ' '));
    return orig.apply(console, arguments);
  };
})();
"""

_RENDER_JS = """
(function () {
  var tunes = document.querySelectorAll('.tune');
  var ctx = null, notes = 0;
  function play(vis, btn) {
    if (btn._stop) { btn._stop(); return; }
    var AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) { btn.textContent = 'no audio'; return; }
    ctx = ctx || new AC();
    var flat = vis.setUpAudio();
    var meter = vis.getMeterFraction();
    var size = meter.den ? meter.num / meter.den : 1;
    var perWhole = vis.millisecondsPerMeasure(flat.tempo) / 1000 / size;  // s per whole note
    var t0 = ctx.currentTime + 0.1, end = t0, nodes = [];
    flat.tracks.forEach(function (track) {
      track.forEach(function (ev) {
        if (ev.cmd !== 'note' || ev.pitch === undefined) return;
        var start = t0 + ev.start * perWhole;
        var stop = start + Math.max(ev.duration - (ev.gap || 0), 0.01) * perWhole;
        var osc = ctx.createOscillator(), gain = ctx.createGain();
        var v = 0.3 * (ev.volume || 80) / 127;
        osc.type = 'triangle';
        osc.frequency.value = 440 * Math.pow(2, (ev.pitch - 69) / 12);
        gain.gain.setValueAtTime(0, start);
        gain.gain.linearRampToValueAtTime(v, start + 0.01);
        gain.gain.exponentialRampToValueAtTime(v * 0.3, Math.max(stop, start + 0.02));
        gain.gain.linearRampToValueAtTime(0, stop + 0.05);
        osc.connect(gain); gain.connect(ctx.destination);
        osc.start(start); osc.stop(stop + 0.06);
        nodes.push(osc); end = Math.max(end, stop + 0.06);
      });
    });
    var timer = setTimeout(reset, (end - ctx.currentTime) * 1000 + 200);
    function reset() { clearTimeout(timer); btn._stop = null; btn.innerHTML = '&#9654; play'; }
    btn._stop = function () {
      nodes.forEach(function (n) { try { n.stop(); } catch (e) {} });
      reset();
    };
    btn.innerHTML = '&#9632; stop';
  }
  tunes.forEach(function (el, i) {
    try {
      // a few bars a line, as printed tunes are: abcjs breaks lines itself (wrap needs a
      // staff width; 'resize' then scales that to the card)
      var vis = ABCJS.renderAbc(el.querySelector('.notation'), el.dataset.abc, {
        responsive: 'resize', add_classes: true, staffwidth: 720,
        wrap: { minSpacing: 1.8, maxSpacing: 2.7, preferredMeasuresPerLine: 5 },
        paddingtop: 4, paddingbottom: 4, paddingleft: 0, paddingright: 0
      })[0];
      var btn = el.querySelector('button.play');
      if (!el.querySelector('.notation .abcjs-note')) {  // only header lines: nothing to draw
        el.classList.add('empty');
        btn.disabled = true;
        return;
      }
      notes += 1;
      btn.addEventListener('click', function () {
        try { play(vis, btn); } catch (e) {
          btn.textContent = 'cannot play';
          window.__errors.push(String(e));
        }
      });
    } catch (e) {
      window.__errors.push('tune ' + (i + 1) + ': ' + e);
    }
  });
  var svgs = 0;
  tunes.forEach(function (el) { if (el.querySelector('.notation svg')) svgs += 1; });
  // drawn while open (a closed card has no size to lay out in); now each decoder's first
  // card stays open and the others close
  document.querySelectorAll('details[data-first="0"]').forEach(function (d) { d.open = false; });
  document.querySelectorAll('button.toggle').forEach(function (b) {
    b.addEventListener('click', function () {
      b.closest('section').querySelectorAll('details').forEach(function (d) {
        d.open = b.dataset.open === '1';
      });
    });
  });
  function openTarget() {
    var t = location.hash && document.getElementById(location.hash.slice(1));
    if (t && t.tagName === 'DETAILS') { t.open = true; t.scrollIntoView(); }
  }
  window.addEventListener('hashchange', openTarget);
  openTarget();
  var status = document.getElementById('render-status');
  status.dataset.tunes = tunes.length;
  status.dataset.svgs = svgs;
  status.dataset.notes = notes;
  status.dataset.errors = window.__errors.length;
  status.dataset.messages = window.__errors.join(' | ').slice(0, 2000);
  status.dataset.done = '1';
})();
"""

_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --band: #f6f8fa; --accent: #0969da;
        --prompt: #fff1c2; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 12px; }
h1 small { color: var(--muted); font-weight: normal; font-size: 15px; margin-left: 8px; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
h3 button.toggle { font: inherit; font-size: 12px; font-weight: normal; padding: 1px 8px;
                   margin-left: 6px; border: 1px solid var(--line); border-radius: 4px;
                   background: var(--band); color: var(--muted); cursor: pointer; }
nav.toc { font-size: 14px; background: var(--band); border: 1px solid var(--line);
          border-radius: 6px; padding: 8px 14px; display: inline-block; }
nav.toc ul { margin: 4px 0 0; padding-left: 18px; }
nav.toc ul ul { columns: 2; column-gap: 28px; }
nav.toc a.num { font-size: 12px; margin-left: 2px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; }
.note { color: var(--muted); font-size: 13px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: separate; border-spacing: 0; font-size: 12.5px;
        font-variant-numeric: tabular-nums; }
th, td { padding: 4px 7px; border-bottom: 1px solid var(--line); white-space: nowrap;
         text-align: right; background: #fff; }
th { background: var(--band); cursor: help; font-weight: 600; vertical-align: bottom;
     line-height: 1.2; white-space: normal; min-width: 3.5em; }
th small { color: var(--muted); font-weight: normal; }
th.text, td.text { text-align: left; }
th:first-child, td:first-child { position: sticky; left: 0; z-index: 1;
                                 border-right: 1px solid var(--line); }
tbody tr:nth-child(even) td { background: #fbfcfd; }
tr.human td { font-style: italic; background: #f3f0ff !important; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.plots img { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
.plots.two img { max-width: calc(50% - 6px); }
.plots.two img.wide { max-width: 100%; }
.cards { display: flex; flex-direction: column; gap: 8px; max-width: 920px; }
.tune, .sample { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px;
                 min-width: 0; }
.tune[open], .sample[open] { padding-bottom: 10px; }
summary { cursor: pointer; font-size: 13px; color: var(--muted); }
summary .num { font-weight: 600; color: var(--ink); }
summary a { color: var(--accent); margin-left: 6px; }
.tune-head { margin: 4px 0; }
button.play { font: inherit; font-size: 13px; padding: 2px 10px; border: 1px solid var(--line);
              border-radius: 4px; background: var(--band); cursor: pointer; color: var(--ink); }
button.play:hover { border-color: var(--accent); }
.notation svg { max-width: 100%; }
.tune.empty .notation, .tune.empty .tune-head { display: none; }
.tune.empty summary::after { content: " \00b7  no notes to draw"; }
button.play:disabled { opacity: 0.45; cursor: default; }
pre { font: 12px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
      white-space: pre-wrap; word-break: break-all; background: var(--band);
      padding: 8px 10px; border-radius: 4px; margin: 6px 0 0; }
.prompt { background: var(--prompt); border-bottom: 2px solid #d4a72c; }
a { color: var(--accent); }
"""
