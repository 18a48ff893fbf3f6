import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_cli(*args, cwd=ROOT, env=None, timeout=600):
    "Run the `mlops-kit` command as a user would, returning the CompletedProcess."
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(BIN / "mlops-kit"), *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
