"""The wrangle step: a fitted, recorded, replayable cleaning recipe (mlops_kit.data.wrangle)."""
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from mlops_kit.data.ingest import ingest, read_table
from mlops_kit.data.validate import ColumnRule, Contract, derive_contract, save_contract, validate
from mlops_kit.data.wrangle import (MISSING_STRATEGIES, Recipe, apply_recipe, fit_apply, fit_recipe, load_recipe,
                                    recipe_from_dict, recipe_to_dict, save_recipe, wrangle, wrangle_summary)
from mlops_kit.datasets import load_penguins_raw, materialize_data, write_sklearn_csv
from mlops_kit.design import default_spec, spec_from_data
from mlops_kit.runfolder import read_quarantine

PLANS = {"basic", "standard", "premium"}
COUNTRIES = {"Portugal", "Spain", "France", "Germany", "Poland"}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    "A small course run taken through ingest and validate: (run folder, validated rows, contract)."
    run = tmp_path_factory.mktemp("course")
    materialize_data(run, n_customers=300, n_months=6, seed=5)
    spec = default_spec()
    ingest(run, spec)
    result = validate(run, spec)
    from mlops_kit.data.validate import load_contract
    return run, result.kept.reset_index(drop=True), load_contract(run / "data" / "contract.json")


def exact_copies(df):
    return int(df.drop(columns="_row_id").duplicated().sum())


# ---------------------------------------------------------------- fit and apply on course rows

def test_fit_apply_cleans_the_course_rows(course):
    _, rows, contract = course
    res = fit_apply(rows, contract)
    t = res.table
    assert exact_copies(rows) > 0
    assert len(t) + len(res.quarantined) == len(rows)
    assert len(res.quarantined) == exact_copies(rows)
    assert exact_copies(t) == 0
    assert set(t.plan) == PLANS and set(t.signup_plan.dropna()) == PLANS
    assert set(t.country.dropna()) == COUNTRIES
    assert t.monthly_fee.between(0, 100).all()
    rate = (t.minutes_used / t.sessions)[t.sessions > 0]
    assert rate.min() >= 1                                    # no usage left in hours
    assert pd.api.types.is_datetime64_any_dtype(t.signup_date) and pd.api.types.is_datetime64_any_dtype(t.last_seen)
    assert t.sessions.dtype == "float64" and t.payment_failures.dtype == "int64"
    assert t._row_id.dtype == "int64"
    # key columns are exactly as they came in
    by_id = rows.set_index("_row_id")
    assert t.customer_id.tolist() == by_id.customer_id[t._row_id].tolist()
    assert t.snapshot_month.tolist() == by_id.snapshot_month[t._row_id].tolist()
    assert t.snapshot_month.str.fullmatch(r"\d{4}-\d{2}").all()


def test_the_cents_and_hours_rules_are_learned_with_their_factors(course):
    _, rows, contract = course
    recipe = fit_recipe(rows, contract)
    rescales = {(o.column, o.params["when"], o.params["factor"], o.params["per"]) for o in recipe.ops if o.op == "rescale"}
    assert rescales == {("monthly_fee", "above", 100, None), ("minutes_used", "below", 60, "sessions")}
    assert all(o.why for o in recipe.ops)                      # every operation says why


def test_quarantined_copies_name_the_row_they_repeat(course):
    _, rows, contract = course
    res = fit_apply(rows, contract)
    q = res.quarantined
    assert set(q.check) == {"duplicate_row"} and set(q.source) == {"validated"}
    original = q.reason.str.extract(r"^exact duplicate of _row_id (\d+)$")[0].astype(int)
    assert original.notna().all()
    by_id = rows.set_index("_row_id").drop(columns=[])
    for copy_id, first_id in zip(q._row_id.astype(int).head(20), original.head(20)):
        assert first_id < copy_id
        assert by_id.loc[copy_id].equals(by_id.loc[first_id])
    assert set(q._row_id.astype(int)).isdisjoint(set(res.table._row_id))


# ---------------------------------------------------------------- replay

def test_replay_on_the_same_rows_gives_the_same_output(course):
    _, rows, contract = course
    res = fit_apply(rows, contract)
    again = apply_recipe(rows, res.recipe)
    pd.testing.assert_frame_equal(again.table, res.table)
    pd.testing.assert_frame_equal(again.quarantined, res.quarantined)
    pd.testing.assert_frame_equal(again.report, res.report)


def test_replay_on_new_data_learns_nothing(course):
    _, rows, contract = course
    early, late = rows[rows.snapshot_month <= "2025-03"], rows[rows.snapshot_month > "2025-03"]
    recipe = fit_recipe(early, contract)
    before = json.dumps(recipe_to_dict(recipe), sort_keys=True)
    one, two = apply_recipe(late, recipe), apply_recipe(late.copy(), recipe)
    pd.testing.assert_frame_equal(one.table, two.table)       # the same new data, the same output
    assert json.dumps(recipe_to_dict(recipe), sort_keys=True) == before
    # a replay treats each row on its own: the late rows come out the same whether replayed alone or with the early ones
    whole = apply_recipe(rows, recipe).table
    pd.testing.assert_frame_equal(whole[whole._row_id.isin(late._row_id)].reset_index(drop=True), one.table)
    assert len(one.table) + len(one.quarantined) == len(late)


def test_unseen_spellings_stay_and_are_counted(course):
    _, rows, contract = course
    recipe = fit_recipe(rows, contract)
    batch = rows.head(5).copy()
    batch["_row_id"] = np.arange(10_000, 10_005)
    batch["plan"] = ["Prem.", "Prem.", "GOLD", "PREM", "basic "]
    res = apply_recipe(batch, recipe)
    assert res.unseen == {"plan": {"GOLD": 1, "Prem.": 2}}
    assert res.table.plan.tolist() == ["Prem.", "Prem.", "GOLD", "premium", "basic"]
    assert wrangle_summary(res)["unseen_spellings"] == 2


def test_apply_refuses_tables_it_cannot_replay_on(course):
    _, rows, contract = course
    recipe = fit_recipe(rows, contract)
    with pytest.raises(ValueError, match="lacks columns the recipe was fitted on: country"):
        apply_recipe(rows.drop(columns="country"), recipe)
    with pytest.raises(ValueError, match="no _row_id column"):
        apply_recipe(rows.drop(columns="_row_id"), recipe)
    with pytest.raises(ValueError, match="wrangled already"):
        apply_recipe(apply_recipe(rows, recipe).table, recipe)
    with pytest.raises(TypeError, match="needs a Recipe"):
        apply_recipe(rows, recipe_to_dict(recipe))


# ---------------------------------------------------------------- the recipe as JSON

def test_recipe_json_round_trip(course, tmp_path):
    _, rows, contract = course
    for strategy in MISSING_STRATEGIES:
        recipe = fit_recipe(rows, contract, strategy)
        assert recipe_from_dict(json.loads(json.dumps(recipe_to_dict(recipe)))) == recipe
        path = save_recipe(recipe, tmp_path / f"{strategy}.json")
        loaded = load_recipe(path, contract)
        assert loaded == recipe
        pd.testing.assert_frame_equal(apply_recipe(rows, loaded).table, fit_apply(rows, contract, strategy).table)


def test_a_broken_or_foreign_recipe_file_gives_a_clear_error(course, tmp_path):
    _, rows, contract = course
    path = save_recipe(fit_recipe(rows, contract), tmp_path / "recipe.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:200])
    with pytest.raises(ValueError, match="cut.json is not valid JSON"):
        load_recipe(tmp_path / "cut.json")
    (tmp_path / "contract_instead.json").write_text(json.dumps({"columns": {}, "id_column": "customer_id"}))
    with pytest.raises(ValueError, match="is not a wrangle recipe.*re-run the wrangle step"):
        load_recipe(tmp_path / "contract_instead.json")
    d = json.loads(path.read_text())
    del d["ops"][0]["op"]
    (tmp_path / "damaged.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="damaged.json is damaged"):
        load_recipe(tmp_path / "damaged.json")
    d = json.loads(path.read_text())
    d["ops"][1]["op"] = "guess_spelling"
    (tmp_path / "unknown.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="unknown operations 'guess_spelling'"):
        load_recipe(tmp_path / "unknown.json")
    with pytest.raises(FileNotFoundError, match="run the 'wrangle' step first"):
        load_recipe(tmp_path / "absent.json")
    # a recipe fitted for another contract
    cols = dict(contract.columns)
    cols["plan"] = replace(cols["plan"], domain=["basic", "standard", "premium", "enterprise"])
    with pytest.raises(ValueError, match="fitted for a different data contract"):
        load_recipe(path, replace(contract, columns=cols))
    assert load_recipe(path, replace(contract, max_quarantine_share=0.5)) is not None  # the budget is not wrangling's business


# ---------------------------------------------------------------- missing values

def test_flag_keeps_missing_values_and_adds_flags(course):
    _, rows, contract = course
    t = fit_apply(rows, contract, "flag").table
    assert t.age.isna().any()
    assert (t.age_missing == t.age.isna().astype(int)).all() and t.age_missing.dtype == "int64"
    cols = list(t.columns)
    assert cols[cols.index("age") + 1] == "age_missing"
    assert "customer_id_missing" not in cols and "snapshot_month_missing" not in cols
    assert "payment_failures_missing" not in cols              # no gaps when fitted: no flag column


def test_impute_fills_with_statistics_of_the_fitting_rows(course):
    _, rows, contract = course
    early = rows[rows.snapshot_month <= "2025-03"]
    res = fit_apply(early, contract, "impute")
    t = res.table
    features = [c for c, r in contract.columns.items()
                if r.kind in ("category", "number", "integer", "date", "boolean") and c not in ("customer_id", "snapshot_month")]
    assert t[features].isna().sum().sum() == 0
    assert not any(c.endswith("_missing") for c in t.columns)
    assert t.age.dtype == "int64"
    age = fit_apply(early, contract, "flag").table.age
    assert set(t.age[age.isna().to_numpy()]) == {round(age.median())}
    # the fill values were learned on the early rows: replayed later, gaps get the early median, not the late one
    late = rows[rows.snapshot_month > "2025-03"]
    replayed = apply_recipe(late, res.recipe).table
    late_age = fit_apply(late, contract, "flag").table.age
    assert set(replayed.age[late_age.isna().to_numpy()]) == {round(age.median())}


def test_bad_missing_strategy_lists_the_valid_values(course, tmp_path):
    run, rows, contract = course
    with pytest.raises(ValueError, match="missing_strategy 'mean' is not valid; valid values: flag, impute"):
        fit_recipe(rows, contract, "mean")
    with pytest.raises(ValueError, match="valid values: flag, impute"):
        wrangle(run, default_spec(), "median")


# ---------------------------------------------------------------- small hand-made contracts

def test_a_small_contract_by_hand():
    df = pd.DataFrame({"_row_id": range(10),
                       "tier": ["Gold", "gold ", "SILVER", "slv", "bronze", None, "gold", "gold", "silver", "silver"],
                       "grams": ["1200", "1,5", "900", "1,1", "1000", "0,95", "1300", "1,25", "1050", "1,4"],
                       "member": ["yes", "No", "Y", "n", "TRUE", None, "0", "1", "yes", "no"],
                       "when": ["2025-01-02", "02/01/2025", "20250102", "02 Jan 2025", "1735819200000", "", "2025-01-02",
                                "2025-01-02", "2025-01-02", "2025-01-02"]})
    contract = Contract({"tier": ColumnRule("tier", "category", domain=["gold", "silver"], aliases={"slv": "silver"}),
                         "grams": ColumnRule("grams", "number", min=500, max=5000),
                         "member": ColumnRule("member", "boolean"),
                         "when": ColumnRule("when", "date")})
    res = fit_apply(df, contract, "impute")
    t = res.table
    assert t.tier.tolist() == ["gold", "gold", "silver", "silver", "bronze", "gold", "gold", "gold", "silver", "silver"]
    assert res.unseen == {"tier": {"bronze": 1}}
    assert t.member.tolist() == [1, 0, 1, 0, 1, 1, 0, 1, 1, 0] and t.member.dtype == "int64"   # the gap: most frequent
    assert (t.when.iloc[:5].dt.normalize() == pd.Timestamp("2025-01-02")).all() and t.when.notna().all()
    assert t.grams.tolist() == [1200.0, 1500.0, 900.0, 1100.0, 1000.0, 950.0, 1300.0, 1250.0, 1050.0, 1400.0]  # kilograms x 1000
    (rule,) = [o for o in res.recipe.ops if o.op == "rescale"]
    assert (rule.params["when"], rule.params["factor"]) == ("below", 1000)
    assert len(t) == len(df)


def test_a_plain_dict_contract_works_too():
    df = pd.DataFrame({"_row_id": [1, 2, 3], "c": ["A", "a", "b"], "x": ["1", "2", None]})
    res = fit_apply(df, {"columns": {"c": {"kind": "category"}, "x": {"kind": "integer"}}})
    assert res.table.c.tolist() == ["A", "A", "b"]
    assert res.table.x_missing.tolist() == [0, 0, 1]


# ---------------------------------------------------------------- the step and its run folder

def test_the_step_writes_its_outputs_and_counts_add_up(course):
    run, rows, contract = course
    res = wrangle(run, default_spec())
    data = run / "data"
    out = pd.read_parquet(data / "wrangled.parquet")
    q = read_quarantine(run)
    q_wrangle = q[q.step == "wrangle"]
    assert len(out) + len(q_wrangle) == len(pd.read_parquet(data / "validated.parquet"))
    assert set(out._row_id) | set(q_wrangle._row_id.astype(int)) == set(rows._row_id)
    assert load_recipe(data / "wrangle_recipe.json", contract) == res.recipe
    assert pd.api.types.is_datetime64_any_dtype(out.signup_date)
    s = wrangle_summary(res)
    assert s["rows_in"] == s["rows_out"] + s["rows_quarantined"]
    first = (data / "wrangle_recipe.json").read_bytes(), (data / "wrangled.parquet").read_bytes()
    wrangle(run, default_spec())
    assert ((data / "wrangle_recipe.json").read_bytes(), (data / "wrangled.parquet").read_bytes()) == first


def test_missing_inputs_name_the_step_to_run_first(tmp_path, course):
    run, _, _ = course
    with pytest.raises(FileNotFoundError, match=r"validated.parquet does not exist; run the 'validate' step first"):
        wrangle(tmp_path, default_spec())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "validated.parquet").write_bytes((run / "data" / "validated.parquet").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"contract.json does not exist; run the 'validate' step first"):
        wrangle(tmp_path, default_spec())


def test_over_budget_validation_is_named(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "validation.json").write_text(json.dumps({"passed": False, "quarantine_share": 0.31,
                                                                   "max_quarantine_share": 0.05}))
    with pytest.raises(FileNotFoundError, match=r"quarantined 31.0% of the rows, over its budget of 5.0%"):
        wrangle(tmp_path, default_spec())


def test_a_contract_for_another_target_is_refused(course):
    run, _, _ = course
    spec = default_spec()
    other = replace(spec, prediction=replace(spec.prediction, target="cancelled"))
    with pytest.raises(ValueError, match="derived for target 'churned'.*re-run the validate step"):
        wrangle(run, other)


# ---------------------------------------------------------------- a user's single file

def user_rows(path, target):
    spec = spec_from_data(path, target)
    df = read_table(path)
    df.insert(0, "_row_id", np.arange(len(df), dtype="int64"))
    return df, derive_contract(df, spec)


@pytest.mark.parametrize("name", ["wine", "diabetes"])
def test_scikit_learn_sets(tmp_path, name):
    df, contract = user_rows(write_sklearn_csv(name, tmp_path / f"{name}.csv"), "target")
    for strategy in MISSING_STRATEGIES:
        res = fit_apply(df, contract, strategy)
        assert len(res.table) == len(df) and len(res.quarantined) == 0
        pd.testing.assert_series_equal(res.table.target, df.target)
        assert not [o for o in res.recipe.ops if o.op == "rescale"]   # ranges come from the file itself: nothing to rescale
        pd.testing.assert_frame_equal(apply_recipe(df, res.recipe).table, res.table)


def test_the_raw_penguins(tmp_path):
    load_penguins_raw().to_csv(tmp_path / "penguins.csv", index=False)
    df, contract = user_rows(tmp_path / "penguins.csv", "Species")
    res = fit_apply(df, contract)
    t = res.table
    assert len(t) + len(res.quarantined) == len(df)
    assert t.Species.tolist() == df.Species.tolist()
    assert pd.api.types.is_datetime64_any_dtype(t["Date Egg"])
    assert t["Body Mass (g)_missing"].sum() == df["Body Mass (g)"].isna().sum()
    imp = fit_apply(df, contract, "impute").table
    assert imp["Body Mass (g)"].notna().all()


def test_a_dirty_file_of_your_own(tmp_path):
    (tmp_path / "shop.csv").write_text(
        "sku,colour,price,sold_on,returned\n"
        "A1,Red,\"12,5\",2025-01-03,no\nA2,red ,7,03/01/2025,yes\nA3,RED,\"1.234,5\",20250104,no\n"
        "A3,RED,\"1.234,5\",20250104,no\nA4,blue,8,04 Jan 2025,yes\nA5,Blue,9,1735948800000,no\nA6,blue,,,no\n")
    df, contract = user_rows(tmp_path / "shop.csv", "returned")
    res = fit_apply(df, contract)
    t = res.table
    assert (len(t), len(res.quarantined)) == (6, 1)
    assert res.quarantined.reason.tolist() == ["exact duplicate of _row_id 2"]
    assert t.colour.nunique() == 2
    assert t.price.tolist()[:5] == [12.5, 7.0, 1234.5, 8.0, 9.0]
    assert t.sold_on.dt.day.tolist()[:5] == [3, 3, 4, 4, 4]
    assert t.price_missing.tolist() == [0, 0, 0, 0, 0, 1]
