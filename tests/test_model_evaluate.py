"""Tests of mlops_kit.model.evaluate as a user meets it: the step's four files per task type, metrics that agree with
their definitions recomputed from the saved predictions, a decision threshold that is the cheapest on the validation
rows and moves with the costs, slices and worst cases, determinism, the notebook as a pipeline step, and clear errors
for bad input."""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as M

from conftest import build_run, copy_run, run_step_cells, user_files
from mlops_kit.design import default_spec, spec_from_data
from mlops_kit.model.evaluate import (EVAL_SPLITS, choose_threshold, cost_curve, evaluate, evaluate_model, evaluation_metrics,
                                      evaluation_rows, model_output)
from mlops_kit.model.features import load_feature_plan, read_model_table
from mlops_kit.model.train import load_model
from mlops_kit.runfolder import read_json, sha256_file

ROOT = Path(__file__).resolve().parent.parent
COURSE = default_spec()


def trained_run(run: Path, spec, data="course", **knobs) -> Path:
    "A run folder with the outputs of every step up to train, made in this process."
    return build_run(run, spec, data, until="train", train_options={"search_budget": 2, "cv_folds": 3}, **knobs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "One trained run per task type: the course business (binary), penguins (multiclass), diabetes (regression)."
    d = tmp_path_factory.mktemp("runs")
    out = {"binary": (trained_run(d / "course", COURSE, n_customers=400, seed=3), COURSE)}
    for task, name, path, target in user_files(d):
        spec = spec_from_data(path, target)
        out[task] = (trained_run(d / name, spec, path), spec)
    return out


def labels_of(run: Path, spec) -> pd.DataFrame:
    t = read_model_table(run)
    return t[t.split.isin(EVAL_SPLITS)].set_index("_row_id")


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_step_writes_evaluation_predictions_slices_and_errors(runs, task, tmp_path):
    run, spec = runs[task]
    run = copy_run(run, tmp_path / "run")
    ev = evaluate(run, spec)
    rep = read_json(run / "model" / "evaluation.json")
    assert rep["task"] == task and rep["metric"] == spec.metrics.offline_metric
    assert rep["greater_is_better"] == spec.metrics.greater_is_better
    for part in (rep["valid"], rep["test"], rep["baseline"]["valid"], rep["baseline"]["test"]):
        assert spec.metrics.offline_metric in part and part[spec.metrics.offline_metric] is not None
    preds = pd.read_parquet(run / "model" / "predictions.parquet")
    truth = labels_of(run, spec)
    # every valid and test row exactly once, with its split and its true label
    assert sorted(preds._row_id) == sorted(truth.index) and not preds._row_id.duplicated().any()
    assert (preds.split.to_numpy() == truth.loc[preds._row_id, "split"].to_numpy()).all()
    assert [str(v) for v in preds.y_true] == [str(v) for v in truth.loc[preds._row_id, spec.prediction.target]]
    assert rep["rows"] == {s: int((preds.split == s).sum()) for s in EVAL_SPLITS}
    if task == "regression":
        assert list(preds.columns) == ["_row_id", "split", "y_true", "y_pred"] and rep["threshold"] is None
    else:
        proba = preds.filter(like="proba_")
        assert proba.shape[1] == len(rep["classes"])
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    slices = pd.read_csv(run / "model" / "slices.csv")
    assert len(slices) == len(rep["slices"]) > 0
    for col, rows in slices.groupby("column").rows.sum().items():      # the slices of a column cover every test row
        assert rows == rep["rows"]["test"], col
    errors = pd.read_csv(run / "model" / "errors.csv")
    assert len(errors) == min(20, rep["rows"]["test"])
    assert set(errors._row_id) <= set(preds._row_id[preds.split == "test"])
    assert ev.report == rep


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_reported_metrics_match_their_definitions_on_the_saved_predictions(runs, task, tmp_path):
    run, spec = runs[task]
    run = copy_run(run, tmp_path / "run")
    rep = evaluate(run, spec).report
    preds = pd.read_parquet(run / "model" / "predictions.parquet")
    for s in EVAL_SPLITS:
        p = preds[preds.split == s]
        got = rep[s]
        if task == "binary":
            assert got["roc_auc"] == pytest.approx(M.roc_auc_score(p.y_true == 1, p.proba_1))
            assert got["average_precision"] == pytest.approx(M.average_precision_score(p.y_true == 1, p.proba_1))
            assert got["recall"] == pytest.approx(M.recall_score(p.y_true, p.y_pred))
        elif task == "multiclass":
            assert got["f1_macro"] == pytest.approx(M.f1_score(p.y_true, p.y_pred, average="macro"))
            assert got["accuracy"] == pytest.approx(M.accuracy_score(p.y_true, p.y_pred))
        else:
            assert got["rmse"] == pytest.approx(np.sqrt(M.mean_squared_error(p.y_true, p.y_pred)))
            assert got["r2"] == pytest.approx(M.r2_score(p.y_true, p.y_pred))
            assert got["mae"] == pytest.approx(M.mean_absolute_error(p.y_true, p.y_pred))
    m = spec.metrics.offline_metric
    base = rep["baseline"]["test"][m]
    assert (rep["test"][m] > base) if spec.metrics.greater_is_better else (rep["test"][m] < base)   # the model beats the dummy
    if task == "binary": assert rep["baseline"]["test"]["roc_auc"] == 0.5                            # the dummy cannot rank


def test_the_threshold_is_the_cheapest_on_valid_and_the_test_cost_is_recomputable(runs, tmp_path):
    run, spec = runs["binary"]
    run = copy_run(run, tmp_path / "run")
    rep = evaluate(run, spec).report
    preds = pd.read_parquet(run / "model" / "predictions.parquet")
    fp_cost, fn_cost = spec.metrics.cost_false_positive, spec.metrics.cost_false_negative
    valid, test = preds[preds.split == "valid"], preds[preds.split == "test"]
    grid = np.round(np.linspace(0, 1, 1001), 3)
    costs = [fp_cost * ((valid.proba_1 >= t) & (valid.y_true == 0)).sum() + fn_cost * ((valid.proba_1 < t) & (valid.y_true == 1)).sum()
             for t in grid]
    t = rep["threshold"]
    chosen_cost = fp_cost * ((valid.proba_1 >= t) & (valid.y_true == 0)).sum() + fn_cost * ((valid.proba_1 < t) & (valid.y_true == 1)).sum()
    assert chosen_cost == min(costs)                                        # nothing on the grid is cheaper on valid
    assert (preds.y_pred == (preds.proba_1 >= t).astype(int)).all()         # every decision uses that threshold
    chosen = rep["cost"]["test"]["chosen"]
    fp, fn = int(((test.proba_1 >= t) & (test.y_true == 0)).sum()), int(((test.proba_1 < t) & (test.y_true == 1)).sum())
    assert (chosen["fp"], chosen["fn"], chosen["cost"]) == (fp, fn, fp_cost * fp + fn_cost * fn)
    assert chosen["cost_per_1000"] == pytest.approx(1000 * chosen["cost"] / len(test))
    assert chosen["contact_nobody"] == fn_cost * int((test.y_true == 1).sum())
    assert chosen["contact_everyone"] == fp_cost * int((test.y_true == 0).sum())
    assert chosen["cost"] < min(chosen["contact_nobody"], chosen["contact_everyone"])
    assert rep["cost"]["break_even"] == pytest.approx(fp_cost / (fp_cost + fn_cost))
    assert 0 < t < 1 and rep["threshold_rule"].startswith("the lowest expected cost on the valid rows")


def test_the_threshold_moves_with_the_costs_and_falls_back_to_half_without_them(runs):
    run, spec = runs["binary"]
    model, baseline = load_model(run / "model" / "pipeline.skops"), load_model(run / "model" / "baseline.skops")
    rows = evaluation_rows(read_model_table(run), "churned")
    def threshold(**costs):
        s = replace(spec, metrics=replace(spec.metrics, **costs))
        return evaluate_model(model, baseline, rows, s).report["threshold"]
    cheap, dear = threshold(cost_false_positive=5.0), threshold(cost_false_positive=90.0)
    assert cheap <= threshold() <= dear and cheap < dear                   # dearer calls need more certainty
    no_costs = replace(spec, metrics=replace(spec.metrics, cost_false_positive=None, cost_false_negative=None))
    rep = evaluate_model(model, baseline, rows, no_costs).report
    assert rep["threshold"] == 0.5 and rep["cost"] is None and "no error costs" in rep["threshold_rule"]


def test_choose_threshold_on_a_case_worked_by_hand():
    y, p = np.array([False, True, False, True, False]), np.array([0.1, 0.35, 0.4, 0.7, 0.9])
    # acting at t in (0.1, 0.35] calls 4 rows: 2 wasted calls (cost 1 each), no miss: cost 2; the cheapest possible
    assert choose_threshold(y, p, 1, 10) == pytest.approx(0.225, abs=0.002)
    assert cost_curve(y, p, 1, 10, thresholds=[0.0, 0.2, 0.5, 1.0]).cost.tolist() == [3, 2, 11, 20]
    # with a miss cheaper than a wasted call, calling nobody wins
    assert choose_threshold(y, p, 10, 1) > 0.9
    with pytest.raises(ValueError, match="needs two error costs"):
        choose_threshold(y, p, -1, 10)


def test_slices_follow_the_parameter_then_the_spec_then_the_data(runs, tmp_path):
    run, spec = runs["binary"]
    model, baseline = load_model(run / "model" / "pipeline.skops"), load_model(run / "model" / "baseline.skops")
    rows = evaluation_rows(read_model_table(run), "churned")
    assert evaluate_model(model, baseline, rows, spec).report["slice_columns"] == ["plan", "country"]
    rep = evaluate_model(model, baseline, rows, spec, slice_column="acquisition_channel").report
    assert rep["slice_columns"] == ["acquisition_channel"] and rep["slice_reason"] == "the slice_column parameter"
    test_rows = rows[rows.split == "test"]
    counts = test_rows.acquisition_channel.fillna("(missing)").value_counts()
    assert {s["value"]: s["rows"] for s in rep["slices"]} == counts.to_dict()
    unsliced = replace(spec, metrics=replace(spec.metrics, slices=[]))
    picked = evaluate_model(model, baseline, rows, unsliced).report["slice_columns"]
    plan = load_feature_plan(run / "model" / "feature_plan.json")
    assert len(picked) == 1 and picked[0] in plan.categorical            # the first category input
    # a gate no slice can reach flags every slice that is not too small to judge
    strict = replace(spec, metrics=replace(spec.metrics, threshold=0.999))
    flags = {s["flag"] for s in evaluate_model(model, baseline, rows, strict).report["slices"]}
    assert flags <= {"weak: misses the gate", "small: fewer than 30 rows", "undefined: a single class in this slice"}
    assert "weak: misses the gate" in flags
    with pytest.raises(ValueError, match="slice_column 'colour' is not a column of the labelled table"):
        evaluate(copy_run(run, tmp_path / "run"), spec, slice_column="colour")


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_worst_cases_are_the_most_confident_mistakes(runs, task, tmp_path):
    run, spec = runs[task]
    run = copy_run(run, tmp_path / "run")
    evaluate(run, spec)
    errors = pd.read_csv(run / "model" / "errors.csv")
    preds = pd.read_parquet(run / "model" / "predictions.parquet")
    test = preds[preds.split == "test"]
    if task == "regression":
        residual = (test.y_pred - test.y_true).abs()
        assert errors.residual.abs().is_monotonic_decreasing
        assert errors.residual.abs().min() >= residual.nlargest(len(errors)).min() - 1e-9
    else:
        classes = json.loads((run / "model" / "evaluation.json").read_text())["classes"]
        proba = test[[f"proba_{c}" for c in classes]].to_numpy()
        p_true = proba[np.arange(len(test)), [[str(c) for c in classes].index(str(t)) for t in test.y_true]]
        wrong = (test.y_true.astype(str) != test.y_pred.astype(str)).to_numpy()
        n_wrong = int(errors.wrong.sum())
        assert n_wrong == min(int(wrong.sum()), len(errors))                 # wrong ones first, as many as there are
        assert errors.wrong.iloc[:n_wrong].all()
        if n_wrong: assert errors.p_true.iloc[:n_wrong].max() <= np.sort(p_true[wrong])[n_wrong - 1] + 1e-9
        assert len(classes) >= 2
    assert set(read_model_table(run).columns) & set(errors.columns) - {"_row_id"}   # the rows come with their inputs


def test_same_inputs_give_identical_files_and_the_metrics_reach_the_run(runs, tmp_path):
    run, spec = runs["binary"]
    a, b = copy_run(run, tmp_path / "a"), copy_run(run, tmp_path / "b")
    rep = evaluate(a, spec).report
    evaluate(b, spec)
    for f in ("evaluation.json", "predictions.parquet", "slices.csv", "errors.csv"):
        assert sha256_file(a / "model" / f) == sha256_file(b / "model" / f), f
    rec = evaluation_metrics(rep)
    assert rec["roc_auc_test"] == rep["test"]["roc_auc"] and rec["baseline_roc_auc_test"] == 0.5
    assert rec["decision_threshold"] == rep["threshold"] and rec["test_cost"] == rep["cost"]["test"]["chosen"]["cost"]
    json.dumps(rec)


def test_a_model_that_does_not_fit_the_task_or_the_labels_is_refused(runs, tmp_path):
    bin_run, bin_spec = runs["binary"]
    reg_run, reg_spec = runs["regression"]
    pen_run, pen_spec = runs["multiclass"]
    rows = evaluation_rows(read_model_table(bin_run), "churned")
    regressor = load_model(reg_run / "model" / "pipeline.skops")
    with pytest.raises(ValueError, match="has no predict_proba"):
        model_output(regressor, rows, "binary")
    classifier = load_model(bin_run / "model" / "pipeline.skops")
    with pytest.raises(ValueError, match="the model is a classifier"):
        model_output(classifier, rows, "regression")
    # labels the model has never seen (another data set, or a changed label) are refused by name
    pen_model = load_model(pen_run / "model" / "pipeline.skops")
    pen_rows = evaluation_rows(read_model_table(pen_run), "Species")
    wrong_labels = pen_rows.assign(Species="Emperor penguin")
    with pytest.raises(ValueError, match="labels Emperor penguin are not classes the model knows"):
        evaluate_model(pen_model, pen_model, wrong_labels, pen_spec)


def test_missing_inputs_name_the_step_to_run(runs, tmp_path):
    run, spec = runs["binary"]
    run = copy_run(run, tmp_path / "run")
    (run / "model" / "baseline.skops").unlink()
    with pytest.raises(FileNotFoundError, match="run the 'train' step first"):
        evaluate(run, spec)
    shutil.rmtree(run / "model")
    with pytest.raises(FileNotFoundError, match="run the 'features' step first"):
        evaluate(run, spec)
    table = read_model_table(runs["binary"][0])
    with pytest.raises(ValueError, match="the test split has no rows"):
        evaluation_rows(table.assign(split=table.split.replace("test", "train")), "churned")


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_the_notebook_runs_as_a_pipeline_step_on_its_own_cells(runs, task, tmp_path):
    run, spec = runs[task]
    run = copy_run(run, tmp_path / "run")
    run_step_cells(ROOT / "nbs" / "22_model_evaluate.ipynb", run, tmp_path / "evaluate.ipynb")
    rep = read_json(run / "model" / "evaluation.json")
    metrics = read_json(run / "metrics" / "evaluate.json")
    m = rep["metric"]
    assert metrics[f"{m}_test"] == rep["test"][m] and metrics[f"baseline_{m}_test"] == rep["baseline"]["test"][m]
    assert ("decision_threshold" in metrics) == (task == "binary")


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_load_evaluation_reads_what_the_step_wrote_and_names_a_broken_file(runs, tmp_path, task):
    from mlops_kit.model.evaluate import EVALUATION_FILE, load_evaluation
    from mlops_kit.runfolder import write_json
    run = copy_run(runs[task][0], tmp_path / "run")
    evaluate(run, runs[task][1])
    report = load_evaluation(run)
    assert report == read_json(run / EVALUATION_FILE) and report["task"] == task
    write_json(run / EVALUATION_FILE, {**report, "test": {"rows": 3.0}})
    with pytest.raises(ValueError, match=rf"evaluation.json is not an evaluation report the kit can read: the test scores lack "
                                         rf"the offline metric '{report['metric']}'; re-run the evaluate step"):
        load_evaluation(run)
    write_json(run / EVALUATION_FILE, [report])
    with pytest.raises(ValueError, match="holds a list, not an object"):
        load_evaluation(run)
    (run / EVALUATION_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="run the 'evaluate' step first"):
        load_evaluation(run)


def test_infinite_values_in_the_rows_to_score_are_refused_with_the_column_named(runs, tmp_path):
    from mlops_kit.model.features import LABELLED_FILE, split_rows
    from mlops_kit.runfolder import write_parquet
    run = copy_run(runs["binary"][0], tmp_path / "run")
    column = load_feature_plan(run / "model" / "feature_plan.json").numeric[0]
    t = pd.read_parquet(run / LABELLED_FILE)
    t.loc[t._row_id.isin(split_rows(read_model_table(run), "test")._row_id.iloc[:3]), column] = np.inf
    write_parquet(run / LABELLED_FILE, t)
    with pytest.raises(ValueError, match=rf"the valid and test rows: column\(s\) '{column}' \(3 infinite value\(s\)\)"):
        evaluate(run, COURSE)
