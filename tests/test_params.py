"""Every run parameter, the data file and the runs folder are checked before the first step runs: all problems at once, exit 2, no run folder."""
import time

import nbformat
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from conftest import run_cli
from mlops_kit.data.split import SPLIT_STRATEGIES
from mlops_kit.data.wrangle import MISSING_STRATEGIES
from mlops_kit.datasets import DRIFT_SCENARIOS
from mlops_kit.model.train import CANDIDATES
from mlops_kit.roles import LIFECYCLE_STEPS
from mlops_kit.steps import make_demo_project


def no_run_folder(runs):
    return not runs.exists() or not any(runs.iterdir())


def test_every_bad_value_is_listed_at_once_before_anything_runs(tmp_path):
    t0 = time.perf_counter()
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "-p", "candidates", "foo", "-p", "cv_folds", "1",
                  "-p", "valid_size", "1.5", "-p", "missing_strategy", "mean", "-p", "drift", "nonsense", "--no-report")
    seconds = time.perf_counter() - t0
    assert res.returncode == 2, res.stdout + res.stderr
    assert "5 run parameters are not valid" in res.stderr, res.stderr
    for bad in ("'foo'", "cv_folds", "valid_size", "'mean'", "'nonsense'"): assert bad in res.stderr, (bad, res.stderr)
    # with the valid values, taken from the modules that own them
    assert ", ".join(MISSING_STRATEGIES) in res.stderr
    assert ", ".join(DRIFT_SCENARIOS) in res.stderr
    assert ", ".join(CANDIDATES["binary"]) in res.stderr
    assert "started" not in res.stdout  # no step ran
    assert no_run_folder(tmp_path / "runs")
    assert seconds < 60, seconds  # today these fail 25-40 s into a run; a refusal needs no kernel


def test_a_time_split_on_a_file_without_a_time_column_is_refused_up_front(tmp_path):
    load_iris(as_frame=True).frame.to_csv(tmp_path / "iris.csv", index=False)
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "-p", "data", tmp_path / "iris.csv", "-p", "target", "target",
                  "-p", "split_strategy", "time", "--no-report")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "split_strategy time needs a time column" in res.stderr and "sepal length (cm)" in res.stderr, res.stderr
    assert "-p time_column COL" in res.stderr
    assert all(s in res.stderr for s in SPLIT_STRATEGIES if s != "time")
    assert no_run_folder(tmp_path / "runs")


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.csv", "does not exist"),
    (lambda d: (d / "folder").mkdir() or d / "folder", "is a folder; pass the path of one data file"),
    (lambda d: (d / "table.xlsx").write_text("a b\n1 2\n") and d / "table.xlsx", "the kit reads .csv and .parquet"),
    (lambda d: (d / "three.csv").write_text("x,y\n1,a\n2,b\n3,a\n") and d / "three.csv", "has 3 data rows: too few rows"),
    (lambda d: (d / "empty.csv").write_text("") or d / "empty.csv", "is empty"),
])
def test_an_unreadable_data_file_is_refused_before_a_run_folder_is_made(tmp_path, make, message):
    data = make(tmp_path)
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "-p", "data", data, "-p", "target", "x", "--no-report")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "data: " in res.stderr and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert no_run_folder(tmp_path / "runs")


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_a_runs_dir_that_cannot_hold_runs_is_refused(tmp_path, where):
    (tmp_path / "afile").write_text("not a folder")
    runs = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "runs"
    res = run_cli("run", "--runs-dir", runs, "--until", "design", "--no-report")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "is a file, not a folder" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_a_typo_in_a_steps_lifecycle_keys_fails_discovery(tmp_path):
    fake = make_demo_project(tmp_path / "proj")
    nb_path = fake / "nbs" / "20_second.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace("lifecycle: [ingest]", "lifecycle: [ingestion]")
    nbformat.write(nb, nb_path)
    res = run_cli("steps", env={"MLOPS_KIT_ROOT": str(fake)})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "unknown lifecycle step 'ingestion' (did you mean 'ingest'?)" in res.stderr, res.stderr
    assert "20_second.ipynb" in res.stderr and ", ".join(LIFECYCLE_STEPS) in res.stderr
