"""The five data engineering steps chained by the runner: on the course data and on a messy real data set."""
import json

import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_iris

from conftest import only_run, run_cli
from mlops_kit.datasets import load_penguins_raw
from mlops_kit.runfolder import read_quarantine, sha256_file

DATA_STEPS = ["ingest", "validate", "wrangle", "label", "split"]


def read(run_dir, name):
    return pd.read_parquet(run_dir / "data" / name)


def check_chain(run_dir, manifest, target):
    "What must hold for any data: every step ran, and every row is accounted for from ingest to split."
    steps = {s["name"]: s for s in manifest["steps"]}
    for name in DATA_STEPS:
        assert steps[name]["status"] == "succeeded", steps[name]
        assert name in manifest["metrics"], f"step {name} reported no metrics"
        for rel, digest in steps[name]["outputs"].items():
            assert sha256_file(run_dir / rel) == digest
    ingested, validated = read(run_dir, "ingested.parquet"), read(run_dir, "validated.parquet")
    wrangled, labelled = read(run_dir, "wrangled.parquet"), read(run_dir, "labelled.parquet")
    split = read(run_dir, "split.parquet")
    q = read_quarantine(run_dir)
    q_validate, q_wrangle = set(q[q.step == "validate"]._row_id), set(q[q.step == "wrangle"]._row_id)
    # nothing is lost: each step's rows are the previous step's rows minus what it quarantined, by row id
    assert set(validated._row_id) == set(ingested._row_id) - q_validate
    assert len(validated) + len(q_validate) == len(ingested)
    assert set(wrangled._row_id) == set(validated._row_id) - q_wrangle
    assert len(wrangled) + len(q_wrangle) == len(validated)
    assert sorted(labelled._row_id) == sorted(wrangled._row_id)
    assert sorted(split._row_id) == sorted(labelled._row_id)
    assert target in labelled.columns
    unlabelled = set(labelled._row_id[labelled[target].isna()])
    assert set(split._row_id[split.split == "unlabeled"]) == unlabelled
    labelled_split = split[split.split != "unlabeled"]
    assert set(labelled_split.split) == {"train", "valid", "test"}
    # the contract is stored with the run and is plain JSON a later batch can be checked against
    contract = json.loads((run_dir / "data" / "contract.json").read_text())
    assert contract
    recipe = json.loads((run_dir / "data" / "wrangle_recipe.json").read_text())
    assert recipe
    return dict(ingested=ingested, validated=validated, wrangled=wrangled, labelled=labelled, split=split, quarantine=q)


def test_the_course_data_goes_from_raw_files_to_a_split(default_run):
    _, run_dir, m = default_run
    t = check_chain(run_dir, m, "churned")
    wrangled, labelled, split = t["wrangled"], t["labelled"], t["split"]
    # the exact duplicates the CRM export made are removed by wrangling, and kept in its quarantine
    assert t["ingested"].drop(columns="_row_id").duplicated().sum() > 0
    assert wrangled.drop(columns="_row_id").duplicated().sum() == 0
    assert (t["quarantine"].step == "wrangle").sum() > 0
    # categories are canonical and units fixed after wrangling
    assert set(wrangled.plan.dropna()) <= {"basic", "standard", "premium"}
    assert set(wrangled.country.dropna()) <= {"Portugal", "Spain", "France", "Germany", "Poland"}
    assert wrangled.monthly_fee.max() <= 100
    assert pd.api.types.is_datetime64_any_dtype(wrangled.signup_date)
    # labels: binary, and the most recent months (window still open) are unlabeled, not negative
    y = labelled.churned
    assert set(y.dropna().astype(int)) == {0, 1}
    last_month = labelled.snapshot_month.max()
    assert y[labelled.snapshot_month == last_month].isna().all()
    # a time split: every training month is before every validation month, before every test month
    months = labelled.set_index("_row_id").snapshot_month
    by = {s: months[split._row_id[split.split == s]] for s in ("train", "valid", "test")}
    assert by["train"].max() < by["valid"].min() <= by["valid"].max() < by["test"].min()
    report = json.loads((run_dir / "data" / "split_report.json").read_text())
    assert "time" in json.dumps(report)


def test_a_messy_real_data_set_goes_through_the_five_steps(penguins_run):
    run_dir, m = penguins_run
    t = check_chain(run_dir, m, "Species")
    assert len(t["ingested"]) == len(load_penguins_raw())
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert spec["prediction"]["task"] == "multiclass"
    # no time or id column: a stratified split keeps each species' share in every split
    split = t["split"].merge(t["labelled"][["_row_id", "Species"]], on="_row_id")
    shares = split.groupby("split").Species.value_counts(normalize=True).unstack()
    assert (shares.max() - shares.min()).max() < 0.1, shares


def test_a_european_csv_export_is_sniffed_and_its_decimal_commas_read(tmp_path):
    "A `;`-separated, Windows-1252 file with decimal commas: every step reads it as its author wrote it."
    iris = load_iris(as_frame=True).frame.rename(columns={"sepal length (cm)": "sépale_longueur", "target": "espèce"})
    iris["espèce"] = iris["espèce"].map({0: "setosa", 1: "versicolor", 2: "virginica"})
    path = tmp_path / "fleurs.csv"
    path.write_bytes(iris.to_csv(index=False, sep=";", decimal=",").encode("cp1252"))
    res = run_cli("run", "--runs-dir", tmp_path / "runs", "-p", "data", path, "-p", "target", "espèce",
                  "--until", "wrangle", "--no-report")
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir, m = only_run(tmp_path / "runs")
    prov = json.loads((run_dir / "data" / "provenance.json").read_text())["sources"][0]
    assert (prov["encoding"], prov["delimiter"]) == ("cp1252", ";")
    wrangled = read(run_dir, "wrangled.parquet")
    assert len(wrangled) + len(read_quarantine(run_dir)) == len(iris)
    assert pd.api.types.is_float_dtype(wrangled["sépale_longueur"])
    # iris holds one exact duplicate row: wrangling quarantines it, the values of the rest arrive as numbers
    assert len(wrangled) == len(iris.drop_duplicates()) == 149
    assert abs(wrangled["sépale_longueur"].sum() - iris.drop_duplicates()["sépale_longueur"].sum()) < 1e-6


def test_a_crm_customer_never_billed_is_quarantined_not_a_crash(tmp_path):
    "A customer in the CRM export with no billed month (production data has them) goes to the quarantine with its reason."
    from mlops_kit.data.ingest import join_course_sources
    from mlops_kit.datasets import generate_course_data, read_course_sources
    generate_course_data(tmp_path / "raw", seed=3, n_customers=200, n_months=4)
    sources = read_course_sources(tmp_path / "raw")
    crm = sources["customers"]
    extra = crm.iloc[[0]].assign(customer_id="C99999")
    sources["customers"] = pd.concat([crm, extra], ignore_index=True)
    table, quarantined, _ = join_course_sources(sources)
    hit = quarantined[quarantined["record"].astype(str).str.contains("C99999")]
    assert len(hit) == 1 and "never billed" in hit["reason"].iat[0] and hit["check"].iat[0] == "unmatched_key"
    assert "C99999" not in set(table["customer_id"])
