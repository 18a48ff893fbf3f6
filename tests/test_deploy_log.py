"""The inference log (mlops_kit.deploy.log): every acknowledged record is committed, concurrent writers share commits,
a failed write raises LogUnavailable and leaves nothing half-written, a SIGKILL loses no acknowledged record."""
import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from mlops_kit.deploy.log import (COLUMNS, SCHEMA_VERSION, InferenceLog, LogUnavailable, export_log, json_records,
                                  query_log, read_log)
from mlops_kit.sqlite import connect, connect_readonly

ROOT = Path(__file__).resolve().parent.parent


def record(rid, **kw) -> dict:
    r = dict(request_id=str(rid), time="2026-12-02T13:00:00Z", model_name="subscription_churn", model_version=3,
             fingerprint="sha256:ab12", inputs={"customer_id": f"C{rid}", "monthly_fee": 29.0},
             outputs={"prediction": 1, "proba_1": 0.7, "decision": 1}, latency_ms=2.5, served_by="champion", batch_id=None)
    r.update(kw)
    return r


def logged_ids(path) -> list[str]:
    with contextlib.closing(connect_readonly(path)) as con:
        return [r[0] for r in con.execute("SELECT request_id FROM predictions ORDER BY rowid")]


def fill_disk(log: InferenceLog) -> None:
    "What a full disk looks like to SQLite: the writer's connection may not grow the file beyond its current pages."
    log._run_in_writer(lambda c: c.execute("PRAGMA max_page_count = %d" % c.execute("PRAGMA page_count").fetchone()[0]))


def free_disk(log: InferenceLog) -> None:
    log._run_in_writer(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))


# -- concurrency ---------------------------------------------------------------------------------------------------

def test_many_threads_every_record_committed_in_fewer_commits(tmp_path):
    path = tmp_path / "log.sqlite"
    threads, writes = 24, 30
    log = InferenceLog(path)
    def client(k):
        for i in range(writes):
            log.write([record(f"{k}-{i}-{j}") for j in range(1 + (i % 3))])   # 1 to 3 rows per request
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(client, range(threads), timeout=120))
    log.close()
    expected = {f"{k}-{i}-{j}" for k in range(threads) for i in range(writes) for j in range(1 + (i % 3))}
    ids = logged_ids(path)
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected
    assert log.rows_written == len(expected)
    assert log.commits < threads * writes / 2, f"{log.commits} commits for {threads * writes} writes: no grouping"


def test_write_returns_only_after_commit_visible_to_another_connection(tmp_path):
    path = tmp_path / "log.sqlite"
    seen = []
    with InferenceLog(path) as log:
        def client(k):
            for i in range(20):
                log.write([record(f"{k}-{i}")])
                with contextlib.closing(connect_readonly(path)) as ro:   # another connection, right after write returned
                    seen.append(ro.execute("SELECT COUNT(*) FROM predictions WHERE request_id = ?", (f"{k}-{i}",)).fetchone()[0])
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(client, range(8), timeout=120))
    assert seen == [1] * 160


def test_a_refused_caller_does_not_fail_the_others_in_its_group(tmp_path):
    path = tmp_path / "log.sqlite"
    with InferenceLog(path, max_wait_ms=20) as log:
        log.write([record("taken")])
        barrier = threading.Barrier(8)
        outcomes = {}
        def client(k):
            barrier.wait(timeout=30)
            try:
                log.write([record(f"ok-{k}")] + ([record("taken")] if k == 3 else []))
                outcomes[k] = "ok"
            except ValueError as e:
                outcomes[k] = str(e)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(client, range(8), timeout=60))
    assert "already in the inference log" in outcomes.pop(3)
    assert set(outcomes.values()) == {"ok"}
    ids = logged_ids(path)
    assert "ok-3" not in ids                                   # the refused caller's other row is not half-written
    assert sorted(ids) == sorted(["taken"] + [f"ok-{k}" for k in range(8) if k != 3])


def test_readers_read_while_the_writer_writes(tmp_path):
    path = tmp_path / "log.sqlite"
    stop = threading.Event()
    counts = []
    with InferenceLog(path) as log:
        log.write([record("first")])
        def reader():
            while not stop.is_set():
                counts.append(len(read_log(path)))
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        for i in range(100):
            log.write([record(i)])
        stop.set()
        t.join(timeout=30)
    assert not t.is_alive()
    assert counts and counts == sorted(counts) and counts[-1] <= 101


# -- failures --------------------------------------------------------------------------------------------------------

def test_full_disk_raises_log_unavailable_and_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "log.sqlite"
    with InferenceLog(path) as log:
        log.write([record("before")])
        fill_disk(log)
        errors = []
        def big(k):
            try: log.write([record(f"{k}-{i}", inputs={"blob": "x" * 4000}) for i in range(40)])
            except LogUnavailable as e: errors.append(str(e))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(big, range(4), timeout=60))
        assert len(errors) == 4
        assert all("is full" in e and "free space" in e and "database or disk is full" in e for e in errors)
        with pytest.raises(LogUnavailable, match="is full"):
            log.write_frame(pd.DataFrame([record(f"f{i}", inputs={"blob": "y" * 4000}) for i in range(100)]))
        with pytest.raises(LogUnavailable, match="is full"):
            log.add_feedback([{"request_id": "before", "label": "x" * 100_000}])
        assert logged_ids(path) == ["before"]
        assert log.rows_written == 1
        free_disk(log)                                   # room again: the same log writes again, no restart
        log.write([record("after")])
    assert logged_ids(path) == ["before", "after"]
    assert len(read_log(path, table="feedback")) == 0


def test_lock_held_beyond_the_timeout_is_log_unavailable(tmp_path):
    path = tmp_path / "log.sqlite"
    with InferenceLog(path, timeout=0.3) as log:
        other = connect(path)
        other.execute("BEGIN IMMEDIATE")
        try:
            t0 = time.monotonic()
            with pytest.raises(LogUnavailable, match="held the log's write lock for more than 0.3 s"):
                log.write([record("r1")])
            assert time.monotonic() - t0 < 10
        finally:
            other.execute("ROLLBACK")
            other.close()
        log.write([record("r2")])
    assert logged_ids(path) == ["r2"]


def test_closed_log_refuses_and_close_commits_what_was_queued(tmp_path):
    path = tmp_path / "log.sqlite"
    log = InferenceLog(path)
    acked, refused = [], []
    go = threading.Event()
    def client(k):
        go.wait(timeout=30)
        for i in range(200):
            try:
                log.write([record(f"{k}-{i}")])
                acked.append(f"{k}-{i}")
            except LogUnavailable as e:
                assert "the log is closed" in str(e)
                refused.append(f"{k}-{i}")
                return
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, k) for k in range(8)]
        go.set()
        time.sleep(0.2)
        log.close()
        for f in futures: f.result(timeout=60)
    ids = set(logged_ids(path))
    assert set(acked) <= ids                          # every acknowledged write is in the log ...
    assert not (set(refused) & ids)                   # ... and no refused one
    with pytest.raises(LogUnavailable, match="the log is closed"):
        log.write([record("late")])
    with pytest.raises(LogUnavailable, match="the log is closed"):
        log.write_frame(pd.DataFrame([record("late")]))


def test_bad_records_are_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "log.sqlite"
    with InferenceLog(path) as log:
        with pytest.raises(ValueError, match=r"unknown keys \['modelversion'\]"):
            log.write([record("a"), record("b", modelversion=3)])
        with pytest.raises(ValueError, match="has no time zone"):
            log.write([record("c", time="2026-12-02T13:00:00")])
        with pytest.raises(TypeError, match="wrap one record in a list"):
            log.write(record("d"))
        log.write([record("e")])
        with pytest.raises(ValueError, match=r"request ids \['e'\] are already in the inference log"):
            log.write([record("f"), record("e")])
        assert log.rows_written == 1
    assert logged_ids(path) == ["e"]


def test_files_that_are_not_an_inference_log_are_refused_and_left_alone(tmp_path):
    registry = tmp_path / "registry.sqlite"
    with contextlib.closing(sqlite3.connect(registry)) as con:
        con.execute("CREATE TABLE versions (name TEXT)")
        con.commit()
    before = registry.read_bytes()
    with pytest.raises(ValueError, match=r"not an inference log: it is another SQLite database \(tables: versions\)"):
        InferenceLog(registry)
    with pytest.raises(ValueError, match="not an inference log"):
        read_log(registry)
    assert registry.read_bytes() == before
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 1000)
    with pytest.raises(ValueError, match="it is not a SQLite database"):
        InferenceLog(text)
    with pytest.raises(ValueError, match="it is not a SQLite database"):
        read_log(text)
    newer = tmp_path / "newer.sqlite"
    InferenceLog(newer).close()
    with contextlib.closing(sqlite3.connect(newer)) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ValueError, match="written by a newer mlops-kit"):
        InferenceLog(newer)
    with pytest.raises(FileNotFoundError, match="no inference log at"):
        read_log(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()


# -- feedback, reading, export -----------------------------------------------------------------------------------------

def test_feedback_unknown_ids_reported_latest_label_wins_history_kept(tmp_path):
    path = tmp_path / "log.sqlite"
    with InferenceLog(path) as log:
        log.write([record("r1"), record("r2")])
        assert log.add_feedback([{"request_id": "r1", "label": 0, "received": "2026-12-03T00:00:00Z"},
                                 {"request_id": "ghost", "label": 1},
                                 {"request_id": "r1", "label": 1, "received": "2026-12-04T00:00:00Z"},
                                 {"request_id": "ghost", "label": 0},
                                 {"request_id": "other-ghost", "label": 0}]) == {"accepted": 2, "unknown": ["ghost", "other-ghost"]}
        with pytest.raises(ValueError, match="has no label"):
            log.add_feedback([{"request_id": "r2", "label": None}])
    fb = read_log(path, table="feedback")
    assert fb.request_id.tolist() == ["r1", "r1"] and fb.label.tolist() == [0, 1]      # history, nothing about ghosts
    view = read_log(path, table="predictions_with_feedback").set_index("request_id")
    assert view.loc["r1", "label"] == 1 and view.loc["r1", "n_labels"] == 2
    assert view.loc["r1", "label_received"] == pd.Timestamp("2026-12-04", tz="UTC")
    assert view.loc["r2", "label"] is None and view.loc["r2", "n_labels"] == 0
    assert list(view.reset_index().columns[:len(COLUMNS)]) == COLUMNS


def test_read_by_time_window(tmp_path):
    path = tmp_path / "log.sqlite"
    times = ["2026-12-01T23:59:59.999999Z", "2026-12-02T00:00:00Z", "2026-12-02T12:00:00+02:00", "2026-12-03T00:00:00Z"]
    with InferenceLog(path) as log:
        log.write([record(f"r{i}", time=t, model_version=i + 1) for i, t in enumerate(times)])
    day = read_log(path, "2026-12-02", "2026-12-03")
    assert day.request_id.tolist() == ["r1", "r2"]                                   # [start, end): end excluded
    assert day.time.tolist() == [pd.Timestamp("2026-12-02T00:00Z"), pd.Timestamp("2026-12-02T10:00Z")]
    assert day.inputs.tolist() == [{"customer_id": "Cr1", "monthly_fee": 29.0}, {"customer_id": "Cr2", "monthly_fee": 29.0}]
    assert read_log(path, end="2026-12-02").request_id.tolist() == ["r0"]
    assert read_log(path, start=pd.Timestamp("2026-12-02T11:00", tz="Europe/Paris")).request_id.tolist() == ["r2", "r3"]
    assert json.loads(read_log(path, parse_json=False).outputs[0]) == record("x")["outputs"]
    assert read_log(path).model_version.tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="the window is empty"):
        read_log(path, "2026-12-03", "2026-12-02")
    per_version = query_log(path, "SELECT model_version, COUNT(*) AS n FROM predictions WHERE time >= ? GROUP BY model_version",
                            ("2026-12-02T00:00:00.000000+00:00",))
    assert per_version.model_version.tolist() == [2, 3, 4]


def test_export_round_trip(tmp_path):
    path = tmp_path / "log.sqlite"
    with InferenceLog(path) as log:
        log.write([record(f"r{i}", time=f"2026-12-0{1 + i % 3}T10:00:00Z", batch_id=None if i % 2 else "b1") for i in range(30)])
        log.write_frame(pd.DataFrame([record(f"f{i}", model_version=None, served_by="batch", batch_id="b2") for i in range(5)]))
    out = export_log(path, tmp_path / "out" / "log.parquet", start="2026-12-02")
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, read_log(path, start="2026-12-02", parse_json=False))
    assert len(back) == 20 + 5 and back.model_version.isna().sum() == 5
    assert [json.loads(v) for v in back.inputs[:2]] == read_log(path, start="2026-12-02").inputs[:2].tolist()
    assert sorted(p.name for p in out.parent.iterdir()) == ["log.parquet"]        # atomic: no temporary file left
    with pytest.raises(ValueError, match="name the file .parquet"):
        export_log(path, tmp_path / "log.csv")


def test_write_frame_bulk_and_all_or_nothing(tmp_path):
    path = tmp_path / "log.sqlite"
    n = 5000
    inputs = pd.DataFrame({"customer_id": [f"C{i}" for i in range(n)], "fee": 29.0})
    frame = pd.DataFrame({"request_id": [f"b1-{i}" for i in range(n)], "time": pd.Timestamp("2026-12-02", tz="UTC"),
                          "model_name": "m", "model_version": 2, "fingerprint": "f", "inputs": json_records(inputs),
                          "outputs": [{"prediction": i % 2} for i in range(n)], "latency_ms": 0.1, "served_by": "batch",
                          "batch_id": "b1"})
    with InferenceLog(path) as log:
        assert log.write_frame(frame) == n
        assert log.commits == 1
        clash = frame.iloc[:10].assign(request_id=[f"b2-{i}" for i in range(9)] + ["b1-7"])
        with pytest.raises(ValueError, match=r"request ids \['b1-7'\] are already in the inference log"):
            log.write_frame(clash)
        with pytest.raises(ValueError, match="unknown columns"):
            log.write_frame(frame.assign(score=1.0))
    assert len(logged_ids(path)) == n                                                 # none of the clashing frame
    got = query_log(path, "SELECT COUNT(*) AS n, COUNT(DISTINCT batch_id) AS b FROM predictions WHERE batch_id = 'b1'")
    assert (got.n[0], got.b[0]) == (n, 1)


# -- the crash -----------------------------------------------------------------------------------------------------------

WRITER = """
import sys, threading
from mlops_kit.deploy.log import InferenceLog
log, lock = InferenceLog(sys.argv[1]), threading.Lock()
def worker(k):
    for i in range(10**9):
        rid = f"{k}-{i}"
        log.write([dict(request_id=rid, time="2026-12-02T13:00:00Z", model_name="m", model_version=1, fingerprint="f",
                        inputs={"x": i}, outputs={"prediction": 1}, latency_ms=1.0, served_by="champion")])
        with lock:
            print(rid, flush=True)   # the acknowledgement, printed only after write() returned
for k in range(8):
    threading.Thread(target=worker, args=(k,), daemon=True).start()
threading.Event().wait(120)
"""


def test_sigkill_mid_load_loses_no_acknowledged_record(tmp_path):
    path = tmp_path / "log.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    def read():
        for line in proc.stdout: lines.put(line)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    acked = []
    deadline = time.monotonic() + 90
    try:
        while len(acked) < 1000 and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                acked.append(lines.get(timeout=0.5))
            if proc.poll() is not None: break
    finally:
        if proc.poll() is None: os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    reader.join(timeout=10)
    while not lines.empty(): acked.append(lines.get())
    acked = [line[:-1] for line in acked if line.endswith("\n")]     # a line cut by the kill was not an answer
    assert len(acked) >= 1000, f"only {len(acked)} acknowledgements before the deadline"
    logged = set(read_log(path).request_id)                          # reopening after the crash
    missing = set(acked) - logged
    assert not missing, f"{len(missing)} acknowledged records are not in the log, e.g. {sorted(missing)[:5]}"
    with InferenceLog(path) as log:                                  # and the log is writable again
        log.write([record("after-crash")])
    assert "after-crash" in set(logged_ids(path))


def test_a_log_locked_at_start_up_or_broken_underneath_fails_loudly_not_silently(tmp_path):
    path = tmp_path / "log.sqlite"
    other = connect(path)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(LogUnavailable, match="cannot be opened for writing: another connection held the log's write lock"):
            InferenceLog(path, timeout=0.3)
    finally:
        other.execute("ROLLBACK")
        other.close()
    log = InferenceLog(path)
    log._run_in_writer(lambda c: c.close())          # the writer's connection broken underneath it
    t0 = time.monotonic()
    with pytest.raises(LogUnavailable, match="not logged"):
        log.write([record("r1")])
    assert time.monotonic() - t0 < 10                # an error, not a hang
    log.close()


def test_two_logs_on_one_file_created_at_once_and_writing_together(tmp_path):
    "A service and a batch job may share a log: creation happens once, and each writer waits its turn for the lock."
    path = tmp_path / "shared.sqlite"
    with ThreadPoolExecutor(2) as pool:
        logs = list(pool.map(lambda _: InferenceLog(path), range(2), timeout=60))
    try:
        def online(k):
            for i in range(50): logs[0].write([record(f"online-{k}-{i}")])
        def batch(k):
            for i in range(5):
                logs[1].write_frame(pd.DataFrame([record(f"batch-{k}-{i}-{j}", served_by="batch", batch_id=f"b{k}") for j in range(200)]))
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(online, k) for k in range(4)] + [pool.submit(batch, k) for k in range(2)]
            for f in futures: f.result(timeout=120)
    finally:
        for log in logs: log.close()
    ids = logged_ids(path)
    assert len(ids) == len(set(ids)) == 4 * 50 + 2 * 5 * 200
    with contextlib.closing(connect_readonly(path)) as con:
        assert con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'predictions'").fetchone()[0] == 1
