"""The command line's override pre-check (`seqgen.run._check_overrides`, which calls
`compose.check_overrides`): every value of every sweep, given on the command line or by an
experiment file, is composed and validated with Hydra's own grammar before Hydra starts; a
mistake is one line and exit status 2."""

import shutil

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from seqgen import compose, run


def variants(*lines):
    return compose._variants(OverridesParser.create().parse_overrides(list(lines)))


def test_variants_take_each_sweep_value_once_with_the_others_at_their_first():
    assert variants("seed=1", "decoder.top_k=range(1,3)", "decoder.name=choice(a,b)") == [
        ["seed=1", "decoder.top_k=1", "decoder.name=a"],
        ["seed=1", "decoder.top_k=2", "decoder.name=a"],
        ["seed=1", "decoder.top_k=1", "decoder.name=b"],
    ]


def test_a_quoted_comma_is_one_value_and_an_interval_is_left_to_hydra():
    assert variants("logger.run_name='a,b'") == [["logger.run_name='a,b'"]]
    assert variants("x='a,b',c") == [["x='a,b'"], ["x=c"]]
    assert variants("seed=1", "decoder.temperature=interval(0,1)") == [["seed=1"]]


def check(capsys, *argv):
    """`_check_overrides(argv)`: None when it passes, else (exit status, the one error line)."""
    try:
        run._check_overrides(list(argv))
    except SystemExit as exc:
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        return exc.code, err[0]
    return None


def test_command_line_sweeps_are_checked_value_by_value(capsys):
    assert check(capsys, "-m", "decoder=sample", "decoder.top_k=range(1,4)") is None
    assert check(capsys, "-m", "decoder=sample", "decoder.top_k=choice(1,2)") is None
    code, line = check(capsys, "-m", "decoder=sample", "decoder.top_k=choice(1,-1)")
    assert code == 2 and line.startswith("error: ") and "top_k" in line


@pytest.fixture
def conf_with(tmp_path, monkeypatch):
    """A copy of conf/ with one more experiment file whose sweeper params are `params`."""

    def make(params: dict[str, str]) -> None:
        conf = tmp_path / "conf"
        shutil.copytree(compose.CONF_DIR, conf)
        lines = "".join(f"      {k}: {v!r}\n" for k, v in params.items())
        (conf / "experiment" / "probe.yaml").write_text(
            "# @package _global_\ndefaults:\n  - override /decoder: sample\n"
            f"hydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n{lines}"
        )
        monkeypatch.setattr(compose, "CONF_DIR", conf)

    return make


def test_experiment_file_sweeps_use_hydras_grammar(conf_with, capsys):
    # str.split(",") made "range(1" and "'a" of these: false errors
    conf_with({"decoder.top_k": "range(1,4)", "decoder.label": "'a,b',c"})
    assert check(capsys, "+experiment=probe") is None


def test_a_bad_value_in_an_experiment_file_sweep_is_one_line(conf_with, capsys):
    conf_with({"decoder.top_k": "range(-1,2)"})
    code, line = check(capsys, "+experiment=probe")
    assert code == 2 and "top_k" in line
    # the command line overrides the file's sweep of the same key: only its value counts
    assert check(capsys, "+experiment=probe", "decoder.top_k=3") is None
