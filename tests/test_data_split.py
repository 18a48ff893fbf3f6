"""Tests of mlops_kit.data.split as a user meets it: what each strategy guarantees, the choice `auto` makes, every row
in a split, determinism by seed, leakage checks firing on leaky data made on purpose, the step's files on the course
data and on single files, and clear errors for bad input."""
import json
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from mlops_kit.data.ingest import canonical_ids, ingest, to_datetime, to_number
from mlops_kit.data.split import (SPLIT_STRATEGIES, SPLITS, assign_splits, choose_strategy, feature_scores, group_split,
                                  leakage_checks, random_split, split, split_table, stratified_split, time_split)
from mlops_kit.datasets import load_penguins_raw, materialize_data, write_sklearn_csv
from mlops_kit.design import default_spec, spec_from_data
from mlops_kit.runfolder import read_json, sha256_file, write_parquet

COURSE = default_spec()
LABELLED = ("train", "valid", "test")


def with_pred(spec, **kw):
    return replace(spec, prediction=replace(spec.prediction, **kw))


def stand_in_label(table, cancellations, window=2, open_months=3):
    "The course label the plain way (the label step's job): a first cancellation within `window` months after the month."
    first = (pd.DataFrame({"id": canonical_ids(cancellations.customer_id), "at": to_datetime(cancellations.cancel_date)})
             .dropna().groupby("id")["at"].min())
    month_end = pd.to_datetime(table.snapshot_month, format="%Y-%m") + pd.DateOffset(months=1)
    cancel = pd.to_datetime(table.customer_id.map(first))
    y = ((cancel >= month_end) & (cancel < month_end + pd.DateOffset(months=window))).astype("int64")
    still_open = table.snapshot_month.isin(sorted(table.snapshot_month.unique())[-open_months:])
    return pd.array(y.where(~still_open), dtype="Int64")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    "A small course business as the label step would hand it over: parsed numbers and dates, `churned` with NA."
    run = tmp_path_factory.mktemp("course")
    materialize_data(run, n_customers=300, n_months=12, seed=3)
    t = ingest(run, COURSE).table
    t = t[~t.drop(columns="_row_id").duplicated()].reset_index(drop=True)  # wrangling removes exact duplicates
    for c in ("sessions", "minutes_used"): t[c] = to_number(t[c])
    for c in ("signup_date", "last_seen"): t[c] = to_datetime(t[c])
    t["churned"] = stand_in_label(t, pd.read_parquet(run / "data" / "sources" / "cancellations.parquet"))
    return t


def user_table(path):
    "A single file as the label step would hand it over: the file plus `_row_id`."
    df = pd.read_csv(path)
    df.insert(0, "_row_id", np.arange(len(df), dtype="int64"))
    return df


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    load_penguins_raw().to_csv(d / "penguins_raw.csv", index=False)
    return {"iris": write_sklearn_csv("iris", d / "iris.csv"), "diabetes": write_sklearn_csv("diabetes", d / "diabetes.csv"),
            "wine": write_sklearn_csv("wine", d / "wine.csv"), "penguins": d / "penguins_raw.csv"}


def run_with(tmp_path, df, name="run"):
    run = tmp_path / name
    write_parquet(run / "data" / "labelled.parquet", df)
    return run


# --- what each strategy guarantees ---------------------------------------------------------------------------------

def test_random_split_has_exact_row_counts():
    s = pd.Series(random_split(1001, 0.15, 0.25, seed=0))
    assert s.value_counts().to_dict() == {"train": 601, "test": 250, "valid": 150}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_keeps_class_shares(seed):
    y = pd.Series([1] * 50 + [0] * 450, dtype="Int64", name="churned")
    s = stratified_split(y, 0.2, 0.2, seed)
    rates = y.astype(float).groupby(s).mean()
    assert rates.round(3).to_dict() == {"test": 0.1, "train": 0.1, "valid": 0.1}
    labels = pd.Series(np.repeat(["a", "b", "c"], [300, 120, 80]), name="kind")
    shares = pd.crosstab(stratified_split(labels, 0.2, 0.2, seed), labels, normalize="index")
    assert np.allclose(shares.to_numpy(), [[.6, .24, .16]] * 3, atol=0.011)


def test_stratified_split_of_a_real_file_keeps_species_shares(files):
    df = user_table(files["penguins"])
    res = split_table(df, spec_from_data(files["penguins"], "Species"))
    assert res.strategy == "stratified"
    shares = pd.crosstab(res.splits.split, df.Species, normalize="index")
    assert (shares.max() - shares.min()).max() < 0.02


def test_time_split_never_cuts_a_period_and_keeps_the_order(course):
    res = split_table(course, COURSE, "time")
    s = res.splits.split
    month = course.snapshot_month
    assert (s.groupby(month).nunique() == 1).all()                               # no month cut in two
    by = {k: month[s == k] for k in LABELLED}
    assert by["train"].max() < by["valid"].min() <= by["valid"].max() < by["test"].min()
    assert set(month[s == "unlabeled"]) == set(month[course.churned.isna()])      # the open windows only
    shares = res.summary.set_index("split").share
    assert all(abs(shares[k] - w) < 0.06 for k, w in (("train", .6), ("valid", .2), ("test", .2))), shares


def test_time_split_on_dates_orders_by_date_not_by_text():
    days = pd.Series(pd.date_range("2024-12-20", periods=20, freq="D"))
    text = days.dt.strftime("%d/%m/%Y").rename("day")        # as text, "01/01/2025" sorts before "20/12/2024"
    s = pd.Series(time_split(text, 0.2, 0.2))
    assert days[s == "train"].max() < days[s == "valid"].min() and days[s == "valid"].max() < days[s == "test"].min()
    assert s.tolist() == time_split(days, 0.2, 0.2).tolist()


def test_group_split_keeps_each_entity_in_one_split(course):
    res = split_table(course, COURSE, "group", seed=5)
    lab = res.splits.split.isin(LABELLED).to_numpy()
    per_customer = res.splits.split[lab].groupby(course.customer_id[lab].to_numpy()).nunique()
    assert per_customer.max() == 1
    assert res.checks.set_index("check").status["entity_across_splits"] == "ok"
    # customers who ever churned are spread like the others: the positive rate stays comparable
    rates = res.summary.set_index("split").positive_rate[list(LABELLED)]
    assert rates.max() - rates.min() < 0.03, rates


def test_group_split_ignores_row_order():
    ids = pd.Series(np.repeat([f"P{i}" for i in range(40)], 3), name="patient")
    shuffled = ids.sample(frac=1, random_state=1)
    a = pd.Series(group_split(ids, seed=3))
    b = pd.Series(group_split(shuffled, seed=3), index=shuffled.index).sort_index()
    assert a.tolist() == b.tolist()


# --- auto ----------------------------------------------------------------------------------------------------------

def test_auto_on_the_course_data_is_time(course):
    strategy, reason = choose_strategy(course, COURSE)
    assert strategy == "time" and "snapshot_month" in reason and "9 labelled periods" in reason


def test_auto_falls_back_to_group_when_too_few_periods_are_labelled(course):
    few = course.assign(churned=course.churned.where(course.snapshot_month <= "2025-02"))
    strategy, reason = choose_strategy(few, COURSE)
    assert strategy == "group"
    assert "only 2 labelled periods" in reason and "'customer_id' repeats" in reason


@pytest.mark.parametrize("name,target,kw,expected", [
    ("iris", "target", {}, "stratified"),
    ("wine", "target", {}, "stratified"),
    ("diabetes", "target", {}, "random"),
    ("penguins", "Species", {}, "stratified"),
    ("penguins", "Species", {"id_column": "Individual ID"}, "group"),
    ("penguins", "Species", {"id_column": "Sample Number"}, "group"),
])
def test_auto_on_single_files(files, name, target, kw, expected):
    spec = spec_from_data(files[name], target, **kw)
    strategy, reason = choose_strategy(user_table(files[name]), spec)
    assert strategy == expected, reason


def test_auto_without_keys():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"_row_id": range(100), "x": rng.normal(size=100), "y": pd.array([1] * 10 + [0] * 90, dtype="Int64")})
    binary = with_pred(COURSE, target="y", id_column=None, time_column=None)
    assert choose_strategy(df, binary)[0] == "stratified"
    rare = df.assign(y=pd.array([1, 1] + [0] * 98, dtype="Int64"))
    strategy, reason = choose_strategy(rare, binary)
    assert strategy == "random" and "class 1 (2 rows) has fewer than 3 rows" in reason
    regression = with_pred(binary, task="regression", target="x", positive_class=None)
    assert choose_strategy(df, regression)[0] == "random"
    unique_ids = df.assign(customer_id=[f"C{i}" for i in range(100)])
    assert choose_strategy(unique_ids, with_pred(binary, id_column="customer_id"))[0] == "stratified"
    repeated = df.assign(customer_id=[f"C{i // 4}" for i in range(100)])
    assert choose_strategy(repeated, with_pred(regression, id_column="customer_id"))[0] == "group"


def test_the_choice_and_its_reason_are_recorded(tmp_path, course):
    run = run_with(tmp_path, course)
    res = split(run, COURSE)
    report = read_json(run / "data" / "split_report.json")
    assert (report["requested"], report["strategy"]) == ("auto", "time")
    assert report["reason"] == res.reason and "snapshot_month" in report["reason"]
    assert "seed" in report["seed_note"]


# --- every row, and the counts add up ------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", SPLIT_STRATEGIES)
def test_every_row_gets_a_split(tmp_path, course, strategy):
    run = run_with(tmp_path, course)
    res = split(run, COURSE, strategy)
    out = pd.read_parquet(run / "data" / "split.parquet")
    assert out.columns.tolist() == ["_row_id", "split"]
    assert out._row_id.dtype == np.int64
    assert out._row_id.tolist() == course._row_id.tolist()
    assert set(out.split) == set(SPLITS)
    assert out._row_id[out.split == "unlabeled"].tolist() == course._row_id[course.churned.isna()].tolist()
    rows = read_json(run / "data" / "split_report.json")["rows"]
    assert rows["total"] == len(course) == sum(rows[s] for s in SPLITS)
    assert {s: rows[s] for s in SPLITS} == out.split.value_counts().reindex(list(SPLITS)).to_dict()
    assert int(res.summary.rows.sum()) == len(course)


def test_a_file_without_missing_labels_has_no_unlabeled_rows(tmp_path, files):
    df = user_table(files["iris"])
    res = split(run_with(tmp_path, df), spec_from_data(files["iris"], "target"))
    assert res.report["rows"] == {"total": 150, "train": 90, "valid": 30, "test": 30, "unlabeled": 0}


def test_missing_target_values_of_a_file_are_unlabeled(tmp_path, files):
    df = user_table(files["diabetes"])
    df.loc[::10, "target"] = np.nan
    res = split(run_with(tmp_path, df), spec_from_data(files["diabetes"], "target"))
    assert res.report["rows"]["unlabeled"] == int(df.target.isna().sum()) == 45
    assert res.report["rows"]["train"] + res.report["rows"]["valid"] + res.report["rows"]["test"] == 442 - 45


# --- determinism ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["random", "stratified", "group"])
def test_same_seed_same_file_other_seed_other_file(tmp_path, course, strategy):
    run = run_with(tmp_path, course)
    split(run, COURSE, strategy, seed=1)
    first = sha256_file(run / "data" / "split.parquet")
    split(run, COURSE, strategy, seed=1)
    assert sha256_file(run / "data" / "split.parquet") == first
    split(run, COURSE, strategy, seed=2)
    assert sha256_file(run / "data" / "split.parquet") != first


def test_same_seed_same_file_across_run_folders(tmp_path, files):
    spec = spec_from_data(files["wine"], "target")
    a, b = run_with(tmp_path, user_table(files["wine"]), "a"), run_with(tmp_path, user_table(files["wine"]), "b")
    split(a, spec, seed=9), split(b, spec, seed=9)
    assert sha256_file(a / "data" / "split.parquet") == sha256_file(b / "data" / "split.parquet")
    assert (a / "data" / "split_report.json").read_text() == (b / "data" / "split_report.json").read_text()


def test_a_time_split_does_not_depend_on_the_seed(tmp_path, course):
    run = run_with(tmp_path, course)
    split(run, COURSE, "time", seed=1)
    first = sha256_file(run / "data" / "split.parquet")
    split(run, COURSE, "time", seed=2)
    assert sha256_file(run / "data" / "split.parquet") == first


# --- leakage checks ------------------------------------------------------------------------------------------------

def statuses(checks):
    return checks.set_index("check").status.to_dict()


def test_a_clean_time_split_raises_no_false_alarm(course):
    res = split_table(course, COURSE)
    assert statuses(res.checks) == {"entity_across_splits": "expected", "future_rows_in_training": "ok",
                                    "feature_after_prediction_time": "ok", "too_good_feature": "ok",
                                    "duplicate_rows_across_splits": "ok"}


def test_an_entity_across_splits_is_caught(course):
    names, _, _ = assign_splits(course, COURSE, "group", seed=0)
    one = course.customer_id[names == "train"].iloc[0]
    rows = np.flatnonzero((course.customer_id == one).to_numpy() & names.isin(LABELLED).to_numpy())
    leaky = names.copy()
    leaky.iloc[rows[-1]] = "test"                   # one month of one customer moves to test
    for strategy, status in (("group", "error"), ("random", "warning"), ("stratified", "warning"), ("time", "expected")):
        checks, _ = leakage_checks(course, leaky, COURSE, strategy)
        row = checks.set_index("check").loc["entity_across_splits"]
        assert (row.status, row.value) == (status, 1), (strategy, row.detail)


def test_a_feature_that_equals_the_target_is_caught(course, files):
    leaky = course.assign(retention_flag=course.churned)
    res = split_table(leaky, COURSE)
    row = res.checks.set_index("check").loc["too_good_feature"]
    assert row.status == "warning" and "retention_flag (1.000)" in row.detail
    assert res.feature_scores.index[0] == "retention_flag"
    assert res.report["feature_scores"][0] == {"column": "retention_flag", "score": 1.0}
    # text labels, several classes, numbers: the same
    iris = user_table(files["iris"]).assign(code=lambda d: d.target.map({"setosa": "s", "versicolor": "v", "virginica": "g"}))
    assert "code (1.000)" in split_table(iris, spec_from_data(files["iris"], "target")).checks.detail.iloc[3]
    diabetes = user_table(files["diabetes"]).assign(in_thousands=lambda d: d.target / 1000)
    res = split_table(diabetes, spec_from_data(files["diabetes"], "target"))
    assert statuses(res.checks)["too_good_feature"] == "warning" and res.feature_scores.index[0] == "in_thousands"


def test_an_id_like_column_is_not_mistaken_for_a_leak(course):
    res = split_table(course.assign(ticket_ref=[f"T{i:06d}" for i in range(len(course))]), COURSE)
    assert abs(res.feature_scores["ticket_ref"] - 0.5) < 0.05


def test_duplicated_rows_across_splits_are_caught(files):
    df = user_table(files["wine"])
    doubled = pd.concat([df, df.iloc[:40]], ignore_index=True).assign(_row_id=lambda d: np.arange(len(d)))
    spec = spec_from_data(files["wine"], "target")
    res = split_table(doubled, spec, "random", seed=0)
    row = res.checks.set_index("check").loc["duplicate_rows_across_splits"]
    s = res.splits.split
    crossing = sum(s[i] != s[178 + i] for i in range(40))
    assert row.status == "warning" and crossing > 0 and row.value == 2 * crossing
    assert statuses(split_table(df, spec, "random", seed=0).checks)["duplicate_rows_across_splits"] == "ok"


def test_future_rows_and_future_values_are_caught(course):
    names, _, _ = assign_splits(course, COURSE, "time")
    swapped = names.copy()
    swapped[(course.snapshot_month == "2025-09").to_numpy()] = "train"     # a test month used for training
    checks, _ = leakage_checks(course, swapped, COURSE, "time")
    row = checks.set_index("check").loc["future_rows_in_training"]
    assert row.status == "error" and row.value == int((course.snapshot_month == "2025-09").sum())
    assert statuses(leakage_checks(course, assign_splits(course, COURSE, "random")[0], COURSE, "random")[0])[
        "future_rows_in_training"] == "warning"
    # a date exported today (the customer's latest login) is later than most snapshot months
    later = course.assign(last_login=course.groupby("customer_id").last_seen.transform("max"))
    checks, _ = leakage_checks(later, names, COURSE, "time")
    row = checks.set_index("check").loc["feature_after_prediction_time"]
    assert row.status == "warning" and "last_login" in row.detail and "last_seen" not in row.detail


def test_the_too_good_check_stays_fast():
    rng = np.random.default_rng(0)
    n = 200_000
    y = pd.Series(rng.random(n) < 0.2)
    X = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(25)})
    X["category"] = rng.choice(list("abcdefgh"), n)
    X["leak"] = y.astype(int)
    t0 = time.perf_counter()
    scores = feature_scores(X, y, "binary", True, seed=0)
    assert time.perf_counter() - t0 < 5
    assert scores.index[0] == "leak" and scores.iloc[1] < 0.6


# --- bad input -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("valid_size,test_size,message", [
    (0.5, 0.5, "= 1 leaves no training data"),
    (0.7, 0.4, "leaves no training data"),
    (0, 0.2, "valid_size must be a share of the labelled rows between 0 and 1"),
    (0.2, 1.0, "test_size must be a share"),
    (0.2, -0.1, "test_size must be a share"),
    ("0.2", 0.2, "valid_size must be a share"),
    (True, 0.2, "valid_size must be a share"),
    (float("nan"), 0.2, "valid_size must be a share"),
])
def test_bad_sizes_are_refused_before_anything_is_read(tmp_path, valid_size, test_size, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        split(tmp_path / "no_such_run", COURSE, "auto", valid_size, test_size)


def test_an_unknown_strategy_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="'chronological' is not one of auto, random, stratified, time, group"):
        split(tmp_path, COURSE, "chronological")


def test_time_strategy_without_a_time_column(course, files):
    with pytest.raises(ValueError, match="split_strategy time needs a time column, but the spec names no time column; pass -p time_column"):
        choose_strategy(user_table(files["iris"]), spec_from_data(files["iris"], "target"), "time")
    with pytest.raises(ValueError, match="the table has no column 'snapshot_month'"):
        assign_splits(course.drop(columns="snapshot_month"), COURSE, "time")


def test_group_strategy_without_an_id_column(course, files):
    with pytest.raises(ValueError, match="split_strategy group needs an id column, but the spec names no id column; pass -p id_column"):
        assign_splits(user_table(files["iris"]), spec_from_data(files["iris"], "target"), "group")
    with pytest.raises(ValueError, match="the table has no column 'customer_id'"):
        assign_splits(course.drop(columns="customer_id"), COURSE, "group")


def test_stratified_strategy_needs_classes(files):
    with pytest.raises(ValueError, match="the task is regression, which has no classes; use split_strategy random"):
        assign_splits(user_table(files["diabetes"]), spec_from_data(files["diabetes"], "target"), "stratified")
    tiny = pd.DataFrame({"_row_id": range(8), "y": ["a"] * 6 + ["b"] * 2})
    with pytest.raises(ValueError, match="class 'b' \\(2 rows\\) has fewer than 3 rows"):
        assign_splits(tiny, with_pred(COURSE, task="multiclass", target="y", id_column=None, time_column=None), "stratified")


def test_too_few_labelled_rows(course):
    two = course.assign(churned=pd.array([0, 1] + [None] * (len(course) - 2), dtype="Int64"))
    for strategy in ("random", "stratified"):
        with pytest.raises(ValueError, match="2 labelled rows are too few to split"):
            assign_splits(two, with_pred(COURSE, id_column=None, time_column=None), strategy)
    with pytest.raises(ValueError, match="no row has a label in 'churned'"):
        assign_splits(course.assign(churned=pd.array([None] * len(course), dtype="Int64")), COURSE)
    few_customers = course[course.customer_id.isin(["C00001", "C00002"])]
    with pytest.raises(ValueError, match="2 entities in 'customer_id' are too few for a group split"):
        assign_splits(few_customers, COURSE, "group")


def test_too_few_labelled_periods(course):
    two_months = course.assign(churned=course.churned.where(course.snapshot_month <= "2025-02"))
    with pytest.raises(ValueError, match="a time split needs at least 3 labelled periods .* 'snapshot_month' has 2: 2025-01, 2025-02"):
        assign_splits(two_months, COURSE, "time")


def test_missing_input_names_the_step_to_run_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="labelled.parquet does not exist; run the 'label' step first"):
        split(tmp_path, COURSE)


def test_a_table_without_the_label_or_row_id(tmp_path, course):
    with pytest.raises(ValueError, match="no label column 'churned' .*run the label step first"):
        split(run_with(tmp_path, course.drop(columns="churned")), COURSE)
    with pytest.raises(ValueError, match="no _row_id column"):
        split(run_with(tmp_path, course.drop(columns="_row_id"), "b"), COURSE)


# --- the step on single files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,target,strategy", [("iris", "target", "stratified"), ("diabetes", "target", "random"),
                                                  ("penguins", "Species", "stratified")])
def test_the_step_on_single_files(tmp_path, files, name, target, strategy):
    df = user_table(files[name])
    run = run_with(tmp_path, df)
    res = split(run, spec_from_data(files[name], target))
    assert res.strategy == strategy
    out = pd.read_parquet(run / "data" / "split.parquet")
    assert out._row_id.tolist() == df._row_id.tolist()
    counts = out.split.value_counts()
    assert abs(counts["train"] / len(df) - 0.6) < 0.01 and abs(counts["test"] / len(df) - 0.2) < 0.01
    report = json.loads((run / "data" / "split_report.json").read_text())
    assert report["strategy"] == strategy and len(report["checks"]) == 5
    assert {c["status"] for c in report["checks"]} <= {"ok", "expected", "warning", "error", "skipped"}


# --- the notebook as a pipeline step -------------------------------------------------------------------------------

def test_the_notebook_runs_as_a_step_with_its_parameters(tmp_path, course):
    "papermill with a run folder that already holds the step's inputs: no upstream step runs, the parameters arrive."
    import papermill
    from pathlib import Path
    from mlops_kit.design import save_spec
    root = Path(__file__).resolve().parent.parent
    run = run_with(tmp_path, course)
    save_spec(COURSE, run / "spec.yaml")
    papermill.execute_notebook(str(root / "nbs" / "14_data_split.ipynb"), str(tmp_path / "out.ipynb"), cwd=str(root / "nbs"),
                               parameters={"run_dir": str(run), "split_strategy": "group", "seed": 3, "valid_size": 0.25},
                               progress_bar=False)
    report = read_json(run / "data" / "split_report.json")
    assert (report["strategy"], report["seed"], report["valid_size"]) == ("group", 3, 0.25)
    metrics = read_json(run / "metrics" / "split.json")
    assert metrics["strategy"] == "group" and sum(metrics[f"rows_{s}"] for s in SPLITS) == len(course)
    assert not (run / "data" / "wrangled.parquet").exists()          # nothing upstream was run
