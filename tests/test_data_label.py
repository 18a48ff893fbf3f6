"""The label step: the future-window rule on hand-made cases and against the simulation's truth, the column rule on
user files, label quality checks, and bad input."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from mlops_kit.data.ingest import ingest
from mlops_kit.data.label import (LABEL_STATUS_COLUMN, LABEL_STATUSES, check_label_rule, column_labels, find_conflicts, future_window_labels, label, label_table,
                                  month_index, parse_events)
from mlops_kit.datasets import load_penguins_raw, materialize_data, simulate_business, write_sklearn_csv
from mlops_kit.design import default_spec, spec_from_data
from mlops_kit.runfolder import read_json, sha256_file, write_parquet

RULE = {"kind": "future_window", "source": "cancellations", "window_months": 2, "wait_days": 10}


def make_events(*rows):
    "Cancellations as (customer_id, cancel_date, recorded_at) tuples, parsed as the label step reads them."
    return parse_events(pd.DataFrame(rows, columns=["customer_id", "cancel_date", "recorded_at"]), RULE, "customer_id")


def rows(*keys):
    return pd.DataFrame(keys, columns=["customer_id", "snapshot_month"])


def statuses(table, events, as_of=None, **rule):
    return future_window_labels(table, events, {**RULE, **rule}, "customer_id", "snapshot_month", as_of).status.tolist()


# --- the future window, by hand -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cancel_date, expected", [
    ("2024-12-31", "negative"),            # cancelled before the month (and came back): not this row's window
    ("2025-01-01", "already_cancelled"),   # during the snapshot month itself
    ("2025-01-31", "already_cancelled"),   # on its last day
    ("2025-02-01", "positive"),            # first day of the window
    ("2025-03-31", "positive"),            # last day of the window
    ("2025-04-01", "negative"),            # one day after the window
])
def test_window_edges(cancel_date, expected):
    ev = make_events(("X", cancel_date, cancel_date))
    assert statuses(rows(("X", "2025-01"), ("Y", "2025-01")), ev, "2025-12-31") == [expected, "negative"]


def test_window_length_follows_the_rule_and_crosses_the_new_year():
    ev = make_events(("X", "2025-02-10", "2025-02-10"))
    t = rows(("X", "2024-11"), ("X", "2024-12"), ("X", "2025-01"))
    assert statuses(t, ev, "2025-12-31", window_months=1) == ["negative", "negative", "positive"]
    assert statuses(t, ev, "2025-12-31", window_months=2) == ["negative", "positive", "positive"]
    assert statuses(t, ev, "2025-12-31", window_months=3) == ["positive", "positive", "positive"]


def test_a_label_is_known_exactly_wait_days_after_the_window_closes():
    t = rows(("X", "2025-01"))  # window: February and March, closes on 31 March
    assert statuses(t, make_events(), "2025-04-10") == ["negative"]
    assert statuses(t, make_events(), "2025-04-09") == ["open_window"]
    assert statuses(t, make_events(), "2025-03-31", wait_days=0) == ["negative"]
    assert statuses(t, make_events(), "2025-03-30", wait_days=0) == ["open_window"]


def test_open_windows_are_unlabeled_not_negative():
    t = rows(*[("X", f"2025-0{m}") for m in range(1, 7)])
    got = future_window_labels(t, make_events(), RULE, "customer_id", "snapshot_month")  # as of the end of June
    assert got.status.tolist() == ["negative"] * 3 + ["open_window"] * 3
    assert got.label.isna().tolist() == [False] * 3 + [True] * 3
    assert str(got.label.dtype) == "Int64"


def test_late_recorded_cancellations_count_only_once_recorded():
    ev = make_events(("X", "2025-03-15", "2025-05-20"), ("Y", "2025-03-15", None))
    t = rows(("X", "2025-01"), ("Y", "2025-01"))
    # on 10 May the window is closed and waited for, but X's cancellation is not in the file yet: a wrong negative
    assert statuses(t, ev, "2025-05-10") == ["negative", "positive"]  # no recording date: assumed recorded
    assert statuses(t, ev, "2025-05-20") == ["positive", "positive"]
    # without an explicit as-of date the latest record sets it
    assert statuses(t, ev) == ["positive", "positive"]


def test_ids_are_trimmed_and_unknown_customers_change_nothing():
    ev = make_events((" X ", "2025-02-10", "2025-02-10"), ("Z", "2025-02-10", "2025-02-10"), ("", "2025-02-10", "2025-02-10"))
    t = rows(("X", "2025-01"), (" Y", "2025-01"), (None, "2025-01"), ("X", None))
    assert statuses(t, ev, "2025-12-31") == ["positive", "negative", "missing_key", "missing_key"]


def test_month_index_reads_months_and_dates():
    got = month_index(pd.Series(["2025-01", "2025-1", "2025-01-31", "31/01/2025", "2025-13", None], dtype=object))
    assert got.tolist()[:4] == [2025 * 12] * 4
    assert got.isna().tolist()[4:] == [True, True]


# --- the course data against the simulation's truth -----------------------------------------------------------------

@pytest.fixture(scope="module")
def course(tmp_path_factory):
    "A default-sized course run: the ingested table (the wrangled table has the same keys), its cancellations, the truth."
    run = tmp_path_factory.mktemp("course")
    materialize_data(run, n_customers=2000, n_months=12, seed=42)
    table = ingest(run, default_spec()).table
    write_parquet(run / "data" / "wrangled.parquet", table)
    raw = pd.read_parquet(run / "data" / "sources" / "cancellations.parquet")
    S = simulate_business(seed=42, n_customers=2000, n_months=12)
    can = S["cancellations"]
    cancel_month = month_index(table.customer_id.map(dict(zip(can.customer_id, can.month))))
    m = month_index(table.snapshot_month)
    truth = pd.DataFrame({"positive": ((cancel_month > m) & (cancel_month <= m + 2)).fillna(False).astype(bool).to_numpy(),
                          "gone": (cancel_month == m).fillna(False).astype(bool).to_numpy()}, index=table.index)
    return run, table, raw, truth


def test_known_labels_agree_with_the_simulation(course):
    _, table, raw, truth = course
    ev = parse_events(raw, default_spec().prediction.label_rule, "customer_id")
    # waiting longer than the slowest record (92 days): every known label is the truth
    exact = future_window_labels(table, ev, {**RULE, "wait_days": 92}, "customer_id", "snapshot_month")
    known = exact.label.notna()
    assert known.sum() > 10_000
    assert (exact.label[known].astype(bool) == truth.positive[known]).all()
    # rows the step calls already_cancelled are the customers' cancellation months in the truth
    assert truth.gone[exact.status == "already_cancelled"].all()
    # ... and those labels were already known, unchanged, two months earlier
    then = future_window_labels(table, ev, {**RULE, "wait_days": 92}, "customer_id", "snapshot_month", as_of="2025-10-31")
    both = known & then.label.notna()
    assert both.sum() > 5_000 and (exact.label[both] == then.label[both]).all()


def test_the_spec_wait_misses_only_cancellations_not_recorded_yet(course):
    _, table, raw, truth = course
    spec_rule = default_spec().prediction.label_rule
    ev = parse_events(raw, spec_rule, "customer_id")
    got = future_window_labels(table, ev, spec_rule, "customer_id", "snapshot_month")
    known = got.label.notna()
    wrong = known & (got.label.astype("boolean") != pd.array(truth.positive.to_numpy(), dtype="boolean")).fillna(False).to_numpy()
    # every disagreement is a churner labelled 0 whose cancellation was not in the file yet; there are few
    assert (got.label[wrong] == 0).all() and truth.positive[wrong].all()
    assert not table.customer_id[wrong].isin(set(raw.customer_id)).any()
    assert wrong.sum() < 0.02 * truth.positive[known].sum()


def test_the_course_step_keeps_every_row_and_writes_its_outputs(course):
    run, table, _, _ = course
    res = label(run, default_spec())
    out = pd.read_parquet(run / "data" / "labelled.parquet")
    wrangled = pd.read_parquet(run / "data" / "wrangled.parquet")
    assert out._row_id.tolist() == wrangled._row_id.tolist()
    pd.testing.assert_frame_equal(out.drop(columns=["churned", "label_status"]), wrangled)
    assert str(out.churned.dtype) == "Int64" and set(out.churned.dropna()) == {0, 1}
    rep = read_json(run / "data" / "label_report.json")
    assert rep["labelled"] + rep["unlabeled"] == rep["rows"] == len(wrangled)
    assert sum(rep["status"].values()) == rep["rows"]
    assert rep["status"]["positive"] + rep["status"]["negative"] == rep["labelled"] == int(out.churned.notna().sum())
    assert rep["positives"] == int(out.churned.sum())
    assert sum(p["rows"] for p in rep["periods"]) == rep["rows"]
    last = out.snapshot_month.max()
    assert out.churned[out.snapshot_month == last].isna().all()
    assert rep["window"]["newest_labelled_period"] == "2025-09" and rep["window"]["oldest_open_period"] == "2025-10"
    assert rep["events"]["lag_days"]["max"] > 31 and any("wait_days (31)" in w for w in rep["warnings"])
    assert res.report == rep
    first = sha256_file(run / "data" / "labelled.parquet")
    label(run, default_spec())
    assert sha256_file(run / "data" / "labelled.parquet") == first


def test_labelled_parquet_says_why_a_label_is_missing_and_the_status_is_never_a_feature(course):
    from mlops_kit.data.split import feature_columns
    from mlops_kit.model.features import plan_features
    run, table, raw, truth = course
    label(run, default_spec())
    out = pd.read_parquet(run / "data" / "labelled.parquet")
    assert LABEL_STATUS_COLUMN == "label_status" and LABEL_STATUS_COLUMN in out.columns
    st = out[LABEL_STATUS_COLUMN].astype(object)
    assert set(st) == {"positive", "negative", "open_window", "already_cancelled"} and set(st) <= set(LABEL_STATUSES)
    assert (st[out.churned.eq(1).fillna(False)] == "positive").all() and (st[out.churned.eq(0).fillna(False)] == "negative").all()
    assert out.churned[st.isin(["open_window", "already_cancelled"])].isna().all()
    # the two kinds of empty label are told apart: a customer in their cancellation month vs a window still open
    gone = truth.gone.to_numpy()
    assert gone[(st == "already_cancelled").to_numpy()].all()
    recorded = table.customer_id.isin(set(raw.customer_id)).to_numpy()
    assert (st[gone & recorded] == "already_cancelled").all()
    assert not gone[(st == "open_window").to_numpy() & recorded].any()
    # the status is the label in words: the split's features and the feature plan leave it out, saying why
    spec = default_spec()
    assert LABEL_STATUS_COLUMN not in feature_columns(out, spec)
    plan = plan_features(out, None, spec)
    assert LABEL_STATUS_COLUMN not in plan.input_columns and "leak" in plan.excluded[LABEL_STATUS_COLUMN]


def test_a_table_with_a_label_status_column_is_refused(course):
    _, table, raw, _ = course
    with pytest.raises(ValueError, match="already has a column 'label_status'.*rename that column"):
        label_table(table.assign(label_status="mine"), default_spec(), raw)
    visits = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", None], "label_status": ["p", "q", "r"]})
    with pytest.raises(ValueError, match="already has a column 'label_status'"):
        label_table(visits, replace(default_spec(), prediction=replace(default_spec().prediction, target="y", task="binary",
                                                                       label_rule={"kind": "column"}, id_column=None,
                                                                       time_column=None)))


# --- user files: the column rule ------------------------------------------------------------------------------------

def user_run(tmp_path, path, target, **kw):
    run = tmp_path / "run"
    materialize_data(run, str(path))
    spec = spec_from_data(path, target, **kw)
    write_parquet(run / "data" / "wrangled.parquet", ingest(run, spec).table)
    return run, spec


def test_column_rule_on_a_user_file_with_missing_targets(tmp_path):
    iris = pd.read_csv(write_sklearn_csv("iris", tmp_path / "iris.csv"))
    iris.loc[[0, 50, 149], "target"] = np.nan
    iris.to_csv(tmp_path / "iris_gaps.csv", index=False)
    run, spec = user_run(tmp_path, tmp_path / "iris_gaps.csv", "target")
    res = label(run, spec)
    out, wrangled = pd.read_parquet(run / "data" / "labelled.parquet"), pd.read_parquet(run / "data" / "wrangled.parquet")
    assert len(out) == len(wrangled) == 150
    assert out.target.dtype == wrangled.target.dtype
    assert out._row_id[out.target.isna()].tolist() == [0, 50, 149]
    rep = res.report
    assert (rep["labelled"], rep["unlabeled"], rep["status"]) == (147, 3, {"labelled": 147, "missing_target": 3})
    assert sum(rep["classes"].values()) == 147 and rep["periods"] is None


def test_blank_text_targets_are_unlabeled_and_keep_their_type():
    t = pd.DataFrame({"x": [1, 2, 3, 4], "y": pd.Series(["a", " ", None, "b"], dtype="str")})
    got = column_labels(t, "y")
    assert got.status.tolist() == ["labelled", "missing_target", "missing_target", "labelled"]
    assert got.label.dtype == t.y.dtype


def test_penguins_raw_and_a_regression_target(tmp_path):
    load_penguins_raw().to_csv(tmp_path / "penguins_raw.csv", index=False)
    run, spec = user_run(tmp_path, tmp_path / "penguins_raw.csv", "Species")
    rep = label(run, spec).report
    assert rep["labelled"] == rep["rows"] == len(load_penguins_raw()) and len(rep["classes"]) == 3
    assert rep["conflicts"]["keys"] == [] and rep["conflicts"]["groups"] == 0
    d = tmp_path / "d"
    d.mkdir()
    run, spec = user_run(d, write_sklearn_csv("diabetes", d / "diabetes.csv"), "target")
    rep = label(run, spec).report
    assert rep["labelled"] == 442 and "classes" not in rep
    assert rep["target_summary"]["min"] <= rep["target_summary"]["median"] <= rep["target_summary"]["max"]


# --- label quality checks -------------------------------------------------------------------------------------------

def test_conflicting_labels_are_detected_and_kept(tmp_path):
    t = pd.DataFrame({"pid": ["p1", "p1", "p2", "p2", "p3", "p3", "p4"],
                      "visit": ["2024-01-01", "2024-01-01", "2024-01-01", "2024-02-01", "2024-01-01", "2024-01-01", "2024-01-01"],
                      "bmi": [20.0, 20.0, 25.0, 26.0, 30.0, 31.0, 22.0],
                      "sick": ["yes", "no", "no", "yes", "yes", "yes", None]})
    t.to_csv(tmp_path / "v.csv", index=False)
    spec = spec_from_data(tmp_path / "v.csv", "sick", id_column="pid", time_column="visit")
    res = label_table(t, spec)
    assert len(res.table) == len(t)
    c = res.report["conflicts"]
    assert (c["keys"], c["groups"], c["rows"]) == (["pid", "visit"], 1, 2)
    assert c["examples"] == [{"pid": "p1", "visit": "2024-01-01", "rows": 2, "labels": "no; yes"}]
    assert res.report["same_features_conflicts"] == {"groups": 1, "rows": 2}
    # by entity alone (no time column), p2 mixes labels too
    assert find_conflicts(t, t.sick, ["pid"]).pid.tolist() == ["p1", "p2"]
    assert any("different labels" in w for w in res.report["warnings"])


# --- bad input ------------------------------------------------------------------------------------------------------

def test_missing_inputs_name_the_step_to_run_first(course, tmp_path):
    with pytest.raises(FileNotFoundError, match="run the 'wrangle' step first"):
        label(tmp_path, default_spec())
    run, table, _, _ = course
    other = tmp_path / "no_sources"
    write_parquet(other / "data" / "wrangled.parquet", table)
    with pytest.raises(FileNotFoundError, match="cancellations.parquet does not exist.*run the 'ingest' step first"):
        label(other, default_spec())


def with_rule(rule):
    s = default_spec()
    return replace(s, prediction=replace(s.prediction, label_rule=rule))


@pytest.mark.parametrize("rule, message", [
    ({"kind": "future"}, "'future' is not a label rule the kit knows (did you mean 'future_window'?); use one of future_window, column"),
    ({"kind": "lookup"}, "use one of future_window, column"),
    ({"kind": "future_window", "source": "cancellations", "wait_days": 31}, "needs window_months"),
    ({**RULE, "window_months": 0}, "window_months must be a whole number of months, 1 or more"),
    ({**RULE, "window_months": 1.5}, "window_months must be a whole number of months"),
    ({**RULE, "wait_days": -3}, "wait_days must be a whole number of days, 0 or more"),
    ({**RULE, "windows_months": 2}, "unknown key(s) windows_months"),
])
def test_bad_label_rules_give_clear_errors(course, rule, message):
    with pytest.raises(ValueError) as e:
        check_label_rule(rule)
    assert message in str(e.value)
    run = course[0]
    with pytest.raises(ValueError) as e:
        label(run, with_rule(rule))
    assert message in str(e.value)


def test_other_bad_input(course):
    _, table, raw, _ = course
    spec = default_spec()
    with pytest.raises(ValueError, match="already has a column 'churned'"):
        label_table(table.assign(churned=0), spec, raw)
    with pytest.raises(ValueError, match="source 'cancellations' has no column"):
        label_table(table, spec, raw.drop(columns="cancel_date"))
    with pytest.raises(ValueError, match="needs the spec's id_column"):
        label_table(table, replace(spec, prediction=replace(spec.prediction, id_column=None)), raw)
    col = replace(spec, prediction=replace(spec.prediction, label_rule={"kind": "column"}))
    with pytest.raises(ValueError, match="target column 'churned' is not in the table"):
        label_table(table, col)


def test_no_known_label_stops_the_step_after_writing_its_outputs(tmp_path):
    materialize_data(tmp_path, n_customers=100, n_months=4, seed=1)
    write_parquet(tmp_path / "data" / "wrangled.parquet", ingest(tmp_path, default_spec()).table)
    with pytest.raises(ValueError, match="no row has a known label.*n_months"):
        label(tmp_path, default_spec())
    assert read_json(tmp_path / "data" / "label_report.json")["labelled"] == 0
    assert len(pd.read_parquet(tmp_path / "data" / "labelled.parquet")) > 0
