"""Tests of mlops_kit.model.features as the train, evaluate and package steps meet it: the plan on each task type, planning
and fitting on training rows only, dates measured from the row's period, a preprocessor that survives unseen categories,
empty and missing columns, a plan file that round-trips, skops trusting exactly the kit's types, and clear errors."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import build_run, copy_run, user_files
from mlops_kit.data.validate import ColumnRule, Contract, load_contract
from mlops_kit.design import default_spec, spec_from_data
from mlops_kit.model.features import (TRUSTED_TYPES, FeaturePlan, build_preprocessor, feature_signal, load_feature_plan,
                                      make_features, model_inputs, period_end, plan_features, plan_table, read_model_table,
                                      save_feature_plan)
from mlops_kit.runfolder import write_parquet

COURSE = default_spec()


@pytest.fixture(scope="module")
def course_run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("course"), COURSE, n_customers=300, seed=5)


@pytest.fixture(scope="module")
def file_runs(tmp_path_factory):
    "Run folders for a messy multiclass file (raw penguins) and a regression file (diabetes): name -> (run, spec)."
    d = tmp_path_factory.mktemp("files")
    out = {}
    for _, name, path, target in user_files(d):
        spec = spec_from_data(path, target)
        out[name] = (build_run(d / name, spec, path), spec)
    return out


def test_the_course_plan_reads_the_contract_and_leaves_out_ids_time_and_label(course_run, tmp_path):
    run = copy_run(course_run, tmp_path / "run")
    plan, signal = make_features(run, COURSE)
    assert load_feature_plan(run / "model" / "feature_plan.json") == plan
    assert {"_row_id", "customer_id", "snapshot_month", "churned", "label_status"} <= set(plan.excluded)
    assert "leak" in plan.excluded["label_status"]
    others = {c: r for c, r in plan.excluded.items() if c not in ("_row_id", "customer_id", "snapshot_month", "churned", "label_status")}
    assert all(r.startswith("constant") for r in others.values()), others   # flags of columns never missing in training
    assert plan.categorical == ["plan", "country", "signup_plan", "acquisition_channel"]
    assert plan.date == ["signup_date", "last_seen"]
    assert all(c.endswith("_missing") for c in plan.flags) and "age_missing" in plan.flags
    assert (plan.task, plan.classes, plan.positive_class, plan.time_column, plan.id_column) == \
        ("binary", [0, 1], 1, "snapshot_month", "customer_id")
    assert plan.input_columns == plan.features + ["snapshot_month"]
    # every column of the labelled table is accounted for exactly once
    table = pd.read_parquet(run / "data" / "labelled.parquet")
    assert sorted(plan_table(plan).column) == sorted(table.columns)
    assert list(signal.columns) == ["feature", "signal"] and signal.signal.between(0.5, 1).all()
    assert signal.signal.is_monotonic_decreasing


def test_the_plan_is_made_from_training_rows_only(course_run, tmp_path):
    run = copy_run(course_run, tmp_path / "run")
    t = read_model_table(run)
    train = t.split.eq("train").to_numpy()
    # a column that is constant in training and varies elsewhere: the training rows decide, so it is left out
    labelled = pd.read_parquet(run / "data" / "labelled.parquet")
    labelled["promo"] = np.where(train, "none", np.where(np.arange(len(t)) % 2, "spring", "summer"))
    # a label value that occurs only outside training (a data error in the test months) does not reach the plan
    odd = np.flatnonzero(t.split.eq("test").to_numpy() & t.churned.notna().to_numpy())[:3]
    labelled.loc[odd, "churned"] = 2
    write_parquet(run / "data" / "labelled.parquet", labelled)
    plan, _ = make_features(run, COURSE)
    assert plan.excluded["promo"] == "constant: every filled row holds 'none'"
    assert plan.classes == [0, 1]
    with pytest.raises(ValueError, match="holds 3 class"):      # planned on every labelled row, the same table would fail
        plan_features(labelled, load_contract(run / "data" / "contract.json"), COURSE)


def test_dates_are_days_before_the_rows_period_end_not_before_today(course_run):
    t = read_model_table(course_run)
    rows = t[t.split.eq("train")].head(200)
    plan = plan_features(rows.drop(columns="split"), load_contract(course_run / "data" / "contract.json"), COURSE)
    pre = build_preprocessor(plan).fit(rows)
    dates = pre.named_transformers_["date"].named_steps["parts"]
    got = dates.transform(rows)[:, plan.date.index("last_seen") * 2]
    month_end = pd.to_datetime(rows.snapshot_month + "-01") + pd.offsets.MonthEnd(0)
    want = (month_end - rows.last_seen).dt.days.to_numpy(dtype=float, na_value=np.nan)
    np.testing.assert_array_equal(got, want)
    assert np.nanmax(got) < 400 and np.nanmin(got) >= 0     # last seen within the snapshot's month or shortly before
    np.testing.assert_array_equal(period_end(pd.Series(["2024-02", "2025-12"])), np.array(["2024-02-29", "2025-12-31"], dtype="datetime64[ns]"))


def test_the_fitted_preprocessor_survives_what_production_rows_do(course_run):
    t = read_model_table(course_run)
    tr, va = t[t.split.eq("train")], t[t.split.eq("valid")]
    plan = plan_features(tr.drop(columns="split"), load_contract(course_run / "data" / "contract.json"), COURSE)
    pre = build_preprocessor(plan).fit(model_inputs(tr, plan)[0])
    base = pre.transform(va)
    assert np.isfinite(base).all() and base.shape[1] == len(pre.get_feature_names_out())
    # columns in another order, extra columns, the label missing: the same numbers
    shuffled = va[list(reversed(va.columns))].drop(columns="churned").assign(brand_new=1)
    np.testing.assert_array_equal(pre.transform(shuffled), base)
    # unseen categories, an entirely empty column, text dates, and a missing time value still give finite numbers
    odd = va.head(20).assign(country="Atlantis", plan=None, age=np.nan, last_seen=va.head(20).last_seen.dt.strftime("%d/%m/%Y"))
    odd.loc[odd.index[0], "snapshot_month"] = None
    out = pre.transform(odd)
    assert np.isfinite(out).all()
    names = list(pre.get_feature_names_out())
    country = [i for i, n in enumerate(names) if n.startswith("categorical__country_")]
    assert (out[:, country] == 0).all()                  # an unseen country switches no country column on
    np.testing.assert_array_equal(out[1:, names.index("date__last_seen_days_before_ref")],
                                  base[1:20, names.index("date__last_seen_days_before_ref")])
    with pytest.raises(ValueError, match="lacks 2 input column"):
        model_inputs(va.drop(columns=["country", "last_seen"]), plan)


def test_a_preprocessor_fitted_on_training_rows_learns_nothing_from_other_rows(course_run):
    t = read_model_table(course_run)
    tr = t[t.split.eq("train")]
    plan = plan_features(tr.drop(columns="split"), load_contract(course_run / "data" / "contract.json"), COURSE)
    pre = build_preprocessor(plan).fit(model_inputs(tr, plan)[0])
    numeric = pre.named_transformers_["numeric"]
    np.testing.assert_allclose(numeric.named_steps["impute"].statistics_, tr[plan.numeric].median().to_numpy())
    assert numeric.named_steps["scale"].mean_ is not None
    everything = build_preprocessor(plan).fit(model_inputs(t, plan)[0])
    assert not np.allclose(everything.named_transformers_["numeric"].named_steps["scale"].mean_,
                           numeric.named_steps["scale"].mean_)   # the difference a careless fit makes exists


@pytest.mark.parametrize("name", ["penguins", "diabetes"])
def test_single_files_get_a_plan_and_labels_of_the_right_type(file_runs, name, tmp_path):
    run, spec = file_runs[name]
    run = copy_run(run, tmp_path / name)
    plan, signal = make_features(run, spec)
    t = read_model_table(run)
    X, y = model_inputs(t[t.split.eq("train")], plan)
    assert len(X) == int((t.split.eq("train") & t[plan.target].notna()).sum())
    assert list(X.columns) == plan.input_columns
    if name == "penguins":
        assert plan.task == "multiclass" and len(plan.classes) == 3 and y.dtype == object
        assert set(y) == set(plan.classes) and plan.positive_class is None
        assert "Individual ID" in plan.excluded and "identifier-like" in plan.excluded["Individual ID"]
        assert "Date Egg" in plan.date and plan.time_column is None and plan.reference_date is not None
        assert signal.signal.max() > 0.9          # flipper length alone nearly separates Gentoo from the others
    else:
        assert plan.task == "regression" and plan.classes == [] and y.dtype == np.float64
        assert plan.numeric == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
        assert signal.signal.between(0, 1).all()


def test_text_booleans_and_integer_categories_from_a_users_file():
    n = 60
    df = pd.DataFrame({"_row_id": range(n), "code": [1, 2, 3] * 20, "active": ["yes", "no", None] * 20,
                       "note": [None if i % 5 == 0 else "x" * i for i in range(n)], "y": [0, 1] * 30})
    contract = Contract({"code": ColumnRule("code", "category"), "active": ColumnRule("active", "boolean"),
                         "note": ColumnRule("note", "text")})
    plan = plan_features(df, contract, target="y", task="binary")
    assert (plan.categorical, plan.flags, plan.text) == (["code"], ["active"], ["note"])
    pre = build_preprocessor(plan).fit(df)
    names = list(pre.get_feature_names_out())
    new = pd.DataFrame({"code": [2.0, np.nan, 7], "active": ["YES", None, "no"], "note": ["abc", None, ""]})
    out = pre.transform(new)
    assert out[0, names.index("categorical__code_2")] == 1.0       # 2.0 (a float after a gap) is the category 2
    assert out[2, [i for i, nm in enumerate(names) if nm.startswith("categorical__code_")]].sum() == 0   # 7 is unseen
    assert out[:, names.index("flags__active")].tolist() == [1.0, 0.0, 0.0]
    length = out[:, names.index("text__note_length")]
    assert length[0] > length[1] == length[2]                      # "abc" is longer than a gap and an empty text
    assert np.isfinite(out).all()


def test_the_plan_file_round_trips_and_refuses_other_files(tmp_path):
    plan = FeaturePlan("Species", "multiclass", numeric=["a"], categorical=["b"], classes=["x", "y", "z"],
                       excluded={"id": "identifier-like"}, reference_date="2024-01-31", date=["d"])
    path = save_feature_plan(plan, tmp_path / "model" / "feature_plan.json")
    assert load_feature_plan(path) == plan
    assert json.loads(path.read_text())["input_columns"] == ["a", "b", "d"]
    path.write_text(json.dumps({"target": "y"}))
    with pytest.raises(ValueError, match="is not a feature plan"):
        load_feature_plan(path)
    with pytest.raises(FileNotFoundError, match="run the 'features' step first"):
        load_feature_plan(tmp_path / "nothing.json")


def test_a_saved_pipeline_needs_exactly_the_kits_trusted_types(course_run, tmp_path):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    t = read_model_table(course_run)
    tr = t[t.split.eq("train")]
    plan = plan_features(tr.drop(columns="split"), load_contract(course_run / "data" / "contract.json"), COURSE)
    X, y = model_inputs(tr, plan)
    model = Pipeline([("features", build_preprocessor(plan)), ("model", LogisticRegression(max_iter=500))]).fit(X, y)
    sio.dump(model, tmp_path / "m.skops")
    found = sio.get_untrusted_types(file=tmp_path / "m.skops")
    kit = [f for f in found if f.startswith("mlops_kit.")]
    assert set(kit) <= set(TRUSTED_TYPES) and {"mlops_kit.model.features.DateFeatures", "mlops_kit.model.features.Categories",
                                                "mlops_kit.model.features.Flags"} <= set(kit)
    assert all(f.startswith(("sklearn.", "numpy.", "scipy.", "mlops_kit.model.features.")) for f in found), found
    back = sio.load(tmp_path / "m.skops", trusted=found)
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))


def test_bad_input_gets_errors_that_name_the_problem(course_run, tmp_path):
    run = copy_run(course_run, tmp_path / "run")
    (run / "data" / "contract.json").unlink()
    with pytest.raises(FileNotFoundError, match="run the 'validate' step first"):
        make_features(run, COURSE)
    (run / "data" / "split.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="run the 'split' step first"):
        make_features(run, COURSE)
    t = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="the task is binary but 'y' holds 3 class"):
        plan_features(t, target="y", task="binary")
    with pytest.raises(ValueError, match="holds str values, not numbers, but the task is regression"):
        plan_features(t, target="y", task="regression")
    with pytest.raises(ValueError, match="has no feature columns"):
        build_preprocessor(plan_features(pd.DataFrame({"k": [1, 1, 1], "y": [0, 1, 0]}), target="y", task="binary"))
    with pytest.raises(ValueError, match="no target column 'label'"):
        plan_features(t, target="label", task="binary")


def test_feature_signal_flags_a_copy_of_the_label():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    Xt = np.c_[rng.normal(size=500), y + rng.normal(0, 0.01, 500)]
    s = feature_signal(Xt, y, ["noise", "leak"], FeaturePlan("y", "binary", classes=[0, 1], positive_class=1))
    assert s.index[0] == "leak" and s["leak"] > 0.99 and s["noise"] < 0.6


def test_the_split_column_of_the_model_table_is_never_planned_as_a_feature(course_run):
    "read_model_table adds each row's split; planning straight from it must not turn that into a feature."
    table = read_model_table(course_run)
    plan = plan_features(table, load_contract(course_run / "data" / "contract.json"), COURSE)
    assert "split" in plan.excluded and "split" not in plan.features


def _with_infinity(run, column="sessions"):
    "The run's labelled table with two infinite values in a numeric column of training rows."
    from mlops_kit.model.features import LABELLED_FILE, split_rows
    t = pd.read_parquet(run / LABELLED_FILE)
    train_ids = split_rows(read_model_table(run), "train", labelled="churned")._row_id.iloc[:2]
    t.loc[t._row_id.isin(train_ids), column] = [np.inf, -np.inf]
    write_parquet(run / LABELLED_FILE, t)


def test_infinite_values_reaching_features_are_refused_with_the_column_named(course_run, tmp_path):
    "The data steps should catch inf; when one slips through, the features step names the column (not sklearn's 'Input X contains infinity')."
    run = copy_run(course_run, tmp_path / "run")
    assert pd.api.types.is_float_dtype(read_model_table(run).sessions)
    _with_infinity(run)
    with pytest.raises(ValueError, match=r"column\(s\) 'sessions' \(2 infinite value\(s\)\) hold infinite values.*wrangl"):
        make_features(run, COURSE)


def test_too_few_rows_fail_the_features_step_up_front_with_the_minimum(tmp_path):
    "A three-row file used to fail with a class count ('holds a single class'); now: too few rows, and how many are needed."
    from mlops_kit.design import save_spec
    from mlops_kit.model.features import LABELLED_FILE, SPLIT_FILE
    run = tmp_path / "tiny"
    save_spec(COURSE, run / "spec.yaml")
    labelled = pd.DataFrame({"_row_id": range(3), "sessions": [1.0, 2.0, 3.0], "churned": pd.array([0, 1, 0], dtype="Int64")})
    write_parquet(run / LABELLED_FILE, labelled)
    write_parquet(run / SPLIT_FILE, pd.DataFrame({"_row_id": range(3), "split": ["train", "valid", "test"]}))
    from mlops_kit.data.validate import save_contract
    save_contract(Contract({"sessions": ColumnRule("sessions", "number")}), run / "data" / "contract.json")
    with pytest.raises(ValueError, match="too few rows: 1 labelled training row.*needs at least 4"):
        make_features(run, COURSE)
    write_parquet(run / SPLIT_FILE, pd.DataFrame({"_row_id": range(3), "split": ["train"] * 3}))
    with pytest.raises(ValueError, match="too few rows: 3 labelled training row"):
        make_features(run, COURSE)


def test_each_model_artifact_is_named_once_by_the_step_that_writes_it():
    "The paths the model modules name are the outputs their step notebooks declare, and the inputs the next steps declare."
    from pathlib import Path
    from mlops_kit.model import acceptance, evaluate, features, train
    from mlops_kit.pipeline import read_step_header
    nbs = Path(__file__).resolve().parent.parent / "nbs"
    head = {s: read_step_header(nbs / f"{nb}.ipynb") for s, nb in
            (("features", "20_model_features"), ("train", "21_model_train"), ("evaluate", "22_model_evaluate"), ("acceptance", "23_model_acceptance"))}
    assert head["features"]["outputs"] == [features.FEATURE_PLAN_FILE]
    assert head["train"]["outputs"] == [train.MODEL_FILE, train.BASELINE_FILE, train.EXPERIMENTS_FILE, train.TRAIN_REPORT_FILE]
    assert head["evaluate"]["outputs"] == [evaluate.EVALUATION_FILE, evaluate.PREDICTIONS_FILE, evaluate.SLICES_FILE, evaluate.ERRORS_FILE]
    assert head["acceptance"]["outputs"] == [acceptance.ACCEPTANCE_FILE]
    for step in head.values(): assert {features.LABELLED_FILE, features.SPLIT_FILE} <= set(step["inputs"]), step["step"]
    assert {train.MODEL_FILE, evaluate.EVALUATION_FILE} <= set(head["acceptance"]["inputs"])
