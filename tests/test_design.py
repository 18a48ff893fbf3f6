"""Tests of mlops_kit.design as a user meets it: spec files, bad specs, task inference, specs from data, the step."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops_kit.design import (DataSource, Metrics, Serving, Spec, SpecError, default_spec, infer_task, load_spec,
                              render_design_doc, save_spec, spec_for_run, spec_from_data, spec_from_dict,
                              spec_to_dict, validate_spec)

ROOT = Path(__file__).resolve().parent.parent


def write_yaml(path, obj):
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def course_dict():
    return spec_to_dict(default_spec())


# --- round trip --------------------------------------------------------------------------------------------------

def test_default_spec_is_valid_and_matches_the_course_data():
    spec = default_spec()
    assert validate_spec(spec) == []
    assert {s.name: s.kind for s in spec.data_sources} == {
        "customers": "csv", "subscriptions": "parquet", "support": "sqlite", "usage_events": "jsonl",
        "cancellations": "csv"}
    p = spec.prediction
    assert (p.task, p.target, p.positive_class, p.id_column, p.time_column) == \
        ("binary", "churned", 1, "customer_id", "snapshot_month")
    assert p.label_rule["source"] == "cancellations"
    m = spec.metrics
    assert (m.offline_metric, m.threshold, m.cost_false_positive, m.cost_false_negative, m.currency) == \
        ("roc_auc", 0.70, 15, 180, "EUR")
    assert spec.serving.mode == "batch" and spec.retraining.cadence == "monthly"
    assert spec.value_proposition.sentence().startswith("For the retention team")


def test_round_trip_save_load(tmp_path):
    spec = default_spec()
    path = save_spec(spec, tmp_path / "sub" / "spec.yaml")
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    assert load_spec(path) == spec
    assert spec_from_dict(yaml.safe_load(path.read_text())) == spec


def test_save_refuses_an_invalid_spec(tmp_path):
    bad = dataclasses.replace(default_spec(), metrics=dataclasses.replace(default_spec().metrics, threshold=3))
    with pytest.raises(SpecError, match="between 0 and 1"):
        save_spec(bad, tmp_path / "spec.yaml")
    assert not (tmp_path / "spec.yaml").exists()


def test_design_doc_covers_every_part():
    doc = render_design_doc(default_spec())
    for heading in ["## The problem", "### Sub-problems", "## Value proposition", "## Stakeholders", "## Data sources",
                    "## Prediction task", "## Metrics", "## Serving", "## Retraining"]:
        assert heading in doc
    assert "`roc_auc` ≥ 0.7" in doc and "15 EUR" in doc and "180 EUR" in doc and "legitimate interest" in doc


# --- bad spec files ----------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    (tmp_path / "s.yaml").write_text("name: churn\nproblem: [unclosed\n")
    with pytest.raises(SpecError, match=r"(?s)s\.yaml has 1 problem.*not valid YAML at line 3"):
        load_spec(tmp_path / "s.yaml")


def test_list_instead_of_mapping(tmp_path):
    write_yaml(tmp_path / "s.yaml", [course_dict()])
    with pytest.raises(SpecError, match="mapping .* at the top level, got a list"):
        load_spec(tmp_path / "s.yaml")


def test_empty_file(tmp_path):
    (tmp_path / "s.yaml").write_text("")
    with pytest.raises(SpecError, match="the file is empty"):
        load_spec(tmp_path / "s.yaml")


def test_unknown_key_suggests_the_right_one(tmp_path):
    d = course_dict()
    d["metrics"]["thresold"] = d["metrics"].pop("threshold")
    with pytest.raises(SpecError) as e:
        load_spec(write_yaml(tmp_path / "s.yaml", d))
    assert "metrics.thresold: unknown key (did you mean 'threshold'?)" in str(e.value)
    assert any(p.startswith("metrics.threshold: missing") for p in e.value.problems)


def test_wrong_enum_lists_the_valid_values(tmp_path):
    d = course_dict()
    d["serving"]["mode"] = "realtime"
    with pytest.raises(SpecError) as e:
        load_spec(write_yaml(tmp_path / "s.yaml", d))
    assert e.value.problems == ["serving.mode: must be one of batch, online, got 'realtime'"]


def test_bad_threshold(tmp_path):
    d = course_dict()
    d["metrics"]["threshold"] = "high"
    with pytest.raises(SpecError) as e:
        load_spec(write_yaml(tmp_path / "s.yaml", d))
    assert e.value.problems == ["metrics.threshold: must be a number between 0 and 1 for roc_auc, got 'high'"]
    d["metrics"]["threshold"] = 1.5
    assert validate_spec(d) == ["metrics.threshold: must be a number between 0 and 1 for roc_auc, got 1.5"]


def test_unknown_role(tmp_path):
    d = course_dict()
    d["stakeholders"][0]["role"] = "cto"
    problems = validate_spec(d)
    assert len(problems) == 1 and problems[0].startswith("stakeholders[0].role: must be a role key, one of data_scientist")
    assert problems[0].endswith("got 'cto'")


def test_several_problems_reported_together(tmp_path):
    d = course_dict()
    d["name"] = ""
    d["metrics"]["offline_metric"] = "rmse"
    d["metrics"]["greater_is_better"] = "yes"
    d["serving"] = {"mode": "online"}
    d["data_sources"][0]["kind"] = "excel"
    d["data_sources"][1]["personal_data"] = "maybe"
    del d["prediction"]["positive_class"]
    d["retraining"]["triggers"] = ["drfit"]
    with pytest.raises(SpecError) as e:
        load_spec(write_yaml(tmp_path / "s.yaml", d))
    problems = e.value.problems
    fields = [p.split(":")[0] for p in problems]
    assert fields == ["name", "data_sources[0].kind", "data_sources[1].personal_data", "metrics.greater_is_better",
                      "retraining.triggers", "prediction.positive_class", "metrics.offline_metric",
                      "serving.latency_budget_ms"]
    message = str(e.value)
    assert message.startswith(f"spec file {tmp_path / 's.yaml'} has 8 problems")
    assert all(f"  - {p}" in message for p in problems)


def test_cross_field_rules():
    d = course_dict()
    d["metrics"]["greater_is_better"] = False
    d["metrics"]["cost_false_negative"] = None
    d["prediction"]["label_rule"]["source"] = "crm"
    d["prediction"]["time_column"] = "churned"
    problems = validate_spec(d)
    assert "metrics.greater_is_better: must be true for roc_auc (higher is better), got false" in problems
    assert any(p.startswith("metrics.cost_false_negative: a binary task needs the cost") for p in problems)
    assert any(p.startswith("prediction.label_rule.source: 'crm' is not a data source") for p in problems)
    assert "prediction.time_column: must differ from the target column 'churned'" in problems


def test_online_with_budget_is_fine_and_regression_needs_no_costs():
    spec = default_spec()
    online = dataclasses.replace(spec, serving=Serving("online", 120, "checkout page"))
    assert validate_spec(online) == []
    reg = dataclasses.replace(
        spec, prediction=dataclasses.replace(spec.prediction, task="regression", target="revenue", positive_class=None),
        metrics=Metrics("rmse", 12.0, False, ["mae"]), model_tests=[])
    assert validate_spec(reg) == []
    # the churn spec's behavioural tests expect classes: a regression spec must say what it expects instead
    with_tests = dataclasses.replace(reg, model_tests=spec.model_tests)
    assert [p for p in validate_spec(with_tests) if p.startswith("model_tests[2].cases")] == [
        "model_tests[2].cases[0].expect: a regression case expects a range, e.g. {min: 10, max: 20}, got 0",
        "model_tests[2].cases[1].expect: a regression case expects a range, e.g. {min: 10, max: 20}, got 1"]


def test_model_tests_survive_the_yaml_round_trip_and_are_dropped_when_the_target_changes(tmp_path):
    spec = default_spec()
    save_spec(spec, tmp_path / "spec.yaml")
    assert load_spec(tmp_path / "spec.yaml").model_tests == spec.model_tests
    assert spec_for_run(spec=str(tmp_path / "spec.yaml")).model_tests == spec.model_tests
    assert spec_for_run(target="plan", task="multiclass").model_tests == []


def test_spec_from_dict_rejects_non_mappings():
    with pytest.raises(SpecError, match="spec: must be a mapping"):
        spec_from_dict(["a"])
    with pytest.raises(SpecError) as e:
        spec_from_dict({})
    required = [f for f in dataclasses.fields(Spec) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert len(e.value.problems) == len(required) == 10  # every required part named; data_checks is optional


# --- infer_task --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values,task", [
    ([0, 1, 0, 1, 1], "binary"),
    (["yes", "no", "no"], "binary"),
    ([True, False, True], "binary"),
    (["setosa", "versicolor", "virginica", "setosa"], "multiclass"),
    ([0, 1, 2, 3, 2, 1], "multiclass"),
    ([0.1, 2.5, 3.75, 4.0, 1.2], "regression"),
    (list(range(200)), "regression"),
])
def test_infer_task(values, task):
    got, reason = infer_task(pd.Series(values, name="y"))
    assert got == task and "'y'" in reason


def test_infer_task_refuses_constant_or_empty_targets():
    with pytest.raises(ValueError, match="is constant"):
        infer_task(pd.Series(["a"] * 5, name="y"))
    with pytest.raises(ValueError, match="every row is missing"):
        infer_task(pd.Series([None] * 3, dtype=float, name="y"))


# --- spec_from_data ----------------------------------------------------------------------------------------------

@pytest.fixture
def iris_csv(tmp_path):
    from sklearn.datasets import load_iris
    path = tmp_path / "iris.csv"
    load_iris(as_frame=True).frame.to_csv(path, index=False)
    return path


@pytest.fixture
def cancer_parquet(tmp_path):
    from sklearn.datasets import load_breast_cancer
    path = tmp_path / "cancer.parquet"
    load_breast_cancer(as_frame=True).frame.to_parquet(path)
    return path


def test_spec_from_iris_csv(iris_csv, capsys):
    spec = spec_from_data(iris_csv, "target")
    assert "task: multiclass, inferred because" in capsys.readouterr().out
    assert validate_spec(spec) == []
    assert (spec.prediction.task, spec.prediction.positive_class, spec.metrics.offline_metric) == ("multiclass", None, "f1_macro")
    src = spec.data_sources[0]
    assert (src.kind, src.legal_basis) == ("csv", "unknown")
    assert "Legal basis unknown" in render_design_doc(spec)


def test_spec_from_parquet_binary_picks_the_minority_class(cancer_parquet, capsys):
    spec = spec_from_data(cancer_parquet, "target")
    out = capsys.readouterr().out
    assert spec.prediction.task == "binary" and spec.prediction.positive_class == 0  # 212 malignant vs 357 benign
    assert "the minority class (212 of 569 rows)" in out
    assert spec.data_sources[0].kind == "parquet" and spec.metrics.offline_metric == "roc_auc"
    assert spec_from_data(cancer_parquet, "target", positive_class="1").prediction.positive_class == 1


def test_spec_from_data_regression(tmp_path):
    from sklearn.datasets import load_diabetes
    load_diabetes(as_frame=True).frame.to_csv(tmp_path / "diabetes.csv", index=False)
    spec = spec_from_data(tmp_path / "diabetes.csv", "target")
    assert spec.prediction.task == "regression" and spec.metrics.cost_false_positive is None
    assert validate_spec(spec) == []


def test_missing_target_column_lists_the_columns(iris_csv):
    with pytest.raises(ValueError) as e:
        spec_from_data(iris_csv, "species")
    msg = str(e.value)
    assert "column 'species' given as target is not in iris.csv" in msg
    assert "sepal length (cm)" in msg and "pass -p target COL" in msg
    with pytest.raises(ValueError, match="pass -p target COL"):
        spec_from_data(iris_csv, None)


def test_bad_data_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        spec_from_data(tmp_path / "nope.csv", "y")
    (tmp_path / "data.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="unsupported file type '.xlsx'"):
        spec_from_data(tmp_path / "data.xlsx", "y")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        spec_from_data(tmp_path / "empty.csv", "y")
    (tmp_path / "header.csv").write_text("x,y\n")
    with pytest.raises(ValueError, match="but no rows"):
        spec_from_data(tmp_path / "header.csv", "y")


# --- spec_for_run ------------------------------------------------------------------------------------------------

def test_spec_for_run_defaults_to_the_course_spec():
    assert spec_for_run() == default_spec()
    assert spec_for_run(data="course", target="", spec="", threshold="") == default_spec()


def test_spec_for_run_overrides(iris_csv, tmp_path):
    assert spec_for_run(threshold=0.8).metrics.threshold == 0.8
    assert spec_for_run(positive_class="1").prediction.positive_class == 1
    s = spec_for_run(id_column="account_id", time_column="month")
    assert (s.prediction.id_column, s.prediction.time_column) == ("account_id", "month")
    s = spec_for_run(task="multiclass")
    assert (s.prediction.positive_class, s.metrics.offline_metric) == (None, "f1_macro")
    s = spec_for_run(data=str(iris_csv), target="target", threshold=0.9)
    assert (s.prediction.task, s.metrics.threshold) == ("multiclass", 0.9)
    path = save_spec(dataclasses.replace(default_spec(), name="mine"), tmp_path / "mine.yaml")
    assert spec_for_run(spec=str(path), threshold=0.65).name == "mine"


def test_spec_for_run_bad_overrides():
    with pytest.raises(SpecError, match="metrics.threshold: must be a number between 0 and 1 for roc_auc, got 'high'"):
        spec_for_run(threshold="high")
    with pytest.raises(SpecError, match="task: must be one of auto, binary, multiclass, regression"):
        spec_for_run(task="ranking")
    with pytest.raises(SpecError, match="only binary tasks have a positive class"):
        spec_for_run(task="regression", positive_class=1)
    with pytest.raises(FileNotFoundError, match="-p spec"):
        spec_for_run(spec="no/such/spec.yaml")


# --- the notebook as a pipeline step -----------------------------------------------------------------------------

def test_design_step_runs_with_plain_papermill(tmp_path, iris_csv):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "nbs" / "02_design.ipynb"), str(tmp_path / "out.ipynb"),
           "-p", "run_dir", str(run_dir), "-p", "data", str(iris_csv), "-p", "target", "target", "--no-progress-bar"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Unable to parse" not in r.stderr and "unknown parameter" not in r.stderr
    spec = load_spec(run_dir / "spec.yaml")
    assert (spec.name, spec.prediction.task, spec.prediction.target) == ("iris", "multiclass", "target")
    assert (run_dir / "design.md").read_text(encoding="utf-8").startswith("# Design: iris")
    metrics = json.loads((run_dir / "metrics" / "design.json").read_text())
    assert metrics == {"task": "multiclass", "target": "target", "offline_metric": "f1_macro", "threshold": 0.7,
                       "n_data_sources": 1, "n_sub_problems": 3}
