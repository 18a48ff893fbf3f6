"""What does one row cost, from a plain scikit-learn pipeline to the kit's Scorer on a raw row?

Uses a course run folder (--run-dir, e.g. one `mlops-kit run --until package` wrote; without it, runs
`prepare_inputs(tmp, "package")` first, about a minute) and measures in one process, the contenders interleaved
call by call so that a busy machine slows them alike:

  sklearn    a plain ColumnTransformer (median imputer + scaler on the numbers, one-hot on the categories) +
             HistGradientBoostingClassifier, fitted on the run's cleaned numeric and category columns, on one cleaned row
  pipeline   the course bundle's fitted pipeline, predict_proba on one cleaned row (labelled.parquet)
  bundle     Bundle.predict on the same cleaned row (the door check included)
  scorer     Scorer.score on the same row RAW, as the ingest step joined it (contract + recipe + model)

Each call gets the next row of a cycle of --distinct rows (default 500), so caches see realistic traffic, not
one row repeated. Prints the median and p99 in ms of each over --calls calls (default 400). OpenMP is limited to one
thread for the three plain contenders (the Scorer limits itself for small requests): with the default thread
count, one-row predictions of HistGradientBoosting were several times slower on 2 cores.

Usage: python benchmarks/predict_one_row.py [--run-dir DIR] [--calls 400] [--distinct 500]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def course_run(run_dir: str | None) -> Path:
    if run_dir: return Path(run_dir)
    from mlops_kit.pipeline import prepare_inputs
    run = Path(tempfile.mkdtemp()) / "run"
    prepare_inputs(run, "package")
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir"); ap.add_argument("--calls", type=int, default=400); ap.add_argument("--distinct", type=int, default=500)
    a = ap.parse_args()
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from threadpoolctl import ThreadpoolController
    from mlops_kit.deploy.scoring import Scorer
    from mlops_kit.model.bundle import load_bundle

    run = course_run(a.run_dir)
    bundle = load_bundle(run / "model" / "bundle")
    scorer = Scorer.from_bundle(bundle)
    ing = pd.read_parquet(run / "data" / "ingested.parquet")
    lab = pd.read_parquet(run / "data" / "labelled.parquet")
    rows = lab.sample(min(a.distinct, len(lab)), random_state=0)
    raw = ing.set_index("_row_id").loc[rows["_row_id"]].reset_index(drop=True)
    clean = rows[bundle.inputs].reset_index(drop=True)
    plan = bundle.schema["columns"]
    num = [c["name"] for c in plan if c["group"] == "numeric"]
    cat = [c["name"] for c in plan if c["group"] == "categorical"]
    target = bundle.metadata["target"]
    fit = lab[lab[target].notna()]
    plain = make_pipeline(ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), num),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                          ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]), cat)]),
        HistGradientBoostingClassifier(max_iter=100, random_state=0)).fit(fit[num + cat], fit[target].astype(int))
    plain_rows = rows[num + cat].reset_index(drop=True)

    ctl = ThreadpoolController()
    one = lambda df, i: df.iloc[[i % len(df)]]
    contenders = {
        "sklearn ColumnTransformer+HGB (cleaned row)": lambda i: plain.predict_proba(one(plain_rows, i)),
        "course bundle pipeline.predict_proba (cleaned row)": lambda i: bundle.pipeline.predict_proba(one(clean, i)),
        "Bundle.predict (cleaned row)": lambda i: bundle.predict(one(clean, i)),
        "Scorer.score (raw row: contract + recipe + model)": lambda i: scorer.score(one(raw, i)),
    }
    times = {k: [] for k in contenders}
    for i in range(20):   # warm up (and fill the scorer's memo with a first pass of values)
        for f in contenders.values(): f(i)
    for i in range(a.calls):
        for k, f in contenders.items():
            if k.startswith("Scorer"):
                t = time.perf_counter(); f(i); times[k].append(time.perf_counter() - t)
            else:
                with ctl.limit(limits=1, user_api="openmp"):
                    t = time.perf_counter(); f(i); times[k].append(time.perf_counter() - t)
    default_threads = []
    for i in range(min(a.calls, 100)):
        t = time.perf_counter(); bundle.pipeline.predict_proba(one(clean, i)); default_threads.append(time.perf_counter() - t)
    print(f"one row, {a.calls} calls each, cycling {len(rows)} distinct rows; run {run}")
    print(f"{'':55s} {'median ms':>10s} {'p99 ms':>9s}")
    for k, ts in times.items():
        ms = np.array(ts) * 1000
        print(f"{k:55s} {np.median(ms):10.2f} {np.percentile(ms, 99):9.2f}")
    ms = np.array(default_threads) * 1000
    print(f"{'(pipeline.predict_proba, default OpenMP threads)':55s} {np.median(ms):10.2f} {np.percentile(ms, 99):9.2f}")


if __name__ == "__main__":
    main()
