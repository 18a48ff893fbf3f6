"The iteration lesson (nbs/90_iteration.ipynb) is a lesson: not a pipeline step, no exported module, and it has an exercise."
from pathlib import Path

import nbformat

from mlops_kit.pipeline import read_step_header

ROOT = Path(__file__).resolve().parent.parent
NB = ROOT / "nbs" / "90_iteration.ipynb"


def test_lesson_is_not_a_step():
    assert read_step_header(NB) is None          # no front matter: the runner never runs it as a step


def test_lesson_exports_nothing_and_has_no_parameters():
    nb = nbformat.read(str(NB), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(line.strip().startswith(("#| export", "#| default_exp")) for c in code for line in c.source.splitlines())
    assert not any("parameters" in c.metadata.get("tags", []) for c in code)


def test_lesson_has_an_exercise_with_answer_and_check():
    nb = nbformat.read(str(NB), as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## Exercise"))
    answer, check = nb.cells[i + 1], nb.cells[i + 2]
    assert answer.cell_type == check.cell_type == "code"
    assert "# your answer" in answer.source and ("test_eq" in check.source or "assert" in check.source)
