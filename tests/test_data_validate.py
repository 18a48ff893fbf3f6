"""The validate step (mlops_kit.data.validate) on good course data, a user's CSV, and each kind of bad input."""
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from mlops_kit.data.ingest import ingest
from mlops_kit.data.validate import (ColumnRule, Contract, QuarantineBudgetError, check_batch, derive_contract,
                                     load_contract, validate)
from mlops_kit.datasets import load_penguins_raw, materialize_data, write_sklearn_csv
from mlops_kit.design import default_spec, spec_from_data
from mlops_kit.runfolder import sha256_file, write_parquet

OUTPUTS = ["contract.json", "validated.parquet", "quality_report.csv", "validation.json", "quarantine/validate.parquet"]


@pytest.fixture(scope="module")
def course_run(tmp_path_factory):
    "The default course data (2000 customers, 12 months), ingested and validated once: (run folder, ingested table)."
    run = tmp_path_factory.mktemp("course")
    materialize_data(run)
    ingest(run, default_spec())
    validate(run, default_spec())
    return run, pd.read_parquet(run / "data" / "ingested.parquet")


def outputs(run):
    data = run / "data"
    return (pd.read_parquet(data / "validated.parquet") if (data / "validated.parquet").exists() else None,
            pd.read_parquet(data / "quarantine" / "validate.parquet"),
            pd.read_csv(data / "quality_report.csv").set_index("column"),
            json.loads((data / "validation.json").read_text()))


def check_counts(run, ingested):
    "Rows in = kept + quarantined, by count and by row id; returns (kept, quarantined, report, summary)."
    kept, q, report, summary = outputs(run)
    n_kept = 0 if kept is None else len(kept)
    assert n_kept + len(q) == len(ingested) == summary["rows_in"]
    assert (summary["rows_kept"], summary["rows_quarantined"]) == (n_kept, len(q))
    assert q["_row_id"].is_unique                                          # one record per quarantined row
    kept_ids = set() if kept is None else set(kept["_row_id"])
    assert kept_ids | set(q["_row_id"]) == set(ingested["_row_id"]) and not kept_ids & set(q["_row_id"])
    return kept, q, report, summary


def run_with(tmp_path, table, name="run"):
    "A run folder whose ingested table is `table` (as the ingest step would leave it)."
    run = tmp_path / name
    write_parquet(run / "data" / "ingested.parquet", table)
    return run


# ---- good data -------------------------------------------------------------------------------------------------

def test_course_data_passes_and_reports_its_real_dirt(course_run):
    run, ingested = course_run
    for f in OUTPUTS: assert (run / "data" / f).is_file(), f
    kept, q, report, summary = check_counts(run, ingested)
    assert summary["passed"] and summary["quarantine_share"] <= 0.05
    assert list(kept.columns) == list(ingested.columns)
    pd.testing.assert_frame_equal(kept.reset_index(drop=True),
                                  ingested[ingested._row_id.isin(kept._row_id)].reset_index(drop=True))  # values unchanged
    checks = summary["checks"]
    # fees recorded in cents are out of range; exact duplicate rows are warnings, not quarantined
    assert checks["out_of_range"]["rows"] == report.loc["monthly_fee", "out_of_range"] == int((ingested.monthly_fee > 100).sum()) > 0
    n_copies = int(ingested.drop(columns="_row_id").duplicated().sum())
    assert checks["duplicate_row"] == {"mode": "warning", "issues": n_copies, "rows": n_copies} and n_copies > 0
    assert checks["duplicate_key"]["rows"] == 0 and checks["missing_key"]["rows"] == 0
    # spelling variants are counted, not unknown categories; numbers stored as text are readable, not type errors
    for col in ("plan", "country", "signup_plan"):
        assert report.loc[col, "spelling_variants"] > 0 and report.loc[col, "unknown_category"] == 0
    for col in ("sessions", "minutes_used"):
        assert report.loc[col, "numbers_as_text"] == int(ingested[col].notna().sum()) and report.loc[col, "type_error"] == 0
    assert checks["type_error"]["rows"] == 0 and checks["unknown_category"]["rows"] == 0
    assert report.loc["age", "missing"] == int(ingested.age.isna().sum()) > 0
    contract = load_contract(run / "data" / "contract.json")
    assert contract.key == ["customer_id", "snapshot_month"] and contract.columns["monthly_fee"] == ColumnRule(
        "monthly_fee", "number", nullable=False, min=0, max=100, source="spec")
    assert contract.columns["n_tickets"].source == "inferred"


def test_the_same_input_gives_the_same_files(course_run, tmp_path):
    run, ingested = course_run
    again = run_with(tmp_path, ingested)
    validate(again, default_spec())
    for f in ["contract.json", "validated.parquet", "quality_report.csv", "validation.json", "quarantine/validate.parquet"]:
        assert sha256_file(run / "data" / f) == sha256_file(again / "data" / f), f


@pytest.mark.parametrize("name,make,target", [
    ("wine", lambda p: write_sklearn_csv("wine", p), "target"),
    ("diabetes", lambda p: write_sklearn_csv("diabetes", p), "target"),
    ("penguins", lambda p: load_penguins_raw().to_csv(p, index=False), "Species"),
])
def test_a_users_csv_is_validated_with_an_inferred_contract(tmp_path, name, make, target):
    path = tmp_path / f"{name}.csv"
    make(path)
    run = tmp_path / "run"
    materialize_data(run, str(path))
    spec = spec_from_data(path, target)
    ingest(run, spec)
    res = validate(run, spec)
    ingested = pd.read_parquet(run / "data" / "ingested.parquet")
    kept, q, report, summary = check_counts(run, ingested)
    assert res.passed and len(q) == 0 and len(kept) == len(ingested)
    contract = load_contract(run / "data" / "contract.json")
    assert set(contract.columns) == set(ingested.columns) - {"_row_id"}
    assert all(r.source == "inferred" for r in contract.columns.values())
    assert contract.target == target and contract.key == []
    if name == "penguins":
        assert contract.columns["Species"].kind == "category" and len(contract.columns["Species"].domain) == 3
        assert contract.columns["Date Egg"].kind == "date"
        assert report.loc["Sex", "missing"] == int(ingested["Sex"].isna().sum()) > 0


def test_a_dirty_users_csv(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("order_id,amount,status,paid\nA1,10.5,open,yes\nA2,12,Open,no\nA3,ten,closed ,yes\nA4,9.9,CLOSED,no\n"
                    "A5,11,open,yes\nA6,12.5,open,yes\nA7,11,closed,no\nA8,10,open,no\nA9,13.1,closed,yes\n"
                    + "".join(f"B{i},{10 + i % 7},open,{'yes' if i % 2 else 'no'}\n" for i in range(60)))
    spec = spec_from_data(path, "paid", id_column="order_id")
    run = tmp_path / "run"
    materialize_data(run, str(path))
    ingest(run, spec)
    res = validate(run, spec)
    kept, q, report, summary = check_counts(run, pd.read_parquet(run / "data" / "ingested.parquet"))
    assert res.passed and len(q) == 0
    assert report.loc["amount", "type_error"] == 1 and report.loc["amount", "numbers_as_text"] == 68
    assert report.loc["status", "spelling_variants"] == 3 and report.loc["status", "unknown_category"] == 0
    assert load_contract(run / "data" / "contract.json").columns["order_id"].kind == "id"


# ---- bad input -------------------------------------------------------------------------------------------------

def test_missing_input_file_names_the_step_to_run_first(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ingested.parquet does not exist; run the 'ingest' step first"):
        validate(tmp_path / "empty", default_spec())
    assert not (tmp_path / "empty" / "data" / "contract.json").exists()


def test_missing_contract_file_names_the_validate_step(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the 'validate' step first"):
        load_contract(tmp_path / "contract.json")


def test_duplicate_keys_with_different_values_quarantine_every_row_of_the_key(course_run, tmp_path):
    _, ingested = course_run
    t = ingested.copy()
    # a row whose key repeats an existing key with one different value; an exact copy of another row
    clash = t.iloc[[100]].assign(sessions="999", _row_id=len(t))
    copy = t.iloc[[200]].assign(_row_id=len(t) + 1)
    t = pd.concat([t, clash, copy], ignore_index=True)
    run = run_with(tmp_path, t)
    validate(run, default_spec())
    kept, q, report, summary = check_counts(run, t)
    key = (t.customer_id.iloc[100], t.snapshot_month.iloc[100])
    same_key = t[(t.customer_id == key[0]) & (t.snapshot_month == key[1])]._row_id
    assert set(q._row_id) == set(same_key) and len(same_key) >= 2
    assert set(q.check) == {"duplicate_key"}
    assert q.reason.str.contains(f"the key customer_id={key[0]}, snapshot_month={key[1]} repeats with different values").all()
    assert len(t) - 1 in set(kept._row_id)                              # the exact copy is kept (a warning)
    assert summary["checks"]["duplicate_row"]["rows"] == int(t.drop(columns="_row_id").duplicated().sum())
    assert json.loads(q.record.iloc[0])["customer_id"] == key[0]         # the original record travels with the reason


def test_missing_keys_are_quarantined(course_run, tmp_path):
    _, ingested = course_run
    t = ingested.copy()
    t.loc[[5, 6, 7], "customer_id"] = None
    t.loc[[8, 9], "snapshot_month"] = "  "
    run = run_with(tmp_path, t)
    validate(run, default_spec())
    kept, q, report, summary = check_counts(run, t)
    assert set(q._row_id) == {5, 6, 7, 8, 9} and set(q.check) == {"missing_key"}
    assert q.set_index("_row_id").reason[8] == "missing_key: snapshot_month is empty: the row cannot be tied to an entity"
    assert report.loc["customer_id", "missing_key"] == 3 and report.loc["snapshot_month", "missing_key"] == 2


def test_type_errors_are_reported_not_quarantined(course_run, tmp_path):
    _, ingested = course_run
    t = ingested.copy()
    t.loc[[1, 2], "sessions"] = "many"
    t.loc[3, "sessions"] = "2.5"                      # an integer column: not whole
    t.loc[4, "last_seen"] = "next tuesday"
    t.loc[5, "snapshot_month"] = "2025/01"            # the time column's pattern
    run = run_with(tmp_path, t)
    res = validate(run, default_spec())
    kept, q, report, summary = check_counts(run, t)
    assert len(q) == 0
    te = res.issues[res.issues.check == "type_error"]
    assert sorted(te[te.column == "sessions"]._row_id) == [1, 2, 3]
    assert te[te.column == "last_seen"].value.tolist() == ["next tuesday"]
    assert te[te.column == "snapshot_month"].value.tolist() == ["2025/01"]
    assert not te.blocking.any()
    assert report.loc["sessions", "numbers_as_text"] == int(t.sessions.notna().sum()) - 2   # 2.5 reads, "many" does not


def test_out_of_range_values_are_reported(course_run, tmp_path):
    _, ingested = course_run
    t = ingested.copy()
    t["age"] = t["age"].astype("float64")
    t.loc[[10, 11], "age"] = [150.0, 3.0]
    run = run_with(tmp_path, t)
    res = validate(run, default_spec())
    check_counts(run, t)
    out = res.issues[(res.issues.check == "out_of_range") & (res.issues.column == "age")]
    assert sorted(out._row_id) == [10, 11] and sorted(out.value) == ["150", "3"]
    fee = res.issues[(res.issues.check == "out_of_range") & (res.issues.column == "monthly_fee")]
    assert len(fee) == int((t.monthly_fee > 100).sum())


def test_unknown_categories_are_told_apart_from_spelling_variants(course_run, tmp_path):
    _, ingested = course_run
    t = ingested.copy()
    t.loc[[20, 21], "plan"] = "gold"
    t.loc[22, "country"] = "Brazil"
    t.loc[23, "country"] = " pt "                     # an alias, trimmed and case folded: a variant
    run = run_with(tmp_path, t)
    res = validate(run, default_spec())
    kept, q, report, summary = check_counts(run, t)
    unk = res.issues[res.issues.check == "unknown_category"]
    assert sorted(zip(unk._row_id, unk.column, unk.value)) == [(20, "plan", "gold"), (21, "plan", "gold"), (22, "country", "Brazil")]
    assert 23 in set(kept._row_id) and report.loc["country", "unknown_category"] == 1
    assert report.loc["country", "spelling_variants"] > 0


def test_quarantine_budget_exceeded_is_a_clear_error_with_everything_written(course_run, tmp_path):
    _, ingested = course_run
    t = ingested.copy()
    broken = t.index[t.index % 12 == 0]               # a broken feed: about 8% of the ids are empty
    t.loc[broken, "customer_id"] = None
    run = run_with(tmp_path, t)
    (run / "data" / "validated.parquet").write_text("an older run's table")   # must not survive a failed run
    with pytest.raises(QuarantineBudgetError) as e:
        validate(run, default_spec())
    msg = str(e.value)
    share = len(broken) / len(t)
    assert f"{len(broken):,} of {len(t):,} rows ({share:.2%}) failed a blocking check" in msg
    assert "above the quarantine budget of 5.00%" in msg
    assert f"Top reasons: missing_key on customer_id: {len(broken):,} rows" in msg
    assert str(run / "data" / "quarantine" / "validate.parquet") in msg and "max_quarantine_share" in msg
    kept, q, report, summary = outputs(run)                # report, quarantine and summary are written; the table is not
    assert kept is None and summary["passed"] is False
    assert sorted(q._row_id) == sorted(t._row_id[broken]) and set(q.check) == {"missing_key"}
    assert summary["rows_kept"] + summary["rows_quarantined"] == summary["rows_in"] == len(t)
    assert report.loc["customer_id", "missing_key"] == len(broken)
    assert (run / "data" / "contract.json").is_file()


def test_blocking_and_warning_lists_come_from_the_spec(course_run, tmp_path):
    _, ingested = course_run
    t = ingested.iloc[:2000].copy()
    t.loc[[1, 2], "plan"] = "gold"
    spec = default_spec()
    dc = spec.data_checks
    strict = replace(spec, data_checks=replace(dc, blocking=["missing_key", "duplicate_key", "unknown_category"],
                                               warning=[w for w in dc.warning if w != "unknown_category"]))
    run = run_with(tmp_path, t)
    validate(run, strict)
    kept, q, report, summary = check_counts(run, t)
    assert set(q._row_id) == {1, 2} and set(q.check) == {"unknown_category"}
    assert q.reason.iloc[0].startswith("unknown_category: plan 'gold' is not in the domain (basic, standard, premium)")


def test_a_saved_contract_checks_a_new_batch(course_run):
    run, ingested = course_run
    contract = load_contract(run / "data" / "contract.json")
    batch = ingested.drop(columns="_row_id").iloc[:500].drop_duplicates().reset_index(drop=True)
    batch.loc[0, "monthly_fee"] = -5.0
    batch["brand_new"] = 1
    res = check_batch(batch.drop(columns=["features_used"]), contract)
    assert len(res.kept) + len(res.quarantined) == len(batch)
    assert res.summary["missing_columns"] == ["features_used"] and res.summary["new_columns"] == ["brand_new"]
    assert 0 in set(res.issues[res.issues.check == "out_of_range"]._row_id)
    with pytest.raises(ValueError, match="has no column 'customer_id', which the contract uses as a key"):
        check_batch(batch.drop(columns=["customer_id"]), contract)


def test_contract_rules_refuse_nonsense():
    with pytest.raises(ValueError, match="kind 'float' is not one of"):
        ColumnRule("x", "float")
    with pytest.raises(ValueError, match="cannot be both blocking and warning"):
        Contract({}, blocking=["type_error"], warning=["type_error"])


def test_a_stacked_batch_is_checked_row_for_row(course_run):
    "Eight copies of the course table: every copy is a duplicate row of the first (speed lives in benchmarks/data.py)."
    _, ingested = course_run
    contract = derive_contract(ingested, default_spec())
    big = pd.concat([ingested] * 8, ignore_index=True).assign(_row_id=lambda d: np.arange(len(d)))
    res = check_batch(big, contract)
    assert len(res.kept) + len(res.quarantined) == len(big)
    dup_rows = set(res.issues._row_id[res.issues.check == "duplicate_row"])
    assert dup_rows >= set(range(len(ingested), len(big)))


def test_an_entity_id_without_a_time_column_may_repeat(tmp_path):
    "Penguins measured per individual: with `Individual ID` as the id and no time column, repeats are entities, not conflicts."
    path = tmp_path / "penguins.csv"
    raw = load_penguins_raw()
    raw.to_csv(path, index=False)
    assert raw["Individual ID"].duplicated().any()
    spec = spec_from_data(path, "Species", id_column="Individual ID")
    run = tmp_path / "run"
    materialize_data(run, str(path))
    ingest(run, spec)
    res = validate(run, spec)
    assert res.passed and "duplicate_key" not in set(res.issues.check)
    assert len(res.kept) + len(res.quarantined) == len(raw)
