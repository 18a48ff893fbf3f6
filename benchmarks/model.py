"""What does the model bundle cost at prediction time, next to the raw fitted scikit-learn pipeline?

Makes a run folder of the default course data (the data steps, then features, train, evaluate and acceptance, as
library calls in this process; or uses --run-dir, e.g. a folder `mlops-kit run` wrote), builds its bundle, and then,
--repeat times with the two contenders interleaved so that a busy machine slows both alike, measures:

  batch   Bundle.predict / Bundle.predict_proba on --rows rows (the labelled rows, stacked), next to
          pipeline.predict / pipeline.predict_proba of the same fitted pipeline on the same DataFrame
  1 row   the same, one row at a time (what an online service does): the fixed cost of the input check
  load    load_bundle (check that it is a bundle, hash every file, check the pipeline's types, build it) next to
          skops.io.load of the bare pipeline.skops with the same trusted types

and prints side by side the medians, rows per second, their ratio and the median of the per-round speed ratios
(aim: the bundle at least 0.9x the raw pipeline's rows per second). Native thread pools (OpenMP, BLAS) are limited to one
thread while measuring: the bundle adds work only in Python, and on a shared machine multi-threaded prediction
times swing by tens of percent from one call to the next.

Usage: python benchmarks/model.py [--rows 50000] [--repeat 15] [--run-dir DIR]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_run(folder: Path, seed: int = 42) -> Path:
    "A run folder of the default course data with every output the package step reads, made by the steps' functions."
    from mlops_kit.data.ingest import ingest
    from mlops_kit.data.label import label
    from mlops_kit.data.split import split
    from mlops_kit.data.validate import validate
    from mlops_kit.data.wrangle import wrangle
    from mlops_kit.datasets import materialize_data
    from mlops_kit.design import save_spec, spec_for_run
    from mlops_kit.model.acceptance import accept
    from mlops_kit.model.evaluate import evaluate
    from mlops_kit.model.features import make_features
    from mlops_kit.model.train import train
    spec = spec_for_run(data="course")
    save_spec(spec, folder / "spec.yaml")
    materialize_data(folder, "course", seed=seed)
    for step in (ingest, validate, wrangle, label, split): step(folder, spec)
    make_features(folder, spec)
    train(folder, spec, seed=seed)
    evaluate(folder, spec)
    accept(folder, spec)
    return folder


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def race(bundle, raw, repeat: int) -> tuple[float, float, float]:
    "Median seconds of `bundle` and `raw`, and the median of their per-round speed ratio (raw time / bundle time).\n\n"
    "The two run back to back in every round, in alternating order, so a busy machine slows both alike and the\n"
    "per-round ratio cancels most of the noise that the separate medians keep."
    bundle(), raw()                                  # warm caches first: the first call of each pays for them
    tb, tr = [], []
    for i in range(repeat):
        if i % 2: tr.append(timed(raw)); tb.append(timed(bundle))
        else: tb.append(timed(bundle)); tr.append(timed(raw))
    return statistics.median(tb), statistics.median(tr), statistics.median(r / b for b, r in zip(tb, tr))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--run-dir", type=Path, default=None, help="a run folder with model/ outputs (default: build one)")
    args = ap.parse_args()
    import numpy as np
    import pandas as pd
    import skops.io as sio
    from threadpoolctl import threadpool_limits
    from mlops_kit.model.features import LABELLED_FILE
    from mlops_kit.model.package import build_bundle, check_input, load_bundle, split_untrusted_types

    with tempfile.TemporaryDirectory(prefix="mlops-kit-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        run = args.run_dir.resolve() if args.run_dir else make_run(tmp / "run")
        bundle_dir = build_bundle(run, tmp / "bundle")
        built = time.perf_counter() - t0
        bundle = load_bundle(bundle_dir)
        pipe_file = bundle_dir / "pipeline.skops"
        trusted, _ = split_untrusted_types(pipe_file.read_bytes())
        raw = sio.load(pipe_file, trusted=trusted)
        labelled = pd.read_parquet(run / LABELLED_FILE)
        df = pd.concat([labelled] * -(-args.rows // len(labelled)), ignore_index=True).iloc[: args.rows]
        one = df.iloc[:1]
        m = bundle.metadata
        print(f"{'built' if not args.run_dir else 'read'} run folder and bundle in {built:.0f} s: {bundle.name}, {m['task']}, "
              f"{m['model']['estimator']}, {len(bundle.inputs)} input columns; {len(df):,} rows x {df.shape[1]} columns; "
              f"{args.repeat} rounds, medians\n")

        if bundle.task == "regression":
            pairs = {"predict": (lambda: bundle.predict(df), lambda: raw.predict(df))}
            single = (lambda: bundle.predict(one), lambda: raw.predict(one))
        else:
            pairs = {"predict": (lambda: bundle.predict(df), lambda: raw.predict(df)),
                     "predict_proba": (lambda: bundle.predict_proba(df), lambda: raw.predict_proba(df))}
            single = (lambda: bundle.predict_proba(one), lambda: raw.predict_proba(one))
        # same answers first: a fast wrong bundle would be worthless
        if bundle.task == "regression": assert np.array_equal(bundle.predict(df), raw.predict(df))
        else: assert np.array_equal(bundle.predict_proba(df), raw.predict_proba(df))

        print(f"{'':<30}{'bundle':>14}{'raw pipeline':>14}{'ratio':>9}{'paired':>9}")
        ratios = {}
        with threadpool_limits(limits=1):
            for what, (kit, base) in pairs.items():
                b, r, ratios[what] = race(kit, base, args.repeat)
                print(f"{what + ' (s)':<30}{b:>14.3f}{r:>14.3f}")
                print(f"{what + ' rows per second':<30}{len(df) / b:>14,.0f}{len(df) / r:>14,.0f}{r / b:>8.2f}x{ratios[what]:>8.2f}x")
            b, r, ratio = race(*single, max(args.repeat, 5) * 10)
            print(f"{'one row (ms)':<30}{b * 1e3:>14.2f}{r * 1e3:>14.2f}{r / b:>8.2f}x{ratio:>8.2f}x")
            check = statistics.median(timed(lambda: check_input(df, bundle.schema)) for _ in range(args.repeat))
            print(f"{'  of which input check (ms)':<30}{check * 1e3:>14.3f}")
        load_b, load_r, ratio = race(lambda: load_bundle(bundle_dir), lambda: sio.load(pipe_file, trusted=trusted), args.repeat)
        print(f"{'load (ms)':<30}{load_b * 1e3:>14.1f}{load_r * 1e3:>14.1f}{load_r / load_b:>8.2f}x{ratio:>8.2f}x")
        print("(ratio: the bundle's speed as a multiple of the raw pipeline's, from the medians; paired: the median of the\n"
              " per-round ratios, which a busy machine disturbs less)")
        size = sum(p.stat().st_size for p in bundle_dir.iterdir())
        print(f"\nbundle: {len(list(bundle_dir.iterdir()))} files, {size / 1024:.0f} KiB (pipeline.skops {pipe_file.stat().st_size / 1024:.0f} KiB)")
        worst = min(ratios.values())
        print(f"batch rows per second through the bundle: {worst:.2f}x the raw pipeline at worst, paired (aim: at least 0.9x); "
              f"bundle load {load_b * 1e3:.0f} ms, hashes and type checks included")


if __name__ == "__main__":
    main()
