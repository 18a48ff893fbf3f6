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


IN_PROCESS_STEPS = ("split", "features", "train", "evaluate", "acceptance")


def build_run(run: Path, spec, data="course", until: str = "split", train_options: dict | None = None, **knobs) -> Path:
    "A run folder made in this process by the steps' library functions (no notebooks), up to and including `until`."
    from mlops_kit.data.ingest import ingest
    from mlops_kit.data.label import label
    from mlops_kit.data.split import split
    from mlops_kit.data.validate import validate
    from mlops_kit.data.wrangle import wrangle
    from mlops_kit.datasets import materialize_data
    from mlops_kit.design import save_spec
    from mlops_kit.model.acceptance import accept
    from mlops_kit.model.evaluate import evaluate
    from mlops_kit.model.features import make_features
    from mlops_kit.model.train import train
    if until not in IN_PROCESS_STEPS: raise ValueError(f"until must be one of {', '.join(IN_PROCESS_STEPS)}")
    save_spec(spec, run / "spec.yaml")
    materialize_data(run, str(data), **knobs)
    later = {"features": make_features, "train": lambda r, s: train(r, s, **(train_options or {})),
             "evaluate": evaluate, "acceptance": accept}
    for step in (ingest, validate, wrangle, label, split): step(run, spec)
    for name in IN_PROCESS_STEPS[1:IN_PROCESS_STEPS.index(until) + 1]: later[name](run, spec)
    return run


def copy_run(run: Path, to: Path) -> Path:
    "A copy of a shared run folder that a test may change."
    import shutil
    shutil.copytree(run, to)
    return to


def run_step_cells(notebook: Path, run_dir: Path, out: Path, **params) -> None:
    "Execute a notebook the way `mlops-kit run` does: only its export and import cells and the parameters cell onward."
    import nbformat
    import papermill
    from mlops_kit.steps import step_cells
    nb_path = out.with_suffix(".in.ipynb")
    nbformat.write(step_cells(notebook), nb_path)
    papermill.execute_notebook(str(nb_path), str(out), parameters={"run_dir": str(run_dir), **params}, progress_bar=False,
                               cwd=str(notebook.parent))


def user_files(folder: Path) -> list[tuple[str, str, Path, str]]:
    "Two users' files written to `folder`, as (task, name, path, target): the raw penguins (multiclass), diabetes (regression)."
    from mlops_kit.datasets import load_penguins_raw, write_sklearn_csv
    load_penguins_raw().to_csv(folder / "penguins.csv", index=False)
    write_sklearn_csv("diabetes", folder / "diabetes.csv")
    return [("multiclass", "penguins", folder / "penguins.csv", "Species"),
            ("regression", "diabetes", folder / "diabetes.csv", "target")]


def resign_bundle(folder: Path) -> None:
    "What an attacker does after replacing a bundle's file: recompute every file hash and the fingerprint in bundle.json."
    from mlops_kit.model.bundle import fingerprint
    from mlops_kit.runfolder import read_json, sha256_file, write_json
    m = read_json(folder / "bundle.json")
    m["files"] = {p.name: sha256_file(p) for p in folder.iterdir() if p.name != "bundle.json"}
    m["fingerprint"] = fingerprint(m)
    write_json(folder / "bundle.json", m)
