"""`seqgen-sample`: generate from a model a run trained, with any decoder, without re-running the
evaluation (what char-rnn's `sample.lua`, folk-rnn's sampler and nanoGPT's `sample.py` are for).

    seqgen-sample run=outputs/default/<date> decoder=sample decoder.top_p=0.9 num_samples=3
    seqgen-sample run=<run dir> prompt='M:6/8\\nK:D\\n|:' out=my_tunes
    seqgen-sample model_dir=~/.cache/seqgen/models/<key> prompts=heldout num_prompts=4
    seqgen-sample --list

The model comes from a run dir (its `config.yaml`, and the cache entry in its `metrics.json`) or
from a model-cache entry (`model_dir=`, whose `meta.json` names the data it was trained on). The
decoding is the Python API's (`seqgen.api.Model.decode_config`), which is the pipeline's own
(`prepare_prompts`, `decode_all`, `generations`) with the key a run with one `decoder=` uses, so
the same seed, decoder and prompts give the run's own tokens.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from seqgen.errors import UserError
from seqgen.paths import cache_root

log = logging.getLogger("seqgen")


@dataclass
class SampleOptions:
    """The sampler's own keys (`key=value` on the command line); `decoder=`/`decoder.*` aside."""

    run: str | None = None  # a run dir, as a run printed it ("done in ... -> DIR")
    model_dir: str | None = None  # a model-cache entry (`seqgen-sample --list` shows them)
    prompt: list[str] = field(default_factory=list)  # typed prompts; `\n` is a line break
    prompts: str = "none"  # none (the empty start) | heldout (held-out openings); or prompt=
    num_samples: int = 5  # sequences per prompt (sampling; beams give their best)
    max_len: int | None = None  # prompt + continuation, in tokens (default: the run's)
    num_prompts: int | None = None  # held-out openings (default: the run's)
    prompt_len: int | None = None  # tokens of each held-out opening (default: the run's)
    seed: int | None = None  # decoding seed (default: the run's, which reproduces its decode)
    out: str | None = None  # write samples.jsonl, samples/<decoder>.txt, .abc and .mid here
    cache_dir: str | None = None  # for --list (default: $SEQGEN_CACHE or ~/.cache/seqgen)


_KEYS = tuple(f.name for f in fields(SampleOptions))
_INT_KEYS = ("num_samples", "max_len", "num_prompts", "prompt_len", "seed")


def parse_args(argv: list[str]) -> tuple[SampleOptions, str | None, list[str]]:
    """`key=value` arguments -> (options, `decoder=` name or None, `decoder.KNOB=V` dotlist)."""
    opts = SampleOptions()
    name, knobs = None, []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise UserError(f"{arg!r} is not key=value; see seqgen-sample --help")
        if key == "decoder":
            name = value
        elif key.startswith("decoder."):
            knobs.append(arg)
        elif key == "prompt":
            opts.prompt.append(value)
        elif key in _INT_KEYS:
            try:
                setattr(opts, key, int(value))
            except ValueError:
                raise UserError(f"{key}={value!r} is not an integer") from None
        elif key in _KEYS:
            setattr(opts, key, value)
        else:
            allowed = ", ".join(k for k in _KEYS) + ", decoder, decoder.KNOB"
            raise UserError(f"unknown key '{key}'; allowed keys: {allowed}")
    return opts, name, knobs


def read_source(opts: SampleOptions) -> tuple[DictConfig, Path | None]:
    """The trained model's config and its cache entry (None for the DPFSA oracle), from
    `opts.run` or `opts.model_dir` (`seqgen.load` reads a folder through here too), each
    source file checked for its shape and, for a cache entry, its checksums
    (`seqgen.preflight`)."""
    from seqgen.compose import compose_config
    from seqgen.preflight import merge_saved_config, read_model_source, read_run_source

    if bool(opts.run) == bool(opts.model_dir):
        raise UserError("give run=<run dir> or model_dir=<model-cache entry> (one of them)")
    if opts.run:
        return read_run_source(opts.run)
    trained, path = read_model_source(opts.model_dir)
    what = f"model_dir={opts.model_dir}: meta.json"
    return merge_saved_config(trained, what, compose_config([])), path


def _decoder(cfg: DictConfig, name: str | None, knobs: list[str]) -> DictConfig:
    """`decoder=NAME` from conf/decoder/, else the run's own decoder, else pure sampling;
    then the `decoder.KNOB=V` overrides."""
    from seqgen import config
    from seqgen.api import decoder_config
    from seqgen.compose import explain

    try:
        user = OmegaConf.from_dotlist(knobs).decoder if knobs else {}
    except Exception as exc:
        raise UserError(explain(exc, knobs)) from None
    if name is not None or cfg.get("decoder") is None:
        return decoder_config(name or "sample", user)
    try:
        return OmegaConf.merge(OmegaConf.structured(config.DecoderConfig), cfg.decoder, user)
    except Exception as exc:
        raise UserError(explain(exc, knobs)) from None


def sample(argv: list[str]) -> dict[str, Any]:
    """Decode from a trained model as `seqgen-sample ARGS` does (without printing).

    Returns `{"samples": [one samples.jsonl object per sequence], "corpus": name,
    "decoder": {...}, "cfg": the config decoded with}`; with `out=DIR` also writes the files.
    """
    from seqgen.api import Model
    from seqgen.config import Config, field_knobs, to_dict, validate_config
    from seqgen.preflight import SAMPLE_OWNER_MARK, check_sample_out

    opts, name, knobs = parse_args(argv)
    cfg, model_dir = read_source(opts)
    cfg.decoder = _decoder(cfg, name, knobs)
    if opts.prompt:
        cfg.decode.prompts = list(opts.prompt)
    else:
        cfg.decode.prompts = opts.prompts
    cfg.decode.num_samples = opts.num_samples
    for key in ("max_len", "num_prompts", "prompt_len"):
        if getattr(opts, key) is not None:
            cfg.decode[key] = getattr(opts, key)
    decode_seed = int(cfg.seed) if opts.seed is None else opts.seed
    validate_config(cfg)
    field_knobs(Config)["seed"].check(decode_seed)  # unsigned 32-bit, like the run's seed
    out_dir = check_sample_out(opts.out) if opts.out else None  # before any decoding

    # the corpus, then (vocabulary-bound knobs, prompts, decode budget checked) the model
    model = Model.from_source(cfg, model_dir)
    records = model.decode_config(cfg, decode_seed).records
    corpus, dec = model.corpus, cfg.decoder
    if out_dir is not None:
        from seqgen.outputs import reset_outputs, write_samples

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SAMPLE_OWNER_MARK).write_text("written by seqgen-sample\n")
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        reset_outputs(out_dir)
        write_samples(corpus.name, records, out_dir, num_listen=len(records))
        log.info("wrote %d samples -> %s", len(records), out_dir)
    return {"samples": records, "corpus": corpus.name, "decoder": to_dict(dec), "cfg": cfg}


def list_models(cache_dir: str | None = None) -> list[dict[str, Any]]:
    """The cached models, newest first: path, data, model, steps, ppl/valid, when."""
    root = cache_root(cache_dir) / "models"
    if not root.is_dir():
        raise UserError(
            f"no model cache at {root.parent} (no models/ folder); allowed: cache_dir=<a seqgen "
            "cache> (default $SEQGEN_CACHE, else ~/.cache/seqgen)"
        )
    rows = []
    for meta_path in root.glob("*/meta.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        m, data = meta.get("model", {}), meta.get("data_cfg") or {"name": meta.get("data")}
        rows.append(
            {
                "model_dir": str(meta_path.parent),
                "data": "/".join(str(data[k]) for k in ("name", "level") if data.get(k)),
                "model": f"{m.get('cell')} {m.get('num_layers')}x{m.get('hidden_size')}",
                "steps": meta.get("train", {}).get("steps"),
                "ppl/valid": meta.get("metrics", {}).get("ppl/valid"),
                "when": meta_path.stat().st_mtime,
            }
        )
    return sorted(rows, key=lambda r: -r["when"])


def _print_list(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="seqgen: cached models (use model_dir=...)")
    for c in ("when", "data", "model", "steps", "ppl/valid", "model_dir"):
        table.add_column(c, justify="right" if c in ("steps", "ppl/valid") else "left")
    for r in rows:
        ppl = r["ppl/valid"]
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["when"])),
            r["data"],
            r["model"],
            str(r["steps"] if r["steps"] is not None else "-"),
            f"{ppl:.3f}" if isinstance(ppl, int | float) else "-",
            r["model_dir"],
        )
    Console(width=200).print(table)


HELP = (
    __doc__.split("\n\n", 1)[0]
    + """

usage: seqgen-sample run=DIR | model_dir=DIR [decoder=NAME] [decoder.KNOB=V ...] [key=value ...]
       seqgen-sample --list [cache_dir=DIR]

keys:
  run=DIR           a run dir (loads its model, data and decoder)
  model_dir=DIR     a model-cache entry (seqgen-sample --list)
  decoder=NAME      greedy | sample | beam | stochastic_beam | diverse_beam (default: the run's
                    decoder, else sample); decoder.KNOB=V as for seqgen (decoder.top_p=0.9)
  prompt=TEXT       a typed prompt ('\\n' is a line break); repeat for several
  prompts=MODE      none (the empty start, default) | heldout (held-out openings)
  num_samples=N     sequences per prompt (default 5)
  max_len=N, num_prompts=N, prompt_len=N   as decode.* (default: the run's)
  seed=N            decoding seed (default: the run's; reproduces the run's own decode)
  out=DIR           also write samples.jsonl, samples/<decoder>.txt, .abc and .mid there

The generations go to stdout (a blank line between tunes, a rule between texts); the log to
stderr.
"""
)


def cli() -> None:
    import os

    os.environ.setdefault("WANDB_MODE", "disabled")
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)  # seqgen's own lines; JAX's and orbax's only when they warn
    argv = sys.argv[1:]
    try:
        if any(a in ("-h", "--help") for a in argv):
            print(HELP)
            return
        if "--list" in argv:
            opts, _, _ = parse_args([a for a in argv if a != "--list"])
            _print_list(list_models(opts.cache_dir))
            return
        result = sample(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except OSError as exc:  # a full disk or read-only file system while writing out=
        from seqgen.errors import storage_error_message

        if storage_error_message(exc) is None:
            raise
        print(f"error: {storage_error_message(exc)}", file=sys.stderr, flush=True)
        sys.exit(2)
    from seqgen.outputs import sample_separator

    print(sample_separator(result["corpus"]).join(s["text"] for s in result["samples"]))


if __name__ == "__main__":
    cli()
