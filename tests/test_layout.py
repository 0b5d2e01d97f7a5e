"""The package layout is a contract: wings follow the data flow and none imports a wing above it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINGS = ("spec", "results", "build", "verify", "run", "hardware", "report")


def test_every_wing_says_what_it_owns() -> None:
    for wing in WINGS:
        init = ROOT / "src" / "envlab" / wing / "__init__.py"
        doc = init.read_text(encoding="utf-8").strip()
        assert doc.startswith('"""') and len(doc) > 40, f"{init}: expected a docstring"


def _lint_imports(src: Path = ROOT / "src") -> subprocess.CompletedProcess[str]:
    """import-linter with the repo's contract (pyproject.toml) over the package found in ``src``."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [exe, "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_layers_contract_is_kept() -> None:
    done = _lint_imports()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """A planted import of the report wing from the results wing (in a copy) is caught."""
    copy = tmp_path / "src" / "envlab"
    shutil.copytree(ROOT / "src" / "envlab", copy, ignore=shutil.ignore_patterns("__pycache__"))
    planted = copy / "results" / "_planted_upward_import.py"
    planted.write_text("from envlab.report import render  # noqa: F401\n", encoding="utf-8")
    done = _lint_imports(tmp_path / "src")
    assert done.returncode != 0
    assert "envlab.results._planted_upward_import -> envlab.report" in done.stdout
