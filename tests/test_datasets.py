"""Tests of mlops_kit.datasets as a user meets it: the course files, their determinism, drift and incidents, dirt,
late labels, bad knobs, the datasets step on course data and on the learner's own files, and the bundled data sets."""
import datetime as dt
import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from mlops_kit.datasets import (COURSE_SOURCES, DIRT_RATES, DRIFT_SCENARIOS, INCIDENTS, PLAN_FEES, dirt_report,
                                generate_course_data, load_penguins_raw, load_sklearn_dataset, materialize_data,
                                read_course_sources, simulate_business, write_sklearn_csv)
from mlops_kit.runfolder import read_json, sha256_file

SMALL = dict(seed=5, n_customers=500, n_months=8)
START, START_LABEL = 5, "2025-05"  # scenarios start in month 5 of 8


def hashes(paths):
    return {name: sha256_file(p) for name, p in paths.items()}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    "The small business without drift or incident, read back from its raw files."
    d = tmp_path_factory.mktemp("none")
    paths = generate_course_data(d, **SMALL)
    return dict(paths=paths, raw=read_course_sources(d), clean=simulate_business(**SMALL))


def scenario(tmp_path, **knobs):
    paths = generate_course_data(tmp_path, **SMALL, **knobs)
    return paths, read_course_sources(tmp_path)


def minutes(ev):
    return pd.to_numeric(ev.minutes_used, errors="coerce")


def before(df):
    return df[df.month < START_LABEL].reset_index(drop=True)


def ticket_month(opened_at):
    "'YYYY-MM' of an opened_at value in any of the support desk's three formats."
    return opened_at.map(lambda s: f"{s[6:10]}-{s[3:5]}" if "/" in s else s[:7])


# --- determinism ---------------------------------------------------------------------------------------------------

def test_same_arguments_give_byte_identical_files(tmp_path):
    a = generate_course_data(tmp_path / "a")
    b = generate_course_data(tmp_path / "b")
    assert list(a) == list(COURSE_SOURCES)
    assert [p.name for p in a.values()] == [s["file"] for s in COURSE_SOURCES.values()]
    assert hashes(a) == hashes(b)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_different_seed_changes_every_file(tmp_path, baseline):
    other = generate_course_data(tmp_path, **{**SMALL, "seed": 6})
    assert all(sha256_file(other[n]) != sha256_file(baseline["paths"][n]) for n in COURSE_SOURCES)


def test_regenerating_into_the_same_folder_overwrites_cleanly(tmp_path, baseline):
    generate_course_data(tmp_path, seed=1, n_customers=100, n_months=3)
    again = generate_course_data(tmp_path, **SMALL)
    assert hashes(again) == hashes(baseline["paths"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(s["file"] for s in COURSE_SOURCES.values())


# --- drift: each scenario changes what it claims from its start month, and nothing before -----------------------

def assert_unchanged_before_start(raw, base, clean_base):
    pd.testing.assert_frame_equal(before(raw["subscriptions"]), before(base["subscriptions"]))
    pd.testing.assert_frame_equal(before(raw["usage_events"]), before(base["usage_events"]))
    opened = lambda df: df[ticket_month(df.opened_at) < START_LABEL]
    pd.testing.assert_frame_equal(opened(raw["support"]).reset_index(drop=True), opened(base["support"]).reset_index(drop=True))
    n_old = int((clean_base["customers"].group < START).sum())  # customers who signed up before the start month
    pd.testing.assert_frame_equal(raw["customers"].iloc[:n_old], base["customers"].iloc[:n_old])
    old_cancels = lambda df: df[df.cancel_date < START_LABEL].sort_values(["customer_id", "cancel_date"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(old_cancels(raw["cancellations"]), old_cancels(base["cancellations"]))


def churn_after(clean):
    s, c = clean["subscriptions"], clean["cancellations"]
    return (c.month >= START_LABEL).sum() / (s.month >= START_LABEL).sum()


def test_price_increase_raises_fees_and_churn(tmp_path, baseline):
    _, raw = scenario(tmp_path, drift="price_increase", drift_start_month=START)
    assert_unchanged_before_start(raw, baseline["raw"], baseline["clean"])
    euro = lambda s, after: s[(s.monthly_fee < 100) & ((s.month >= START_LABEL) == after)].monthly_fee.median()
    s, b = raw["subscriptions"], baseline["raw"]["subscriptions"]
    assert euro(s, True) == pytest.approx(1.2 * euro(b, True), rel=0.02)
    assert euro(s, False) == euro(b, False)
    clean = simulate_business(**SMALL, drift="price_increase", drift_start_month=START)
    assert churn_after(clean) > 1.3 * churn_after(baseline["clean"])


def test_new_market_brings_young_brazilian_customers(tmp_path, baseline):
    _, raw = scenario(tmp_path, drift="new_market", drift_start_month=START)
    assert_unchanged_before_start(raw, baseline["raw"], baseline["clean"])
    clean = simulate_business(**SMALL, drift="new_market", drift_start_month=START)
    cus = clean["customers"]
    new, old = cus[cus.group >= START], cus[cus.group < START]
    assert (old.country == "Brazil").sum() == 0 and (new.country == "Brazil").mean() > 0.2
    assert (new.acquisition_channel == "influencer").mean() > 0.2
    assert new.age.mean() < old.age.mean() - 5
    assert len(new) > 1.5 * (baseline["clean"]["customers"].group >= START).sum()
    # and it shows in the raw CRM file, spelled in several ways
    country = raw["customers"].country.fillna("").str.strip().str.lower()
    assert country.isin(["brazil", "br"]).sum() >= (new.country == "Brazil").sum()


def test_usage_decline_lowers_minutes_and_sessions(tmp_path, baseline):
    _, raw = scenario(tmp_path, drift="usage_decline", drift_start_month=START)
    assert_unchanged_before_start(raw, baseline["raw"], baseline["clean"])
    ev, base = raw["usage_events"], baseline["raw"]["usage_events"]
    after = lambda e: minutes(e)[e.month >= START_LABEL].median()
    assert after(ev) < 0.8 * after(base)
    sessions = lambda e: pd.to_numeric(e.sessions)[e.month >= START_LABEL].mean()
    assert sessions(ev) < 0.8 * sessions(base)


def test_no_drift_start_month_is_needed_without_drift(tmp_path):
    # the default start months (9 and 10) lie beyond 3 months: without drift or incident they are never used
    paths = generate_course_data(tmp_path, n_customers=50, n_months=3)
    assert set(paths) == set(COURSE_SOURCES) and all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    months = pd.read_parquet(paths["subscriptions"]).month
    assert sorted(months.unique()) == ["2025-01", "2025-02", "2025-03"]
    # ... while a drift or an incident does need its start month inside the simulated months
    with pytest.raises(ValueError, match="drift_start_month must be between 1 and n_months=3"):
        generate_course_data(tmp_path / "drift", n_customers=50, n_months=3, drift="price_increase")
    with pytest.raises(ValueError, match="incident_start_month must be between 1 and n_months=3"):
        generate_course_data(tmp_path / "incident", n_customers=50, n_months=3, incident="minutes_in_seconds")


# --- incidents: they change the files, not the business -----------------------------------------------------------

def test_minutes_in_seconds(tmp_path, baseline):
    paths, raw = scenario(tmp_path, incident="minutes_in_seconds", incident_start_month=START)
    ev, base = raw["usage_events"], baseline["raw"]["usage_events"]
    ratio = minutes(ev).groupby(ev.month).median() / minutes(base).groupby(base.month).median()
    assert (ratio[ratio.index < START_LABEL] == 1).all()
    assert ratio[ratio.index >= START_LABEL].between(55, 65).all()
    for name in ("customers", "subscriptions", "support", "cancellations"):  # the other feeds are untouched
        assert sha256_file(paths[name]) == sha256_file(baseline["paths"][name])


def test_missing_support_feed(tmp_path, baseline):
    paths, raw = scenario(tmp_path, incident="missing_support_feed", incident_start_month=START)
    base = baseline["raw"]["support"]
    assert len(raw["support"]) < len(base)
    pd.testing.assert_frame_equal(raw["support"], base.iloc[:len(raw["support"])])  # the early tickets, unchanged
    missing = base.iloc[len(raw["support"]):]
    assert (ticket_month(missing.opened_at) >= START_LABEL).all()
    assert sha256_file(paths["usage_events"]) == sha256_file(baseline["paths"]["usage_events"])


def test_duplicated_batch(tmp_path, baseline):
    _, raw = scenario(tmp_path, incident="duplicated_batch", incident_start_month=START)
    ev, base = raw["usage_events"], baseline["raw"]["usage_events"]
    counts, base_counts = ev.groupby("month").size(), base.groupby("month").size()
    assert counts["2025-05"] == 2 * base_counts["2025-05"]
    assert counts.drop("2025-05").equals(base_counts.drop("2025-05"))
    batch = ev[ev.month == "2025-05"].astype(str)
    assert batch.duplicated().sum() == base_counts["2025-05"]  # the second copy is identical to the first


# --- dirt and late labels -------------------------------------------------------------------------------------------

def test_dirt_rates_are_roughly_as_documented(tmp_path):
    generate_course_data(tmp_path)
    report = dirt_report(read_course_sources(tmp_path), simulate_business())
    assert list(report.dirt) == list(DIRT_RATES)
    off = report[(report.measured - report.documented).abs() > 0.3 * report.documented + 0.005]
    assert off.empty, off


def test_the_raw_files_hold_no_ground_truth(baseline):
    cols = {n: set(df.columns) for n, df in baseline["raw"].items()}
    assert not any({"churned", "churn", "price_sensitivity", "label"} & c for c in cols.values())
    assert cols["customers"] == {"customer_id", "signup_date", "country", "plan", "age", "acquisition_channel"}
    assert cols["subscriptions"] == {"customer_id", "month", "plan", "monthly_fee", "discount_pct", "payment_failures"}
    assert cols["support"] == {"ticket_id", "customer_id", "opened_at", "category", "resolution_hours", "satisfaction"}
    assert cols["usage_events"] == {"customer_id", "month", "sessions", "minutes_used", "features_used", "last_seen"}
    assert cols["cancellations"] == {"customer_id", "cancel_date", "reason", "recorded_at"}


def test_late_labels(baseline):
    can, truth = baseline["raw"]["cancellations"], baseline["clean"]["cancellations"]
    extraction = "2025-08-31"
    assert (can.recorded_at <= extraction).all()
    lag = pd.to_datetime(can.recorded_at) - pd.to_datetime(can.cancel_date)
    assert lag.min() >= pd.Timedelta(0) and lag.max() <= pd.Timedelta(days=93)
    assert len(can) < len(truth)
    recorded = set(zip(can.customer_id, can.cancel_date))
    missing = [d for c, d in zip(truth.customer_id, truth.cancel_date) if (c, d.isoformat()) not in recorded]
    assert missing and min(missing) >= dt.date(2025, 5, 31)  # only the last three months can be incomplete
    assert set(recorded) <= {(c, d.isoformat()) for c, d in zip(truth.customer_id, truth.cancel_date)}


def test_churned_customers_disappear_and_new_ones_arrive(baseline):
    clean = baseline["clean"]
    last = clean["subscriptions"].groupby("customer_id").month.max()
    assert (last[clean["cancellations"].customer_id].to_numpy() == clean["cancellations"].month.to_numpy()).all()
    first = clean["subscriptions"].groupby("customer_id").month.min()
    assert (first > "2025-01").sum() > 50


def test_the_churn_signal_is_learnable():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    S = simulate_business()
    months = list(S["calendar"].month)
    subs, use, can = S["subscriptions"], S["usage_events"], S["cancellations"]
    cancel_m = dict(zip(can.customer_id, can.month.map(months.index)))
    sessions = use.set_index(["month", "customer_id"]).sessions

    def snap(m):
        now = subs[subs.month == months[m]].set_index("customer_id")
        now = now[[cancel_m.get(c, 99) > m for c in now.index]]
        f = pd.DataFrame(index=now.index)
        f["fee"] = now.monthly_fee * (1 - now.discount_pct / 100)
        f["fails"] = subs[subs.month.isin(months[m - 2:m + 1])].groupby("customer_id").payment_failures.sum().reindex(f.index)
        f["s0"] = np.log1p(sessions.loc[months[m]].reindex(f.index))
        f["s1"] = np.log1p(sessions.loc[months[m - 1]].reindex(f.index)).fillna(f.s0)
        f["y"] = [m < cancel_m.get(c, 99) <= m + 2 for c in f.index]
        return f
    train, test = pd.concat(map(snap, range(2, 6))), pd.concat(map(snap, range(7, 10)))
    X = ["fee", "fails", "s0", "s1"]
    auc = roc_auc_score(test.y, LogisticRegression(max_iter=1000).fit(train[X], train.y).predict_proba(test[X])[:, 1])
    assert 0.72 < auc < 0.9, auc


# --- bad knobs -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("knobs, message", [
    (dict(drift="inflation"), "valid values: " + ", ".join(DRIFT_SCENARIOS)),
    (dict(incident="outage"), "valid values: " + ", ".join(INCIDENTS)),
    (dict(drift="price_increase", drift_start_month=13), "valid: 1..12"),
    (dict(incident="duplicated_batch", incident_start_month=0), "valid: 1..12"),
    (dict(n_customers=0), "n_customers"),
    (dict(n_months=0), "n_months"),
    (dict(seed=-1), "seed"),
    (dict(n_customers=2.5), "whole number"),
])
def test_bad_knobs_are_rejected_before_anything_is_written(tmp_path, knobs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        generate_course_data(tmp_path / "out", **knobs)
    assert not (tmp_path / "out").exists()


def test_read_course_sources_names_the_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="customers.csv, subscriptions.parquet"):
        read_course_sources(tmp_path)


# --- the datasets step -----------------------------------------------------------------------------------------------

def test_materialize_course_data(tmp_path):
    cat = materialize_data(tmp_path, "course", seed=5, n_customers=300, n_months=6, drift="new_market", drift_start_month=4)
    raw = tmp_path / "data" / "raw"
    assert list(cat.columns) == ["name", "kind", "file", "rows", "columns", "bytes", "sha256"]
    assert list(cat.name) == list(COURSE_SOURCES)
    listed = read_json(raw / "sources.json")
    assert listed == json.loads(cat.to_json(orient="records"))
    for row in listed:
        assert sha256_file(raw / row["file"]) == row["sha256"] and (raw / row["file"]).stat().st_size == row["bytes"]
    con = sqlite3.connect(raw / "support.sqlite")
    assert con.execute("SELECT count(*) FROM tickets").fetchone()[0] == cat.set_index("name").rows["support"]
    con.close()
    assert cat.set_index("name").rows["usage_events"] == len((raw / "usage_events.jsonl").read_text().splitlines())


def test_materialize_a_user_csv_and_parquet(tmp_path):
    csv = write_sklearn_csv("iris", tmp_path / "flowers.csv")
    cat = materialize_data(tmp_path / "run", str(csv), drift="price_increase")  # course knobs do not apply: a note, no error
    assert cat[["name", "kind", "file", "rows", "columns"]].values.tolist() == [["flowers", "csv", "flowers.csv", 150, 5]]
    assert (tmp_path / "run/data/raw/flowers.csv").read_bytes() == csv.read_bytes()
    pq_file = tmp_path / "wine.parquet"
    load_sklearn_dataset("wine").to_parquet(pq_file)
    cat = materialize_data(tmp_path / "run2", pq_file)
    assert cat.kind[0] == "parquet" and cat.rows[0] == 178


@pytest.mark.parametrize("name, content, message", [
    ("missing.csv", None, "missing.csv does not exist"),
    ("empty.csv", "", "is empty"),
    ("header.csv", "a,b\n", "no data rows"),
    ("table.xlsx", "x", "reads .csv and .parquet"),
    ("broken.parquet", "not parquet", "could not be read as PARQUET"),
])
def test_materialize_rejects_bad_user_files(tmp_path, name, content, message):
    if content is not None: (tmp_path / name).write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as e:
        materialize_data(tmp_path / "run", str(tmp_path / name))
    assert name in str(e.value)
    assert not (tmp_path / "run").exists()


def test_materialize_rejects_unknown_knobs_and_empty_data(tmp_path):
    with pytest.raises(ValueError, match="valid knobs: seed, n_customers"):
        materialize_data(tmp_path, n_custommers=10)
    with pytest.raises(ValueError, match="pass 'course'"):
        materialize_data(tmp_path, "")


# --- bundled real data -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, shape, classes", [
    ("iris", (150, 5), {"setosa", "versicolor", "virginica"}),
    ("wine", (178, 14), {"class_0", "class_1", "class_2"}),
    ("breast_cancer", (569, 31), {"malignant", "benign"}),
    ("digits", (1797, 65), {str(i) for i in range(10)}),
    ("diabetes", (442, 11), None),
])
def test_sklearn_bundled_sets(name, shape, classes):
    df = load_sklearn_dataset(name)
    assert df.shape == shape and df.columns[-1] == "target"
    if classes: assert set(df.target) == classes
    else: assert pd.api.types.is_float_dtype(df.target)


def test_sklearn_unknown_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="iris, wine, breast_cancer, diabetes, digits"):
        load_sklearn_dataset("california_housing")  # would need a download: not offered
    assert write_sklearn_csv("wine", tmp_path / "w.csv").read_text().startswith("alcohol,")


def test_penguins_raw_as_shipped():
    import palmerpenguins
    df = load_penguins_raw()
    assert df.shape == (344, 17)
    pd.testing.assert_frame_equal(df, palmerpenguins.load_penguins_raw())
    assert df["Sex"].isna().any() and "Comments" in df


# --- the production months after the training window -----------------------------------------------------------------

def test_production_sources_continue_the_same_business_after_the_training_window(tmp_path):
    from mlops_kit.datasets import _raw_months, billing_migration_month, production_sources, write_course_sources
    knobs = dict(seed=9, n_customers=300, n_months=7, drift="price_increase", drift_start_month=6,
                 incident="duplicated_batch", incident_start_month=7)
    long = simulate_business(9, 300, 11, "price_increase", 6)
    cut = write_course_sources(_raw_months(long, 1, 7, 9, "duplicated_batch", 7, billing_migration_month(7), None), tmp_path / "a")
    train = generate_course_data(tmp_path / "b", **knobs)
    assert {n: sha256_file(p) for n, p in cut.items()} == {n: sha256_file(p) for n, p in train.items()}
    P = production_sources(production_months=2, follow_up_months=2, **knobs)
    assert P["calendar"].month.tolist() == ["2025-08", "2025-09"]
    assert sorted(P["subscriptions"].month.unique()) == ["2025-08", "2025-09"]
    assert len(P["cancellations"]) == len(long["cancellations"])          # every outcome through the follow-up months
    # the price increase goes on; the duplicated batch was a one-off of month 7 and is not repeated
    eur = P["subscriptions"].monthly_fee[P["subscriptions"].monthly_fee < 100]
    assert eur.round(2).isin([round(f * 1.2, 2) for f in PLAN_FEES.values()]).all()
    assert not P["usage_events"].astype(str).duplicated().any()


@pytest.mark.parametrize("months, message", [(0, "between 1 and 36"), (37, "between 1 and 36"), (1.0, "whole number"),
                                             (None, "whole number")])
def test_production_months_must_be_a_positive_whole_number(months, message):
    from mlops_kit.datasets import production_sources
    with pytest.raises(ValueError, match=f"production_months must be (a|between).*{message.split()[-1]}"):
        production_sources(production_months=months)
