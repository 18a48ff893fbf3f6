"Bundle trust: exact type names only and no functions, crafted and re-signed bundles refused before anything runs, non-skops files named, the registry's fingerprint checked, and a bundle module light enough for serving."
import ast
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from conftest import resign_bundle
from mlops_kit.model.package import (BundleError, PromotionRefused, TamperedBundleError, UntrustedTypesError, build_bundle,
                                     fingerprint, load_bundle, load_pipeline, load_registered, promote, register_bundle)
from mlops_kit.runfolder import read_json, sha256_file, write_json

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, small_course_run):
    "A bundle of a small course run that passed acceptance (the session's shared run; read-only: copy before changing)."
    return build_bundle(small_course_run, tmp_path_factory.mktemp("trust") / "bundle")


def _find(node, pred):
    if isinstance(node, dict):
        if pred(node): return node
        node = list(node.values())
    if isinstance(node, list):
        for v in node:
            hit = _find(v, pred)
            if hit is not None: return hit
    return None


def crafted_skops(marker: Path) -> bytes:
    """A skops file made only of numpy and scikit-learn names whose `predict` runs Python that writes `marker`.

    The FunctionTransformer's function is the `format` method of a numpy string holding the code (it returns the code,
    whatever it is given), and the final model's `predict` attribute is `numpy.testing.measure`, which runs a string."""
    from sklearn.dummy import DummyRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    code = f"open({str(marker)!r}, 'w').write('owned')"
    pipe = Pipeline([("prepare", FunctionTransformer(np.abs)), ("model", DummyRegressor())]).fit(pd.DataFrame({"x": [1.0, 2.0]}), [1.0, 2.0])
    original = zipfile.ZipFile(io.BytesIO(sio.dumps(pipe)))
    schema = json.loads(original.read("schema.json"))
    text = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(code), "is_json": True}
    func = _find(schema, lambda n: n.get("__class__") == "FunctionTransformer")["content"]["content"]["func"]
    func.clear()
    func.update({"__class__": "str_", "__module__": "numpy", "__loader__": "MethodNode", "content": {"func": "format", "obj": {
        "__class__": "str_", "__module__": "numpy", "__loader__": "ConstructorFromReduceNode",
        "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "content": [text]}}}})
    model = _find(schema, lambda n: n.get("__class__") == "DummyRegressor")["content"]
    model["content"]["predict"] = {"__class__": "measure", "__module__": "numpy.testing", "__loader__": "FunctionNode"}
    model["key_types"]["content"].append({"__class__": "str", "__module__": "builtins", "__loader__": "TypeNode"})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n in original.namelist(): z.writestr(n, json.dumps(schema) if n == "schema.json" else original.read(n))
    return out.getvalue()




def _swap_pipeline(src: Path, dst: Path, data: bytes, task: str | None = "regression") -> Path:
    "A copy of bundle `src` whose pipeline is `data`, re-signed; the crafted model is a regressor, so the bundle says so."
    shutil.copytree(src, dst)
    (dst / "pipeline.skops").write_bytes(data)
    if task:
        m = read_json(dst / "bundle.json"); m["task"] = task; m["classes"] = None; write_json(dst / "bundle.json", m)
        write_json(dst / "schema.json", {"columns": [{"name": "x", "family": "number", "dtype": "float64"}]})
    resign_bundle(dst)
    return dst


def test_the_crafted_payload_is_real_when_trust_is_given_away(tmp_path):
    "Control: loaded the way many tutorials do (trusting whatever the file lists), the crafted model runs code on predict."
    marker = tmp_path / "owned.txt"
    data = crafted_skops(marker)
    found = sio.get_untrusted_types(data=data)
    assert found == ["numpy.str_", "numpy.str_.format", "numpy.testing.measure"]
    assert all(t.split(".")[0] in ("numpy", "scipy", "sklearn") for t in found)    # what a prefix rule would accept
    model = sio.loads(data, trusted=found)
    assert not marker.exists()
    model.predict(pd.DataFrame({"x": [1.0]}))
    assert marker.read_text() == "owned"


def test_a_resigned_bundle_of_numpy_functions_is_refused_and_never_runs(bundle, tmp_path):
    marker = tmp_path / "owned.txt"
    folder = _swap_pipeline(bundle, tmp_path / "crafted", crafted_skops(marker))
    with pytest.raises(UntrustedTypesError, match=r"numpy\.str_, numpy\.str_\.format, numpy\.testing\.measure") as e:
        b = load_bundle(folder)
        b.predict(pd.DataFrame({"x": [1.0]}))                      # never reached: the load refuses
    assert str(folder / "pipeline.skops") in str(e.value)
    with pytest.raises(UntrustedTypesError): load_pipeline(crafted_skops(marker))
    with pytest.raises(UntrustedTypesError): register_bundle(tmp_path / "registry", folder)
    assert not marker.exists()


def test_the_registry_refuses_a_resigned_bundle_in_its_folder(bundle, tmp_path):
    marker = tmp_path / "owned.txt"
    reg = tmp_path / "registry"
    rec = register_bundle(reg, bundle)
    v1 = Path(rec["path"])
    shutil.rmtree(v1)
    _swap_pipeline(bundle, v1, crafted_skops(marker))             # consistent on its own: only the registry knows better
    with pytest.raises(TamperedBundleError, match="is not the one that was registered"): load_registered(reg, rec["name"])
    with pytest.raises(TamperedBundleError, match="is not the one that was registered"): load_registered(reg, rec["name"], 1)
    with pytest.raises(PromotionRefused, match="is not the one that was registered"): promote(reg, rec["name"], 1)
    assert not marker.exists()


def _junk_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z: z.writestr("weights.bin", os.urandom(64))
    return out.getvalue()


class _Boom:
    marker = None
    def __reduce__(self): return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("kind, why", [("random bytes", "not a zip archive"), ("zip of junk", "a zip archive without schema.json"),
                                       ("pickle", "not a zip archive"), ("empty", "not a zip archive"),
                                       ("zip with a broken schema", "its schema.json is not valid JSON")])
def test_a_file_that_is_not_skops_is_a_bundle_error_naming_it(bundle, tmp_path, kind, why):
    marker = tmp_path / "ran.txt"
    _Boom.marker = marker
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as z: z.writestr("schema.json", "{not json")
    data = {"random bytes": os.urandom(512), "zip of junk": _junk_zip(), "pickle": pickle.dumps(_Boom()), "empty": b"",
            "zip with a broken schema": broken.getvalue()}[kind]
    folder = _swap_pipeline(bundle, tmp_path / "b", data, task=None)
    with pytest.raises(BundleError, match=rf"{folder / 'pipeline.skops'} is not a skops model file \({why}\)") as e:
        load_bundle(folder)
    assert not isinstance(e.value, zipfile.BadZipFile) and "BadZipFile" not in str(e.value)
    with pytest.raises(BundleError, match="x.skops is not a skops model file"): load_pipeline(data, source="x.skops")
    assert not marker.exists()


@pytest.mark.parametrize("make, name", [
    (lambda: __import__("sklearn.preprocessing", fromlist=["x"]).FunctionTransformer(np.log1p), "numpy.log1p"),   # a ufunc skops trusts
    (lambda: __import__("sklearn.preprocessing", fromlist=["x"]).FunctionTransformer(np.linalg.norm), "numpy.linalg.norm"),
    (lambda: __import__("sklearn.preprocessing", fromlist=["x"]).FunctionTransformer(
        __import__("functools").partial(np.clip, a_min=0)), "functools.partial"),
    (lambda: __import__("sklearn.preprocessing", fromlist=["x"]).FunctionTransformer(__import__("operator").attrgetter("T")), "operator.attrgetter"),
    (lambda: __import__("sklearn.preprocessing", fromlist=["x"]).FunctionTransformer(len), "builtins.len"),
])
def test_functions_are_never_trusted(make, name):
    data = sio.dumps(make())
    with pytest.raises(UntrustedTypesError, match=rf"so it was not loaded: .*{name}"): load_pipeline(data)
    with pytest.raises(UntrustedTypesError, match=rf"{name}"): load_pipeline(data, extra_trusted=[name])


def test_only_exact_names_are_trusted():
    from sklearn.preprocessing import StandardScaler
    from mlops_kit.model.bundle import TRUSTED_TYPES, split_untrusted_types
    assert all("." in t and not t.endswith(".") for t in TRUSTED_TYPES)
    assert split_untrusted_types(sio.dumps(StandardScaler()))[1] == []       # skops' own default list still holds
    # types from numpy and scikit-learn that the kit never builds are refused, although their names start like trusted ones
    for obj, name in [(np.polynomial.Polynomial([1, 2]), "numpy.polynomial.polynomial.Polynomial"),
                      (__import__("sklearn.utils", fromlist=["Bunch"]).Bunch(a=1), "sklearn.utils._bunch.Bunch")]:
        assert split_untrusted_types(sio.dumps(obj))[1] == [name]
        with pytest.raises(UntrustedTypesError, match=name): load_pipeline(sio.dumps(obj))


def _all_groups_frame(n: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"num": rng.normal(size=n), "num2": rng.integers(0, 5, n).astype(float),
                       "cat": rng.choice(list("abc"), n).astype(object),
                       "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, n), "D"),
                       "period": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 30, n), "D"),
                       "note": rng.choice(["hello there", "x", "a longer note"], n), "flag": rng.integers(0, 2, n)})
    df.loc[::7, "num"] = np.nan
    df.loc[::5, "cat"] = None
    return df


def test_every_candidate_of_every_task_saves_and_loads(tmp_path):
    "The exact list is what the kit builds: every candidate and the baseline, for every task, with every kind of feature."
    from mlops_kit.model.bundle import TRUSTED_TYPES
    from mlops_kit.model.features import FeaturePlan
    from mlops_kit.model.train import CANDIDATES, make_baseline, make_model, save_model
    df = _all_groups_frame()
    rng = np.random.default_rng(1)
    labels = {"binary": rng.integers(0, 2, len(df)), "multiclass": rng.choice(["a", "b", "c"], len(df)), "regression": rng.normal(size=len(df))}
    seen, tried = set(), []
    for task, candidates in CANDIDATES.items():
        for ref_col, ref_date in (("period", None), (None, "2025-06-01")):
            plan = FeaturePlan(target="y", task=task, numeric=["num", "num2"], categorical=["cat"], date=["when"], text=["note"],
                               flags=["flag"], time_column=ref_col, reference_date=ref_date, positive_class=1 if task == "binary" else None)
            for name, (factory, _) in [*candidates.items(), ("baseline", (None, None))]:
                model = (make_baseline(plan) if factory is None else make_model(plan, factory(0))).fit(df, labels[task])
                data = Path(save_model(model, tmp_path / f"{task}-{name}.skops")).read_bytes()   # as the train step saves it
                seen |= set(sio.get_untrusted_types(data=data))
                loaded = load_pipeline(data, source=f"{task}/{name}")
                out = loaded.predict_proba(df) if task != "regression" else loaded.predict(df)
                ref = model.predict_proba(df) if task != "regression" else model.predict(df)
                np.testing.assert_array_equal(out, ref)
                tried.append((task, name))
    assert len(tried) == 2 * sum(len(c) + 1 for c in CANDIDATES.values())
    assert seen == set(TRUSTED_TYPES), (seen ^ set(TRUSTED_TYPES))      # every trusted name is needed, and nothing else is


LIGHT = """
import sys
import mlops_kit.model.bundle, mlops_kit.model.registry
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('papermill', 'nbformat', 'matplotlib', 'nbconvert', 'IPython'))
kit = sorted(m for m in sys.modules if m.startswith('mlops_kit.pipeline'))
print(heavy + kit)
"""


def test_the_bundle_and_the_registry_load_no_notebook_or_plotting_machinery():
    res = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_package_modules_import_the_kit_at_module_level_only():
    "No `from mlops_kit... import` (or relative import) inside a function: those hid an import cycle with the runner."
    for mod in ("bundle", "card", "registry", "package"):
        path = ROOT / "mlops_kit" / "model" / f"{mod}.py"
        assert path.is_file(), path
        tree = ast.parse(path.read_text())
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    assert node.level == 0 and not (node.module or "").startswith("mlops_kit"), f"{path.name}:{node.lineno} imports the kit in {fn.name}"
                if isinstance(node, ast.Import):
                    assert not any(a.name.startswith("mlops_kit") for a in node.names), f"{path.name}:{node.lineno} imports the kit in {fn.name}"
