"""Tests of mlops_kit.metrics, the one registry of metrics: the model the train step chooses is judged by the same numbers
in evaluation and acceptance (per task type, on the same predictions), the spec's view (TASK_METRICS) is the design
table, and the registry is ground floor (it imports nothing of the kit)."""
import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

import mlops_kit.design
from mlops_kit import metrics
from mlops_kit.metrics import METRICS, TASK_METRICS, compute_metrics, metric_value
from mlops_kit.model import evaluate, train
from mlops_kit.model.features import FeaturePlan

ROOT = Path(__file__).resolve().parent.parent


def _same(a, b) -> bool:
    "Train's score (NaN when undefined) against evaluation's value (None when undefined)."
    if b is None: return a is None or (isinstance(a, float) and math.isnan(a))
    return a == b


def _fitted(task: str, seed: int = 0):
    "A fitted model, its rows, labels and plan for `task`, with a few rows that make metrics edge cases likely."
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": rng.normal(size=60), "z": rng.normal(size=60)})
    if task == "regression":
        y = np.r_[0.0, 1.0, 2.0, 3.0, np.round(X.x[4:].to_numpy() * 3 + 5, 1)]      # a true 0: MAPE has no value
        return LinearRegression().fit(X, y), X, y, FeaturePlan("y", "regression", numeric=["x", "z"])
    k = 2 if task == "binary" else 3
    y = np.where(X.x + rng.normal(0, 0.7, 60) > 0, 1, 0) + (X.z > 0.8).astype(int) * (k == 3)
    plan = FeaturePlan("y", task, numeric=["x", "z"], classes=list(range(k)), positive_class=1 if task == "binary" else None)
    return LogisticRegression(max_iter=500).fit(X, y), X, y, plan


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_train_scores_what_evaluation_reports_on_the_same_predictions(task):
    model, X, y, plan = _fitted(task)
    proba = model.predict_proba(X) if task != "regression" else None
    classes = model.classes_ if task != "regression" else None
    reported = evaluate.compute_metrics(task, y, model.predict(X), proba, classes, plan.positive_class)
    for metric in TASK_METRICS[task]:
        chosen_by = train.model_score(model, X, y, metric, plan)
        assert _same(chosen_by, reported[metric]), (task, metric, chosen_by, reported[metric])
        for part in (slice(0, 4), slice(4, 20)):      # also on a fold's worth of rows, where a metric may have no value
            sub = evaluate.compute_metrics(task, y[part], model.predict(X[part]), None if proba is None else proba[part],
                                           classes, plan.positive_class)
            assert _same(train.model_score(model, X[part], y[part], metric, plan), sub[metric]), (task, metric, part)


def test_mape_of_a_zero_target_is_undefined_in_training_and_evaluation_alike():
    y, pred = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0, 3.0])
    assert evaluate.compute_metrics("regression", y, pred)["mape"] is None
    assert math.isnan(train.metric_value("mape", y, pred=pred))                   # not 5.6e14
    assert metric_value("regression", "mape", y, pred=pred) is None


def test_the_cross_validated_score_is_the_mean_of_evaluations_metric_per_fold():
    model, X, y, plan = _fitted("binary", seed=3)
    folds, _ = train.cv_folds_for(y, plan, 3, 0)
    scores, _ = train.cross_validate_model(LogisticRegression(max_iter=500), X, y, folds, "roc_auc", plan)
    for (tr, va), s in zip(folds, scores):
        m = LogisticRegression(max_iter=500).fit(X.iloc[tr], y[tr])
        assert s == evaluate.compute_metrics("binary", y[va], m.predict(X.iloc[va]), m.predict_proba(X.iloc[va]), m.classes_, 1)["roc_auc"]


def test_a_zero_target_with_mape_as_offline_metric_fails_training_with_the_reason():
    X = pd.DataFrame({"x": np.linspace(0, 1, 30)})
    y = np.r_[0.0, 3 * X.x.to_numpy()[1:] + 1]
    with pytest.raises(ValueError, match="mape has no value when a true value is 0"):
        train.search_candidates(X, y, FeaturePlan("y", "regression", numeric=["x"]), "mape", "ridge", 1, 3, 0)


def test_task_metrics_is_the_design_table_in_the_same_order():
    assert TASK_METRICS == mlops_kit.design.TASK_METRICS
    for task, names in mlops_kit.design.TASK_METRICS.items():
        assert list(TASK_METRICS[task].items()) == list(names.items()), task


def test_train_and_acceptance_read_their_directions_from_the_registry():
    assert train.GREATER_IS_BETTER == {n: METRICS[n].greater_is_better for n in train.METRIC_NAMES}
    assert set(train.METRIC_NAMES) == {n for names in TASK_METRICS.values() for n in names}
    from mlops_kit.model import acceptance
    assert acceptance.TASK_METRICS is TASK_METRICS and evaluate.TASK_METRICS is TASK_METRICS
    assert evaluate.compute_metrics is compute_metrics and evaluate.class_index is metrics.class_index


def test_every_reported_metric_has_a_known_direction_and_needs():
    for m in METRICS.values():
        assert set(m.offline) <= set(m.tasks) <= {"binary", "multiclass", "regression"}, m.name
        assert not m.offline or isinstance(m.greater_is_better, bool), m.name


def test_macro_averages_leave_out_a_class_that_is_neither_true_nor_predicted():
    "A slice of one class is not scored as if the model had failed on the classes absent from it."
    only_a = compute_metrics("multiclass", np.array(list("aaa")), np.array(list("aab")), np.eye(3)[[0, 0, 1]], np.array(list("abc")))
    assert only_a["recall_macro"] == pytest.approx((2 / 3 + 0) / 2)            # a and b count; c is nowhere
    assert only_a["f1_macro"] == pytest.approx((0.8 + 0) / 2)


def test_bad_calls_name_the_problem():
    with pytest.raises(ValueError, match="unknown regression metric 'roc_auc'; regression metrics are rmse"):
        metric_value("regression", "roc_auc", [1.0], pred=[1.0])
    with pytest.raises(ValueError, match="log_loss needs the class probabilities"):
        metric_value("multiclass", "log_loss", [0, 1], pred=[0, 1], classes=[0, 1])
    with pytest.raises(ValueError, match="no rows"):
        metric_value("regression", "mae", [], pred=[])


def _kit_imports(path: Path) -> list[tuple[str, bool]]:
    "(module, inside a function) for each import of a kit module in `path`."
    tree = ast.parse(path.read_text())
    out = []
    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.level or (child.module or "").startswith("mlops_kit")):
                out.append(("." * child.level + (child.module or ""), inner))
            elif isinstance(child, ast.Import):
                out.extend((a.name, inner) for a in child.names if a.name.startswith("mlops_kit"))
            visit(child, inner)
    visit(tree, False)
    return out


def test_the_registry_is_ground_floor_and_the_model_steps_import_at_module_level():
    assert _kit_imports(ROOT / "mlops_kit" / "metrics.py") == []
    for name in ("features", "train", "evaluate", "acceptance"):
        found = _kit_imports(ROOT / "mlops_kit" / "model" / f"{name}.py")
        assert not [m for m, inside in found if inside], (name, found)
        assert not [m for m, _ in found if "deploy" in m or "pipeline" in m], (name, found)
