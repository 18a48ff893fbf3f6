"No skew between training and serving: the Scorer on raw rows equals the bundle's pipeline on the rows as the pipeline cleaned them, refuses per row what the contract refuses, and the bundle reads text numbers, gaps and huge values the way training did or refuses them."
import numpy as np
import pandas as pd
import pytest

from mlops_kit.data.validate import check_batch, load_contract
from mlops_kit.deploy.scoring import Scorer, Scored
from mlops_kit.model.bundle import BundleInputError, load_bundle
from mlops_kit.tables import to_number


@pytest.fixture(scope="module")
def course(default_run):
    """A course run made by the kit's runner on the defaults, through the package step (the session's shared full run:
    its steps up to package are what `mlops-kit run --until package` makes, and nothing here writes to it):
    (run folder, bundle, scorer)."""
    _, run, manifest = default_run
    assert {s["name"]: s["status"] for s in manifest["steps"]}["package"] == "succeeded"
    bundle = load_bundle(run / "model" / "bundle")
    return run, bundle, Scorer.from_bundle(bundle)


def pipeline_cleaned(run, bundle) -> pd.Series:
    "The bundle pipeline's positive-class probability on the rows as the pipeline cleaned them, by _row_id."
    lab = pd.read_parquet(run / "data" / "labelled.parquet")
    return pd.Series(bundle.pipeline.predict_proba(lab[bundle.inputs])[:, 1], index=lab["_row_id"].to_numpy())


def test_raw_rows_score_as_the_pipeline_cleaned_them(course):
    run, bundle, scorer = course
    ing = pd.read_parquet(run / "data" / "ingested.parquet")
    out = scorer.score(ing.drop(columns="_row_id"))
    assert isinstance(out, Scored)
    assert sorted([*out.results.index, *out.rejected["row"].unique()]) == list(range(len(ing)))   # every row answered once
    got = pd.Series(out.results["proba_1"].to_numpy(), index=ing["_row_id"].to_numpy()[out.results.index])
    want = pipeline_cleaned(run, bundle)
    quarantined = set(pd.read_parquet(run / "data" / "quarantine" / "validate.parquet")["_row_id"])
    kept = [r for r in want.index if r not in quarantined]
    assert len(kept) > 20000
    np.testing.assert_array_equal(got.reindex(kept).to_numpy(), want.loc[kept].to_numpy())   # equal, not close
    # the wrangle step's exact copies are scored too (two identical requests are two requests), like their originals
    assert len(out.results) >= len(want)
    np.testing.assert_array_equal(out.results["decision"].to_numpy(), bundle.decide(out.results[["proba_0", "proba_1"]].to_numpy()))


def test_rows_validate_quarantines_are_refused_with_a_reason(course):
    run, bundle, scorer = course
    ing = pd.read_parquet(run / "data" / "ingested.parquet").head(40).copy()
    ing.loc[[3, 7], "snapshot_month"] = None          # missing key: blocking in the course contract
    ing.loc[11, "snapshot_month"] = " "
    contract = load_contract(run / "data" / "contract.json")
    quarantined = check_batch(ing, contract).quarantined["_row_id"].tolist()
    assert quarantined == [3, 7, 11]
    out = scorer.score(ing.drop(columns="_row_id"))
    assert sorted(out.rejected["row"]) == [3, 7, 11]
    assert set(out.rejected["field"]) == {"snapshot_month"} and set(out.rejected["check"]) == {"missing_key"}
    assert out.rejected["reason"].str.contains("snapshot_month is empty").all() and out.rejected["reason"].str.contains("send a value").all()
    assert len(out.results) == 37 and not out.results.index.isin([3, 7, 11]).any()


def raw_row(run, i=5) -> pd.DataFrame:
    return pd.read_parquet(run / "data" / "ingested.parquet").drop(columns="_row_id").iloc[[i]].reset_index(drop=True)


def test_text_number_is_read_as_training_read_it(course):
    "'48,433' and '1,234.5' through the bundle: to_number's reading (the old door check erred on one and split the other)."
    run, bundle, scorer = course
    lab = pd.read_parquet(run / "data" / "labelled.parquet")[bundle.inputs].head(4)
    texts = ["1,234.5", "48,433", "1.234,5", None]
    expect = to_number(pd.Series(texts))
    np.testing.assert_array_equal(bundle.predict_proba(lab.assign(minutes_used=texts)),
                                  bundle.predict_proba(lab.assign(minutes_used=expect.to_numpy())))
    # through the scorer, a raw text minutes_used is read by the recipe's reader: the same numbers
    raw = pd.concat([raw_row(run)] * 3, ignore_index=True).assign(minutes_used=texts[:3])
    same = pd.concat([raw_row(run)] * 3, ignore_index=True).assign(minutes_used=[str(v) for v in expect[:3]])
    np.testing.assert_array_equal(scorer.score(raw).results.to_numpy(), scorer.score(same).results.to_numpy())


def test_gap_where_contract_says_never_empty_is_refused_naming_the_field(course):
    run, bundle, scorer = course
    lab = pd.read_parquet(run / "data" / "labelled.parquet")[bundle.inputs].head(3)
    with pytest.raises(BundleInputError, match="'monthly_fee' holds 3 missing value"):
        bundle.predict(lab.assign(monthly_fee=np.nan))
    out = scorer.score(pd.concat([raw_row(run), raw_row(run).assign(monthly_fee=np.nan)], ignore_index=True))
    assert out.results.index.tolist() == [0]
    r = out.rejected.iloc[0]
    assert (r["row"], r["field"], r["check"]) == (1, "monthly_fee", "missing_value") and "monthly_fee" in r["reason"]


def test_value_far_beyond_the_range_is_refused_naming_the_field(course):
    run, bundle, scorer = course
    lab = pd.read_parquet(run / "data" / "labelled.parquet")[bundle.inputs].head(3)
    with pytest.raises(BundleInputError, match="'monthly_fee' holds 3 value\\(s\\) far outside the contract's range"):
        bundle.predict(lab.assign(monthly_fee=1e12))
    rows = pd.concat([raw_row(run).assign(monthly_fee=v) for v in (1e12, "2999", 29.99)], ignore_index=True)
    out = scorer.score(rows)
    assert out.rejected[["row", "field", "check"]].values.tolist() == [[0, "monthly_fee", "out_of_range"]]
    assert "[0, 100]" in out.rejected["reason"].iat[0]
    # 2999 is cents, as some of the training rows were: the recipe reads it as 29.99 euros, as training did
    assert out.results.loc[1, "proba_1"] == out.results.loc[2, "proba_1"]


def test_fields_are_the_contract_columns_the_model_needs(course):
    run, bundle, scorer = course
    names = [f["name"] for f in scorer.fields]
    assert "churned" not in names and "customer_id" in names and "snapshot_month" in names
    by = {f["name"]: f for f in scorer.fields}
    assert not by["customer_id"]["required"] and by["snapshot_month"]["required"]   # an id is sent and logged, not read
    fee = next(f for f in scorer.fields if f["name"] == "monthly_fee")
    assert (fee["kind"], fee["required"], fee["nullable"], fee["min"], fee["max"]) == ("number", True, False, 0, 100)
    plan = next(f for f in scorer.fields if f["name"] == "plan")
    assert plan["kind"] == "category" and set(plan["domain"]) == {"basic", "standard", "premium"}
    out = scorer.score(raw_row(run).drop(columns=["age"]))
    assert out.rejected[["row", "field", "check"]].values.tolist() == [[0, "age", "missing_column"]]


def test_user_data_through_the_same_path(penguins_run):
    "The raw penguins file: the scorer on the ingested rows equals the pipeline on the cleaned rows (multiclass)."
    run, _ = penguins_run
    bundle = load_bundle(run / "model" / "bundle")
    scorer = Scorer.from_bundle(bundle)
    ing = pd.read_parquet(run / "data" / "ingested.parquet")
    lab = pd.read_parquet(run / "data" / "labelled.parquet")
    out = scorer.score(ing.drop(columns="_row_id"))
    assert sorted([*out.results.index, *out.rejected["row"].unique()]) == list(range(len(ing)))
    classes = [f"proba_{c}" for c in bundle.classes]
    got = pd.DataFrame(out.results[classes].to_numpy(), index=ing["_row_id"].to_numpy()[out.results.index], columns=classes)
    want = pd.DataFrame(bundle.pipeline.predict_proba(lab[bundle.inputs]), index=lab["_row_id"].to_numpy(), columns=classes)
    refused = set(ing["_row_id"].to_numpy()[out.rejected["row"].unique()])
    # the scorer refuses only rows whose values the validate step flagged (a warning there, a refusal in serving)
    contract = load_contract(run / "data" / "contract.json")
    flagged = set(check_batch(ing, contract).issues["_row_id"])
    assert refused <= flagged
    kept = [r for r in want.index if r not in refused]
    assert len(kept) >= 0.9 * len(want)
    np.testing.assert_array_equal(got.loc[kept].to_numpy(), want.loc[kept].to_numpy())
    assert set(out.results["decision"]) <= set(bundle.classes)


def test_small_requests_score_as_the_batch(course):
    "Small requests (the memo road) give the vectorised road's numbers at the same request sizes, refusals included."
    run, bundle, scorer = course
    vectorised = Scorer.from_bundle(bundle)
    vectorised.small_batch = 0
    ing = pd.read_parquet(run / "data" / "ingested.parquet").drop(columns="_row_id")
    sample = ing.sample(150, random_state=1).reset_index(drop=True)
    sample.loc[[4, 9], "monthly_fee"] = [1e12, np.nan]
    sample.loc[17, "plan"] = "gold"
    for n in (1, 7, 64):
        for i in range(0, len(sample), n):
            a, b = scorer.score(sample.iloc[i:i + n]), vectorised.score(sample.iloc[i:i + n])
            np.testing.assert_array_equal(a.results.to_numpy(), b.results.to_numpy())
            np.testing.assert_array_equal(a.results.index, b.results.index)
            pd.testing.assert_frame_equal(a.rejected, b.rejected)
    singles = [scorer.score(sample.iloc[[i]]) for i in range(len(sample))]
    assert {4, 9, 17} <= {i for i, s in enumerate(singles) if len(s.rejected)}
    full = scorer.score(sample)
    got = pd.concat([s.results.set_axis([i]) for i, s in enumerate(singles) if len(s.results)])
    np.testing.assert_allclose(got["proba_1"], full.results.loc[got.index, "proba_1"], rtol=1e-12)


def test_concurrent_small_requests_and_odd_cells(course):
    "score() from many threads at once gives the serial answers; a cell holding a list is refused, not a crash."
    from concurrent.futures import ThreadPoolExecutor
    run, bundle, _ = course
    scorer = Scorer.from_bundle(bundle)                      # a fresh memo, filled by the threads themselves
    ing = pd.read_parquet(run / "data" / "ingested.parquet").drop(columns="_row_id").sample(60, random_state=2)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: scorer.score(ing.iloc[[i]]).results["proba_1"].iat[0], range(len(ing))))
    serial = Scorer.from_bundle(bundle)
    want = [serial.score(ing.iloc[[i]]).results["proba_1"].iat[0] for i in range(len(ing))]
    assert got == want
    odd = raw_row(run).astype(object)
    odd.at[0, "plan"] = ["basic"]
    out = scorer.score(odd)
    assert len(out.results) == 0 and out.rejected["field"].tolist() == ["plan"]
