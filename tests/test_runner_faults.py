"""`mlops-kit run` under faults: kill -9, Ctrl-C, a second writer, a full disk, a notebook cut off half-way."""
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
import contextlib
from pathlib import Path

import pytest

from conftest import BIN, run_cli
import mlops_kit.pipeline as pipeline
from mlops_kit.cli import main
from mlops_kit.runs import LOCK_FILE
from mlops_kit.steps import make_demo_project


@pytest.fixture
def demo(tmp_path):
    "A demo project (three quick steps; the second waits `-p wait` seconds) and a runs folder: (project, runs, env)."
    fake = make_demo_project(tmp_path / "proj")
    return fake, tmp_path / "runs", {"MLOPS_KIT_ROOT": str(fake)}


def start_run(runs, env, *args):
    "Start `mlops-kit run` in the background, as a user in a terminal would."
    return subprocess.Popen([str(BIN / "mlops-kit"), "run", "--runs-dir", str(runs), "--no-report", *map(str, args)],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc, runs, step, timeout=180):
    "The run folder once its manifest shows `step` running (the run is mid-step), or fail after `timeout` seconds."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None: raise AssertionError(f"the run ended before {step!r} started: {proc.communicate()}")
        for mf in runs.glob("*/manifest.json"):
            try: m = json.loads(mf.read_text())
            except (ValueError, OSError): continue
            if any(r["name"] == step and r["status"] == "running" for r in m["steps"]): return mf.parent
        time.sleep(0.2)
    raise AssertionError(f"step {step!r} never started in {runs}")


def children(pid):
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def reap(pids):
    "Stop the processes the test's runner started (its kernel), by pid."
    for p in pids:
        with contextlib.suppress(ProcessLookupError): os.kill(p, signal.SIGKILL)


def manifest(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())


def test_a_killed_run_shows_as_interrupted_and_resumes(demo):
    fake, runs, env = demo
    proc = start_run(runs, env, "-p", "wait", "8")
    try:
        run_dir = wait_for_step(proc, runs, "second")
        kids = children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None: proc.kill()
        proc.communicate(timeout=60)
    reap(kids)
    m = manifest(run_dir)
    assert m["status"] == "running"  # the dead runner could not say so ...
    assert m["owner"]["pid"] == proc.pid and m["owner"]["host"]
    listing = run_cli("runs", "--runs-dir", runs, env=env)
    assert "interrupted" in listing.stdout and "running" not in listing.stdout, listing.stdout  # ... but the index knows
    res = run_cli("run", "--runs-dir", runs, "--resume", run_dir.name, "--no-report", env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "first        already succeeded, skipped" in res.stdout
    assert manifest(run_dir)["status"] == "succeeded"


def test_ctrl_c_records_interrupted_and_exits_130_with_one_line(demo):
    fake, runs, env = demo
    proc = start_run(runs, env, "-p", "wait", "30")
    try:
        run_dir = wait_for_step(proc, runs, "second")
        kids = children(proc.pid)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None: proc.kill(); proc.communicate(timeout=60)
    reap(kids)
    assert proc.returncode == 130, out + err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and f"--resume {run_dir.name}" in lines[0], err
    m = manifest(run_dir)
    assert m["status"] == "interrupted"
    assert [r["status"] for r in m["steps"]] == ["succeeded", "interrupted", "pending"]
    assert not (run_dir / "b.txt").exists() and "second" not in m["metrics"]  # the step's cell was stopped too
    assert "interrupted" in run_cli("runs", "--runs-dir", runs, env=env).stdout


def test_a_second_writer_of_a_live_run_is_refused(demo):
    fake, runs, env = demo
    proc = start_run(runs, env, "-p", "wait", "25")
    try:
        run_dir = wait_for_step(proc, runs, "second")
        second = run_cli("run", "--runs-dir", runs, "--resume", run_dir.name, "--no-report", env=env)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "still being written by pid" in second.stderr and str(proc.pid) in second.stderr, second.stderr
        assert "running" in run_cli("runs", "--runs-dir", runs, env=env).stdout  # the live run is not mistaken for a dead one
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None: proc.kill(); proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    m = manifest(run_dir)
    assert m["status"] == "succeeded" and "resumes" not in m  # the refused resume changed nothing
    # the lock of a finished (or dead) run blocks nobody
    assert (run_dir / LOCK_FILE).is_file()
    again = run_cli("run", "--runs-dir", runs, "--resume", run_dir.name, "--no-report", env=env)
    assert again.returncode == 0 and "already succeeded, skipped" in again.stdout, again.stdout + again.stderr


def test_a_full_disk_gives_one_clear_line_and_resume_works_once_space_is_back(demo, monkeypatch):
    fake, runs, env = demo
    monkeypatch.setenv("MLOPS_KIT_ROOT", str(fake))
    real, calls = pipeline.write_json, []

    def full_disk(path, obj):  # the fifth manifest write (the one after the second step ran) hits a full disk
        calls.append(path)
        if len(calls) == 5: raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(pipeline, "write_json", full_disk)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", "--runs-dir", str(runs), "--no-report"])
    assert code == 1, out.getvalue() + err.getvalue()
    lines = [l for l in err.getvalue().splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
    (run_dir,) = [p for p in runs.iterdir()]
    assert "No space left on device" in lines[0] and str(run_dir / "manifest.json") in lines[0]
    assert f"--resume {run_dir.name}" in lines[0]
    m = manifest(run_dir)  # the last complete manifest, not a cut-off one
    assert m["status"] == "running" and m["steps"][0]["status"] == "succeeded"
    monkeypatch.setattr(pipeline, "write_json", real)  # space is back
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["run", "--runs-dir", str(runs), "--resume", run_dir.name, "--no-report"]) == 0, err.getvalue()
    assert manifest(run_dir)["status"] == "succeeded"


def test_an_executed_notebook_is_never_left_cut_off(demo, monkeypatch):
    fake, runs, env = demo
    import papermill
    real = papermill.execute_notebook

    def disk_fills_while_writing(input_path, output_path, **kw):
        if "20_second" not in str(input_path): return real(input_path, output_path, **kw)
        Path(output_path).write_text('{"cells": [{"cell_type": "code", "sou')  # cut off half-way
        raise OSError(errno.ENOSPC, "No space left on device", str(output_path))

    monkeypatch.setattr(papermill, "execute_notebook", disk_fills_while_writing)
    res = pipeline.run_pipeline(root=fake, runs_dir=runs, log=lambda s: None, report=False)
    assert res.status == "failed" and "No space left on device" in res.error, res.error
    nbs = res.run_dir / "notebooks"
    assert sorted(p.name for p in nbs.iterdir()) == ["10_first.ipynb"]  # no half notebook, under any name
    json.loads((nbs / "10_first.ipynb").read_text())
