"""How fast and how lean are validation and wrangling, next to plain pandas doing the same work?

Builds a table of about 1M rows like the ingested course table (the course data's dirt included: spelling
variants, fees in cents, numbers stored as text, mixed date formats, exact duplicates) by stacking the
ingested course table with its snapshot months shifted by whole years, so keys stay unique. Then, each in a
fresh Python process so that memory figures do not mix, and --repeat times:

  kit       mlops_kit.data.validate.check_batch with the run's contract, then
            mlops_kit.data.wrangle.apply_recipe with a recipe fitted on the course data
  baseline  plain pandas doing the same checks (missing, readable numbers and dates, ranges, domains after
            trimming/case/aliases, id pattern, duplicate keys and rows) and the same cleaning (respell,
            parse, rescale fees, drop duplicates, flag missing)

and prints side by side the median seconds, rows per second and their ratio (aim: kit within 2x of the
baseline), and the peak memory each adds on top of the loaded table, as a multiple of the table's in-memory
size (aim: under 3x).

Usage: python benchmarks/data.py [--rows 1000000] [--repeat 3]
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_table(rows: int, folder: Path) -> dict:
    "Write the benchmark table, its contract and a fitted recipe into `folder`; return their sizes."
    import pandas as pd
    from mlops_kit.data.ingest import ingest
    from mlops_kit.data.validate import derive_contract, save_contract
    from mlops_kit.data.wrangle import fit_recipe, save_recipe
    from mlops_kit.datasets import materialize_data
    from mlops_kit.design import default_spec
    from mlops_kit.runfolder import write_parquet
    spec = default_spec()
    run = folder / "run"
    materialize_data(run, "course", seed=42)
    base = ingest(run, spec).table
    contract = derive_contract(base, spec)
    save_contract(contract, folder / "contract.json")
    save_recipe(fit_recipe(base, contract), folder / "recipe.json")
    copies = -(-rows // len(base))
    frames = []
    for k in range(copies):  # shift months by k years: the same dirt, new keys
        f = base.copy()
        f["snapshot_month"] = (f.snapshot_month.str[:4].astype(int) + k).astype(str) + f.snapshot_month.str[4:]
        frames.append(f)
    big = pd.concat(frames, ignore_index=True).iloc[:rows]
    big["_row_id"] = range(len(big))
    write_parquet(folder / "table.parquet", big)
    return {"rows": len(big), "columns": big.shape[1]}


WORKER = r'''
import json, sys, time
from pathlib import Path
import pandas as pd, numpy as np
folder, which = Path(sys.argv[1]), sys.argv[2]

def rss_mib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field): return int(line.split()[1]) / 1024

df = pd.read_parquet(folder / "table.parquet")
size = df.memory_usage(deep=True).sum() / 2**20
contract = json.loads((folder / "contract.json").read_text())
if which == "kit":
    from mlops_kit.data.validate import load_contract, check_batch
    from mlops_kit.data.wrangle import load_recipe, apply_recipe
    c = load_contract(folder / "contract.json")
    recipe = load_recipe(folder / "recipe.json")
else:
    sys.path.insert(0, sys.argv[3]); from data import baseline_checks, baseline_clean
import gc; gc.collect()
before = rss_mib("VmRSS:")
Path("/proc/self/clear_refs").write_text("5")   # reset the peak-RSS counter: measure the work, not the load
t0 = time.perf_counter()
if which == "kit":
    res = check_batch(df, c)
    t1 = time.perf_counter()
    out = apply_recipe(res.kept, recipe).table
else:
    kept, counts = baseline_checks(df, contract)
    t1 = time.perf_counter()
    out = baseline_clean(kept, contract)
t2 = time.perf_counter()
print(json.dumps({"validate": t1 - t0, "wrangle": t2 - t1, "total": t2 - t0, "rows_out": len(out),
                  "peak_extra_mib": rss_mib("VmHWM:") - before, "table_mib": size}))
'''


def _fold(s):
    return s.astype("string").str.strip().str.casefold()


def baseline_checks(df, contract):
    "Plain pandas: the checks the contract asks for, column by column; rows with a blocking issue are removed."
    import numpy as np
    import pandas as pd
    counts, blocking = {}, np.zeros(len(df), dtype=bool)
    rules = {r["name"]: r for r in contract["columns"]}
    key = [c for c in (contract.get("id_column"), contract.get("time_column")) if c]
    for name, r in rules.items():
        s = df[name]
        missing = s.isna().to_numpy()
        counts[f"{name}.missing"] = int(missing.sum())
        if r["kind"] in ("integer", "number"):
            x = pd.to_numeric(s.astype("string").str.replace(",", ".", regex=False), errors="coerce").astype("float64")
            counts[f"{name}.type_error"] = int((x.isna().to_numpy() & ~missing).sum())
            lo, hi = r.get("min"), r.get("max")
            out = ((x < lo) if lo is not None else False) | ((x > hi) if hi is not None else False)
            counts[f"{name}.out_of_range"] = int(np.asarray(out, dtype=bool).sum())
        elif r["kind"] == "date":
            d = pd.to_datetime(s, errors="coerce", format="mixed")
            counts[f"{name}.type_error"] = int((d.isna().to_numpy() & ~missing).sum())
        elif r["kind"] == "category" and r.get("domain"):
            aliases = {k.casefold(): v for k, v in (r.get("aliases") or {}).items()}
            canon = {v.casefold(): v for v in r["domain"]}
            f = _fold(s)
            known = f.isin(list(canon) + list(aliases)).fillna(False).to_numpy(dtype=bool)
            counts[f"{name}.unknown_category"] = int((~known & ~missing).sum())
        if r.get("pattern"):
            ok = s.astype("string").str.fullmatch(r["pattern"]).fillna(False).to_numpy(dtype=bool)
            counts[f"{name}.bad_id"] = int((~ok & ~missing).sum())
        if name in key: blocking |= missing
    values = [c for c in df.columns if c != "_row_id"]
    dup_row = df.duplicated(subset=values, keep=False)
    counts["duplicate_row"] = int(df.duplicated(subset=values).sum())
    if key:
        dup_key = df.duplicated(subset=key, keep=False) & ~dup_row
        blocking |= dup_key.to_numpy()
        counts["duplicate_key"] = int(dup_key.sum())
    return df[~blocking], counts


def baseline_clean(df, contract):
    "Plain pandas: respell categories, parse numbers and dates, rescale fees in cents, drop duplicates, flag missing."
    import pandas as pd
    out = df.drop_duplicates(subset=[c for c in df.columns if c != "_row_id"]).copy()
    for r in contract["columns"]:
        name, kind = r["name"], r["kind"]
        if name in (contract.get("id_column"), contract.get("time_column"), contract.get("target")): continue
        s = out[name]
        if kind == "category" and r.get("domain"):
            lookup = {v.casefold(): v for v in r["domain"]} | {k.casefold(): v for k, v in (r.get("aliases") or {}).items()}
            folded = _fold(s)
            out[name] = folded.map(lookup).where(folded.isin(list(lookup)), s)
        elif kind in ("integer", "number"):
            x = pd.to_numeric(s.astype("string").str.replace(",", ".", regex=False), errors="coerce").astype("float64")
            if r.get("max") is not None: x = x.where(~(x > r["max"]), x / 100)
            out[name] = x
        elif kind == "date":
            out[name] = pd.to_datetime(s, errors="coerce", format="mixed")
        if out[name].isna().any(): out[f"{name}_missing"] = out[name].isna().astype("int8")
    return out


def measure(folder: Path, which: str) -> dict:
    res = subprocess.run([sys.executable, "-c", WORKER, str(folder), which, str(Path(__file__).parent)],
                         capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0: raise RuntimeError(f"{which} worker failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlops-kit-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        info = build_table(args.rows, folder)
        print(f"table: {info['rows']:,} rows x {info['columns']} columns (built in {time.perf_counter() - t0:.0f} s); "
              f"{args.repeat} runs each, medians", flush=True)
        runs = {w: [measure(folder, w) for _ in range(args.repeat)] for w in ("kit", "baseline")}
        print(f"in memory, as read from Parquet: {runs['kit'][0]['table_mib']:.0f} MiB\n")
    med = {w: {k: statistics.median(r[k] for r in rs) for k in ("validate", "wrangle", "total", "peak_extra_mib")}
           for w, rs in runs.items()}
    size = runs["kit"][0]["table_mib"]
    print(f"{'':<24}{'mlops-kit':>14}{'plain pandas':>14}{'ratio':>9}")
    for k, label in (("validate", "validate (s)"), ("wrangle", "wrangle (s)"), ("total", "validate + wrangle (s)")):
        print(f"{label:<24}{med['kit'][k]:>14.2f}{med['baseline'][k]:>14.2f}{med['kit'][k] / med['baseline'][k]:>8.2f}x")
    rps = {w: info["rows"] / med[w]["total"] for w in med}
    print(f"{'rows per second':<24}{rps['kit']:>14,.0f}{rps['baseline']:>14,.0f}{rps['kit'] / rps['baseline']:>8.2f}x")
    print(f"{'peak extra memory (MiB)':<24}{med['kit']['peak_extra_mib']:>14.0f}{med['baseline']['peak_extra_mib']:>14.0f}")
    print(f"{'  x table size':<24}{med['kit']['peak_extra_mib'] / size:>14.2f}{med['baseline']['peak_extra_mib'] / size:>14.2f}")
    ratio = med["kit"]["total"] / med["baseline"]["total"]
    print(f"\ntime ratio {ratio:.2f}x (aim: at most 2x); kit peak extra memory {med['kit']['peak_extra_mib'] / size:.2f}x "
          f"the table's {size:.0f} MiB (aim: under 3x)")


if __name__ == "__main__":
    main()
