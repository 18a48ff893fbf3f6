"""The replay step (mlops_kit.deploy.replay): which model answered, when the run's own model is not the champion."""
from pathlib import Path

from conftest import copy_run


def test_a_second_run_replays_the_champion_and_says_so(default_run, tmp_path):
    # A second run into the same registry registers its model as the challenger; production stays with the
    # champion. The summary must name the model that answered, not the run's own version.
    from mlops_kit.deploy.log import read_log
    from mlops_kit.deploy.replay import replay
    from mlops_kit.model.package import package
    from mlops_kit.runfolder import read_json
    _, shared, _ = default_run
    run = copy_run(shared, tmp_path / "run")
    registry = tmp_path / "registry"
    first = package(run, registry=registry)          # an earlier run's model: the champion
    second = package(run, registry=registry)         # this run's model: built again, so a new version
    assert (first["alias"], second["alias"]) == ("champion", "challenger") and second["version"] == first["version"] + 1
    summary = replay(run, "course", production_months=1, rows_per_request=250, concurrency=2)
    assert summary["model"]["version"] == first["version"] and summary["model"]["fingerprint"] == first["fingerprint"]
    assert summary["run_model"] == {"version": second["version"], "alias": "challenger", "served": False}
    log = read_log(run / "deploy" / "inference_log.sqlite")
    assert set(log["model_version"]) == {first["version"]} and len(log) == summary["scored"] > 0
    assert read_json(run / "deploy" / "replay.json")["model"]["version"] == first["version"]
