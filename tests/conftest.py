import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_cli(*args, cwd=ROOT, env=None, timeout=600):
    "Run the `mlops-kit` command as a user would, returning the CompletedProcess."
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(BIN / "mlops-kit"), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def only_run(runs_dir):
    "The one run folder in `runs_dir` and its manifest."
    runs = sorted(p for p in Path(runs_dir).iterdir() if (p / "manifest.json").is_file())  # not the registry beside them
    assert len(runs) == 1, runs
    return runs[0], json.loads((runs[0] / "manifest.json").read_text())


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    "One full `mlops-kit run` on the defaults, shared by every test that only reads it: (process, run folder, manifest)."
    runs = tmp_path_factory.mktemp("runs")
    res = run_cli("run", "--runs-dir", runs)
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir, manifest = only_run(runs)
    return res, run_dir, manifest


@pytest.fixture(scope="session")
def penguins_run(tmp_path_factory):
    "A full run on a user's messy file, the raw Palmer penguins CSV (multiclass, target Species): (run folder, manifest)."
    from mlops_kit.datasets import load_penguins_raw
    tmp = tmp_path_factory.mktemp("penguins")
    load_penguins_raw().to_csv(tmp / "penguins_raw.csv", index=False)
    res = run_cli("run", "--runs-dir", tmp / "runs", "-p", "data", tmp / "penguins_raw.csv", "-p", "target", "Species",
                  "--no-report")
    assert res.returncode == 0, res.stdout + res.stderr
    return only_run(tmp / "runs")
