"""`plugins=[...]` (seqgen/plugins.py): a processor, a decoder, a metric and a model, each added
from one file of the user's, run through the config (`plugins=[path]`, as the command line
composes it), the Python API (`seqgen.run`, `seqgen.load`, `Model.generate`,
`seqgen.metrics.compute`) and, in the slow test, `python -m seqgen.run` and a multirun whose
jobs run in other processes."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, read_samples, run_cli

import seqgen
from seqgen import plugins
from seqgen.compose import compose_config
from seqgen.config import register_configs
from seqgen.errors import UserError
from seqgen.metrics import compute, table
from seqgen.models import unregister_model
from seqgen.plugins import import_plugins, module_name
from tests.helpers_decoding import restored_tables

# ----- the user's file -----

PLUGIN = '''
"""A user's extensions: one processor, one decoder, one metric, one model."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seqgen.decoding import Knob, decode, register_decoder, register_processor
from seqgen.decoding.common import get
from seqgen.metrics import register_metric
from seqgen.models import ModelSpec, register_model
from seqgen.models.protocol import mask_logits, never_predicted


def ban(logits, ctx):
    """Ban the token `plug_ban` (-1: off)."""
    return jnp.where(jnp.arange(logits.shape[-1]) == ctx.knobs["plug_ban"], -jnp.inf, logits)


def best_of(req, prep):
    """The most probable of `plug_candidates` ancestral samples per prompt."""
    out = decode(
        req.step_fn, req.params, req.init_carry, prep.prompts, prep.prompt_lengths,
        cfg={"name": "sample"}, max_len=req.max_len,
        num_samples=int(get(req.cfg, "plug_candidates")), key=prep.key,
        vocab_size=req.vocab_size, prompt_ids=prep.prompt_ids, constraint=req.constraint,
        loop=req.loop,
    )
    best = jnp.argmax(out.scores, axis=1)  # [B]
    at = lambda x: best.reshape((-1, 1) + (1,) * (x.ndim - 2))
    keep = lambda x: x if x.ndim < 2 else jnp.take_along_axis(x, at(x), axis=1)
    return jax.tree.map(keep, out)  # every [B, N, ...] field as [B, 1, ...]


def total_tokens(g):
    """The number of continuation tokens, EOS not counted."""
    return float(np.sum(g.packed.lengths))


class Bigram(nnx.Module):
    """The next token's logits from the previous token alone."""

    def __init__(self, vocab_size, *, embed_size, predict_eos, rngs):
        self.embed = nnx.Embed(vocab_size, embed_size, rngs=rngs)
        self.out = nnx.Linear(embed_size, vocab_size, rngs=rngs)
        self.never = never_predicted(predict_eos)

    def __call__(self, tokens, *, rngs=None, backward="autodiff"):
        return mask_logits(self.out(self.embed(tokens)), self.never)

    def init_carry(self, batch_size, max_len=None):
        return jnp.zeros((batch_size, 1), jnp.float32)

    def step(self, carry, tokens):
        return carry, self(tokens)


register_processor("plug_ban", ban, stage="penalty",
                   knobs=(Knob("plug_ban", int, -1, traced=True, low=-1, neutral=-1),))
register_decoder("plug_best_of", best_of, rows=1, nbest=False,
                 knobs=(Knob("plug_candidates", int, 2, low=1),))
register_metric("plug/total_tokens", total_tokens, unit="tokens", better="none")
register_model(ModelSpec(
    "plug_bigram",
    build=lambda fields, vocab_size, **kw: Bigram(vocab_size, **fields, **kw),
    fields=("embed_size",),
    activation_floats=lambda fields, vocab_size, seq_len: fields["embed_size"] + 3 * vocab_size,
))
'''

BANNED = 4  # the first symbol of the DPFSA's alphabet (ids 0-3 are PAD, BOS, EOS, UNK)
COMPARE = "compare=[{name:sample},{name:sample,plug_ban:4},{name:plug_best_of,plug_candidates:4}]"
RUN = [*TINY, "model.cell=plug_bigram", COMPARE]


@contextmanager
def fresh_process(path):
    """As in a fresh process: the plugin not imported on entry; the rows it registers inside
    (processor, decoder, metric, model) gone on exit."""
    with restored_tables():
        try:
            yield
        finally:
            unregister_model("plug_bigram")
            table.METRICS[:] = [m for m in table.METRICS if m.keys[0].name != "plug/total_tokens"]
            sys.modules.pop(module_name(str(path)), None)
            plugins.IMPORTED[:] = [e for e in plugins.IMPORTED if e != str(path.resolve())]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "my_ext.py"
    path.write_text(PLUGIN)
    with fresh_process(path):
        yield path
    register_configs()  # the schema without the plugin's knobs again


def _by_decoder(out) -> tuple[list[dict], dict[str, list[dict]]]:
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    samples: dict[str, list[dict]] = {}
    for s in read_samples(out):
        samples.setdefault(s["decoder"], []).append(s)
    return rows, samples


@pytest.mark.slow  # trains the plugin's model and compiles four decoders: about a minute
def test_each_extension_runs_from_the_config_and_the_api(plugin, cache_dir, tmp_path):
    out = tmp_path / "run"
    with fresh_process(plugin):
        seqgen.run([*RUN, f"plugins=[{plugin}]"], out_dir=out)
    rows, samples = _by_decoder(out)
    assert [r["decoder"]["name"] for r in rows] == ["sample", "sample", "plug_best_of", "human"]
    free, banned, best = (samples[r["decoder"]["label"]] for r in rows[:3])
    # the processor: the token free sampling draws is never drawn once it is banned
    assert any(BANNED in s["token_ids"] for s in free)
    assert len(banned) == 8 and not any(BANNED in s["token_ids"] for s in banned)
    # the metric: by hand from each decoder's written samples
    for r in rows[:3]:
        got = r["metrics"]["plug/total_tokens"]
        assert got == sum(len(s["token_ids"]) for s in samples[r["decoder"]["label"]])
    # the decoder: one row per prompt, its score the decoder's own
    assert len(best) == 1 and rows[2]["metrics"]["score/mean"] == pytest.approx(best[0]["score"])
    # the model: trained and cached under its own name
    info = json.loads((out / "metrics.json").read_text())
    meta = json.loads((Path(info["model"]["cache_dir"]) / "meta.json").read_text())
    assert meta["model"]["cell"] == "plug_bigram" and np.isfinite(info["ppl/valid"])

    # a fresh process: nothing registered; seqgen.load imports the run's plugins again
    with fresh_process(plugin):
        _reload_and_generate(out, plugin, [s["token_ids"] for s in free])
    # the cache entry alone loads too: its meta.json names the plugins of the training process
    with fresh_process(plugin):
        entry = seqgen.load(info["model"]["cache_dir"])
        assert entry.config.model.cell == "plug_bigram"
        same = entry.generate(None, "sample", num_samples=8, max_len=16)
        assert [list(t) for t in same.token_ids] == [s["token_ids"] for s in free]


def _reload_and_generate(out, plugin, free_ids: list[list[int]]) -> None:
    """The run loaded again: its model gives the run's tokens, and the plugin's processor,
    decoder and metric run through `Model.generate` and `seqgen.metrics.compute`."""
    model = seqgen.load(out)
    assert list(model.config.plugins) == [str(plugin)]
    again = model.generate(None, "sample", num_samples=8, max_len=16)  # the run's first key
    assert [list(t) for t in again.token_ids] == free_ids
    kept = model.generate(None, "sample", num_samples=8, max_len=16, plug_ban=BANNED)
    assert not any(BANNED in t for t in kept.token_ids)
    # the decoder's best is the most probable of the same key's samples
    pool = model.generate(None, "sample", num_samples=5, max_len=16, seed=3)
    top = model.generate(None, "plug_best_of", plug_candidates=5, max_len=16, seed=3)
    i = int(np.argmax(pool.scores))
    assert top.scores[0] == pytest.approx(pool.scores[i])
    assert list(top.token_ids[0]) == list(pool.token_ids[i])
    total = compute(kept.generations)["plug/total_tokens"]
    assert total == sum(len(t) for t in kept.token_ids)


def test_a_plugin_imported_twice_registers_once(plugin):
    import_plugins([str(plugin)])
    first = sys.modules[module_name(str(plugin))]
    import_plugins([str(plugin), str(plugin)])  # no "the name clashes"
    assert sys.modules[module_name(str(plugin))] is first
    assert compose_config([f"plugins=[{plugin}]", "decoder=plug_best_of"]).decoder.plug_candidates


def test_an_experiment_file_names_a_plugin_and_its_decoder(plugin, tmp_path, monkeypatch):
    """`+experiment=NAME` whose file lists `plugins:` and selects the plugin's decoder in its
    defaults: the plugin is imported before Hydra composes the decoder group."""
    import shutil

    from seqgen import compose

    conf = tmp_path / "conf"
    shutil.copytree(compose.CONF_DIR, conf)
    (conf / "experiment" / "plug.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /decoder: plug_best_of\n"
        f"plugins: [{plugin}]\ndecoder:\n  plug_candidates: 3\n"
    )
    monkeypatch.setattr(compose, "CONF_DIR", conf)
    with fresh_process(plugin):
        register_configs()  # the schema without the plugin: as a fresh process has it
        cfg = compose_config(["+experiment=plug"])
        assert cfg.decoder.name == "plug_best_of" and cfg.decoder.plug_candidates == 3
        assert list(cfg.plugins) == [str(plugin)]


@pytest.mark.parametrize(
    "source, needle",
    [
        (None, "does not exist"),
        ("raise RuntimeError('boom')\n", "failed: RuntimeError: boom"),
        ("import no_such_module_xyz\n", "ModuleNotFoundError: No module named 'no_such_mod"),
    ],
)
def test_a_broken_plugin_is_one_line(source, needle, tmp_path, capsys):
    from seqgen.run import _check_overrides

    path = tmp_path / "broken.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(UserError, match=needle) as info:
        compose_config([f"plugins=[{path}]"])
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SystemExit) as ex:  # the command line: `error: <that line>`, status 2
        _check_overrides([f"plugins=[{path}]"])
    assert ex.value.code == 2 and capsys.readouterr().err == f"error: {info.value}\n"
    with pytest.raises(UserError, match="no module 'no_such.plugin'"):
        compose_config(["plugins=[no_such.plugin]"])


@pytest.mark.slow
def test_the_command_line_and_a_multirun_in_other_processes(plugin, cache_dir, tmp_path):
    one = tmp_path / "one"
    args = [*RUN, f"plugins=[{plugin}]"]
    res = run_cli([*args, f"hydra.run.dir={one}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    rows, samples = _by_decoder(one)
    assert not any(BANNED in s["token_ids"] for s in samples[rows[1]["decoder"]["label"]])
    # two jobs, each in a joblib worker process that imports the plugin itself
    sweep = tmp_path / "sweep"
    job = [*TINY, "model.cell=plug_bigram", f"plugins=[{plugin}]", "decoder=sample"]
    res = run_cli(
        ["-m", "hydra/launcher=parallel", *job, "decoder.plug_ban=4,5", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    for i, ban in enumerate((4, 5)):
        rows, samples = _by_decoder(sweep / str(i))
        (kept,) = samples.values()
        assert len(kept) == 8 and not any(ban in s["token_ids"] for s in kept)
        assert rows[0]["metrics"]["plug/total_tokens"] == sum(len(s["token_ids"]) for s in kept)
