"""A shared store must not steer another user: nothing read from a store names a path, a URL or
code that gradlab opens without the user saying so; what a store or a server says reaches the
terminal without escape sequences, a spreadsheet without formulas, and no password is printed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import mlflow
import pytest

from conftest import compose, short_id
from gradlab import safe, tracking
from gradlab.record import Job, Origin, record
from gradlab.tracking.spec import RunSpec


def client(uri: str):
    return mlflow.MlflowClient(uri)


def forged_run(uri: str, config: object) -> str:
    """A run in the store whose config.yaml is whatever its writer chose."""
    return tracking.Store(uri).start(RunSpec("again", "forged", {}, {}, files={"config.yaml": config}))


def main(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    from gradlab import cli

    monkeypatch.setattr(sys, "argv", ["gradlab", *argv])
    streams = sys.stdout, sys.stderr  # as they were: the next call guards its own output
    try:
        with pytest.raises(SystemExit) as e:
            cli.main()
    finally:
        sys.stdout, sys.stderr = streams
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


# ----------------------------------------------------------------------------- rerun
def test_rerun_reads_a_data_file_its_stored_config_names_only_with_trust_data(temp_store, tmp_path, monkeypatch, capsys):
    data = tmp_path / "private.csv"
    data.write_text("x,y\n1,2\n2,4\n3,6\n4,8\n")
    first = record(Job(compose("data=csv", f"data.path={data}", "train.epochs=5")), Origin("again"), quiet=True)
    code, _, err = main(monkeypatch, capsys, "rerun", first.run_id)
    assert code == 2 and err.count("\n") == 1, err
    assert f"data.path='{data}'" in err and f"gradlab rerun {first.run_id} --trust-data" in err
    c = client(temp_store)
    assert len(c.search_runs([c.get_experiment_by_name("again").experiment_id])) == 1  # nothing read, nothing ran
    code, _, err = main(monkeypatch, capsys, "rerun", first.run_id, "--trust-data")
    assert code == 0 and f"reads data.path='{data}' (--trust-data)" in err
    assert len(c.search_runs([c.get_experiment_by_name("again").experiment_id])) == 2


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize("config,words", [
    ("optimizer: [\n", ["is not a config gradlab can read"]),
    (b"\xff\xfe\x00o\x00p", ["is not UTF-8 text"]),
    ("!!python/object/apply:os.system ['touch /tmp/gradlab-owned']\n", ["is not a config gradlab can read", "python"]),
    ("data: !!python/name:os.system\n", ["is not a config gradlab can read"]),
    (BILLION_LAUGHS, ["holds a YAML alias"]),
    ("- a\n- b\n", ["holds a list, not a config"]),
    ("data: {name: nosuch}\n", ["does not fit this version of gradlab"]),
    ("x" * (2 << 20), ["more than the 1,048,576"]),
], ids=short_id)
def test_rerun_refuses_a_stored_config_that_is_not_plain_yaml_quickly_in_one_line(temp_store, monkeypatch, capsys,
                                                                                  config, words):
    forged = forged_run(temp_store, config)
    start = time.monotonic()
    code, _, err = main(monkeypatch, capsys, "rerun", forged)
    assert time.monotonic() - start < 10
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err
    assert not Path("/tmp/gradlab-owned").exists()


# --------------------------------------------------------------------------- compare
class Parent:
    """A sweep's parent run as the report reads it: its tags."""

    def __init__(self, **tags):
        self.tags = tags

    def tag(self, name: str):
        return self.tags.get(name)


@pytest.mark.parametrize("named", ["{tmp}/elsewhere/deep/optuna.journal", "sqlite:///{tmp}/victim.db"])
def test_the_report_opens_no_optuna_storage_that_only_the_store_names(temp_store, tmp_path, named):
    from gradlab import report_search

    named = named.format(tmp=tmp_path)
    parent = Parent(study="s", **{"study.storage": named})
    assert report_search.importances(parent) == {}
    assert list(tmp_path.iterdir()) == []  # no folder, no file, no table made
    note = report_search.study_storage(parent)
    assert "not computed" in note and "gradlab-compare --storage" in note
    # the storage the user names is read (a journal that is not there is not made)
    assert report_search.importances(parent, str(tmp_path / "absent.journal")) == {}
    assert list(tmp_path.iterdir()) == []


def test_the_default_journal_beside_the_store_is_still_read(temp_store):
    from gradlab import report_search

    own = report_search.own_storage()
    assert Path(own).parent == Path(temp_store.removeprefix("sqlite:///")).parent
    assert report_search.study_storage(Parent(study="s", **{"study.storage": own})) is None


def test_gradlab_compare_takes_the_storage_from_the_user():
    from gradlab import compare

    with pytest.raises(SystemExit):
        compare.main(["--help"])
    import inspect

    assert "storage" in inspect.signature(compare.report).parameters


# ------------------------------------------------------------------ what is printed
def test_an_experiment_name_with_escape_sequences_reaches_the_terminal_neutralised(temp_store, monkeypatch, capsys,
                                                                                 tmp_path):
    name = "x\x1b]0;owned\x07\x1b[2Jy\u202e"
    code, out, err = main(monkeypatch, capsys, f"tracking.experiment='{name}'", "train.epochs=3")
    assert code == 0, err
    assert "\x1b" not in out + err and "\x07" not in out + err and "\u202e" not in out + err
    assert "\\x1b]0;owned\\x07" in out + err  # said, visibly
    assert any(e.name == name for e in client(temp_store).search_experiments())  # stored as given
    from gradlab import compare  # the report prints the name as the store holds it

    compare.main(["--experiment", name, "--all", "--out", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert "# Comparison: x\\x1b]0;owned" in out and "\x1b" not in out and "\u202e" not in out


def test_a_password_in_the_tracking_uri_is_never_printed(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:s3cr3t@127.0.0.1:9/")
    code, out, err = main(monkeypatch, capsys, "train.epochs=2")
    assert code != 0
    assert "s3cr3t" not in out + err and "user:***@127.0.0.1" in out + err


def test_printable_masks_and_escapes_what_any_code_writes():
    import io

    sink = io.StringIO()
    stream = safe.Printable(sink)
    stream.write("server said: <h1>\x1b[31mred</h1> at https://u:pw@host/api\r\n\tok\n")
    assert sink.getvalue() == "server said: <h1>\\x1b[31mred</h1> at https://u:***@host/api\r\n\tok\n"


@pytest.mark.parametrize("name", ["=HYPERLINK(\"http://e.x\",\"a\")", " =1+1", "\t=1", "+1", "-1+2", "@SUM(A1)", "\r=1"])
def test_a_run_name_that_is_a_formula_is_text_in_every_csv(name):
    import pandas as pd

    from gradlab import compare, ranking

    for text in (compare._csv(pd.DataFrame({"run_name": [name], "x": [1.0]})), ranking.csv_text([{"run_name": name, "x": 1.0}])):
        cell = text.splitlines()[1] if "\r" not in name and "\n" not in name else text.split("\n", 1)[1]
        assert cell.lstrip('"').startswith("'"), text


def test_a_tracking_error_masks_passwords_and_shows_escapes_from_python_too():
    from gradlab.tracking import TrackingError

    e = TrackingError("cannot use the tracking store http://u:hunter2@h:5000/: server said \x1b[2J<b>no</b>")
    assert "hunter2" not in str(e) and "u:***@h:5000" in str(e) and "\x1b" not in str(e) and "\\x1b[2J" in str(e)
    import pickle

    assert str(pickle.loads(pickle.dumps(e))) == str(e)  # as it crosses from the recorder
