"Serving: the real service under uvicorn on 127.0.0.1: every endpoint, bad requests, hot reload, kill mid-load, a bounded load."
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from mlops_kit.deploy.log import read_log
from mlops_kit.deploy.serve import load_served_model, start_service, stop_service
from mlops_kit.model.bundle import build_bundle
from mlops_kit.model.registry import promote, register_bundle


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_course_run):
    """A small course model registered as champion (the lessons' own: the session's shared run is the one
    small_course_model(base, n_customers=600, seed=42) trains; its bundle and registry are this file's), and raw rows
    the ingest step joined."""
    base = tmp_path_factory.mktemp("serve")
    run, registry = small_course_run, base / "registry"
    rec = register_bundle(registry, build_bundle(run, base / "bundle"))
    model = load_served_model(registry=registry)
    fields = [f["name"] for f in model.scorer.fields]
    raw = pd.read_parquet(run / "data" / "ingested.parquet")
    rows = json.loads(raw[fields].head(200).to_json(orient="records", date_format="iso"))
    return {"base": base, "run": run, "registry": registry, "name": rec["name"], "version": rec["version"], "model": model,
            "rows": rows, "fields": model.scorer.fields}


@pytest.fixture
def service(served, tmp_path):
    svc = start_service(registry=served["registry"], log=tmp_path / "log.sqlite", max_rows=100, poll_seconds=0.3, timeout=120)
    try: yield svc, tmp_path / "log.sqlite"
    finally: stop_service(svc)


def _good_rows(served, n):
    "Rows the contract accepts (the first n of the sample that the scorer scores)."
    scored = served["model"].scorer.score(pd.DataFrame(served["rows"]))
    ok = sorted(scored.results.index)[:n]
    assert len(ok) == n, "the sample has too few clean rows"
    return [served["rows"][i] for i in ok]


def test_every_endpoint(served, service):
    svc, log = service
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        assert c.get("/health").json()["status"] == "alive"
        assert c.get("/ready").json()["model"]["version"] == served["version"]
        info = c.get("/model").json()
        assert info["name"] == served["name"] and info["version"] == served["version"] and len(info["fingerprint"]) == 64
        assert [f["name"] for f in info["fields"]] == [f["name"] for f in served["fields"]]
        assert info["model_card"].startswith("#") and info["input_schema"]["columns"]
        rows = _good_rows(served, 5)
        r = c.post("/predict", json={"rows": rows})
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert len(res) == 5 and all(a["ok"] and a["model_version"] == served["version"] for a in res)
        pos = str(served["model"].bundle.metadata["positive_class"])
        for a in res:
            assert abs(sum(a["probabilities"].values()) - 1) < 1e-6
            assert (a["probabilities"][pos] >= a["threshold"]) == (str(a["decision"]) == pos)
        # the same rows predicted in process give the same probabilities
        local = served["model"].scorer.score(pd.DataFrame(rows)).results
        np.testing.assert_allclose([a["probabilities"][pos] for a in res], local[f"proba_{pos}"].to_numpy(), atol=1e-6)
        fb = c.post("/feedback", json={"labels": [{"request_id": res[0]["request_id"], "label": 1}]})
        assert fb.status_code == 200 and fb.json()["accepted"] == 1, fb.text
        metrics = c.get("/metrics").text
        assert 'mlops_kit_rows_total{outcome="scored"} 5.0' in metrics
        assert f'mlops_kit_model_info{{fingerprint="{info["fingerprint"][:12]}",name="{served["name"]}",version="{served["version"]}"}} 1.0' in metrics
        assert "mlops_kit_predict_latency_seconds_bucket" in metrics
        schema = c.get("/openapi.json").json()
        row = next(v for k, v in schema["components"]["schemas"].items() if k.endswith("Row"))
        assert set(row["properties"]) == {f["name"] for f in served["fields"]}
        assert set(row["required"]) == {f["name"] for f in served["fields"] if f.get("required", True)}
        assert c.get("/docs").status_code == 200
    logged = read_log(log)
    assert set(logged["request_id"]) == {a["request_id"] for a in res}
    assert set(logged["model_version"]) == {served["version"]} and logged["fingerprint"].nunique() == 1


def test_bad_requests_get_a_4xx_naming_the_field(served, service):
    svc, log = service
    rows = _good_rows(served, 3)
    f0 = next(f["name"] for f in served["fields"] if f.get("required", True))
    numeric = next(f for f in served["fields"] if f["kind"] in ("number", "integer") and f.get("max") is not None)
    cases = [
        (b"{not json", 400, "valid JSON"),
        ({"rows": []}, 422, "rows"),
        ({"rows": rows * 40}, 413, "limit is 100"),
        ({"rows": [{k: v for k, v in rows[0].items() if k != f0}]}, 422, f"rows[0].{f0}"),
        ({"rows": [{**rows[0], "colour": "red"}]}, 422, "rows[0].colour"),
        ({"rows": [{**rows[0], numeric["name"]: [1, 2]}]}, 422, f"rows[0].{numeric['name']}"),
        ({"records": rows}, 422, "records"),
        ([1, 2, 3], 422, "body"),
    ]
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        for payload, status, words in cases:
            r = (c.post("/predict", content=payload, headers={"content-type": "application/json"}) if isinstance(payload, bytes)
                 else c.post("/predict", json=payload))
            assert r.status_code == status and words in r.text, (str(payload)[:80], r.status_code, r.text[:400])
        # a row that fails a blocking contract check is refused on its own, naming the field; the others are answered
        bad = {**rows[1], numeric["name"]: 1e12}
        r = c.post("/predict", json={"rows": [rows[0], bad, rows[2]]})
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert [a["ok"] for a in res] == [True, False, True]
        assert res[1]["errors"][0]["field"] == numeric["name"] and numeric["name"] in res[1]["errors"][0]["reason"]
        assert c.post("/feedback", json={"labels": []}).status_code == 422
        assert c.post("/feedback", json={"labels": [{"request_id": "x"}]}).status_code == 422
        assert c.get("/health").status_code == 200   # nothing above took the service down
    assert len(read_log(log)) == 2                   # only answered rows are logged


def test_a_new_champion_is_picked_up_without_a_restart(served, service, tmp_path):
    svc, log = service
    registry, name = served["registry"], served["name"]
    v2 = register_bundle(registry, build_bundle(served["run"], tmp_path / "bundle-v2"))
    rows = _good_rows(served, 2)
    seen = []
    try:
        with httpx.Client(base_url=svc.url, timeout=30) as c:
            seen.append(c.post("/predict", json={"rows": rows}).json()["model"]["version"])
            promote(registry, name, v2["version"])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and c.get("/model").json()["version"] != v2["version"]: time.sleep(0.1)
            r = c.post("/predict", json={"rows": rows}).json()
            seen.append(r["model"]["version"])
            assert all(a["model_version"] == v2["version"] for a in r["results"])
            swap = c.get("/model").json()["following"]["swaps"][-1]
            assert (swap["from"], swap["to"]) == (served["version"], v2["version"])
    finally:
        promote(registry, name, served["version"])   # the other tests expect v1 as champion
    assert seen == [served["version"], v2["version"]]
    logged = read_log(log)
    assert logged.groupby("model_version").size().to_dict() == {served["version"]: 2, v2["version"]: 2}
    assert logged["fingerprint"].nunique() == 2


def test_every_acknowledged_request_survives_a_kill_mid_load(served, tmp_path):
    "SIGKILL the server while 8 clients send requests: each request that got a 200 is in the log."
    log = tmp_path / "log.sqlite"
    svc = start_service(registry=served["registry"], log=log, poll_seconds=0, timeout=120)
    rows, acked, stop = _good_rows(served, 4), [], threading.Event()
    lock = threading.Lock()

    def client():
        with httpx.Client(base_url=svc.url, timeout=10) as c:
            while not stop.is_set():
                try: r = c.post("/predict", json={"rows": rows[:2]})
                except httpx.HTTPError: return
                if r.status_code == 200:
                    with lock: acked.extend(a["request_id"] for a in r.json()["results"])
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads: t.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 200 and time.monotonic() < deadline: time.sleep(0.05)
        os.kill(svc.pid, signal.SIGKILL)
        svc.process.wait(timeout=10)
    finally:
        stop.set()
        for t in threads: t.join(timeout=15)
        stop_service(svc)
    assert len(acked) >= 200, "the load did not get going"
    logged = set(read_log(log)["request_id"])
    missing = set(acked) - logged
    assert not missing, f"{len(missing)} acknowledged rows are not in the log"


def test_bounded_load_2000_requests_at_concurrency_16(served, service):
    "2,000 single-row requests, 16 in flight at any time (one asyncio client: the server, not the client, is measured)."
    import asyncio
    svc, log = service
    row = _good_rows(served, 1)

    async def load():
        sem = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=svc.url, timeout=60, limits=httpx.Limits(max_connections=16)) as c:
            async def one(_):
                async with sem:
                    r = await c.post("/predict", json={"rows": row})
                    return r.status_code, r.json()["results"][0]["request_id"] if r.status_code == 200 else r.text
            return await asyncio.gather(*(one(i) for i in range(2000)))
    out = asyncio.run(asyncio.wait_for(load(), timeout=600))
    statuses = pd.Series([s for s, _ in out]).value_counts().to_dict()
    assert statuses == {200: 2000}, statuses
    logged = read_log(log)
    assert len(logged) == 2000 and set(logged["request_id"]) == {rid for _, rid in out}


def test_a_log_that_cannot_be_written_gives_503_and_no_prediction(served, tmp_path):
    "Durable before acknowledged: with the log's disk full, /predict answers 503 with the reason; once there is room, 200 again."
    from fastapi.testclient import TestClient
    from mlops_kit.deploy.serve import create_app
    app = create_app(registry=served["registry"], log=tmp_path / "log.sqlite", poll_seconds=0)
    log = app.state.log
    rows = _good_rows(served, 2)
    with TestClient(app) as c:
        assert c.post("/predict", json={"rows": rows}).status_code == 200
        full = lambda con: con.execute("PRAGMA max_page_count = %d" % con.execute("PRAGMA page_count").fetchone()[0])
        log._run_in_writer(full)
        r = c.post("/predict", json={"rows": rows * 200 if len(rows) * 200 <= 1000 else rows})
        assert r.status_code == 503 and "could not be logged" in r.json()["detail"] and "full" in r.json()["detail"], r.text
        assert "results" not in r.json()
        log._run_in_writer(lambda con: con.execute("PRAGMA max_page_count = 1073741823"))
        assert c.post("/predict", json={"rows": rows}).status_code == 200
        metrics = c.get("/metrics").text
        assert 'mlops_kit_requests_total{endpoint="/predict",status="503"} 1.0' in metrics
    assert len(read_log(tmp_path / "log.sqlite")) == 4


def test_serving_does_not_import_the_runner():
    "Serving imports the bundle and the registry, not the runner (no papermill, no notebooks)."
    import subprocess, sys
    code = ("import sys, mlops_kit.deploy.serve; bad = [m for m in ('papermill', 'nbformat', 'mlops_kit.pipeline', 'mlops_kit.steps') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_mlops_kit_serve_starts_uvicorn_and_stops_on_sigterm(served, tmp_path):
    "`mlops-kit serve --registry DIR --port P` serves on 127.0.0.1 and logs beside the registry unless told; SIGTERM stops it."
    import subprocess, sys
    from conftest import BIN
    from mlops_kit.deploy.serve import free_port
    port = free_port()
    log = tmp_path / "cli-log.sqlite"
    proc = subprocess.Popen([str(BIN / "mlops-kit"), "serve", "--registry", str(served["registry"]), "--port", str(port),
                             "--log", str(log), "--poll", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline, ready = f"http://127.0.0.1:{port}", time.monotonic() + 90, False
        while time.monotonic() < deadline and proc.poll() is None:
            try: ready = httpx.get(url + "/ready", timeout=1).status_code == 200
            except httpx.HTTPError: pass
            if ready: break
            time.sleep(0.2)
        assert ready, proc.stdout.read() if proc.poll() is not None else "not ready in 90 s"
        r = httpx.post(url + "/predict", json={"rows": _good_rows(served, 1)}, timeout=30)
        assert r.status_code == 200 and r.json()["model"]["ref"] == "champion"
    finally:
        proc.send_signal(signal.SIGTERM)
        try: out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired: proc.kill(); out, _ = proc.communicate(timeout=10)
    assert proc.returncode in (0, -signal.SIGTERM), out   # uvicorn shuts down cleanly, then re-raises the signal it caught
    assert f"serving on http://127.0.0.1:{port}" in out and str(log) in out
    assert len(read_log(log)) == 1
    bad = subprocess.run([str(BIN / "mlops-kit"), "serve", "--registry", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no model registry" in bad.stderr
