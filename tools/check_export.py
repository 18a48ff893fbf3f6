"""Fail when `nbdev-export` or `nbdev-clean` would change a file under nbs/ or mlops_kit/.

The notebooks are the source of the library: an exported module edited by hand, or a notebook saved with
outputs and metadata, shows up here. Usage: python tools/check_export.py VENV_BIN
"""
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WATCHED = ("nbs", "mlops_kit")


def snapshot() -> dict[str, str]:
    files = {}
    for top in WATCHED:
        for p in sorted((ROOT / top).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts:
                files[p.relative_to(ROOT).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def main() -> int:
    bin_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sys.executable).parent
    before = snapshot()
    for cmd in ("nbdev-export", "nbdev-clean"):
        subprocess.run([str(bin_dir / cmd)], cwd=ROOT, check=True)
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        print("nbdev-export / nbdev-clean changed these files (now updated in your work tree):", file=sys.stderr)
        for k in changed: print(f"  {k}", file=sys.stderr)
        print("Edit the notebooks, not mlops_kit/; run `nbdev-export && nbdev-clean` and commit the result.", file=sys.stderr)
        return 1
    print(f"nbdev-export and nbdev-clean leave {len(after)} files under {', '.join(WATCHED)} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
