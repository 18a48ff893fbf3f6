"Model packaging: bundles per task type, refusal of tampered, foreign and untrusted bundles, input checks, the registry."
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from conftest import build_run, resign_bundle, user_files
from mlops_kit.model.package import (BundleError, BundleInputError, ForeignBundleError, PromotionRefused, TamperedBundleError,
                                     UntrustedTypesError, build_bundle, check_input, default_registry, fingerprint,
                                     list_models, load_bundle, load_pipeline, load_registered, package, pipeline_inputs,
                                     promote, register_bundle, registry_history, resolve_model)
from mlops_kit.runfolder import read_json, sha256_file, write_json

ROOT = Path(__file__).resolve().parent.parent


def _make_run(run: Path, data: str, target: str | None = None, threshold: float | None = None, **knobs) -> Path:
    "A run folder through every step up to acceptance, made by the steps' library functions (no notebooks)."
    from mlops_kit.design import spec_for_run
    spec = spec_for_run(data=str(data), target=target)
    spec.model_tests = []   # the packaging tests need a model that passes: the generic robustness tests run instead
    if threshold is not None: spec.metrics.threshold = threshold
    return build_run(run, spec, data, until="acceptance", train_options={"search_budget": 1, "cv_folds": 2}, **knobs)


@pytest.fixture(scope="session")
def runs(tmp_path_factory, small_course_run):
    "Finished run folders (read-only: copy before changing) for the three task types; the course one is the session's shared."
    base = tmp_path_factory.mktemp("package-runs")
    runs = {"binary": small_course_run}   # what _make_run(..., "course", n_customers=600, seed=42) makes
    for task, name, path, target in user_files(base):
        runs[task] = _make_run(base / name, path, target, threshold=0.3 if task == "regression" else None)
    return runs


@pytest.fixture(scope="session")
def bundles(runs, tmp_path_factory):
    "A bundle per task type (read-only)."
    base = tmp_path_factory.mktemp("bundles")
    return {task: build_bundle(run, base / task) for task, run in runs.items()}


def _copy(src: Path, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _rows(run: Path, split: str = "test") -> pd.DataFrame:
    lab = pd.read_parquet(run / "data" / "labelled.parquet")
    s = pd.read_parquet(run / "data" / "split.parquet")
    return lab[lab._row_id.isin(s._row_id[s.split == split])].reset_index(drop=True)


def _fail_first_check(acc: dict) -> dict:
    "An acceptance report like `acc` whose first check failed."
    checks = acc.get("results") or acc["checks"]
    checks[0]["passed"] = False
    return {**acc, "passed": False, "failed": [checks[0]["name"]]}




# --- bundles per task type -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_bundle_predicts_exactly_what_the_pipeline_predicts(runs, bundles, task):
    run, bundle = runs[task], load_bundle(bundles[task])
    raw = load_pipeline((run / "model" / "pipeline.skops").read_bytes())
    rows = _rows(run)
    assert bundle.task == task
    assert bundle.inputs == pipeline_inputs(raw)
    assert (bundles[task] / "pipeline.skops").read_bytes() == (run / "model" / "pipeline.skops").read_bytes()
    if task == "regression":
        np.testing.assert_array_equal(bundle.predict(rows), raw.predict(rows[bundle.inputs]))
        with pytest.raises(BundleError, match="regression model: it predicts numbers"): bundle.predict_proba(rows)
        assert bundle.classes is None
    else:
        proba = raw.predict_proba(rows[bundle.inputs])
        np.testing.assert_array_equal(bundle.predict_proba(rows), proba)
        assert list(bundle.classes) == list(raw.classes_)
    if task == "multiclass":
        np.testing.assert_array_equal(bundle.predict(rows), raw.predict(rows))
        assert set(bundle.predict(rows)) <= set(raw.classes_)
    if task == "binary":
        ev = read_json(run / "model" / "evaluation.json")
        assert bundle.threshold == ev["threshold"] and 0 < bundle.threshold < 1
        expected = np.where(proba[:, list(raw.classes_).index(1)] >= ev["threshold"], 1, 0)
        np.testing.assert_array_equal(bundle.predict(rows), expected)


def test_readme_two_lines(bundles, runs):
    "The two lines the README shows: import, load and predict."
    from mlops_kit.model.package import load_bundle as lb
    predictions = lb(bundles["binary"]).predict(_rows(runs["binary"]))
    assert len(predictions) == len(_rows(runs["binary"])) and set(predictions) <= {0, 1}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_bundle_contents_and_metadata(runs, bundles, task):
    run, folder = runs[task], bundles[task]
    meta = read_json(folder / "bundle.json")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["bundle.json", "pipeline.skops", "schema.json", "metrics.json", "acceptance.json", "feature_plan.json",
         "contract.json", "wrangle_recipe.json", "spec.yaml", "model_card.md"])
    assert meta["format"] == "mlops-kit-bundle" and meta["format_version"] == 1
    assert meta["fingerprint"] == fingerprint(meta)
    assert meta["files"] == {p.name: sha256_file(p) for p in folder.iterdir() if p.name != "bundle.json"}
    assert meta["data"]["sha256"] == {f: sha256_file(run / f) for f in ("data/labelled.parquet", "data/split.parquet")}
    assert len(meta["code"]["mlops_kit_sha256"]) == 64
    assert {"python", "scikit-learn", "numpy", "pandas", "skops"} <= set(meta["libraries"])
    assert meta["acceptance_passed"] is True and meta["acceptance_failures"] == []
    ev = read_json(run / "model" / "evaluation.json")
    assert meta["metric"]["test"] == ev["test"][ev["metric"]]
    assert read_json(folder / "metrics.json") == ev
    schema = read_json(folder / "schema.json")
    assert [c["name"] for c in schema["columns"]] == meta["inputs"]
    assert all({"name", "kind", "dtype", "family", "required", "nullable"} <= set(c) for c in schema["columns"])
    if task == "regression": assert meta["classes"] is None and meta["decision_threshold"] is None
    if task == "multiclass":
        assert [c.split()[0] for c in sorted(meta["classes"])] == ["Adelie", "Chinstrap", "Gentoo"] and meta["decision_threshold"] is None


@pytest.mark.parametrize("task, line", [("binary", "- Positive rate: train"), ("multiclass", "- Training rows per class:"),
                                        ("regression", "- Target on training rows: mean")])
def test_model_card_reads_well(bundles, task, line):
    card = (bundles[task] / "model_card.md").read_text()
    for section in ("## Intended use", "## Data", "## Metrics", "## Slices", "## Acceptance", "## Limitations",
                    "## Who owns it", "## How to use it"):
        assert section in card, section
    assert line in card
    assert "| Model packaging | ML engineer" in card             # the owning roles come from mlops_kit.roles.RACI
    assert "from mlops_kit.model.package import load_bundle" in card
    assert "nan" not in card.lower().replace("financ", "")     # no raw NaN leaks into the text
    if task == "binary": assert "Decision threshold:" in card and "per 1,000 scored rows" in card


def test_build_refuses_missing_inputs_failed_or_stale_acceptance(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"lacks .*model/acceptance.json.*run the step\(s\) acceptance first"):
        run = _copy(runs["binary"], tmp_path, "no-acceptance")
        (run / "model" / "acceptance.json").unlink()
        build_bundle(run)
    run = _copy(runs["binary"], tmp_path, "failed")
    acc = _fail_first_check(read_json(run / "model" / "acceptance.json"))
    write_json(run / "model" / "acceptance.json", acc)
    with pytest.raises(BundleError, match=rf"failed acceptance \({acc['failed'][0]}\), so it is not packaged"):
        build_bundle(run)
    assert not (run / "model" / "bundle").exists()
    archived = build_bundle(run, allow_failed_acceptance=True)
    assert read_json(archived / "bundle.json")["acceptance_passed"] is False
    assert "**FAILED: not for use**" in (archived / "model_card.md").read_text()
    stale = _copy(runs["binary"], tmp_path, "stale")
    shutil.copyfile(stale / "model" / "baseline.skops", stale / "model" / "pipeline.skops")   # the model changed after acceptance
    with pytest.raises(BundleError, match="acceptance.json was written for another model/pipeline.skops"):
        build_bundle(stale)


def test_build_replaces_a_bundle_atomically_and_never_clobbers_other_folders(runs, tmp_path):
    run = _copy(runs["binary"], tmp_path, "run")
    first = read_json(build_bundle(run) / "bundle.json")
    second = read_json(build_bundle(run) / "bundle.json")
    assert first["fingerprint"] != second["fingerprint"] and first["files"]["pipeline.skops"] == second["files"]["pipeline.skops"]
    assert [p.name for p in (run / "model").iterdir() if p.name.startswith(".")] == []
    other = tmp_path / "mine"; other.mkdir(); (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="exists and is not a bundle"): build_bundle(run, other)
    assert (other / "notes.txt").read_text() == "keep me"


# --- refusing what must not load -------------------------------------------------------------------------------------

def _evil_pipeline(kind: str):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    if kind == "eval": return make_pipeline(FunctionTransformer(eval))
    if kind == "system": return make_pipeline(FunctionTransformer(os.system), StandardScaler())
    return make_pipeline(HomeMadeScaler())


class HomeMadeScaler:
    "A class from a test module: not on the allowlist."
    def fit(self, X, y=None): return self
    def transform(self, X): return X


@pytest.mark.parametrize("kind, name", [("eval", "builtins.eval"), ("system", "system"), ("custom", "test_model_package.HomeMadeScaler")])
def test_untrusted_types_are_refused_even_with_consistent_hashes(bundles, tmp_path, kind, name):
    folder = _copy(bundles["binary"], tmp_path)
    (folder / "pipeline.skops").write_bytes(sio.dumps(_evil_pipeline(kind)))
    resign_bundle(folder)                                   # every hash is right: only the allowlist stands in the way
    with pytest.raises(UntrustedTypesError, match=rf"contains types outside the allowlist, so it was not loaded: .*{name}"):
        load_bundle(folder)
    with pytest.raises(UntrustedTypesError): register_bundle(tmp_path / "registry", folder)
    assert not (tmp_path / "registry" / "bundles").exists() or not any((tmp_path / "registry" / "bundles").rglob("v*"))


def test_build_refuses_a_run_whose_pipeline_has_untrusted_types(runs, tmp_path):
    run = _copy(runs["binary"], tmp_path)
    sio.dump(_evil_pipeline("eval"), run / "model" / "pipeline.skops")
    acc = read_json(run / "model" / "acceptance.json")
    acc["model_sha256"] = sha256_file(run / "model" / "pipeline.skops")
    write_json(run / "model" / "acceptance.json", acc)
    with pytest.raises(UntrustedTypesError, match="builtins.eval"): build_bundle(run)


def test_kit_transformers_are_trusted_by_name(bundles):
    from mlops_kit.model.features import TRUSTED_TYPES
    from mlops_kit.model.bundle import split_untrusted_types
    allowed, refused = split_untrusted_types((bundles["binary"] / "pipeline.skops").read_bytes())
    assert refused == [] and set(allowed) & set(TRUSTED_TYPES)


def _edit_json(name, key):
    def edit(f):
        d = read_json(f / name); d[key] = "edited"; write_json(f / name, d)
    return edit


TAMPERING = {
    "changed metrics": (_edit_json("metrics.json", "metric"), "metrics.json was changed"),
    "changed pipeline": (lambda f: (f / "pipeline.skops").write_bytes((f / "pipeline.skops").read_bytes() + b"\0"), "pipeline.skops was changed"),
    "missing card": (lambda f: (f / "model_card.md").unlink(), "model_card.md is missing"),
    "missing pipeline": (lambda f: (f / "pipeline.skops").unlink(), "pipeline.skops is missing"),
    "added file": (lambda f: (f / "helper.py").write_text("import os"), "helper.py was added"),
    "added hidden file": (lambda f: (f / ".sneaky").write_text("x"), ".sneaky was added"),
    "added in a subfolder": (lambda f: ((f / "sub").mkdir(), (f / "sub" / "a.txt").write_text("x")), "sub/a.txt was added"),
    "several at once": (lambda f: ((f / "schema.json").write_text("{}"), (f / "spec.yaml").unlink()), "schema.json was changed; spec.yaml is missing"),
    "bundle.json edited": (lambda f: (f / "bundle.json").write_text((f / "bundle.json").read_text().replace('"task": "binary"', '"task": "regression"')),
                           "bundle.json in .* was changed after the bundle was built"),
    "bundle.json hash list edited": (lambda f: (f / "bundle.json").write_text(
        json.dumps({**read_json(f / "bundle.json"), "files": {}})), "bundle.json in .* was changed after the bundle was built"),
    "bundle.json broken": (lambda f: (f / "bundle.json").write_text("{"), "bundle.json in .* is not valid JSON"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_bundles_are_refused_naming_the_file(bundles, tmp_path, case):
    how, message = TAMPERING[case]
    folder = _copy(bundles["binary"], tmp_path)
    how(folder)
    with pytest.raises(TamperedBundleError, match=message): load_bundle(folder)
    with pytest.raises(TamperedBundleError): register_bundle(tmp_path / "registry", folder)


def test_a_consistently_rebuilt_bundle_is_caught_by_the_registered_fingerprint(bundles, tmp_path):
    folder = _copy(bundles["binary"], tmp_path)
    registered = read_json(folder / "bundle.json")["fingerprint"]
    m = read_json(folder / "bundle.json"); m["decision_threshold"] = 0.99; m["fingerprint"] = fingerprint(m)
    write_json(folder / "bundle.json", m)
    assert load_bundle(folder).threshold == 0.99                      # self-consistent, so it loads on its own...
    with pytest.raises(TamperedBundleError, match="is not the one that was registered"):
        load_bundle(folder, expected_fingerprint=registered)          # ...but not as the registered version


@pytest.mark.parametrize("make, error, message", [
    (lambda t: t / "nowhere", FileNotFoundError, "the folder does not exist"),
    (lambda t: (t / "model.skops").write_bytes(b"PK") and t / "model.skops", ForeignBundleError, "is a file, not a model bundle"),
    (lambda t: (t / "f").mkdir() or t / "f", ForeignBundleError, "is not an mlops-kit model bundle: it has no bundle.json"),
    (lambda t: (t / "g").mkdir() or (t / "g" / "bundle.json").write_text('{"format": "mlflow"}') and t / "g", ForeignBundleError,
     "has format 'mlflow', not 'mlops-kit-bundle'"),
    (lambda t: (t / "h").mkdir() or (t / "h" / "bundle.json").write_text("[1, 2]") and t / "h", ForeignBundleError, "has format None"),
])
def test_foreign_folders_are_refused(tmp_path, make, error, message):
    with pytest.raises(error, match=message): load_bundle(make(tmp_path))


def test_a_pickle_in_a_foreign_folder_is_never_loaded(tmp_path):
    import pickle
    marker = tmp_path / "ran.txt"

    class Boom:
        def __reduce__(self): return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.pkl").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ForeignBundleError): load_bundle(tmp_path / "m")
    assert not marker.exists()


def test_newer_bundle_format_is_refused_with_advice(bundles, tmp_path):
    folder = _copy(bundles["binary"], tmp_path)
    m = read_json(folder / "bundle.json"); m["format_version"] = 2; m["fingerprint"] = fingerprint(m)
    write_json(folder / "bundle.json", m)
    with pytest.raises(ForeignBundleError, match="format version 2; this mlops-kit reads version 1: rebuild it"):
        load_bundle(folder)


# --- the input check ------------------------------------------------------------------------------------------------

def test_input_check(bundles, runs):
    bundle, rows = load_bundle(bundles["binary"]), _rows(runs["binary"]).head(20)
    assert check_input(rows, bundle.schema) is rows                          # no copy on the common path
    assert check_input(rows.assign(new_column=1), bundle.schema) is not None
    np.testing.assert_array_equal(bundle.predict_proba(rows.assign(new_column=1)), bundle.predict_proba(rows))
    np.testing.assert_array_equal(bundle.predict_proba(rows[bundle.inputs[::-1]]), bundle.predict_proba(rows))   # column order
    needed = bundle.inputs[:2]
    with pytest.raises(BundleInputError, match=rf"lacks 2 of the {len(bundle.inputs)} column\(s\) the model reads: '{needed[0]}', '{needed[1]}'"):
        bundle.predict(rows.drop(columns=needed))
    # numbers sent as text (as JSON often does) are read; unreadable values are named
    as_text = rows.assign(age=rows.age.map(lambda v: "" if pd.isna(v) else f"{v:g}").astype(object))
    np.testing.assert_array_equal(bundle.predict_proba(as_text), bundle.predict_proba(rows))
    with pytest.raises(BundleInputError, match=r"'age' should hold numbers, but 1 value\(s\) cannot be read as numbers, e.g. 'old'"):
        bundle.predict(rows.assign(age=["old"] + ["40"] * 19))
    dates = [c["name"] for c in bundle.schema["columns"] if c["family"] == "date"]
    assert dates, "the course model reads date columns; without them this check would test nothing"
    as_strings = rows.assign(**{d: rows[d].dt.strftime("%Y-%m-%d %H:%M:%S") for d in dates})   # as a JSON client sends them
    assert all(not pd.api.types.is_datetime64_any_dtype(as_strings[d]) for d in dates) and as_strings[dates].notna().any().all()
    np.testing.assert_array_equal(bundle.predict_proba(as_strings), bundle.predict_proba(rows))
    with pytest.raises(BundleInputError, match=rf"'{dates[0]}' should hold dates, but 1 value\(s\) cannot be read as dates, e.g. 'soon'"):
        bundle.predict(as_strings.assign(**{dates[0]: ["soon"] + as_strings[dates[0]].tolist()[1:]}))
    with pytest.raises(BundleInputError, match="holds numbers .* but the model was trained on texts"):
        bundle.predict(rows.assign(plan=1))
    assert bundle.predict_proba(rows.assign(country=None)).shape == (20, 2)  # an all-missing nullable column: the imputer fills it
    with pytest.raises(BundleInputError, match="'plan' holds 20 missing value"):  # ...but the contract says plan is never empty
        bundle.predict(rows.assign(plan=None))
    assert len(bundle.predict(rows.iloc[0].to_dict())) == 1                 # one row as a dict
    assert len(bundle.predict(rows.head(3).to_dict("records"))) == 3
    assert bundle.predict(rows.iloc[:0]).shape == (0,) and bundle.predict_proba(rows.iloc[:0]).shape == (0, 2)
    with pytest.raises(BundleInputError, match="needs a pandas DataFrame"): bundle.predict(rows.to_numpy())


# --- the registry ---------------------------------------------------------------------------------------------------

def test_registry_versions_aliases_and_gated_promotion(runs, tmp_path):
    run = _copy(runs["binary"], tmp_path, "run")
    reg = tmp_path / "registry"
    b1 = build_bundle(run, tmp_path / "b1")
    r1 = register_bundle(reg, b1)
    assert (r1["version"], r1["alias"], r1["new"], r1["acceptance"]) == (1, "champion", True, "passed")
    assert register_bundle(reg, b1)["new"] is False                      # the same bundle twice is one version
    r2 = register_bundle(reg, build_bundle(run, tmp_path / "b2"))
    write_json(run / "model" / "acceptance.json", _fail_first_check(read_json(run / "model" / "acceptance.json")))
    r3 = register_bundle(reg, build_bundle(run, tmp_path / "b3", allow_failed_acceptance=True))
    assert [(r["version"], r["alias"]) for r in (r2, r3)] == [(2, "challenger"), (3, "")]
    models = list_models(reg)
    assert models.columns.tolist() == ["name", "version", "alias", "created", "task", "metric", "test_score", "acceptance", "run_id", "path"]
    assert models[["version", "alias", "acceptance"]].values.tolist() == [[1, "champion", "passed"], [2, "challenger", "passed"], [3, "", "failed"]]
    assert all(Path(p).is_dir() for p in models.path)
    with pytest.raises(PromotionRefused, match="v3: it did not pass acceptance"): promote(reg, "subscription_churn", 3)
    p = promote(reg, "subscription_churn", "v2")
    assert (p["alias"], p["previous_champion"]) == ("champion", 1)
    assert list_models(reg).alias.tolist() == ["", "champion", ""]
    assert promote(reg, "subscription_churn", 1)["previous_champion"] == 2            # rollback
    assert resolve_model(reg, "subscription_churn")["version"] == 1
    (Path(resolve_model(reg, "subscription_churn", 2)["path"]) / "model_card.md").write_text("all good, trust me")
    with pytest.raises(PromotionRefused, match="model_card.md was changed"): promote(reg, "subscription_churn", 2)
    with pytest.raises(TamperedBundleError): load_registered(reg, "subscription_churn", 2)
    assert load_registered(reg, "subscription_churn").metadata["fingerprint"] == r1["fingerprint"]
    events = registry_history(reg, "subscription_churn")
    assert events.event.tolist() == ["registered"] * 3 + ["promoted"] * 2
    assert events.detail.tolist()[-2:] == ["champion: v1 -> v2", "champion: v2 -> v1"]
    with pytest.raises(KeyError, match="no model named 'churn'"): resolve_model(reg, "churn")
    with pytest.raises(KeyError, match="has no version 7; its versions are 1, 2, 3"): promote(reg, "subscription_churn", 7)
    with pytest.raises(ValueError, match="is not a version number"): promote(reg, "subscription_churn", "latest")


def test_registered_versions_are_never_overwritten(bundles, tmp_path):
    import sqlite3
    reg = tmp_path / "registry"
    register_bundle(reg, bundles["binary"])
    orphan = reg / "bundles" / "subscription_churn" / "v2"          # left by a crash between rename and commit
    orphan.mkdir(); (orphan / "keep.txt").write_text("evidence")
    folder = tmp_path / "rebuilt"; shutil.copytree(bundles["binary"], folder)
    m = read_json(folder / "bundle.json"); m["build_id"] = "another build"; m["fingerprint"] = fingerprint(m)
    write_json(folder / "bundle.json", m)
    rec = register_bundle(reg, folder)
    assert rec["version"] == 3 and (orphan / "keep.txt").read_text() == "evidence"
    con = sqlite3.connect(reg / "registry.sqlite")
    with pytest.raises(sqlite3.IntegrityError, match="never changed"): con.execute("UPDATE versions SET test_score = 1 WHERE version = 1")
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"): con.execute("DELETE FROM versions WHERE version = 1")
    with pytest.raises(sqlite3.IntegrityError): con.execute("INSERT INTO versions SELECT * FROM versions WHERE version = 1")
    con.close()


WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from mlops_kit.model.package import register_bundle
    registry, bundle, ready, go = sys.argv[1:5]
    Path(ready).write_text("ready")
    while not Path(go).exists(): time.sleep(0.005)      # start all registrations at the same moment
    print(json.dumps(register_bundle(registry, bundle, "busy")))
""")


def test_concurrent_registrations_from_separate_processes(bundles, tmp_path):
    n = 4
    folders = []
    for i in range(n):   # n different bundles of one model (a new build id each)
        f = tmp_path / f"b{i}"; shutil.copytree(bundles["binary"], f)
        m = read_json(f / "bundle.json"); m["build_id"] = f"build {i}"; m["fingerprint"] = fingerprint(m)
        write_json(f / "bundle.json", m); folders.append(f)
    reg, go = tmp_path / "registry", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(reg), str(f), str(tmp_path / f"ready{i}"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for i, f in enumerate(folders)]
    import time
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(n)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    go.write_text("go")
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    records = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert sorted(r["version"] for r in records) == list(range(1, n + 1))
    models = list_models(reg)
    assert sorted(models.version) == list(range(1, n + 1)) and (models.alias == "champion").sum() == 1
    assert (models.alias == "challenger").sum() == 1
    for r in records: load_bundle(r["path"], expected_fingerprint=r["fingerprint"])
    assert sorted(p.name for p in (reg / "bundles" / "busy").iterdir()) == [f"v{i}" for i in range(1, n + 1)]


def test_default_registry_and_empty_listing(tmp_path):
    assert default_registry(tmp_path / "scratch") == tmp_path / "scratch" / "registry"
    run = tmp_path / "runs" / "20260101-000000-000"; run.mkdir(parents=True); (run / "manifest.json").write_text("{}")
    assert default_registry(run) == tmp_path / "runs" / "registry"
    assert list_models(tmp_path / "none").empty and not (tmp_path / "none").exists()
    assert registry_history(tmp_path / "none").empty
    with pytest.raises(FileNotFoundError, match="no model registry at"): resolve_model(tmp_path / "none", "x")


# --- the step ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_package_step(runs, tmp_path, task):
    run = _copy(runs[task], tmp_path, "run")
    first = package(run)
    assert (run / "model" / "bundle" / "bundle.json").is_file()
    saved = read_json(run / "model" / "registration.json")
    assert saved["version"] == first["version"] == 1 and saved["alias"] == "champion"
    assert Path(saved["registry"]) == (run / "registry").resolve()          # a scratch run keeps its registry inside
    assert saved["checked_test_rows"] == len(_rows(run))
    second = package(run, registry=tmp_path / "shared", model_name="renamed")
    assert (second["name"], second["version"]) == ("renamed", 1)
    third = package(run)
    assert (third["version"], third["alias"]) == (2, "challenger")
    assert load_registered(run / "registry", first["name"]).metadata["fingerprint"] == first["fingerprint"]
    with pytest.raises(ValueError, match="model name 'bad name' must start"): package(run, model_name="bad name")


def test_step_notebook_parameters_match_settings():
    from mlops_kit.pipeline import check_step_defaults, discover_steps, read_settings
    steps = [s for s in discover_steps(ROOT / "nbs") if s.name == "package"]
    assert len(steps) == 1 and set(steps[0].parameters) == {"run_dir", "registry", "model_name"}
    assert check_step_defaults(steps, read_settings(ROOT / "settings.ini")[0]) == []
