"""Tests of mlops_kit.model.train: the step's files per task type, training on training rows only, group-aware folds,
the search budget, determinism by seed, metric values against their definitions, skops loading that trusts exactly the
kit's types, the notebook as a pipeline step, and clear errors for bad parameters and missing inputs."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as M

from conftest import build_run, copy_run, run_step_cells, user_files
from mlops_kit.design import default_spec, spec_from_data
from mlops_kit.model.features import FeaturePlan, load_feature_plan, model_inputs, read_model_table
from mlops_kit.model.train import (EXPERIMENT_COLUMNS, GREATER_IS_BETTER, cv_folds_for, load_model, metric_value,
                                   save_model, search_candidates, train, train_models, untrusted_types)
from mlops_kit.runfolder import read_json, write_parquet

ROOT = Path(__file__).resolve().parent.parent
COURSE = default_spec()
SAME = ["experiment", "candidate", "params", "mean_cv_score", "std_cv_score", "cv_scores", "rank", "is_best"]


@pytest.fixture(scope="module")
def course_run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("course"), COURSE, n_customers=300, seed=5, until="features")


@pytest.fixture(scope="module")
def file_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    out = {}
    for _, name, path, target in user_files(d):
        spec = spec_from_data(path, target)
        out[name] = (build_run(d / name, spec, path, until="features"), spec)
    return out


def test_the_step_writes_the_model_the_baseline_and_every_experiment(course_run, tmp_path):
    run = copy_run(course_run, tmp_path / "run")
    res = train(run, COURSE, seed=42, search_budget=3, cv_folds=3)
    ex = pd.read_csv(run / "model" / "experiments.csv")
    assert list(ex.columns) == EXPERIMENT_COLUMNS
    assert len(ex) == 1 + 2 * 3 and ex.candidate.iloc[0] == "baseline" and ex.is_best.sum() == 1
    assert set(ex.candidate[1:]) == {"logistic", "hist_gradient_boosting"}
    assert all(isinstance(json.loads(p), dict) for p in ex.params)
    assert all(len(json.loads(s)) == 3 for s in ex.cv_scores)
    np.testing.assert_allclose(ex.mean_cv_score, [np.mean(json.loads(s)) for s in ex.cv_scores], atol=1e-9)
    best = ex[ex.is_best].iloc[0]
    assert best.mean_cv_score == ex[ex.candidate.ne("baseline")].mean_cv_score.max() and best["rank"] == 1
    report = read_json(run / "model" / "train_report.json")
    assert report["best"]["candidate"] == best.candidate and report["best"]["params"] == json.loads(best.params)
    assert report["baseline"]["cv_score"] == 0.5 and report["best"]["cv_score"] > 0.65
    assert (report["metric"], report["cv_kind"], report["group_column"], report["seed"]) == \
        ("roc_auc", "stratified group k-fold", "customer_id", 42)
    model, baseline = load_model(run / "model" / "pipeline.skops"), load_model(run / "model" / "baseline.skops")
    t = read_model_table(run)
    valid = t[t.split.eq("valid")]
    np.testing.assert_array_equal(model.predict_proba(valid), res.model.predict_proba(valid))
    assert type(model.named_steps["model"]).__name__ == {"logistic": "LogisticRegression",
                                                        "hist_gradient_boosting": "HistGradientBoostingClassifier"}[best.candidate]
    assert type(baseline.named_steps["model"]).__name__ == "DummyClassifier"
    # the model takes raw labelled-table rows, extra columns and all
    assert model.predict(valid).shape == (len(valid),) and set(model.predict(valid)) <= {0, 1}


def test_same_parameters_give_the_same_scores_and_predictions_another_seed_does_not(course_run, tmp_path):
    a, b, c = (copy_run(course_run, tmp_path / n) for n in "abc")
    for run, seed in ((a, 42), (b, 42), (c, 3)):
        train(run, COURSE, seed=seed)
    read = lambda run: pd.read_csv(run / "model" / "experiments.csv")
    assert read(a)[SAME].to_csv() == read(b)[SAME].to_csv()
    assert (a / "model" / "experiments.csv").read_text() != "" and read(a).fit_seconds.notna().all()
    rows = read_model_table(a)
    p_a = load_model(a / "model" / "pipeline.skops").predict_proba(rows)
    p_b = load_model(b / "model" / "pipeline.skops").predict_proba(rows)
    assert np.array_equal(p_a, p_b)
    assert read(c).params.tolist() != read(a).params.tolist()


def test_validation_test_and_unlabelled_rows_never_reach_the_fit(course_run, tmp_path):
    clean, dirty = copy_run(course_run, tmp_path / "clean"), copy_run(course_run, tmp_path / "dirty")
    train(clean, COURSE)
    # scramble every row outside training: labels flipped, numbers and categories nonsense
    t = read_model_table(dirty)
    outside = ~t.split.eq("train").to_numpy()
    labelled = pd.read_parquet(dirty / "data" / "labelled.parquet")
    labelled.loc[outside, "churned"] = 1 - labelled.loc[outside, "churned"]
    labelled.loc[outside, "monthly_fee"] = 99.0
    labelled.loc[outside, "country"] = "Atlantis"
    write_parquet(dirty / "data" / "labelled.parquet", labelled)
    train(dirty, COURSE)
    read = lambda run: pd.read_csv(run / "model" / "experiments.csv")[SAME]
    assert read(clean).to_csv() == read(dirty).to_csv()
    probe = read_model_table(clean)
    np.testing.assert_array_equal(load_model(clean / "model" / "pipeline.skops").predict_proba(probe),
                                  load_model(dirty / "model" / "pipeline.skops").predict_proba(probe))
    assert read_json(dirty / "model" / "train_report.json")["rows"]["train"] == int((~outside & t.churned.notna().to_numpy()).sum())


def test_folds_keep_every_customer_on_one_side(course_run):
    t = read_model_table(course_run)
    tr = t[t.split.eq("train")].reset_index(drop=True)
    plan = load_feature_plan(course_run / "model" / "feature_plan.json")
    _, y = model_inputs(tr, plan)
    folds, kind = cv_folds_for(y, plan, 4, 0, tr.customer_id.to_numpy())
    assert kind == "stratified group k-fold" and len(folds) == 4
    for fit, held in folds:
        assert not set(tr.customer_id[fit]) & set(tr.customer_id[held])
        assert 0 < y[held].mean() < 0.3       # every fold holds churners, at roughly the overall rate
    assert sorted(np.concatenate([h for _, h in folds])) == list(range(len(tr)))


def test_a_larger_budget_extends_a_smaller_one(course_run):
    t = read_model_table(course_run)
    tr = t[t.split.eq("train")].reset_index(drop=True)
    plan = load_feature_plan(course_run / "model" / "feature_plan.json")
    X, y = model_inputs(tr, plan)
    groups = tr.customer_id.to_numpy()
    small = search_candidates(X, y, plan, "roc_auc", "logistic", 2, 3, 1, groups)
    large = search_candidates(X, y, plan, "roc_auc", "logistic", 5, 3, 1, groups)
    assert len(small) == 3 and len(large) == 6
    pd.testing.assert_frame_equal(small[["params", "mean_cv_score"]], large[["params", "mean_cv_score"]].head(3))
    assert large[large.is_best].mean_cv_score.iloc[0] >= small[small.is_best].mean_cv_score.iloc[0]


@pytest.mark.parametrize("name", ["penguins", "diabetes"])
def test_multiclass_and_regression_files_train_and_beat_the_baseline(file_runs, name, tmp_path):
    run, spec = file_runs[name]
    run = copy_run(run, tmp_path / name)
    res = train(run, spec, candidates="auto")
    rep = read_json(run / "model" / "train_report.json")
    model = load_model(run / "model" / "pipeline.skops")
    t = read_model_table(run)
    test = t[t.split.eq("test")]
    plan = load_feature_plan(run / "model" / "feature_plan.json")
    _, y_test = model_inputs(test, plan)
    if name == "penguins":
        assert rep["metric"] == "f1_macro" and rep["cv_kind"] == "stratified k-fold"
        assert rep["classes"] == plan.classes and len(rep["classes"]) == 3
        assert rep["best"]["cv_score"] > 0.9 > 0.5 > rep["baseline"]["cv_score"]
        assert model.predict_proba(test).shape == (len(test), 3)
        assert set(model.predict(test)) <= set(plan.classes)
        assert M.f1_score(y_test, model.predict(test), average="macro") > 0.9
    else:
        assert rep["metric"] == "r2" and rep["cv_kind"] == "k-fold" and "classes" not in rep
        assert set(res.experiments.candidate[1:]) == {"ridge", "hist_gradient_boosting"}
        assert rep["best"]["cv_score"] > 0.3 and abs(rep["baseline"]["cv_score"]) < 0.05
        pred = model.predict(test)
        assert pred.dtype == np.float64 and M.r2_score(y_test, pred) > 0.3


def test_an_error_metric_picks_the_smallest_value(file_runs, tmp_path):
    run, spec = file_runs["diabetes"]
    run = copy_run(run, tmp_path / "d")
    spec.metrics.offline_metric, spec.metrics.greater_is_better = "rmse", False
    res = train(run, spec, search_budget=3)
    ex = res.experiments
    assert ex[ex.is_best].mean_cv_score.iloc[0] == ex[ex.candidate.ne("baseline")].mean_cv_score.min()
    assert (ex.mean_cv_score > 0).all()                                   # rmse is reported in its own units
    assert ex.sort_values("rank").mean_cv_score.is_monotonic_increasing
    assert res.report["greater_is_better"] is False


def test_metric_values_match_their_definitions():
    rng = np.random.default_rng(1)
    y = rng.choice(["no", "yes"], 200)
    proba_yes = np.clip((y == "yes") * 0.3 + rng.random(200) * 0.7, 0, 1)
    proba = np.c_[1 - proba_yes, proba_yes]
    pred = np.where(proba_yes > 0.5, "yes", "no")
    kw = dict(classes=["no", "yes"], positive_class="yes")
    assert metric_value("roc_auc", y, proba=proba, **kw) == pytest.approx(M.roc_auc_score(y == "yes", proba_yes))
    assert metric_value("average_precision", y, proba=proba, **kw) == pytest.approx(M.average_precision_score(y == "yes", proba_yes))
    # the positive class is looked up by name: "no" as positive ranks by the other column
    assert metric_value("roc_auc", y, proba=proba, classes=["no", "yes"], positive_class="no") == pytest.approx(
        M.roc_auc_score(y == "no", 1 - proba_yes))
    assert metric_value("f1", y, pred=pred, **kw) == pytest.approx(M.f1_score(y, pred, pos_label="yes"))
    assert metric_value("log_loss", y, proba=proba, **kw) == pytest.approx(M.log_loss(y, proba))
    yr, pr = rng.normal(size=50), rng.normal(size=50)
    assert metric_value("rmse", yr, pred=pr) == pytest.approx(np.sqrt(np.mean((yr - pr) ** 2)))
    assert metric_value("mae", yr, pred=pr) == pytest.approx(np.mean(np.abs(yr - pr)))
    assert set(GREATER_IS_BETTER) == {"roc_auc", "average_precision", "f1", "accuracy", "log_loss", "f1_macro",
                                      "balanced_accuracy", "rmse", "mae", "r2", "mape"}
    from mlops_kit.design import TASK_METRICS
    for task, metrics in TASK_METRICS.items():
        for metric, greater in metrics.items():
            assert GREATER_IS_BETTER[metric] == greater, (task, metric)


def test_load_model_refuses_untrusted_types_and_files_that_are_not_models(course_run, tmp_path):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    run = copy_run(course_run, tmp_path / "run")
    train(run, COURSE, search_budget=1)
    assert untrusted_types(run / "model" / "pipeline.skops") == []
    odd = Pipeline([("f", FunctionTransformer(json.dumps))])   # a function from an arbitrary module
    save_model(odd, tmp_path / "odd.skops")
    with pytest.raises(ValueError, match="outside the allowlist, so it was not loaded: json.dumps"):
        load_model(tmp_path / "odd.skops")
    # a numpy function is a function too: trusting every name under numpy is the hole the bundle check closed
    save_model(Pipeline([("f", FunctionTransformer(np.log1p))]), tmp_path / "np.skops")
    assert untrusted_types(tmp_path / "np.skops") == ["numpy.log1p"]
    with pytest.raises(ValueError, match="numpy.log1p"):
        load_model(tmp_path / "np.skops")
    (tmp_path / "junk.skops").write_bytes(b"PK\x03\x04 definitely not a model")
    with pytest.raises(ValueError, match="is not a skops model file"):
        load_model(tmp_path / "junk.skops")
    with pytest.raises(FileNotFoundError, match="run the 'train' step first"):
        load_model(tmp_path / "none.skops")


def test_bad_parameters_and_missing_inputs_fail_before_any_work(course_run, tmp_path):
    run = copy_run(course_run, tmp_path / "run")
    with pytest.raises(ValueError, match="'svm': not a binary candidate; use auto or a comma list of logistic"):
        train(run, COURSE, candidates="logistic,svm")
    with pytest.raises(ValueError, match="search_budget must be a whole number"):
        train(run, COURSE, search_budget=0)
    with pytest.raises(ValueError, match="cv_folds must be a whole number of cross-validation folds, at least 2"):
        train(run, COURSE, cv_folds=1)
    assert not (run / "model" / "pipeline.skops").exists()
    (run / "model" / "feature_plan.json").unlink()
    with pytest.raises(FileNotFoundError, match="run the 'features' step first"):
        train(run, COURSE)
    tiny = FeaturePlan("y", "binary", numeric=["x"], classes=[0, 1], positive_class=1, id_column="g")
    X = pd.DataFrame({"x": np.arange(8.0)})
    with pytest.raises(ValueError, match="2 entities in 'g' are too few for 3 group-aware folds"):
        train_models(X, np.array([0, 1] * 4), tiny, "roc_auc", groups=np.array(list("aaaabbbb")))


def test_both_notebooks_run_as_pipeline_steps_on_their_own_cells(course_run, tmp_path):
    run = copy_run(course_run, tmp_path / "run")
    shutil.rmtree(run / "model")
    run_step_cells(ROOT / "nbs" / "20_model_features.ipynb", run, tmp_path / "features.ipynb")
    assert (run / "model" / "feature_plan.json").is_file()
    run_step_cells(ROOT / "nbs" / "21_model_train.ipynb", run, tmp_path / "train.ipynb", search_budget=2, cv_folds=3)
    rep = read_json(run / "model" / "train_report.json")
    assert rep["search_budget"] == 2 and rep["experiments"] == 5
    metrics = read_json(run / "metrics" / "train.json")
    assert metrics["best_candidate"] == rep["best"]["candidate"] and metrics["cv_roc_auc"] == round(rep["best"]["cv_score"], 6)
    assert read_json(run / "metrics" / "features.json")["n_date"] == 2


def test_the_same_model_saved_by_two_processes_has_the_same_bytes(tmp_path):
    "skops names objects by memory address and stamps times; save_model makes the file a function of the model only."
    import subprocess
    import sys
    script = """
import sys
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from mlops_kit.model.train import load_model, save_model
X = np.random.RandomState(0).rand(200, 3); y = (X[:, 0] > 0.5).astype(int)
model = make_pipeline(StandardScaler(), HistGradientBoostingClassifier(random_state=0)).fit(X, y)
save_model(model, sys.argv[1])
assert np.array_equal(load_model(sys.argv[1]).predict_proba(X), model.predict_proba(X))
"""
    for name in ("a.skops", "b.skops"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True)
    assert (tmp_path / "a.skops").read_bytes() == (tmp_path / "b.skops").read_bytes()


def test_infinite_values_reaching_train_are_refused_with_the_column_named(course_run, tmp_path):
    "A table changed after the features step still cannot feed inf to scikit-learn: the train step names the column."
    from mlops_kit.model.features import LABELLED_FILE, split_rows
    run = copy_run(course_run, tmp_path / "run")
    column = load_feature_plan(run / "model" / "feature_plan.json").numeric[0]
    t = pd.read_parquet(run / LABELLED_FILE)
    first = split_rows(read_model_table(run), "train", labelled="churned")._row_id.iloc[0]
    t.loc[t._row_id.eq(first), column] = np.inf
    write_parquet(run / LABELLED_FILE, t)
    with pytest.raises(ValueError, match=rf"'{column}' \(1 infinite value\(s\)\) hold infinite values"):
        train(run, COURSE)
    assert not (run / "model" / "pipeline.skops").exists()


def test_too_few_rows_for_the_folds_name_the_minimum():
    plan = FeaturePlan("y", "binary", numeric=["x"], classes=[0, 1], positive_class=1)
    with pytest.raises(ValueError, match=r"rarest class \(1\) has 1 training row\(s\), and 3-fold cross-validation needs at least 3"):
        cv_folds_for(np.array([0, 0, 0, 0, 0, 1]), plan, 3, 0)
    with pytest.raises(ValueError, match=r"too few rows: 2 training rows are too few for 3 folds \(at least 3 needed\)"):
        cv_folds_for(np.array([1.0, 2.0]), FeaturePlan("y", "regression"), 3, 0)
