"Batch scoring: course and users' files, chunked, quarantine, counts that add up, logging, the CLI, and raw = cleaned predictions."
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import build_run, run_cli, user_files
from mlops_kit.deploy.batch import iter_chunks, score_file
from mlops_kit.deploy.log import read_log
from mlops_kit.model.bundle import build_bundle, load_bundle
from mlops_kit.model.registry import register_bundle


def _package(run: Path, registry: Path) -> dict:
    return register_bundle(registry, build_bundle(run, run.parent / f"{run.name}-bundle"))


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    "Course, penguins (multiclass) and diabetes (regression) runs up to acceptance, each registered in its own registry."
    from mlops_kit.design import spec_for_run
    base = tmp_path_factory.mktemp("batch")
    out = {}
    spec = spec_for_run(data="course"); spec.model_tests = []
    run = build_run(base / "course", spec, "course", until="acceptance", train_options={"search_budget": 1, "cv_folds": 2},
                    n_customers=600, seed=7)
    out["course"] = (run, _package(run, base / "reg-course"), base / "reg-course")
    for task, name, path, target in user_files(base):
        spec = spec_for_run(data=str(path), target=target); spec.model_tests = []
        if task == "regression": spec.metrics.threshold = 0.3
        run = build_run(base / name, spec, path, until="acceptance", train_options={"search_budget": 1, "cv_folds": 2})
        out[name] = (run, _package(run, base / f"reg-{name}"), base / f"reg-{name}")
    return out


@pytest.mark.parametrize("project", ["course", "penguins", "diabetes"])
def test_scores_raw_rows_as_the_pipeline_cleaned_them(projects, project, tmp_path):
    "Scoring the ingested (raw) rows gives, for every row the pipeline kept, the prediction of the pipeline on its cleaned row."
    run, rec, registry = projects[project]
    raw = pd.read_parquet(run / "data" / "ingested.parquet")
    raw.drop(columns=["_row_id"]).to_csv(tmp_path / "in.csv", index=False)
    s = score_file(tmp_path / "in.csv", tmp_path / "out.parquet", registry=registry, log=tmp_path / "log.sqlite",
                   chunk_rows=97, progress=False)
    assert s.rows_in == len(raw) == s.rows_scored + s.rows_quarantined
    scores = pd.read_parquet(s.output)
    quarantined = pd.read_parquet(s.quarantine)
    assert sorted(scores["row"].tolist() + quarantined["row"].astype(int).tolist()) == list(range(len(raw)))
    assert quarantined["reasons"].str.len().gt(0).all()
    # the cleaned rows of the pipeline, by _row_id (ingest numbers rows 0..n-1 in file order)
    bundle = load_bundle(rec["path"])
    lab = pd.read_parquet(run / "data" / "labelled.parquet").set_index("_row_id")
    both = scores.set_index("row").join(lab, how="inner")
    assert len(both) >= 0.8 * len(lab), "most rows the pipeline kept should be scored"
    if bundle.task == "regression":
        np.testing.assert_allclose(both["prediction"].astype(float), bundle.pipeline.predict(both[bundle.inputs]), rtol=1e-9)
    else:   # the probabilities of the pipeline itself, and the decision the bundle takes from them (binary: at its cost threshold)
        proba = bundle.pipeline.predict_proba(both[bundle.inputs])
        np.testing.assert_allclose(both[[f"proba_{c}" for c in bundle.classes]].to_numpy(float), proba, rtol=1e-9, atol=1e-12)
        assert (both["prediction"].astype(str).to_numpy() == bundle.decide(proba).astype(str)).all()
    log = read_log(tmp_path / "log.sqlite")
    assert len(log) == s.rows_scored and set(log["batch_id"]) == {s.batch_id} and set(log["served_by"]) == {"batch"}


def test_chunk_size_changes_nothing_but_memory(projects, tmp_path):
    run, rec, registry = projects["course"]
    raw = pd.read_parquet(run / "data" / "ingested.parquet").drop(columns=["_row_id"]).head(700)
    raw.to_parquet(tmp_path / "in.parquet")
    a = score_file(tmp_path / "in.parquet", tmp_path / "a.parquet", registry=registry, chunk_rows=1000, progress=False)
    b = score_file(tmp_path / "in.parquet", tmp_path / "b.csv", registry=registry, chunk_rows=64, progress=False)
    pa_, pb = pd.read_parquet(a.output), pd.read_csv(b.output)
    assert pa_["row"].tolist() == pb["row"].tolist()
    assert (pa_["decision"].astype(str).to_numpy() == pb["decision"].astype(str).to_numpy()).all()
    assert [len(c) for c in iter_chunks(tmp_path / "in.parquet", 300)] == [300, 300, 100]


def test_bad_files_and_arguments_are_refused(projects, tmp_path):
    run, rec, registry = projects["course"]
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks .* column"):
        score_file(tmp_path / "in.csv", tmp_path / "o.parquet", registry=registry, progress=False)
    assert not (tmp_path / "o.parquet").exists()      # nothing half-written
    with pytest.raises(FileNotFoundError, match="no input file"):
        score_file(tmp_path / "none.csv", tmp_path / "o.parquet", registry=registry, progress=False)
    with pytest.raises(ValueError, match="chunk_rows"):
        list(iter_chunks(tmp_path / "in.csv", 0))
    (tmp_path / "dup.csv").write_text("a,a\n1,2\n")
    with pytest.raises(Exception, match="a"):
        score_file(tmp_path / "dup.csv", tmp_path / "o.parquet", registry=registry, progress=False)


def test_cli_score(projects, tmp_path):
    run, rec, registry = projects["penguins"]
    raw = pd.read_parquet(run / "data" / "ingested.parquet").drop(columns=["_row_id"])
    raw.to_csv(tmp_path / "penguins.csv", index=False)
    res = run_cli("score", tmp_path / "penguins.csv", tmp_path / "scores.csv", "--registry", registry, "--no-progress", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"of {len(raw)} rows" in res.stdout and (tmp_path / "scores.csv").is_file()
    assert (registry.parent / "inference_log.sqlite").is_file()
    res = run_cli("score", tmp_path / "nope.csv", tmp_path / "s.csv", "--registry", registry)
    assert res.returncode == 2 and "no input file" in res.stderr
