"""The ground floor across modules: what a step records reaches the run index as the number it was."""
import numpy as np
import pandas as pd

from mlops_kit.runfolder import read_metrics, record_metrics, write_json
from mlops_kit.runs import list_runs


def test_numpy_and_pandas_metrics_reach_mlops_kit_runs_as_numbers(tmp_path):
    "A step that records np.int64(3) used to store the text '3', and the metric vanished from `mlops-kit runs`."
    run = tmp_path / "runs" / "20261202-060000-000"
    record_metrics(run, "evaluate", {"rows_test": np.int64(400), "roc_auc_test": np.float32(0.75), "cost": pd.NA})
    metrics = read_metrics(run)
    assert metrics == {"evaluate": {"rows_test": 400, "roc_auc_test": 0.75, "cost": None}}
    write_json(run / "manifest.json", {"run_id": run.name, "status": "succeeded", "started_at": "2026-12-02T06:00:00+00:00",
                                       "seconds": 1.0, "parameters": {"data": "course"}, "steps": [], "metrics": metrics})
    table = list_runs(tmp_path / "runs")
    assert table.loc[0, "evaluate.rows_test"] == 400
    assert table.loc[0, "evaluate.roc_auc_test"] == 0.75
    assert "evaluate.cost" not in table.columns          # a missing value is not a number to list
