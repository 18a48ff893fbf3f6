"""The kit's layering: ground floor < course < data < model < deploy < runner < CLI, no cycles, no hidden imports.

Read from the sources with `ast`, so the rule holds for every import, including ones nobody executes in a test.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "mlops_kit"

# Lowest first. A module may import modules of its own layer or below, never above.
LAYERS = [
    ("ground floor", ["runfolder", "provenance", "text", "tables", "metrics", "sqlite"]),
    ("design", ["roles", "spec", "design", "datasets"]),
    ("data", ["data"]),
    ("model", ["model"]),
    ("deploy", ["deploy"]),
    ("runner", ["pipeline", "steps", "settings", "params", "runner", "report", "runs", "course"]),
    ("command", ["cli"]),
]
NOT_CODE = {"_modidx", "__init__"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["mlops_kit", *parts])


def kit_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))
            if "__pycache__" not in p.parts and p.stem not in NOT_CODE}


def layer_of(module: str) -> int:
    "The layer index of a kit module: its first name below `mlops_kit` decides."
    first = module.split(".")[1]
    for i, (_, names) in enumerate(LAYERS):
        if first in names: return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name} (and to CONTRIBUTING.md)")


def resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    "The kit modules an import statement names (relative imports resolved)."
    known = kit_modules()
    out = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")
            base = base if is_package else base[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        names = [target] + [f"{target}.{a.name}" for a in node.names]
    for n in names:
        if not n.startswith("mlops_kit"): continue
        # the longest known module that the name starts with (a name imported from a module is not a module)
        while n and n not in known and n != "mlops_kit": n = n.rpartition(".")[0]
        if n in known and n not in out: out.append(n)
    return out


def imports() -> list[tuple[str, str, int, bool]]:
    "(importer, imported, line, at module level) for every import between kit modules."
    found = []
    for mod, path in kit_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        # `if TYPE_CHECKING:` blocks at module level are module level, and never run
        for n in tree.body:
            if isinstance(n, ast.If): top |= {id(x) for x in ast.walk(n)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in resolve(mod, node, path.name == "__init__.py"):
                    if target != mod: found.append((mod, target, node.lineno, id(node) in top))
    return found


def test_every_module_has_a_layer():
    for mod in kit_modules(): layer_of(mod)


def test_no_import_from_a_higher_layer():
    bad = [f"{a} (layer {LAYERS[layer_of(a)][0]}) imports {b} (layer {LAYERS[layer_of(b)][0]}) on line {line}"
           for a, b, line, _ in imports() if layer_of(b) > layer_of(a)]
    assert not bad, "imports that go up the layers:\n" + "\n".join(bad)


def test_imports_between_kit_modules_are_at_module_level():
    hidden = [f"{a} imports {b} inside a function (line {line})" for a, b, line, top in imports() if not top]
    assert not hidden, ("move these imports to the top of the module (a function-level import hides a cycle):\n"
                        + "\n".join(hidden))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    "A cycle in the directed graph `edges`, as a list of nodes, or None."
    state, stack = {}, []
    def visit(n):
        state[n] = "open"; stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == "open": return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)): return c
        state[n] = "done"; stack.pop()
        return None
    for n in sorted(edges):
        if n not in state and (c := visit(n)): return c
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle():
    edges: dict[str, set[str]] = {}
    for a, b, _, _ in imports(): edges.setdefault(a, set()).add(b)
    cycle = find_cycle(edges)
    assert cycle is None, "kit modules import each other in a cycle: " + " -> ".join(cycle)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    "The rules above would be empty promises if the parser missed an import form: check it on a small package."
    src = "from ..design import Spec\n\ndef f():\n    from mlops_kit.cli import main\n    import mlops_kit.runfolder\n"
    tree = ast.parse(src)
    found = [(t, n.lineno) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for t in resolve("mlops_kit.data.ingest", n, False)]
    assert ("mlops_kit.design", 1) in found
    assert ("mlops_kit.runfolder", 5) in found
    assert ("mlops_kit.cli", 4) in found


@pytest.mark.parametrize("module", ["mlops_kit.runfolder", "mlops_kit.provenance", "mlops_kit.text"])
def test_ground_floor_loads_nothing_heavy(module):
    "A ground-floor module imports in a blink: no notebook machinery, no plotting."
    code = (f"import sys, {module}; heavy = [m for m in ('papermill', 'nbformat', 'matplotlib', 'sklearn') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"
