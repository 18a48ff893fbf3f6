"""Batch scoring (`mlops-kit score`: contract, recipe, model, quarantine, chunked Parquet out) next to the raw
`predict_proba` of the same fitted pipeline on already-cleaned rows, and the peak memory of the job (issue 12:
batch scoring at >= 0.9x the raw rows/s, 10M rows on this machine with flat memory).

    .venv/bin/python benchmarks/batch.py [--rows 1000000] [--chunk-rows 100000] [--log] [--work DIR]

Builds a course model (the pipeline up to package, ~1-2 min; --work DIR keeps it in DIR for the next run), writes
--rows raw rows (sampled from the run's ingested table) to a Parquet file in chunks, then prints in one table the
rows/s of both roads, their ratio, the peak resident memory of the scoring process (flat as --rows grows: the file
is streamed) and whether rows in = rows scored + rows quarantined. The input and output files are deleted at the
end (a 10M-row input is ~0.5 GB; it goes to the temporary folder, /tmp).

Both timings exclude loading the model: the raw road starts with the pipeline in memory, and the scoring process
loads the model once (timed apart, "model load") before score_file runs, which loads it again from warm imports.
--log also logs every row (as `mlops-kit score` does by default with --log), which costs more than the scoring.
"""
import argparse
import json
import shutil
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

SCORE = """
import json, resource, sys, time
a = json.loads(sys.argv[1])
t0 = time.perf_counter()
from mlops_kit.deploy.batch import score_file
from mlops_kit.deploy.serve import load_served_model
load_served_model(None, registry=a["registry"])   # imports and first load, timed apart
t1 = time.perf_counter()
s = score_file(a["input"], a["output"], registry=a["registry"], log=a["log"], chunk_rows=a["chunk_rows"], progress=False)
print(json.dumps({"seconds": time.perf_counter() - t1, "load": t1 - t0, "rows": s.rows_in, "scored": s.rows_scored,
                  "quarantined": s.rows_quarantined, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def course_model(work: Path) -> dict:
    "The registered course model in `work` (built by the pipeline up to package when it is not there yet)."
    from mlops_kit.model.package import package
    from mlops_kit.pipeline import prepare_inputs
    done = work / "model.json"
    if done.is_file(): return json.loads(done.read_text())
    print("building a course model (the pipeline up to package) ...", flush=True)
    prepare_inputs(work / "run", "package", log=lambda s: None)
    reg = {k: str(v) for k, v in package(work / "run").items()}
    done.write_text(json.dumps(reg))
    return reg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk-rows", type=int, default=100_000)
    ap.add_argument("--log", action="store_true")
    ap.add_argument("--work", type=Path, help="folder that keeps the course model between runs (default: a new one, deleted)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds the scoring process may take")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    files = Path(tempfile.mkdtemp(prefix="bench-batch-files-"))   # the big input and outputs: always deleted
    try:
        reg = course_model(work)
        run = work / "run"
        raw = pd.read_parquet(run / "data" / "ingested.parquet").drop(columns=["_row_id", "churned"], errors="ignore")
        lab = pd.read_parquet(run / "data" / "labelled.parquet")
        bundle = load_bundle(reg["path"])
        # the input file: raw rows sampled with replacement, written a chunk at a time
        src = files / "in.parquet"
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
        args = {"input": str(src), "output": str(files / "out.parquet"), "registry": reg["registry"],
                "log": str(files / "log.sqlite") if a.log else None, "chunk_rows": a.chunk_rows}
        res = json.loads(subprocess.run([sys.executable, "-c", SCORE, json.dumps(args)], capture_output=True, text=True,
                                        check=True, timeout=a.timeout).stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(files, ignore_errors=True)
        if a.work is None: shutil.rmtree(work, ignore_errors=True)
    raw_rate, rate = a.rows / raw_secs, res["rows"] / res["seconds"]
    adds_up = res["rows"] == a.rows == res["scored"] + res["quarantined"]
    print(f"\n{a.rows:,} raw rows, chunks of {a.chunk_rows:,}{', every row logged' if a.log else ''}")
    print(f"{'':28} {'rows/s':>10} {'seconds':>8}")
    print(f"{'pipeline.predict_proba':28} {raw_rate:10,.0f} {raw_secs:8.1f}   (cleaned rows, no checks, no output)")
    print(f"{'score_file':28} {rate:10,.0f} {res['seconds']:8.1f}   "
          f"({res['scored']:,} scored, {res['quarantined']:,} quarantined; model load {res['load']:.1f} s apart)")
    print(f"score_file / predict_proba: {rate / raw_rate:.2f}x (issue 12 asks >= 0.90x)")
    print(f"peak memory of the scoring process: {res['peak_mib']:,.0f} MiB")
    print(f"rows in = scored + quarantined: {'yes' if adds_up else 'NO'} "
          f"({res['rows']:,} = {res['scored']:,} + {res['quarantined']:,})")
    if not adds_up: sys.exit(1)


if __name__ == "__main__":
    main()
