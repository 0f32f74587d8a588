"""What the wheel ships and what an installed seqgen records: every subpackage and config, the
console scripts, the help page, the version and (only from a checkout) the commit.
`.ci/run` builds and installs the real wheel; these tests check the declarations it is built from.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch

import pytest
from conftest import CONF_DIR, ROOT, run_cli

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def test_every_subpackage_and_config_is_shipped():
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "seqgen").rglob("__init__.py")
    }
    conf_dirs = {
        ".".join(("seqgen", "conf", *p.parent.relative_to(CONF_DIR).parts))
        for p in CONF_DIR.rglob("*.yaml")
    }
    conf_dirs |= {d.rsplit(".", 1)[0] for d in conf_dirs if d.count(".") > 2}  # hydra/
    assert on_disk | conf_dirs == set(SETUPTOOLS["packages"])
    assert SETUPTOOLS["package-dir"] == {"seqgen.conf": "conf"}
    patterns = SETUPTOOLS["package-data"]["seqgen.conf"]
    configs = [p.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*.yaml")]
    assert configs and all(any(fnmatch(c, pat) for pat in patterns) for c in configs)
    assert (CONF_DIR / "__init__.py").exists()  # Hydra's pkg:// needs a package


def test_console_scripts_and_version_resolve():
    import seqgen

    for name, target in PYPROJECT["project"]["scripts"].items():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), name
    assert set(PYPROJECT["project"]["scripts"]) == {"seqgen", "seqgen-sample", "seqgen-score"}
    assert SETUPTOOLS["dynamic"]["version"] == {"attr": "seqgen.__version__"}
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert seqgen.__version__


def test_tests_imports_are_declared():
    declared = " ".join(PYPROJECT["project"]["dependencies"])
    declared += " " + " ".join(PYPROJECT["project"]["optional-dependencies"]["dev"])
    text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("*.py"))
    for module, dist in (("scipy", "scipy"), ("nltk", "nltk"), ("pytest", "pytest")):
        if f"import {module}" in text or f"from {module}" in text:
            assert dist in declared, dist


@pytest.mark.slow
def test_help_starts_with_what_seqgen_does_then_the_groups(tmp_path):
    proc = run_cli(["--help"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("seqgen: decoding experiments with recurrent language models")
    assert out.index("== Commands used most ==") < out.index("== Configuration groups ==")
    assert "seqgen-sample run=" in out
    decoders = sorted(p.stem for p in (ROOT / "conf" / "decoder").glob("*.yaml"))
    assert f"decoder: {', '.join(decoders)}" in out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_only_from_a_checkout(tmp_path):
    """A copy of the package inside some other repository (a venv in a project folder) must
    not record that repository's commit; the checkout records its own HEAD."""
    from seqgen.tracking import git_commit, run_provenance

    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if (ROOT / ".git").exists():
        assert git_commit() == head
    other = tmp_path / "project"
    site = other / "venv" / "site-packages"
    shutil.copytree(ROOT / "seqgen", site / "seqgen", ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=other, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=other, check=True)
    code = "from seqgen.tracking import run_provenance; print(run_provenance())"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=site, capture_output=True, text=True, check=True
    )
    import seqgen

    assert proc.stdout.strip() == str({"seqgen_version": seqgen.__version__, "git_commit": None})
    assert run_provenance()["seqgen_version"] == seqgen.__version__


def test_ci_script_overrides_are_valid_for_the_current_schema():
    """`.ci/run` calls the installed `seqgen` with overrides; a key retired from the schema (as
    `data.max_len` was) must fail here, in the suite, not first in CI."""
    import shlex

    from conftest import compose

    from seqgen.config import validate_config

    text = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("seqgen data=")]
    assert lines, "the .ci/run smoke command was not found"
    overrides = [a for a in shlex.split(lines[0])[1:] if not a.startswith("hydra.")]
    validate_config(compose(overrides))  # test_config checks that a retired key is refused


def test_no_function_in_the_package_is_over_80_lines():
    """The shape rule of issue 17: a longer function is split into named steps."""
    import ast

    long = []
    for path in sorted((ROOT / "seqgen").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, long
