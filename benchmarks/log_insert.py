"""How fast does the inference log take rows, with every row committed (fsync'd) before it is acknowledged?

Measures, --repeat times each on a fresh log file, and prints the median rows per second (and the spread):

  write_frame (dicts)   InferenceLog.write_frame of --rows rows whose inputs/outputs are dicts (JSON made row by row)
  write_frame (JSON)    the same rows with inputs/outputs already JSON text from json_records (what batch scoring does)
  write x16 threads     16 threads calling write([one record]) --writes times each, as a web server's thread pool does:
                        one writer groups them (group commit); the commits per write show how much was shared
  write x1 thread       one thread, one record per call: one commit per row (the cost group commit saves)

Request ids: uuid4 for online writes (what the service sends back), "<batch_id>-<row>" for batch frames.
Aim (issue 12): at least 20,000 rows/s for write_frame. The log is on the disk of --dir (default: a temporary folder);
a RAM disk would hide the fsync that the durability promise is about, so measure on the disk the service will use.

Usage: python benchmarks/log_insert.py [--rows 100000] [--writes 200] [--repeat 5] [--dir DIR]
"""
import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mlops_kit.deploy.log import InferenceLog, json_records  # noqa: E402


def inputs_frame(n: int, seed: int = 0) -> pd.DataFrame:
    "Raw input rows shaped like the course business's requests: ids, numbers, categories, a date."
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"customer_id": [f"C{i:07d}" for i in range(n)], "plan": rng.choice(["basic", "plus", "pro"], n),
                         "monthly_fee": rng.choice([19.0, 29.0, 49.0], n), "tenure_months": rng.integers(1, 60, n),
                         "failed_payments": rng.poisson(0.5, n), "support_tickets": rng.poisson(1.0, n),
                         "usage_minutes": rng.gamma(2.0, 300.0, n).round(1), "region": rng.choice(["north", "south", "east"], n),
                         "signup_date": "2024-03-01"})


def outputs_frame(n: int, seed: int = 1) -> pd.DataFrame:
    p = np.random.default_rng(seed).random(n)
    return pd.DataFrame({"prediction": (p >= 0.5).astype(int), "proba_0": 1 - p, "proba_1": p, "decision": (p >= 0.3).astype(int)})


def log_frame(n: int, as_json: bool, batch_id: str) -> pd.DataFrame:
    ins, outs = inputs_frame(n), outputs_frame(n)
    return pd.DataFrame({
        "request_id": [f"{batch_id}-{i:09d}" for i in range(n)], "time": pd.Timestamp.now(tz="UTC"),
        "model_name": "subscription_churn", "model_version": 3, "fingerprint": "sha256:" + "ab" * 32,
        "inputs": json_records(ins) if as_json else ins.to_dict("records"),
        "outputs": json_records(outs) if as_json else outs.to_dict("records"),
        "latency_ms": 0.05, "served_by": "batch", "batch_id": batch_id})


def bench_frame(folder: Path, rows: int, as_json: bool) -> dict:
    "Rows per second of one write_frame call (the frame is built beforehand, as batch scoring has it in hand)."
    batch_id = uuid.uuid4().hex[:12]
    frame = log_frame(rows, as_json, batch_id)
    with InferenceLog(folder / f"frame-{batch_id}.sqlite") as log:
        t0 = time.perf_counter()
        assert log.write_frame(frame) == rows
        seconds = time.perf_counter() - t0
        return {"rows/s": rows / seconds, "commits/write": float(log.commits)}


def one_record(inputs: dict, outputs: dict) -> dict:
    return {"request_id": uuid.uuid4().hex, "time": pd.Timestamp.now(tz="UTC").isoformat(), "model_name": "subscription_churn",
            "model_version": 3, "fingerprint": "sha256:" + "ab" * 32, "inputs": inputs, "outputs": outputs,
            "latency_ms": 3.1, "served_by": "champion"}


def bench_writes(folder: Path, threads: int, writes: int) -> dict:
    "Rows per second of `threads` threads each calling write([one record]) `writes` times."
    ins, outs = inputs_frame(writes, seed=2).to_dict("records"), outputs_frame(writes, seed=3).to_dict("records")
    start = threading.Barrier(threads)
    with InferenceLog(folder / f"writes-{uuid.uuid4().hex[:8]}.sqlite") as log:
        def client(_):
            start.wait(timeout=60)
            for i in range(writes): log.write([one_record(ins[i], outs[i])])
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool: list(pool.map(client, range(threads), timeout=600))
        seconds = time.perf_counter() - t0
        return {"rows/s": threads * writes / seconds, "commits/write": log.commits / (threads * writes)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows per write_frame call")
    ap.add_argument("--writes", type=int, default=200, help="write() calls per thread")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="folder for the log files (default: a temporary folder)")
    args = ap.parse_args()
    cases = {"write_frame (dicts)": lambda d: bench_frame(d, args.rows, as_json=False),
             "write_frame (JSON)": lambda d: bench_frame(d, args.rows, as_json=True),
             "write x16 threads": lambda d: bench_writes(d, 16, args.writes),
             "write x1 thread": lambda d: bench_writes(d, 1, max(50, args.writes // 2))}
    results = {name: [] for name in cases}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.repeat):
            for name, case in cases.items():   # interleaved: a busy machine slows every case alike
                results[name].append(case(Path(tmp)))
            print(f"round {r + 1}/{args.repeat}: " + ", ".join(f"{n} {res[-1]['rows/s']:,.0f}" for n, res in results.items()),
                  file=sys.stderr, flush=True)
    print(f"\ninference log inserts, median of {args.repeat} rounds (every row committed before write returns)")
    print(f"{'case':<22}{'rows/s':>12}{'min':>10}{'max':>10}{'commits/write':>15}")
    for name, res in results.items():
        speeds = [x["rows/s"] for x in res]
        print(f"{name:<22}{statistics.median(speeds):>12,.0f}{min(speeds):>10,.0f}{max(speeds):>10,.0f}"
              f"{statistics.median(x['commits/write'] for x in res):>15.3f}")
    frame_speed = statistics.median(x["rows/s"] for x in results["write_frame (JSON)"])
    print(f"\naim: write_frame >= 20,000 rows/s: {'met' if frame_speed >= 20_000 else 'NOT met'} ({frame_speed:,.0f} rows/s with JSON "
          "text from json_records)")


if __name__ == "__main__":
    main()
