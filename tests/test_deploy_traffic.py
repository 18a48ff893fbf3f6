"""Production traffic of the course business: the months after the training window, raw requests shaped like the ingest
step's joined rows, no request for a customer who has left, outcomes by the label step's rule arriving late, drift that
goes on, and clear errors for bad knobs."""
import pandas as pd
import pytest

from mlops_kit.data.ingest import ingest
from mlops_kit.data.label import future_window_labels, label_table, month_index, month_last_day, parse_events
from mlops_kit.datasets import (_raw_months, add_dirt, billing_migration_month, generate_course_data, materialize_data,
                                production_sources, read_course_sources, simulate_business, write_course_sources)
from mlops_kit.deploy.traffic import Traffic, arrived, course_requests, production_traffic
from mlops_kit.runfolder import sha256_file
from mlops_kit.spec import default_spec

KNOBS = dict(seed=7, n_customers=250, n_months=6, production_months=3)


@pytest.fixture(scope="module")
def traffic():
    return production_traffic(**KNOBS)


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    "The ingest step's joined table of the same business's training months."
    run = tmp_path_factory.mktemp("train")
    materialize_data(run, seed=7, n_customers=250, n_months=6)
    return ingest(run, default_spec()).table


def test_the_first_months_of_a_longer_business_are_the_training_data(tmp_path):
    knobs = dict(seed=7, n_customers=250, n_months=6, drift="usage_decline", drift_start_month=4,
                 incident="missing_support_feed", incident_start_month=5)
    long = simulate_business(7, 250, 10, "usage_decline", 4)
    cut = _raw_months(long, 1, 6, 7, "missing_support_feed", 5, billing_migration_month(6), None)
    a = write_course_sources(cut, tmp_path / "cut")
    b = generate_course_data(tmp_path / "train", **knobs)
    assert {n: sha256_file(p) for n, p in a.items()} == {n: sha256_file(p) for n, p in b.items()}
    # without pinning the migration month a longer simulation would move it: the pin is what keeps the past fixed
    assert billing_migration_month(10) != billing_migration_month(6)


def test_requests_are_production_months_with_the_joined_training_columns(traffic, training):
    assert isinstance(traffic, Traffic)
    r = traffic.requests
    assert sorted(r.snapshot_month.unique()) == ["2025-07", "2025-08", "2025-09"]
    assert training.snapshot_month.max() == "2025-06"
    assert list(r.columns) == [c for c in training.columns if c != "_row_id"]
    assert r.dtypes.astype(str).tolist() == training.drop(columns="_row_id").dtypes.astype(str).tolist()
    assert "churned" not in r.columns and "label_status" not in r.columns
    assert not r.duplicated(["customer_id", "snapshot_month"]).any()
    # the dirt is there: fees in cents for migrated accounts, numbers sent as text
    assert (r.monthly_fee > 100).any() and r.sessions.map(lambda v: isinstance(v, str)).any()


def test_no_request_for_a_customer_who_has_left(traffic):
    truth = simulate_business(7, 250, 11)["cancellations"]
    gone = traffic.requests.customer_id.map(dict(zip(truth.customer_id, truth.month)))
    assert not (gone <= traffic.requests.snapshot_month).any()
    # the billing of those months did hold the cancellation-month rows: they were removed, not absent
    billed = course_requests(production_sources(**KNOBS))
    billed_gone = billed.customer_id.map(dict(zip(truth.customer_id, truth.month)))
    removed = (billed_gone == billed.snapshot_month)
    assert removed.sum() > 0 and len(billed) - removed.sum() == len(traffic.requests)
    # every active customer of each month is there: new sign-ups of the production months too
    active = billed[~removed.to_numpy()].groupby("snapshot_month").size()
    assert traffic.requests.groupby("snapshot_month").size().equals(active)
    signed = simulate_business(7, 250, 9)["customers"].set_index("customer_id").group
    assert (traffic.requests.customer_id.map(signed) > 6).any()


def test_outcomes_are_what_the_label_step_says_once_everything_is_recorded(traffic):
    spec = default_spec()
    rule = spec.prediction.label_rule
    cancellations = production_sources(**KNOBS, follow_up_months=rule["window_months"])["cancellations"]
    o = traffic.outcomes
    assert list(o.columns) == ["customer_id", "snapshot_month", "label", "known_from"]
    keys = ["customer_id", "snapshot_month"]
    assert o[keys].to_numpy().tolist() == traffic.requests[keys].to_numpy().tolist()
    res = label_table(traffic.requests, spec, cancellations)       # the label step itself, every cancellation in
    assert res.table.churned.tolist() == o.label.tolist()
    assert set(res.table.label_status) <= {"positive", "negative"}
    assert 0 < o.label.mean() < 0.5
    # ... and with the truth of the simulation
    truth = simulate_business(7, 250, 11)["cancellations"]
    gone = month_index(o.customer_id.map(dict(zip(truth.customer_id, truth.month))))
    m = month_index(o.snapshot_month)
    assert o.label.tolist() == ((gone > m) & (gone <= m + 2)).fillna(False).astype("Int64").tolist()


def test_outcomes_arrive_late_and_arrived_agrees_with_the_label_step_on_that_day(traffic):
    o = traffic.outcomes
    m = month_index(o.snapshot_month)
    rule = default_spec().prediction.label_rule
    window_known = month_last_day(m + rule["window_months"]) + pd.Timedelta(days=rule["wait_days"])
    assert (o.known_from >= window_known).all()
    late = o.known_from > window_known
    assert late.any() and (o.label[late] == 1).all()           # only a churner's record can come later than the rule's wait
    cancellations = production_sources(**KNOBS, follow_up_months=2)["cancellations"]
    for day in ("2025-10-31", "2025-12-15", "2026-02-28"):
        got = arrived(o, day)
        assert (got.known_from <= pd.Timestamp(day)).all() and len(got) == int((o.known_from <= day).sum())
        then = future_window_labels(traffic.requests, parse_events(cancellations, rule, "customer_id"), rule, "customer_id",
                                    "snapshot_month", as_of=day).label
        assert then[got.index].tolist() == got.label.tolist()   # an arrived outcome is final: the label step agrees
        later = then.notna() & ~o.index.isin(got.index)         # known to the label step but not arrived: late churners, called 0
        assert (then[later] == 0).all() and (o.label[later] == 1).all()
    assert len(arrived(o, "2025-09-30")) == 0                    # on the last production day nothing is known
    assert len(arrived(o, "2030-01-01")) == len(o)
    with pytest.raises(ValueError, match="as_of must be a date"): arrived(o, "next week")
    with pytest.raises(ValueError, match="outcomes lack label"): arrived(o.drop(columns="label"), "2025-12-31")


def test_the_drift_knob_acts_on_the_production_months():
    base = production_traffic(seed=7, n_customers=400, n_months=8, production_months=2)
    drift = production_traffic(seed=7, n_customers=400, n_months=8, production_months=2, drift="usage_decline",
                               drift_start_month=7)
    med = lambda t: pd.to_numeric(t.requests.sessions, errors="coerce").median()
    assert med(drift) < 0.8 * med(base)
    inc = production_traffic(seed=7, n_customers=400, n_months=8, production_months=2, incident="minutes_in_seconds",
                             incident_start_month=8)
    mins = lambda t: pd.to_numeric(t.requests.minutes_used, errors="coerce").median()
    assert mins(inc) > 20 * mins(base)


@pytest.mark.parametrize("knobs, message", [
    (dict(production_months=0), "production_months must be between 1"),
    (dict(production_months=-1), "production_months must be between 1"),
    (dict(production_months=1.5), "production_months must be a whole number"),
    (dict(production_months="3"), "production_months must be a whole number"),
    (dict(production_months=True), "production_months must be a whole number"),
    (dict(drift="recession"), "unknown drift 'recession'"),
    (dict(incident="outage"), "unknown incident 'outage'"),
    (dict(n_customers=0), "n_customers must be between 1"),
    (dict(seed=-1), "seed must be 0 or more"),
    (dict(drift="price_increase", drift_start_month=13), "drift_start_month must be between 1 and n_months=12"),
    (dict(n_months=100, production_months=30), "at most 120"),
])
def test_bad_knobs_are_refused_with_clear_errors(knobs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        production_traffic(**knobs)


def test_a_spec_without_a_window_rule_is_refused():
    from dataclasses import replace
    spec = default_spec()
    col = replace(spec, prediction=replace(spec.prediction, label_rule={"kind": "column"}))
    with pytest.raises(ValueError, match="future_window label rule"):
        production_traffic(n_customers=50, n_months=4, production_months=1, spec=col)
