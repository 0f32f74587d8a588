"""Every rendered block of the READMEs (results tables, the numbers quoted beside them) is what
`scripts/render_tables.py` renders from the results files in the repository."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("render_tables", ROOT / "scripts/render_tables.py")
render_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_tables)


@pytest.mark.parametrize("readme", render_tables.readmes())
def test_readme_matches_its_results_files(readme):
    text = (ROOT / readme).read_text()
    assert render_tables.render(readme, text) == text, (
        f"{readme} differs from its results files: run python scripts/render_tables.py"
    )


def test_an_edited_number_is_found_and_rendered_back():
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- render:default-table -->")
    row = text.index("| greedy |", start)
    cell = text.index(" | ", row + len("| greedy"))  # the greedy row's gen/ppl cell
    end = text.index(" |", cell + 3)
    edited = text[: cell + 3] + "9.999" + text[end:]
    assert edited != text
    assert render_tables.render("README.md", edited) == text
    with pytest.raises(SystemExit, match="no <!-- render:default-table -->"):
        render_tables.render("README.md", text.replace("render:default-table", "render:x"))


def test_every_readme_with_a_results_folder_is_rendered():
    experiments = {p.parent.name for p in ROOT.glob("experiments/*/results")}
    rendered = {Path(r).parent.name for r in render_tables.readmes() if r.startswith("experiments")}
    assert experiments == rendered


def test_a_number_quoted_in_prose_is_rendered_back():
    readme = "experiments/degeneration/README.md"
    text = (ROOT / readme).read_text()
    ppl = render_tables.metrics("experiments/degeneration/results/metrics.json")["ppl/valid"]
    quoted = f" ppl/valid .2f -->{ppl:.2f}<!-- /render:value -->"
    assert quoted in text
    edited = text.replace(quoted, " ppl/valid .2f -->1.23<!-- /render:value -->")
    assert edited != text and render_tables.render(readme, edited) == text


def test_a_quoted_number_of_a_label_with_spaces_is_rendered():
    """Prose quotes rows like `beam 16`: the key is everything between the path and format."""
    path = "experiments/degeneration/results/results.jsonl"
    want = render_tables.results(path)["beam 16"]["gen/ppl"]
    text = f"x <!-- render:value {path} beam 16#gen/ppl .4f -->0<!-- /render:value --> y"
    assert render_tables.render("none", text) == text.replace("-->0<", f"-->{want:.4f}<")
