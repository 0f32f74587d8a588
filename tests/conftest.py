"""Test-wide settings: CPU, no W&B network, a private model cache, tiny composed configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_configure(config: pytest.Config) -> None:
    """`pytest -m "not slow"`, the quick subset, is compile-bound: its programs compile with
    LLVM at -O0 (`--xla_backend_optimization_level=0`: the same HLO, IEEE arithmetic without
    fast-math, less optimized machine code; 33% less time). The full suite, the README's
    command and CI, compiles as the pipeline does. Runs before any test module imports JAX."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "not slow" in (config.option.markexpr or "") and "optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"

# A run small enough for a test: a 6-symbol DPFSA, a 16-unit LSTM, 20 training steps.
TINY = [
    "data=synthetic",
    "data.num_train=300",
    "model.hidden_size=16",
    "model.embed_size=8",
    "model.num_layers=1",
    "train=tiny",
    "decode.prompts=none",
    "decode.num_samples=8",
    "decode.max_len=16",
    "decode.batch_size=64",
    "metrics.abc_subset=0",
    "output.plots=false",
]

# A run with one sampling decoder and two typed prompts, 3 samples each: seqgen-sample
# (test_sample) and the Python API (test_api) decode it again and must give its tokens.
SAMPLE_DECODER = ["decoder=sample", "decoder.top_p=0.9", "decoder.temperature=0.8"]
SAMPLE_PROMPTS = ["ab", "c"]
SAMPLE_RUN = [*TINY, *SAMPLE_DECODER, "decode.prompts=[ab,c]", "decode.num_samples=3"]


def read_samples(out: Path) -> list[dict]:
    """A run dir's `samples.jsonl`, one dict per line."""
    import json

    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("seqgen_cache")
    os.environ["SEQGEN_CACHE"] = str(path)
    return path


def compose(overrides: list[str]):
    """Compose `conf/config.yaml` with overrides, as `python -m seqgen.run` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from seqgen.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300):
    """`python -m seqgen.run ARGS` in a subprocess; returns the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "seqgen.run", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
