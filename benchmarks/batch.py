"""Batch scoring (`mlops-kit score`: contract, recipe, model, quarantine, chunked Parquet out) next to the raw
`predict_proba` of the same fitted pipeline on already-cleaned rows, and the peak memory of the job.

    .venv/bin/python benchmarks/batch.py [--rows 1000000] [--chunk-rows 100000] [--log]

Builds a course model (the pipeline up to package, ~1 min), writes --rows raw rows (sampled from the run's ingested
table) to a Parquet file in chunks, then prints rows/s for both and the peak resident memory of the scoring
process, which stays flat as --rows grows (the file is streamed). --log also logs every row (as `mlops-kit score`
does by default with --log), which costs more than the scoring itself.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_kit.model.bundle import load_bundle
from mlops_kit.model.package import package
from mlops_kit.pipeline import prepare_inputs

SCORE = """
import json, resource, sys, time
from mlops_kit.deploy.batch import score_file
a = json.loads(sys.argv[1])
t0 = time.perf_counter()
s = score_file(a["input"], a["output"], registry=a["registry"], log=a["log"], chunk_rows=a["chunk_rows"], progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": s.rows_in, "scored": s.rows_scored, "quarantined": s.rows_quarantined,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk-rows", type=int, default=100_000)
    ap.add_argument("--log", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    run = work / "run"
    print("building a course model (the pipeline up to package) ...", flush=True)
    prepare_inputs(run, "package", log=lambda s: None)
    reg = package(run)
    raw = pd.read_parquet(run / "data" / "ingested.parquet").drop(columns=["_row_id", "churned"], errors="ignore")
    lab = pd.read_parquet(run / "data" / "labelled.parquet")
    bundle = load_bundle(reg["path"])
    # the input file: raw rows sampled with replacement, written a chunk at a time
    src = work / "in.parquet"
    rng = np.random.default_rng(0)
    schema = pa.Schema.from_pandas(raw, preserve_index=False)
    with pq.ParquetWriter(src, schema) as w:
        for start in range(0, a.rows, a.chunk_rows):
            n = min(a.chunk_rows, a.rows - start)
            w.write_table(pa.Table.from_pandas(raw.iloc[rng.integers(0, len(raw), n)], schema=schema, preserve_index=False))
    # baseline: the pipeline's own predict_proba on cleaned rows, the same number of rows, same chunking
    X = lab[bundle.inputs]
    t0 = time.perf_counter()
    done = 0
    while done < a.rows:
        n = min(a.chunk_rows, a.rows - done)
        bundle.pipeline.predict_proba(X.iloc[rng.integers(0, len(X), n)])
        done += n
    raw_secs = time.perf_counter() - t0
    args = {"input": str(src), "output": str(work / "out.parquet"), "registry": reg["registry"],
            "log": str(work / "log.sqlite") if a.log else None, "chunk_rows": a.chunk_rows}
    res = json.loads(subprocess.run([sys.executable, "-c", SCORE, json.dumps(args)], capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    print(f"\n{a.rows:,} raw rows, chunks of {a.chunk_rows:,}{', every row logged' if a.log else ''}")
    print(f"{'':28} {'rows/s':>10} {'seconds':>8}")
    print(f"{'pipeline.predict_proba':28} {a.rows / raw_secs:10,.0f} {raw_secs:8.1f}   (cleaned rows, no checks, no output)")
    print(f"{'score_file':28} {res['rows'] / res['seconds']:10,.0f} {res['seconds']:8.1f}   "
          f"({res['scored']:,} scored, {res['quarantined']:,} quarantined; peak memory {res['peak_mib']:,.0f} MiB)")
    print(f"score_file / predict_proba: {(res['rows'] / res['seconds']) / (a.rows / raw_secs):.2f}x")


if __name__ == "__main__":
    main()
