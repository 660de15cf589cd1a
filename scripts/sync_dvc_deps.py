"""Rewrite each dvc.yaml stage's ``src/mura`` deps as its script's exact import closure (run after moving code).

Usage: ``python scripts/sync_dvc_deps.py`` from the repository root. Only the ``- src/mura/…`` lines
of each stage's ``deps`` change (comments and the other deps stay); ``tests/unit/test_dvc_deps.py``
checks the result.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.test_dvc_deps import EXTRA_ROOTS, import_closure  # noqa: E402


def main() -> None:
    """Rewrite dvc.yaml in place."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    closures = {}
    for name, stage in dvc["stages"].items():
        cmd = (stage.get("do") or stage)["cmd"]
        script = next(t for t in cmd.split() if t.startswith("stages/") and t.endswith(".py"))
        roots = [ROOT / script, *(ROOT / r for r in EXTRA_ROOTS.get(name, []))]
        closures[name] = sorted(f for f in import_closure(roots) if f.startswith("src/mura/"))
    lines = (ROOT / "dvc.yaml").read_text().splitlines(keepends=True)
    out: list[str] = []
    stage_name = None
    i = 0
    while i < len(lines):
        if found := re.match(r"^  ([\w-]+):\s*$", lines[i]):
            stage_name = found.group(1)
        if (dep := re.match(r"^(\s+)- src/mura/", lines[i])) and stage_name is not None:
            while i < len(lines) and re.match(r"^\s+- src/mura/", lines[i]):
                i += 1
            out.extend(f"{dep.group(1)}- {f}\n" for f in closures[stage_name])
            continue
        out.append(lines[i])
        i += 1
    (ROOT / "dvc.yaml").write_text("".join(out))


if __name__ == "__main__":
    main()
