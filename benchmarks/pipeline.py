"""How much does running the lifecycle as papermill notebooks cost?

Prints, side by side and as medians over --repeat runs:
  - the wall time of a full `mlops-kit run` (a fresh process, as a user runs it), and
  - the same steps (the cells `mlops-kit run` executes) in ONE Python process (no kernel, no notebook I/O),
and their ratio, then per step the papermill time, the in-process time and the difference (the
overhead papermill adds per step: kernel start, parameter injection, writing the executed notebook).

Usage: python benchmarks/pipeline.py [--repeat 3] [-p NAME VALUE ...]
"""
import __future__
import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlops_kit.params import merge_params, parameter_types, read_settings  # noqa: E402
from mlops_kit.steps import discover_steps, step_cells  # noqa: E402
from mlops_kit.runfolder import read_json  # noqa: E402


def run_cli(runs_dir: Path, overrides) -> tuple[float, dict]:
    cmd = [str(Path(sys.executable).parent / "mlops-kit"), "run", "--runs-dir", str(runs_dir), "--no-report"]
    for k, v in overrides: cmd += ["-p", k, v]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0: sys.exit(f"mlops-kit run failed:\n{res.stdout}{res.stderr}")
    # the newest run folder: the registry lives beside the run folders, and it has no manifest
    run = sorted(p for p in runs_dir.iterdir() if (p / "manifest.json").is_file())[-1]
    return wall, read_json(run / "manifest.json")


def run_in_process(steps, params: dict, run_dir: Path) -> dict[str, float]:
    "Execute each step's cells (as `mlops-kit run` picks them) in this process, parameters injected after its parameters cell."
    from IPython.display import display
    import matplotlib.pyplot as plt
    times = {}
    for step in steps:
        nb = step_cells(step.notebook)
        ns = {"__name__": "__main__", "display": display}
        inject = {k: v for k, v in params.items() if k in step.parameters}
        inject["run_dir"] = str(run_dir)
        cwd = os.getcwd()
        os.chdir(step.notebook.parent)
        t0 = time.perf_counter()
        try:
            for cell in nb.cells:
                if cell.cell_type != "code": continue
                src = "\n".join(l for l in cell.source.splitlines() if not l.lstrip().startswith(("%", "!")))
                # notebooks share `from __future__ import annotations` across cells; exec'd cells need it each time
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(src, step.notebook.name, "exec", flags=__future__.annotations.compiler_flag), ns)
                if "parameters" in cell.metadata.get("tags", []): ns.update(inject)
                plt.close("all")
        finally:
            os.chdir(cwd)
        times[step.name] = time.perf_counter() - t0
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = ap.parse_args()
    steps = discover_steps(ROOT / "nbs")
    defaults, _ = read_settings(ROOT / "settings.ini")
    params = merge_params(defaults, overrides=[tuple(p) for p in args.p], types=parameter_types(steps))

    cli_wall, cli_steps, inproc_total, inproc_steps = [], {s.name: [] for s in steps}, [], {s.name: [] for s in steps}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(args.repeat):
            wall, manifest = run_cli(tmp / "runs", args.p)
            cli_wall.append(wall)
            for r in manifest["steps"]: cli_steps[r["name"]].append(r["seconds"])
            t0 = time.perf_counter()
            per = run_in_process(steps, params, tmp / f"inproc-{i}")
            inproc_total.append(time.perf_counter() - t0)
            for k, v in per.items(): inproc_steps[k].append(v)

    med = statistics.median
    print(f"medians over {args.repeat} run(s); parameters: {dict(args.p) or 'settings.ini defaults'}\n")
    print(f"{'':34}{'mlops-kit run':>15}{'one process':>14}{'ratio':>8}")
    print(f"{'full pipeline, wall time (s)':34}{med(cli_wall):>15.2f}{med(inproc_total):>14.2f}{med(cli_wall) / med(inproc_total):>8.2f}")
    print("  (mlops-kit run includes interpreter start, step discovery, manifest, hashing)\n")
    print(f"{'step':18}{'papermill (s)':>15}{'in-process (s)':>16}{'overhead (s)':>14}")
    for s in steps:
        pm, ip = med(cli_steps[s.name]), med(inproc_steps[s.name])
        print(f"{s.name:18}{pm:>15.2f}{ip:>16.2f}{pm - ip:>14.2f}")


if __name__ == "__main__":
    main()
