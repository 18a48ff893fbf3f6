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


def shared_folder(tmp_path_factory, name: str, build) -> dict:
    """A folder made once per pytest session by `build(folder) -> dict` and read by every test that asks for it.

    Under pytest-xdist each worker has its own temporary base; the folder goes one level up, beside them, so the
    workers share it: the first to ask builds it under a file lock while the others wait, then every one reads the
    dict `build` returned (kept as JSON). A failed build is recorded, so the others fail at once with its message
    instead of building again. Read-only for tests: copy it (copy_run) before changing anything in it."""
    import fcntl
    import shutil
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"): base = base.parent   # .../pytest-N/popen-gwK -> .../pytest-N, this session's
    root = base / "shared"
    root.mkdir(exist_ok=True)
    folder, done, failed = root / name, root / f"{name}.json", root / f"{name}.failed"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if failed.exists(): pytest.fail(f"building the shared {name} failed (in another worker):\n{failed.read_text()}")
            if not done.exists():
                if folder.exists(): shutil.rmtree(folder)
                folder.mkdir()
                try: out = build(folder)
                except BaseException as e:
                    failed.write_text(f"{type(e).__name__}: {e}")
                    raise
                done.write_text(json.dumps(out))
            return json.loads(done.read_text())
        finally: fcntl.flock(lock, fcntl.LOCK_UN)


def _completed(d: dict) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(d["args"], d["returncode"], d["stdout"], d["stderr"])


def _cli_run(folder: Path, *args) -> dict:
    "`mlops-kit run --runs-dir FOLDER/runs ARGS` (it must succeed): the process as a dict, and its one run folder."
    res = run_cli("run", "--runs-dir", folder / "runs", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir, _ = only_run(folder / "runs")
    return {"args": [str(a) for a in res.args], "returncode": res.returncode, "stdout": res.stdout, "stderr": res.stderr,
            "run_dir": str(run_dir)}


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """One full `mlops-kit run` on the defaults (every step, report included), made once per session for all workers and
    shared by every test that only reads it: (process, run folder, manifest)."""
    d = shared_folder(tmp_path_factory, "default_run", _cli_run)
    run_dir, manifest = only_run(Path(d["run_dir"]).parent)
    return _completed(d), run_dir, manifest


def _penguins(folder: Path) -> dict:
    from mlops_kit.datasets import load_penguins_raw
    load_penguins_raw().to_csv(folder / "penguins_raw.csv", index=False)
    return _cli_run(folder, "-p", "data", folder / "penguins_raw.csv", "-p", "target", "Species", "--until", "package",
                    "--no-report")


@pytest.fixture(scope="session")
def penguins_run(tmp_path_factory):
    """A run on a user's messy file, the raw Palmer penguins CSV (multiclass, target Species), through the data and model
    steps up to `package` (the tests read its data, model and registry; the replay step on a user's file runs in
    test_model_pipeline's regression run), made once per session for all workers: (run folder, manifest)."""
    d = shared_folder(tmp_path_factory, "penguins_run", _penguins)
    return only_run(Path(d["run_dir"]).parent)


def _small_course_run(folder: Path) -> dict:
    from mlops_kit.design import spec_for_run
    spec = spec_for_run(data="course")
    spec.model_tests = []   # the behavioural tests need more rows than a small course run has; the gates still apply
    run = build_run(folder / "run", spec, "course", until="acceptance", train_options={"search_budget": 1, "cv_folds": 2},
                    n_customers=600, seed=42)
    return {"run": str(run)}


@pytest.fixture(scope="session")
def small_course_run(tmp_path_factory) -> Path:
    """A small course run (600 customers, seed 42, no behavioural tests, a one-setting search) through `acceptance`, made
    in process by the steps' library functions once per session for all workers: the run `small_course_model` makes.
    Read-only: build bundles and registries from it elsewhere, copy it (copy_run) to change it."""
    return Path(shared_folder(tmp_path_factory, "small_course_run", _small_course_run)["run"])


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
