"""The kit's service (contract, recipe and durable logging on) next to a bare FastAPI endpoint around the same fitted
pipeline (no validation, no logging), single-row requests over loopback at concurrency 1 and 16.

    .venv/bin/python benchmarks/serve.py [--requests 600] [--repeats 3] [--distinct 500]

Prints requests/s and p50/p99 latency (ms) for both, medians over the repeats, and the kit/bare throughput ratio.
Both servers run one uvicorn worker with OMP_NUM_THREADS=1 (one-row predictions are slower with more threads on 2 cores).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from mlops_kit.deploy.serve import free_port, load_served_model, start_service, stop_service
from mlops_kit.model.package import package
from mlops_kit.pipeline import prepare_inputs

BARE = """
import sys, pandas as pd, uvicorn
from fastapi import FastAPI, Request
from mlops_kit.model.bundle import load_bundle
pipe = load_bundle(sys.argv[1]).pipeline
app = FastAPI()
@app.post("/predict")
async def predict(request: Request):
    rows = (await request.json())["rows"]
    return {"probabilities": pipe.predict_proba(pd.DataFrame(rows)).tolist()}
@app.get("/ready")
def ready(): return {"ok": True}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def start_bare(bundle_dir: Path, out: Path):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", BARE, str(bundle_dir), str(port)], stdout=open(out, "wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200: return p, url
        except httpx.HTTPError: time.sleep(0.1)
    p.kill(); raise RuntimeError(out.read_text())


def load(url: str, bodies: list[dict], n: int, concurrency: int) -> dict:
    "Send `n` requests, cycling through `bodies` (distinct rows: caches see realistic traffic, not one row repeated)."
    lat = []
    with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)) as c:
        for i in range(20): c.post("/predict", json=bodies[i % len(bodies)])   # warm up
        def one(i):
            t0 = time.perf_counter(); r = c.post("/predict", json=bodies[i % len(bodies)]); ms = (time.perf_counter() - t0) * 1000
            assert r.status_code == 200, r.text
            return ms
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool: lat = list(pool.map(one, range(n)))
        secs = time.perf_counter() - t0
    return {"rps": n / secs, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--distinct", type=int, default=500, help="distinct rows cycled through (default 500)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    run = work / "run"
    print("building a course model (the pipeline up to package) ...", flush=True)
    prepare_inputs(run, "package", log=lambda s: None)
    reg = package(run)
    model = load_served_model(registry=reg["registry"])
    fields = [f["name"] for f in model.scorer.fields]
    raw = pd.read_parquet(run / "data" / "ingested.parquet")
    lab = pd.read_parquet(run / "data" / "labelled.parquet")
    raw_rows = json.loads(raw[fields].to_json(orient="records", date_format="iso"))
    # distinct rows the label step kept (so the bare endpoint gets each one's cleaned twin), in the same order for both
    kept = set(lab["_row_id"])
    pos = [i for i, r in enumerate(raw["_row_id"]) if r in kept][: a.distinct]
    kit_bodies = [{"rows": [raw_rows[i]]} for i in pos]
    clean = lab.set_index("_row_id").loc[raw["_row_id"].iloc[pos], model.bundle.inputs]
    bare_bodies = [{"rows": [r]} for r in json.loads(clean.to_json(orient="records", date_format="iso"))]
    kit = start_service(registry=reg["registry"], log=work / "log.sqlite", poll_seconds=0, output=work / "kit.txt")
    bare, bare_url = start_bare(Path(reg["path"]), work / "bare.txt")
    try:
        results = {}
        for conc in (1, 16):
            for name, url, bodies in (("kit", kit.url, kit_bodies), ("bare", bare_url, bare_bodies)):
                runs = [load(url, bodies, a.requests, conc) for _ in range(a.repeats)]
                results[(name, conc)] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    finally:
        stop_service(kit); bare.terminate(); bare.wait(timeout=10)
    print(f"\n{a.requests} single-row requests per measurement cycling {len(pos)} distinct rows, median of {a.repeats}; "
          "loopback, 1 uvicorn worker each")
    print(f"{'concurrency':>11} | {'kit req/s':>9} {'p50 ms':>7} {'p99 ms':>7} | {'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | kit/bare")
    for conc in (1, 16):
        k, b = results[("kit", conc)], results[("bare", conc)]
        print(f"{conc:>11} | {k['rps']:9.1f} {k['p50']:7.2f} {k['p99']:7.2f} | {b['rps']:10.1f} {b['p50']:7.2f} {b['p99']:7.2f} | {k['rps'] / b['rps']:.2f}x")


if __name__ == "__main__":
    main()
