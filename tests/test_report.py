"""The report page: prompts marked, sweep pages linking to jobs, plot panels, and a real browser
(headless Chromium) rendering every tune of a tiny folk run as sheet music."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import compose

from seqgen.data.vocab import Vocab
from seqgen.report import split_prompt

NUM_LISTEN = 3
FOLK = [
    "data=folk",
    "data.max_sequences=60",
    "model.hidden_size=16",
    "model.embed_size=8",
    "model.num_layers=1",
    "train=tiny",
    # typed openings that end their header line, so the continuation is the tune's body
    r"decode.prompts=['M:6/8\nK:D\n','M:2/4\nK:G\n','M:3/4\nK:Am\n']",
    "decode.max_len=96",
    "metrics.abc_subset=4",
    f"output.num_listen={NUM_LISTEN}",
    "compare=[{name:greedy},{name:sample,top_k:8,label:top-k 8}]",
]


@pytest.mark.parametrize("level", ["char", "word"])
def test_split_prompt_from_field_ids_or_derived(level):
    vocab = Vocab.build(["M:6/8 K:D abc de", "fg ab c"], level)
    prompt, cont = ("M:6/8 K:D ", "abc de") if level == "char" else ("M:6/8 K:D", "abc de")
    p_ids = vocab.encode(prompt)
    c_ids = vocab.encode(cont)
    text = vocab.decode(p_ids + c_ids)
    row = {"text": text, "token_ids": c_ids}
    want = vocab.decode(p_ids)
    for r in (row, {**row, "prompt": want}, {**row, "prompt": p_ids}):
        got_p, got_c = split_prompt(r, vocab)
        assert got_p.strip() == want.strip() and got_p + got_c == text
        assert got_c.strip() == vocab.decode(c_ids).strip()
    assert split_prompt(row, None) == ("", text)  # no vocabulary, no prompt field: unmarked
    assert split_prompt({"text": text, "token_ids": [], "prompt": None}, vocab) == (text, "")


def _write_job(sweep: Path, num: int, overrides: list[str], results: list[dict]) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    (job / "report.html").write_text("<html></html>")


def test_sweep_page_links_jobs_and_splits_scores_by_length_penalty(tmp_path):
    from matplotlib.image import imread

    from seqgen.sweep import write_summary

    def beam(lp, k, score):
        return {
            "decoder": {"name": "beam", "beam_size": k, "length_penalty": lp, "label": "beam"},
            "metrics": {"score/mean": score, "gen/ppl": 3.0 + k},
        }

    human = {"decoder": {"name": "human", "label": "human"}, "metrics": {"gen/ppl": 5.0}}
    num = 0
    for lp, scale in (("none", -100.0), ("average", -1.0)):
        for k in (1, 4):
            overrides = [f"decoder.beam_size={k}", f"decoder.length_penalty={lp}"]
            _write_job(tmp_path, num, overrides, [beam(lp, k, scale / k), human])
            num += 1
    summary = write_summary(tmp_path)
    page = (tmp_path / "report.html").read_text()
    links = re.findall(r'<a href="([^"]+)">', page)
    gen = [r for r in summary["rows"] if r["decoder"] != "human"]
    assert links == [f"{r['job']}/report.html" for r in gen]
    assert all((tmp_path / link).exists() for link in links)
    # the same human row in every job: shown once, first, naming the jobs it stands for
    rows = re.findall(r'<tr class="([^"]*)">(.*?)</tr>', page, flags=re.S)
    assert [cls for cls, _ in rows] == ["human"] + [""] * len(gen)
    assert "4 jobs: 0-3" in rows[0][1]
    # unnormalized (nats) and length-normalized (nats/token) scores: two panels, never one
    score = imread(tmp_path / "plots" / "score_mean.png")
    ppl = imread(tmp_path / "plots" / "gen_ppl.png")
    assert score.shape[0] == ppl.shape[0] and score.shape[1] == 2 * ppl.shape[1]


def test_decoder_plots_have_abc_panels_when_the_run_has_them(tmp_path):
    from matplotlib.image import imread

    from seqgen.outputs import plot_decoders

    base = {"gen/ppl": 4.0, "diversity/self_bleu4": 0.5, "zipf": 1.1}
    folk = {**base, "abc/parse_rate": 0.9, "abc/bar_ok_rate": 0.4}
    heights = []
    for i, metrics in enumerate((base, folk)):
        res = [{"decoder": {"name": "sample", "label": "s"}, "metrics": metrics}]
        heights.append(imread(plot_decoders(res, tmp_path / str(i))[0]).shape[0])
    assert heights[1] == 2 * heights[0]  # 3 panels: one row of three; 5: two rows


@pytest.fixture(scope="module")
def folk_run(cache_dir, tmp_path_factory):
    from seqgen.data.corpus import load_corpus
    from seqgen.experiment import run_experiment
    from seqgen.prompts import make_prompts

    out = tmp_path_factory.mktemp("folk_run")
    cfg = compose(FOLK)
    run_experiment(cfg, out_dir=out)
    corpus = load_corpus(cfg.data, int(cfg.seed))
    prompts = [corpus.vocab.decode(p) for p in make_prompts(cfg.decode, corpus).prompts]
    return out, prompts


@pytest.mark.slow
def test_folk_report_marks_every_prompt_and_needs_no_network(folk_run):
    out, prompts = folk_run
    page = (out / "report.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    shown = [[s for s in samples if s["decoder"] == d][:NUM_LISTEN] for d in ("greedy", "top-k 8")]
    shown = shown[0] + shown[1]
    marked = re.findall(r'<pre><span class="prompt">(.*?)</span>', page, flags=re.S)
    assert len(shown) == 2 * NUM_LISTEN and len(marked) == len(shown)
    for s, m in zip(shown, marked):
        assert html.unescape(m) == prompts[s["prompt_index"]]
    assert "data:image/png;base64," in page


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Chromium (apt-get install chromium)"
)
def test_folk_report_renders_every_tune_in_chromium(folk_run, tmp_path):
    out, _ = folk_run
    proc = subprocess.run(
        [
            "chromium",
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    status = re.search(r'<div id="render-status"([^>]*)>', proc.stdout)
    assert status, proc.stderr[-2000:]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', status.group(1)))
    assert attrs["done"] == "1", attrs
    assert attrs["errors"] == "0", html.unescape(attrs.get("messages", ""))
    assert int(attrs["tunes"]) == 2 * NUM_LISTEN
    assert attrs["svgs"] == attrs["tunes"]
    # every notation block holds its own SVG; every sampled tune (notes after its header) has
    # notes drawn; greedy's may be header lines only
    blocks = re.findall(r'<div class="notation[^"]*"[^>]*>(.*?)</div><pre>', proc.stdout, re.S)
    assert len(blocks) == 2 * NUM_LISTEN and all("<svg" in b for b in blocks)
    assert all("abcjs-note" in b for b in blocks[NUM_LISTEN:])
    assert int(attrs["notes"]) == sum("abcjs-note" in b for b in blocks)
    # tunes wrap into lines of a few bars (abcjs numbers the bars of each line from 0)
    assert max(int(m) for m in re.findall(r"abcjs-m(\d+)", proc.stdout)) < 9
    # a contents entry per decoder; every card but each decoder's first closed once drawn
    cards = re.findall(r'<details class="tune[^"]*"([^>]*)>', proc.stdout)
    assert len(cards) == 2 * NUM_LISTEN
    assert [c.endswith(' open=""') for c in cards] == [True, False, False] * 2
    assert all(f'href="#dec-{d}"' in proc.stdout for d in ("greedy", "top-k_8"))


def test_architecture_line_names_what_the_cell_reads():
    from seqgen.report import _architecture

    base = {"num_layers": 2, "hidden_size": 96, "embed_size": 64, "num_heads": 4}
    lstm = _architecture({**base, "cell": "lstm", "positions": "learned"})
    assert lstm == "LSTM 2 x 96, embedding 64"  # a Transformer field is not the LSTM's
    transformer = _architecture({**base, "cell": "transformer", "positions": "rope"})
    assert transformer == "TRANSFORMER 2 x 96, 4 heads, rope positions"  # no embed_size
