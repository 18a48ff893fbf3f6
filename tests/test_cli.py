"""The `mlops-kit` command as a user calls it: runs, parameters, failures, resume, manifest, listing."""
import json
import re
import sys

import nbformat
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_iris

from conftest import ROOT, only_run, run_cli
from mlops_kit.params import check_step_defaults, read_settings
from mlops_kit.steps import discover_steps
from mlops_kit.runfolder import sha256_file




def test_default_run_succeeds_with_progress_lines(default_run):
    res, run_dir, manifest = default_run
    steps = [s["name"] for s in manifest["steps"]]
    assert steps[:2] == ["design", "datasets"]
    for name in steps:
        assert re.search(rf"\] {name}\s+started", res.stdout), res.stdout
        assert re.search(rf"\] {name}\s+succeeded in \d+\.\d s", res.stdout), res.stdout
    assert f"run {manifest['run_id']} succeeded" in res.stdout
    assert "report: " in res.stdout


def test_manifest_records_what_produced_the_run(default_run):
    _, run_dir, m = default_run
    assert m["status"] == "succeeded" and m["run_id"] == run_dir.name
    assert re.fullmatch(r"\d{8}-\d{6}-\d{3}", m["run_id"])
    defaults, _ = read_settings(ROOT / "settings.ini")
    assert m["parameters"] == defaults  # no overrides: exactly the settings
    assert yaml.safe_load((run_dir / "params.yaml").read_text()) == m["parameters"]
    assert m["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    for pkg in ("pandas", "papermill", "scikit-learn", "mlops-kit"):
        assert pkg in m["packages"]
    # this repository is a git checkout, so the run must name the commit that produced it
    assert m["git"] is not None and re.fullmatch(r"[0-9a-f]{40}", m["git"]["commit"]), m["git"]
    assert isinstance(m["git"]["dirty"], bool)
    assert m["started_at"] <= m["ended_at"]
    for step in m["steps"]:
        assert step["status"] == "succeeded" and step["seconds"] > 0
        assert (run_dir / step["executed_notebook"]).is_file()
        for rel, digest in step["outputs"].items():  # every recorded output exists with that hash
            assert sha256_file(run_dir / rel) == digest
    design = next(s for s in m["steps"] if s["name"] == "design")
    assert {"spec.yaml", "design.md"} <= set(design["outputs"])
    assert design["owners"]["accountable"], design  # who signs off, from the RACI matrix
    datasets = next(s for s in m["steps"] if s["name"] == "datasets")
    assert any(k.startswith("data/raw/") for k in datasets["outputs"])
    assert m["metrics"]["design"] and m["metrics"]["datasets"]


def test_report_shows_steps_and_hides_code(default_run):
    _, run_dir, m = default_run
    html = (run_dir / "report.html").read_text()
    assert m["run_id"] in html and "Steps and sign-off" in html
    assert "<img" in html or "image/png" in html  # the steps' plots made it in
    assert "record_metrics(" not in html  # code is hidden


def test_runs_lists_the_run(default_run, tmp_path):
    _, run_dir, m = default_run
    res = run_cli("runs", "--runs-dir", run_dir.parent)
    assert res.returncode == 0
    assert m["run_id"] in res.stdout and "succeeded" in res.stdout
    header = res.stdout.splitlines()[0].split()
    assert header[6:9] == ["evaluate.roc_auc_test", "evaluate.test_cost_per_1000", "acceptance.failed"], header  # the model first
    empty = run_cli("runs", "--runs-dir", tmp_path)
    assert "no runs yet" in empty.stdout


def test_same_parameters_reproduce_the_same_outputs(default_run, tmp_path):
    _, run_dir, m = default_run
    res = run_cli("run", "--runs-dir", tmp_path, "--no-report")
    assert res.returncode == 0, res.stderr
    run2, m2 = only_run(tmp_path)
    for a, b in zip(m["steps"], m2["steps"]):
        assert a["outputs"].keys() == b["outputs"].keys(), a["name"]
        for rel in a["outputs"]:
            if a["outputs"][rel] == b["outputs"][rel]: continue
            # only records of *when* and *how long* may differ (read times, fit seconds), and a bundle's identity
            if rel == "model/bundle/model_card.md":  # says when, from which run and under which build id it was built
                x, y = ([l for l in (d / rel).read_text().splitlines() if not l.startswith(("| Built |", "| Build id |"))]
                        for d in (run_dir, run2))
                assert x == y, "the model cards differ beyond their build lines"
                continue
            if rel.startswith("deploy/"):   # a service's own records: request ids, times, latencies; the answers are the same
                if rel == "deploy/answers.parquet":
                    cols = ["ok", "prediction", "probabilities", "decision", "model_version", "period", "outcome", "known_from"]
                    x, y = (pd.read_parquet(d / rel)[cols] for d in (run_dir, run2))
                    pd.testing.assert_frame_equal(x, y)
                elif rel == "deploy/replay.json":
                    x, y = ({k: v for k, v in without_identity(json.loads((d / rel).read_text())).items()
                             if k not in ("request_ms_p50", "request_ms_p99", "seconds")} for d in (run_dir, run2))
                    assert x == y, "the replay summaries differ beyond their timings"
                else: assert rel in ("deploy/inference_log.sqlite", "deploy/server.txt"), rel
                continue
            assert rel.endswith((".json", ".csv")), f"{a['name']}: {rel} differs between two runs with the same parameters"
            if rel.endswith(".csv"):
                x, y = (pd.read_csv(d / rel) for d in (run_dir, run2))
                pd.testing.assert_frame_equal(x.drop(columns=[c for c in x if c.endswith("seconds")]),
                                              y.drop(columns=[c for c in y if c.endswith("seconds")]))
                continue
            x, y = (without_identity(without_times(json.loads((d / rel).read_text()))) for d in (run_dir, run2))
            assert x == y, f"{a['name']}: {rel} differs beyond its timestamps"
    # the model itself, its predictions and its metrics are the same, byte for byte
    for rel in ("model/pipeline.skops", "model/predictions.parquet", "model/evaluation.json", "model/bundle/pipeline.skops"):
        assert sha256_file(run_dir / rel) == sha256_file(run2 / rel), rel


# a bundle is an artifact with an identity of its own: a build id, the run it came from, where it is registered,
# and a fingerprint over all of it; two builds from equal inputs differ in these and in nothing else
IDENTITY = {"build_id", "created", "run_id", "fingerprint", "path", "registry"}


def without_identity(obj):
    "`obj` without the keys that name a bundle's identity (and the hashes of the two files that hold it)."
    if isinstance(obj, dict):
        return {k: without_identity(v) for k, v in obj.items()
                if k not in IDENTITY and k not in ("model_card.md", "bundle.json")}  # file hashes of the identity files
    if isinstance(obj, list): return [without_identity(v) for v in obj]
    return obj


def without_times(obj):
    "`obj` without the keys that record when something happened or how long it took (`*_at`, `*seconds`)."
    if isinstance(obj, dict): return {k: without_times(v) for k, v in obj.items() if not k.endswith(("_at", "seconds"))}
    if isinstance(obj, list): return [without_times(v) for v in obj]
    return obj


def test_parameter_precedence(tmp_path):
    params = tmp_path / "exp.yaml"
    params.write_text("seed: 7\nn_customers: 300\ndrift: price_increase\n")
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "--params", params, "-p", "seed", "11", "--until", "design", "--no-report")
    assert res.returncode == 0, res.stderr
    _, m = only_run(tmp_path / "runs")
    p = m["parameters"]
    assert p["seed"] == 11  # -p beats the file
    assert p["n_customers"] == 300 and p["drift"] == "price_increase"  # the file beats settings.ini
    assert p["n_months"] == read_settings(ROOT / "settings.ini")[0]["n_months"]  # settings.ini fills the rest
    assert m["parameter_sources"]["overrides"] == {"seed": "11"}
    assert [s["status"] for s in m["steps"]][:2] == ["succeeded", "not_run"]


@pytest.mark.parametrize("args, message", [
    (["-p", "colour", "red"], "unknown parameter 'colour'"),
    (["-p", "seed", "abc"], "'seed' expects an int"),
    (["--params", "missing.yaml"], "params file missing.yaml does not exist"),
    (["--until", "nowhere"], "is not a step; steps are: design, datasets"),
    (["--resume", "20000101-000000-000"], "no run '20000101-000000-000'"),
])
def test_bad_parameters_are_refused_before_anything_runs(tmp_path, args, message):
    res = run_cli("run", "--runs-dir", tmp_path / "runs", *args, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr
    if "colour" in message: assert "valid parameters are: " in res.stderr and " seed," in res.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_params_file_with_a_typo_is_refused(tmp_path):
    (tmp_path / "p.yaml").write_text("sed: 3\n")
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "--params", tmp_path / "p.yaml")
    assert res.returncode == 2 and "unknown parameter 'sed'" in res.stderr and "seed" in res.stderr


def test_bad_spec_file_fails_the_design_step_cleanly(tmp_path):
    bad = tmp_path / "spec.yaml"
    bad.write_text("name: x\nprediction: [not, a, mapping]\nunknown_section: 1\n")
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "-p", "spec", bad, "--no-report")
    assert res.returncode == 1
    err_lines = [l for l in res.stderr.splitlines() if l.startswith("mlops-kit: error:")]
    assert len(err_lines) == 1 and "step 'design' failed" in err_lines[0] and "SpecError" in err_lines[0], res.stderr
    # the whole message, not only its first line ("spec file ... has N problems"): each problem is shown
    n = int(re.search(r" has (\d+) problems?", err_lines[0]).group(1))
    problem_lines = [l for l in res.stderr.splitlines() if l.lstrip().startswith("- ")]
    assert len(problem_lines) == n and any("prediction" in l for l in problem_lines), res.stderr
    assert "more lines in the notebook" not in res.stderr
    run_dir, m = only_run(tmp_path / "runs")
    assert m["status"] == "failed"
    assert [s["status"] for s in m["steps"]][:2] == ["failed", "pending"]
    nb = nbformat.read(run_dir / "notebooks" / "02_design.ipynb", as_version=4)
    assert any(o.get("ename") == "SpecError" for c in nb.cells for o in c.get("outputs", []))


def test_failed_run_resumes_from_the_failed_step(tmp_path):
    data = tmp_path / "later.csv"
    iris = load_iris(as_frame=True).frame
    # a missing file is refused before a run starts (tests/test_params.py); an export without its label column
    # passes that check and fails the design step
    iris.drop(columns="target").to_csv(data, index=False)
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "-p", "data", data, "-p", "target", "target", "--no-report")
    assert res.returncode == 1 and "step 'design' failed" in res.stderr and "--resume" in res.stderr
    run_dir, m = only_run(tmp_path / "runs")
    assert m["status"] == "failed"
    # the cause is fixed: the full export arrives
    iris.to_csv(data, index=False)
    res2 = run_cli("run", "--runs-dir", tmp_path / "runs", "--resume", run_dir.name)
    assert res2.returncode == 0, res2.stdout + res2.stderr
    m2 = json.loads((run_dir / "manifest.json").read_text())
    assert m2["status"] == "succeeded" and m2["resumes"] == 1
    assert m2["parameters"] == m["parameters"]
    assert all(s["status"] == "succeeded" for s in m2["steps"])
    assert yaml.safe_load((run_dir / "spec.yaml").read_text())["prediction"]["task"] == "multiclass"
    # resuming a finished run runs nothing again
    res3 = run_cli("run", "--runs-dir", tmp_path / "runs", "--resume", run_dir.name, "--no-report")
    assert res3.returncode == 0 and "already succeeded, skipped" in res3.stdout


def test_resume_refuses_new_parameters(tmp_path):
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "--until", "design", "--no-report")
    run_dir, _ = only_run(tmp_path / "runs")
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "--resume", run_dir.name, "-p", "seed", "1")
    assert res.returncode == 2 and "keeps its own parameters" in res.stderr


def test_a_user_csv_is_hashed_into_the_manifest_and_its_target_used(tmp_path):
    frame = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    frame.to_csv(tmp_path / "iris.csv", index=False)
    # --until ingest: the whole pipeline on a user file runs in the resume test above and in test_data_pipeline
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "-p", "data", tmp_path / "iris.csv", "-p", "target", "species",
                  "--until", "ingest", "--no-report")
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir, m = only_run(tmp_path / "runs")
    assert str((tmp_path / "iris.csv").resolve()) in m["inputs"]
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert spec["prediction"]["target"] == "species"


def test_steps_and_params_commands():
    steps = run_cli("steps")
    assert steps.returncode == 0 and "1. design" in steps.stdout and "2. datasets" in steps.stdout
    params = run_cli("params")
    assert params.returncode == 0 and re.search(r"seed\s+int\s+default: 42", params.stdout)


def test_notebook_defaults_match_settings():
    steps = discover_steps(ROOT / "nbs")
    assert check_step_defaults(steps, read_settings(ROOT / "settings.ini")[0]) == []


def test_no_kernel_outlives_its_step(tmp_path):
    "The run's kernel is shut down when the run ends: no kernel process outlives the runner's call."
    import os
    import subprocess
    from mlops_kit.pipeline import run_pipeline
    res = run_pipeline(runs_dir=tmp_path, until="datasets", report=False, log=lambda s: None)
    assert res.status == "succeeded"
    children = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout.split()
    assert children == [], f"kernel processes still running after the run: {children}"


def test_step_cells_and_full_notebooks_give_the_same_outputs(tmp_path):
    "The runner's default (each step's own cells) and --full (whole lesson notebooks) write identical outputs."
    for mode in ("steps", "full"):
        res = run_cli("run", "--runs-dir", tmp_path / mode, "--until", "datasets", "--no-report",
                      *(["--full"] if mode == "full" else []))
        assert res.returncode == 0, res.stdout + res.stderr
    (a, ma), (b, mb) = only_run(tmp_path / "steps"), only_run(tmp_path / "full")
    assert (ma["notebooks"], mb["notebooks"]) == ("step cells", "full")
    ran = [(sa, sb) for sa, sb in zip(ma["steps"], mb["steps"]) if sa["status"] == "succeeded"]
    assert [sa["name"] for sa, _ in ran] == ["design", "datasets"]
    for sa, sb in ran:
        assert sa["outputs"] and sa["outputs"] == sb["outputs"], sa["name"]
    # the executed step notebook is the slim one: fewer cells than the lesson, and the lesson's are in --full's
    import nbformat
    slim, full = (nbformat.read(str(d / "notebooks" / "03_datasets.ipynb"), as_version=4) for d in (a, b))
    assert len(slim.cells) < len(full.cells) / 2


def test_a_failure_caused_by_a_parameter_says_start_a_new_run(tmp_path):
    "A resumed run keeps its parameters, so for a bad parameter the next step is a new run, not --resume."
    load_iris(as_frame=True).frame.to_csv(tmp_path / "iris.csv", index=False)
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "-p", "data", tmp_path / "iris.csv", "-p", "target", "species",
                  "--no-report")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "step 'design' failed" in res.stderr and "-p target" in res.stderr
    assert "start a new run with a valid value (mlops-kit run -p target VALUE" in res.stderr, res.stderr
