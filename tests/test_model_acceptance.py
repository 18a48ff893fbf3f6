"""Tests of mlops_kit.model.acceptance as a user meets it: a well-behaved model passes and the verdict is recorded with
the hashes of what was judged; gates and behavioural tests fail on purpose for every task type (a threshold of 0.99,
the dummy as the model, a test that must fail), acceptance.json is written before the error, which names every
failure; generic robustness tests when the spec has none; the notebook as a pipeline step that fails on rejection."""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from conftest import build_run, copy_run, run_step_cells, user_files
from mlops_kit.design import ModelTest, default_spec, save_spec, spec_from_data
from mlops_kit.model.acceptance import (AcceptanceFailed, accept, acceptance_metrics, behaviour_sample, check_acceptance,
                                        typical_row)
from mlops_kit.model.evaluate import evaluate
from mlops_kit.model.features import load_feature_plan, model_inputs, read_model_table
from mlops_kit.model.train import load_model, make_baseline, make_model, save_model, train
from mlops_kit.runfolder import read_json, sha256_file

ROOT = Path(__file__).resolve().parent.parent
COURSE = default_spec()


def feature_run(run: Path, spec, data="course", **knobs) -> Path:
    "A run folder with the outputs of the data steps and the features step, made in this process."
    return build_run(run, spec, data, until="features", **knobs)


def use_model(run: Path, spec, model) -> Path:
    "Put `model` (fitted) where the train step leaves its model, with the dummy baseline, and evaluate it."
    plan = load_feature_plan(run / "model" / "feature_plan.json")
    t = read_model_table(run)
    X, y = model_inputs(t[t.split.eq("train").to_numpy()], plan)
    save_model(model, run / "model" / "pipeline.skops")
    save_model(make_baseline(plan).fit(X, y), run / "model" / "baseline.skops")
    evaluate(run, spec)
    return run


def fit(run: Path, estimator):
    "`estimator` in the train step's pipeline shape, fitted on the run's training rows."
    plan = load_feature_plan(run / "model" / "feature_plan.json")
    t = read_model_table(run)
    X, y = model_inputs(t[t.split.eq("train").to_numpy()], plan)
    return make_model(plan, estimator).fit(X, y)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per task type a run folder up to the evaluation: the course business with a well-regularised logistic regression
    (binary), penguins and diabetes with the train step's own choice (multiclass, regression)."""
    d = tmp_path_factory.mktemp("runs")
    course = feature_run(d / "course", COURSE, n_customers=600)
    out = {"binary": (use_model(course, COURSE, fit(course, LogisticRegression(C=0.01, max_iter=2000))), COURSE)}
    for task, name, path, target in user_files(d):
        spec = spec_from_data(path, target)
        if task == "regression":   # the draft's placeholder gate is the team's to set; the tests pin their own
            spec = replace(spec, metrics=replace(spec.metrics, threshold=0.3))
        run = feature_run(d / name, spec, path)
        train(run, spec, search_budget=2, cv_folds=3)
        evaluate(run, spec)
        out[task] = (run, spec)
    return out


def rejected(run: Path, spec, **kw) -> tuple[str, dict]:
    "Run the step expecting a rejection: the error message and the acceptance.json written before it."
    with pytest.raises(AcceptanceFailed) as e:
        accept(run, spec, **kw)
    return str(e.value), read_json(run / "model" / "acceptance.json")


def failed_names(report: dict) -> list[str]:
    return [r["name"] for r in report["results"] if not r["passed"]]


# --- what passes --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_good_model_passes_and_the_verdict_is_recorded_with_what_was_judged(runs, task, tmp_path):
    run, spec = runs[task]
    run = copy_run(run, tmp_path / "run")
    res = accept(run, spec)
    saved = read_json(run / "model" / "acceptance.json")
    assert saved["passed"] is True and saved["failed"] == [] and res.passed
    assert saved["model_sha256"] == sha256_file(run / "model" / "pipeline.skops")
    assert saved["evaluation_sha256"] == sha256_file(run / "model" / "evaluation.json")
    kinds = [r["kind"] for r in saved["results"]]
    assert kinds[:2] == ["gate", "gate"]
    if spec.model_tests: assert kinds[-3:] == ["directional", "invariance", "minimum"]     # the course spec's three tests
    else: assert kinds[-4:] == ["robustness"] * 4                                          # a user's file: generic ones
    evaluation = read_json(run / "model" / "evaluation.json")
    gate = saved["results"][0]
    assert gate["value"] == evaluation["test"][spec.metrics.offline_metric]
    assert saved["results"][1]["value"] == pytest.approx(
        (1 if spec.metrics.greater_is_better else -1) * (gate["value"] - evaluation["baseline"]["test"][spec.metrics.offline_metric]))
    rec = acceptance_metrics(res)
    assert (rec["accepted"], rec["failed"], rec["checks"]) == (True, 0, len(saved["results"]))
    json.dumps(rec)


def test_the_course_tests_are_reported_case_by_case(runs):
    run, spec = runs["binary"]
    model = load_model(run / "model" / "pipeline.skops")
    t = read_model_table(run)
    test_rows, train_rows = (t[t.split.eq(s).to_numpy()].drop(columns="split") for s in ("test", "train"))
    evaluation = read_json(run / "model" / "evaluation.json")
    res = check_acceptance(model, evaluation, spec, test_rows, train_rows, behaviour_rows=150, seed=7)
    assert res.report["behaviour_rows"] == 150
    minimum = res.cases[res.cases.test == spec.model_tests[2].name]
    assert minimum.expect.tolist() == [0, 1] and minimum.got.tolist() == [0, 1] and minimum.passed.all()
    # the cases were filled from the training rows' typical values, and the decision used the evaluation's threshold
    typical = typical_row(train_rows, list(model.feature_names_in_))
    assert res.report["typical_row"]["country"] == typical["country"] == train_rows.country.mode().iloc[0]
    assert res.report["typical_row"]["sessions"] == float(train_rows.sessions.median())
    assert all(f"threshold {evaluation['threshold']:.3f}" in d for d in minimum.detail)
    # the same seed gives the same verdict, row for row
    again = check_acceptance(model, evaluation, spec, test_rows, train_rows, behaviour_rows=150, seed=7)
    assert again.report == res.report
    sample = behaviour_sample(test_rows, 150, seed=7)
    assert set(sample._row_id) <= set(test_rows._row_id)


# --- what fails, on purpose, per task type ------------------------------------------------------------------------

# a bar no model can clear: a threshold of 0.99, or (the penguins model may well be perfect on 69 birds) a margin of
# 0.99 over a baseline whose macro F1 is about 0.2
UNREACHABLE = {"binary": ("threshold", 0.99, "roc_auc on test"), "multiclass": ("baseline_margin", 0.99, "beats the baseline"),
               "regression": ("threshold", 0.99, "r2 on test")}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_an_unreachable_gate_fails_the_step_and_the_file_is_written_first(runs, task, tmp_path):
    run, spec = runs[task]
    run = copy_run(run, tmp_path / "run")
    field, value, gate = UNREACHABLE[task]
    message, saved = rejected(run, replace(spec, metrics=replace(spec.metrics, **{field: value})))
    assert saved["passed"] is False and saved["failed"] == [gate] == failed_names(saved)
    first = message.splitlines()[0]
    assert first.startswith(f"model rejected, 1 of {len(saved['results'])} checks failed: {gate} (")
    assert f"limit ≥ {value:g}" in first
    assert "Nothing was packaged" in message and "acceptance.json" in message


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_dummy_baseline_handed_in_as_the_model_is_rejected(runs, task, tmp_path):
    run, spec = runs[task]
    run = copy_run(run, tmp_path / "run")
    shutil.copy(run / "model" / "baseline.skops", run / "model" / "pipeline.skops")
    evaluate(run, spec)
    message, saved = rejected(run, spec)
    assert f"{spec.metrics.offline_metric} on test" in saved["failed"] and "beats the baseline" in saved["failed"]
    lift = next(r for r in saved["results"] if r["name"] == "beats the baseline")
    assert lift["value"] == pytest.approx(0.0)
    assert "beats the baseline" in message.splitlines()[0]


# behavioural tests that must fail on each task's model: the direction backwards, or invariance to a strong input
MUST_FAIL = {
    "binary": ModelTest("more failed payments lower the risk", "directional", column="payment_failures", change=2,
                        direction="down", tolerance=0.005),
    "multiclass": ModelTest("flipper length does not matter", "invariance", column="Flipper Length (mm)", values=[175.0, 230.0],
                            tolerance=0.05),
    "regression": ModelTest("a higher bmi lowers the prediction", "directional", column="bmi", change=0.05, direction="down",
                            tolerance=1.0),
}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_behavioural_test_that_must_fail_fails_with_its_evidence(runs, task, tmp_path):
    run, spec = runs[task]
    run = copy_run(run, tmp_path / "run")
    wrong = replace(spec, model_tests=[MUST_FAIL[task]])
    message, saved = rejected(run, wrong, behaviour_rows=60)
    assert saved["failed"] == [MUST_FAIL[task].name]                       # the gates still pass: only the test failed
    result = saved["results"][-1]
    assert result["value"] > MUST_FAIL[task].max_failure_rate and result["limit"] == MUST_FAIL[task].max_failure_rate
    evidence = [c for c in saved["cases"] if c["test"] == MUST_FAIL[task].name]
    assert 0 < len(evidence) <= 20
    test_ids = set(read_model_table(run).query("split == 'test'")._row_id)
    assert {c["_row_id"] for c in evidence} <= test_ids                    # failing rows are real test rows
    assert saved["behaviour_rows"] == 60
    assert MUST_FAIL[task].name in message.splitlines()[0]


def test_a_test_that_cannot_run_is_a_failure_with_a_reason_not_a_crash(runs):
    verdicts = {}
    for task, tests in (("multiclass", [ModelTest("no direction for classes", "directional", column="Body Mass (g)", change=100,
                                                  direction="up")]),
                        ("binary", [ModelTest("plan up", "directional", column="plan", change=1, direction="up"),
                                    ModelTest("ghost", "invariance", column="Wingspan", values=[1.0]),
                                    ModelTest("ghost case", "minimum", cases=[{"row": {"Wingspan": 3}, "expect": 1}])])):
        run, spec = runs[task]
        t = read_model_table(run)
        rows = t[t.split.eq("test").to_numpy()].drop(columns="split")
        res = check_acceptance(load_model(run / "model" / "pipeline.skops"), read_json(run / "model" / "evaluation.json"),
                               replace(spec, model_tests=tests), rows, t[t.split.eq("train").to_numpy()].drop(columns="split"))
        assert res.checks.passed.iloc[:2].all() and set(res.failures.name) == {x.name for x in tests}
        verdicts.update(zip(res.checks.name, res.checks.detail))
    assert "a multiclass prediction has no direction" in verdicts["no direction for classes"]
    assert "holds str values; a directional test needs numbers" in verdicts["plan up"]
    assert "column 'Wingspan' is not in the data" in verdicts["ghost"]
    assert "sets 'Wingspan', not an input column of the model" in verdicts["ghost case"]


def test_generic_robustness_tests_catch_a_pipeline_without_imputers(runs, tmp_path):
    run, spec = runs["regression"]
    run = copy_run(run, tmp_path / "run")
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    plan = load_feature_plan(run / "model" / "feature_plan.json")
    t = read_model_table(run)
    X, y = model_inputs(t[t.split.eq("train").to_numpy()], plan)
    fragile = Pipeline([("features", ColumnTransformer([("num", "passthrough", plan.numeric)])), ("model", LinearRegression())]).fit(X, y)
    use_model(run, spec, fragile)
    message, saved = rejected(run, spec)
    assert saved["failed"] == ["a missing value in any input column still gives a valid prediction"]
    result = saved["results"][-1]
    assert result["value"] == 1.0                                          # every numeric input breaks it
    assert {c["column"] for c in saved["cases"]} == set(plan.numeric)
    assert "Input X contains NaN" in result["detail"]


def test_a_well_regularised_course_model_passes_the_spec_tests_an_overfitted_one_does_not(runs, tmp_path):
    run, spec = runs["binary"]
    run = copy_run(run, tmp_path / "run")
    loose = fit(run, LogisticRegression(C=1.0, max_iter=2000))       # learns country noise from 600 customers
    use_model(run, spec, loose)
    message, saved = rejected(run, spec)
    assert saved["failed"] == ["the country alone does not change the risk"]   # gates, payments and cases still pass
    assert saved["results"][0]["passed"] and saved["results"][1]["passed"]


# --- parameters, inputs, the notebook -----------------------------------------------------------------------------

def test_bad_parameters_and_missing_inputs_fail_before_any_work(runs, tmp_path):
    run, spec = runs["binary"]
    run = copy_run(run, tmp_path / "run")
    for bad in (0, -1, 1.5, "200", True):
        with pytest.raises(ValueError, match="behaviour_rows must be a whole number of at least 1"):
            accept(run, spec, behaviour_rows=bad)
    assert not (run / "model" / "acceptance.json").exists()
    (run / "model" / "evaluation.json").unlink()
    with pytest.raises(FileNotFoundError, match="run the 'evaluate' step first"):
        accept(run, spec)
    (run / "model" / "pipeline.skops").unlink()
    with pytest.raises(FileNotFoundError, match="run the 'train' step first"):
        accept(run, spec)
    other = replace(spec, metrics=replace(spec.metrics, offline_metric="f1"))
    shutil.copy(runs["binary"][0] / "model" / "evaluation.json", run / "model" / "evaluation.json")
    shutil.copy(runs["binary"][0] / "model" / "pipeline.skops", run / "model" / "pipeline.skops")
    with pytest.raises(ValueError, match="evaluation.json scored 'roc_auc' but the spec's offline metric is 'f1'"):
        accept(run, other)


def test_the_notebook_accepts_as_a_pipeline_step_and_fails_the_step_on_rejection(runs, tmp_path):
    import papermill
    run, spec = runs["binary"]
    good = copy_run(run, tmp_path / "good")
    run_step_cells(ROOT / "nbs" / "23_model_acceptance.ipynb", good, tmp_path / "good.ipynb", behaviour_rows=100)
    assert read_json(good / "model" / "acceptance.json")["passed"] is True
    metrics = read_json(good / "metrics" / "acceptance.json")
    assert metrics["accepted"] is True and metrics["behaviour_rows"] == 100
    bad = copy_run(run, tmp_path / "bad")
    save_spec(replace(spec, metrics=replace(spec.metrics, threshold=0.99)), bad / "spec.yaml")
    with pytest.raises(papermill.PapermillExecutionError) as e:
        run_step_cells(ROOT / "nbs" / "23_model_acceptance.ipynb", bad, tmp_path / "bad.ipynb")
    assert e.value.ename == "AcceptanceFailed" and "roc_auc on test" in e.value.evalue
    assert read_json(bad / "model" / "acceptance.json")["passed"] is False          # written before the step failed
    assert read_json(bad / "metrics" / "acceptance.json")["failed_checks"] == "roc_auc on test"   # and measured


def test_load_acceptance_reads_what_the_step_wrote_and_names_a_broken_file(runs, tmp_path):
    from mlops_kit.model.acceptance import ACCEPTANCE_FILE, load_acceptance
    from mlops_kit.runfolder import write_json
    run, spec = runs["binary"]
    run = copy_run(run, tmp_path / "run")
    accept(run, spec, raise_on_failure=False)
    report = load_acceptance(run)
    assert report == read_json(run / ACCEPTANCE_FILE)
    write_json(run / ACCEPTANCE_FILE, {k: v for k, v in report.items() if k != "results"} | {"passed": "yes"})
    with pytest.raises(ValueError, match="acceptance.json is not an acceptance report the kit can read: 'passed' is a str, not "
                                         "a bool; no 'results' key; re-run the acceptance step"):
        load_acceptance(run)
    (run / ACCEPTANCE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="run the 'acceptance' step first"):
        load_acceptance(run)


def test_a_malformed_evaluation_fails_acceptance_naming_the_file_and_the_step(runs, tmp_path):
    from mlops_kit.runfolder import write_json
    run, spec = runs["binary"]
    run = copy_run(run, tmp_path / "run")
    evaluation = read_json(run / "model" / "evaluation.json")
    write_json(run / "model" / "evaluation.json", {k: v for k, v in evaluation.items() if k != "baseline"})
    with pytest.raises(ValueError, match="evaluation.json is not an evaluation report the kit can read: no 'baseline' key; "
                                         "re-run the evaluate step"):
        accept(run, spec)
