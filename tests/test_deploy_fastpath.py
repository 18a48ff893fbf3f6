"The scorer's small-request road (per-value checks and cleaning, compiled features) gives the vectorised road's answers."
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import build_run, user_files
from mlops_kit.data.validate import ColumnRule, check_column
from mlops_kit.data.wrangle import apply_recipe
from mlops_kit.deploy.scoring import Scorer, compile_features, value_check, value_recipe
from mlops_kit.model.bundle import build_bundle, load_bundle


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    "Course (binary), penguins (multiclass) and diabetes (regression) bundles, each with the run that made it."
    from mlops_kit.design import spec_for_run
    base = tmp_path_factory.mktemp("fastpath")
    specs = {"course": (spec_for_run(data="course"), "course")}
    for task, name, path, target in user_files(base):
        specs[name] = (spec_for_run(data=str(path), target=target), path)
    out = {}
    for name, (spec, data) in specs.items():
        spec.model_tests = []
        if name == "diabetes": spec.metrics.threshold = 0.3
        knobs = {"n_customers": 600, "seed": 3} if name == "course" else {}
        run = build_run(base / name, spec, data, until="acceptance", train_options={"search_budget": 1, "cv_folds": 2}, **knobs)
        out[name] = (run, load_bundle(build_bundle(run, base / f"{name}-bundle")))
    return out


@pytest.mark.parametrize("project", ["course", "penguins", "diabetes"])
def test_compiled_features_equal_the_fitted_preprocessor(projects, project):
    "On every cleaned row of the run, the compiled program's feature matrix equals the ColumnTransformer's, bit for bit."
    run, bundle = projects[project]
    program = compile_features(bundle.pipeline)
    assert program is not None
    lab = pd.read_parquet(run / "data" / "labelled.parquet")[bundle.inputs]
    values = {c: lab[c].tolist() for c in bundle.inputs}
    want = bundle.pipeline.steps[0][1].transform(lab)
    np.testing.assert_array_equal(program.transform(values, len(lab)), want)
    for i in range(0, 40, 7):   # row by row too: the memo of per-value outputs fills up as it goes
        np.testing.assert_array_equal(program.transform({c: v[i:i + 1] for c, v in values.items()}, 1), want[i:i + 1])


@pytest.mark.parametrize("project", ["course", "penguins", "diabetes"])
def test_json_requests_score_as_the_vectorised_road(projects, project):
    "Rows sent as JSON objects (lists of dicts, Python types) get the batch road's predictions and refusals, one by one and seven at a time."
    run, bundle = projects[project]
    fast, road = Scorer.from_bundle(bundle), Scorer.from_bundle(bundle)
    road.small_batch = 0
    raw = pd.read_parquet(run / "data" / "ingested.parquet").drop(columns="_row_id").sample(90, random_state=4).reset_index(drop=True)
    records = raw.astype(object).where(raw.notna(), None).to_dict("records")   # what a JSON body becomes: None for a gap
    for n in (1, 7):
        for i in range(0, len(records), n):
            a, b = fast.score(records[i:i + n]), road.score(pd.DataFrame.from_records(records[i:i + n]))
            np.testing.assert_array_equal(a.results.index, b.results.index)
            _same_results(a.results, b.results, bundle.task)
            pd.testing.assert_frame_equal(a.rejected, b.rejected)
    assert fast.program is not None and fast.program_checked


def _same_results(a: pd.DataFrame, b: pd.DataFrame, task: str) -> None:
    "Equal answers: the same classes, and numbers equal up to the last bit a linear model's sum may round differently."
    # (the features are equal bit for bit, tested above; a matrix product over rows laid out in C or Fortran order may
    # still round its last bit differently, so numbers are compared to 1e-12)
    assert list(a.columns) == list(b.columns)
    for c in a.columns:
        if task != "regression" and c in ("prediction", "decision"): assert a[c].tolist() == b[c].tolist()
        else: np.testing.assert_allclose(a[c].to_numpy(float), b[c].to_numpy(float), rtol=1e-12, atol=1e-15)


def _fast_equals_check_column(rule: ColumnRule, values: list, key: bool = False) -> int:
    "Assert value_check agrees with check_column on each value it answers for; return how many it answered."
    checks = {"missing_key", "missing_value", "type_error", "out_of_range", "bad_id"}
    fast = value_check(rule, key, checks)
    answered = 0
    for v in values:
        got = fast(v)
        if got is None: continue
        masks, _ = check_column(pd.Series([v]), rule, key=key)
        assert got == tuple(k for k, m in masks.items() if k in checks and m[0]), (rule.name, v)
        answered += 1
    return answered


def test_value_check_is_check_column_for_plain_values():
    "Per value, the small road's checks of numbers and ISO days are check_column's, and it declines what it cannot read plainly."
    rng = np.random.default_rng(0)
    numbers = [0, 1, -3, 17, 100, 101, 2**53, 2**60, 0.5, -0.0, 99.999, 100.0000001, 1e12, float("inf"), float("-inf"), float("nan"),
               None, True, "42", "4.25", "-7", "1,234.5", "12e3", " 8", "", "abc"] + rng.uniform(-50, 150, 200).tolist()
    for kind in ("number", "integer"):
        for nullable in (True, False):
            rule = ColumnRule("x", kind, nullable=nullable, min=0, max=100)
            assert _fast_equals_check_column(rule, numbers) >= 200
    assert _fast_equals_check_column(ColumnRule("k", "integer", nullable=False), numbers, key=True) >= 200
    days = ["2024-02-29", "2023-02-29", "2025-13-01", "1600-01-01", "2024-1-5", "20240105", "05/01/2024", None, float("nan"), 3]
    assert _fast_equals_check_column(ColumnRule("d", "date"), days) >= 3
    assert value_check(ColumnRule("c", "category", domain=["a"]), False, {"unknown_category"}) is None   # the memo's job
    fast = value_check(ColumnRule("x", "number"), False, {"type_error"})
    assert fast(True) is None and fast("1,234.5") is None and fast(2**60) is None    # the careful readers decide these


def test_value_recipe_is_apply_recipe_for_plain_values(projects):
    "Per row, the small road's cleaning of numbers and dates equals apply_recipe's, unit fixes (cents, hours) included."
    run, bundle = projects["course"]
    scorer = Scorer.from_bundle(bundle)
    kinds = {c: r.kind for c, r in scorer.contract.columns.items()}
    rng = np.random.default_rng(1)
    n = 400
    frame = pd.DataFrame({
        "monthly_fee": rng.choice([9.99, 19.99, 2999, 1999.0, 34.99, 150.0, 0.0, None, "29.99", 12000], n).tolist(),
        "sessions": rng.choice([0, 1, 3, 38, None, "12", 1000], n).tolist(),
        "minutes_used": rng.choice([0.0, 0.5, 12.25, 849.9, 3.1, 7.0, 300.0, None, "65.5"], n).tolist(),
        "signup_date": rng.choice(["2021-11-24", "2024-02-29", None], n).tolist(),
        "discount_pct": rng.choice([0, 10, 25.0, None], n).tolist()})
    groups = {"monthly_fee": ["monthly_fee"], "minutes_used": ["minutes_used", "sessions"], "signup_date": ["signup_date"],
              "discount_pct": ["discount_pct"]}
    recipe = scorer.serving_recipe
    import dataclasses
    for c, cols in groups.items():
        sub = dataclasses.replace(recipe, ops=[o for o in recipe.ops if o.column in cols], columns=cols)
        run_one = value_recipe(sub, cols, kinds)
        assert run_one is not None, c
        table = apply_recipe(frame[cols].assign(_row_id=range(n)), sub).table
        outs = [o for o in table.columns if o != "_row_id"]
        answered = 0
        for i, row in enumerate(frame[cols].to_dict("records")):
            got = run_one({k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v) for k, v in row.items()})
            if got is None: continue
            answered += 1
            for o in outs:
                want = table[o].iat[i]
                assert (pd.isna(got[o]) and pd.isna(want)) or got[o] == want, (c, o, row, got[o], want)
        assert answered >= n // 2, c
    fixed = value_recipe(dataclasses.replace(recipe, ops=[o for o in recipe.ops if o.column == "monthly_fee"], columns=["monthly_fee"]),
                         ["monthly_fee"], kinds)
    assert fixed({"monthly_fee": 2999})["monthly_fee"] == 29.99   # cents read as training read them


def test_a_program_that_disagrees_is_retired_on_the_first_request(projects):
    "If the compiled program ever differs from the fitted preprocessor, the first small request says so and the pipeline answers."
    run, bundle = projects["course"]
    scorer, road = Scorer.from_bundle(bundle), Scorer.from_bundle(bundle)
    road.small_batch = 0
    numeric = next(p for p in scorer.program.parts if p.kind == "numeric")
    fill, mean, scale = numeric.affine
    numeric.affine = (fill, mean + 1.0, scale)               # what a changed scikit-learn step would look like
    raw = pd.read_parquet(run / "data" / "ingested.parquet").drop(columns="_row_id").head(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = scorer.score(raw.iloc[[0]])
    assert any("compiled feature program disagreed" in str(w.message) for w in caught)
    assert scorer.program is None
    _same_results(got.results, road.score(raw.iloc[[0]]).results, bundle.task)
    _same_results(scorer.score(raw).results, road.score(raw).results, bundle.task)
