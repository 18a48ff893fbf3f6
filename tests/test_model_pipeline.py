"""The model steps chained after the data steps by the runner: raw data to a registered, tested bundle, per task type."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import only_run, run_cli
from mlops_kit.datasets import write_sklearn_csv
from mlops_kit.model.package import build_bundle, list_models, load_bundle, register_bundle

MODEL_STEPS = ["features", "train", "evaluate", "acceptance", "package"]


def check_model_chain(run_dir, m, task):
    "What must hold for any data: the five model steps ran, reported metrics, and left a registered bundle that predicts."
    steps = {s["name"]: s for s in m["steps"]}
    for name in MODEL_STEPS:
        assert steps[name]["status"] == "succeeded", steps[name]
        assert name in m["metrics"], f"step {name} reported no metrics"
    evaluation = json.loads((run_dir / "model" / "evaluation.json").read_text())
    assert evaluation["task"] == task
    metric = evaluation["metric"]
    assert m["metrics"]["evaluate"][f"{metric}_test"] == pytest.approx(evaluation["test"][metric])
    acceptance = json.loads((run_dir / "model" / "acceptance.json").read_text())
    assert acceptance["passed"] is True
    registration = json.loads((run_dir / "model" / "registration.json").read_text())
    registry = run_dir.parent / "registry"  # beside the run folders
    listed = list_models(registry)
    assert list(listed.version) == [registration["version"]] == [1]
    assert listed.alias.tolist() == ["champion"]  # the first version that passed its gates
    # the README's two lines: load a bundle, predict on a DataFrame; it predicts what the evaluation recorded
    labelled = pd.read_parquet(run_dir / "data" / "labelled.parquet")
    predictions = pd.read_parquet(run_dir / "model" / "predictions.parquet")
    test = predictions[predictions.split == "test"]
    rows = labelled.set_index("_row_id").loc[test._row_id].reset_index()
    bundle = load_bundle(run_dir / "model" / "bundle")
    pred = bundle.predict(rows)
    assert len(pred) == len(test)
    if task == "regression":
        np.testing.assert_allclose(np.asarray(pred, dtype=float), test.y_pred.to_numpy(dtype=float))
    else:
        assert [str(v) for v in pred] == [str(v) for v in test.y_pred]
    return evaluation, acceptance, registration


def test_the_course_data_goes_from_raw_files_to_a_registered_tested_bundle(default_run, tmp_path):
    res, run_dir, m = default_run
    evaluation, acceptance, registration = check_model_chain(run_dir, m, "binary")
    assert evaluation["metric"] == "roc_auc" and evaluation["test"]["roc_auc"] >= 0.7
    assert 0 < evaluation["threshold"] < 0.5  # a missed churner costs 12 times a wasted offer: act on low probabilities
    kinds = {c["kind"] for c in acceptance["results"]}
    assert {"invariance", "directional", "minimum"} <= kinds  # the course spec's behavioural tests ran
    assert "package" in res.stdout and registration["name"] == "subscription_churn"
    # the registry on the command line
    listing = run_cli("models", "--runs-dir", run_dir.parent)
    assert listing.returncode == 0, listing.stderr
    assert "subscription_churn" in listing.stdout and "champion" in listing.stdout


def test_a_second_version_is_a_challenger_until_promoted(default_run, tmp_path):
    _, run_dir, _ = default_run
    registry = tmp_path / "registry"
    shutil.copytree(run_dir.parent / "registry", registry)
    again = register_bundle(registry, run_dir / "model" / "bundle", "subscription_churn")
    assert again["version"] == 1 and not again["new"]  # a retried registration is not a new version
    second = register_bundle(registry, build_bundle(run_dir, tmp_path / "bundle2"), "subscription_churn")
    assert second["version"] == 2 and second["alias"] == "challenger"
    res = run_cli("models", "promote", "subscription_churn", "2", "--registry", registry)
    assert res.returncode == 0, res.stderr
    assert "v2 is now the champion" in res.stdout
    listed = list_models(registry)
    assert dict(zip(listed.version, listed.alias)) == {1: "", 2: "champion"}
    history = run_cli("models", "history", "--registry", registry)
    assert history.returncode == 0 and "promoted" in history.stdout
    missing = run_cli("models", "promote", "subscription_churn", "7", "--registry", registry)
    assert missing.returncode != 0 and "no version 7" in missing.stderr


def test_a_failed_gate_fails_the_run_at_acceptance_and_nothing_is_packaged(tmp_path):
    res = run_cli("run", "--runs-dir", tmp_path, "--no-report", "-p", "threshold", "0.99")
    assert res.returncode == 1
    assert "step 'acceptance' failed" in res.stderr and "AcceptanceFailed" in res.stderr
    run_dir, m = only_run(tmp_path)
    status = {s["name"]: s["status"] for s in m["steps"]}
    assert status["acceptance"] == "failed" and status["package"] == "pending"
    acceptance = json.loads((run_dir / "model" / "acceptance.json").read_text())  # written before failing
    assert acceptance["passed"] is False
    failed = [c for c in acceptance["results"] if not c["passed"]]
    assert any("0.99" in json.dumps(c) for c in failed), failed
    assert not (run_dir / "model" / "bundle").exists() and not (tmp_path / "registry").exists()


def test_a_messy_user_file_gets_a_multiclass_bundle(penguins_run):
    run_dir, m = penguins_run
    evaluation, _, registration = check_model_chain(run_dir, m, "multiclass")
    assert set(evaluation["classes"]) == {"Adelie Penguin (Pygoscelis adeliae)", "Chinstrap penguin (Pygoscelis antarctica)",
                                          "Gentoo penguin (Pygoscelis papua)"}
    assert evaluation["test"][evaluation["metric"]] > 0.9  # penguins are easy to tell apart by their measurements


def test_a_regression_file_gets_a_regression_bundle(tmp_path):
    write_sklearn_csv("diabetes", tmp_path / "diabetes.csv")
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "--no-report", "-p", "data", tmp_path / "diabetes.csv",
                  "-p", "target", "target")
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir, m = only_run(tmp_path / "runs")
    evaluation, _, _ = check_model_chain(run_dir, m, "regression")
    assert evaluation["metric"] == "r2"
    assert evaluation["test"]["r2"] > evaluation["baseline"]["test"]["r2"]
