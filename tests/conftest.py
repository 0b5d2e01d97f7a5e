"""Shared test configuration: markers that skip with a stated reason when a need is not met."""

from __future__ import annotations

import functools
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def pypi_reachable() -> str | None:
    """None if PyPI answers, else the reason it does not."""
    if os.environ.get("ENVLAB_OFFLINE") == "1":
        return "ENVLAB_OFFLINE=1 is set"
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10) as response:
            response.read(1)
    except OSError as exc:
        return f"PyPI unreachable: {exc}"
    return None


def conda_missing() -> str | None:
    """None if the conda engine (py-rattler, an envlab dependency) is importable."""
    try:
        import rattler  # noqa: F401
    except ImportError as exc:
        return f"py-rattler is not installed ({exc}): `uv pip install py-rattler`"
    return None


def gpu_missing() -> str | None:
    if shutil.which("nvidia-smi") or Path("/proc/driver/nvidia/version").exists():
        return None
    return "no NVIDIA GPU/driver on this machine (no nvidia-smi, no /proc/driver/nvidia)"


def browser_missing() -> str | None:
    for exe in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(exe):
            return None
    return "no headless Chromium on PATH (apt-get install chromium)"


def e2e_disabled() -> str | None:
    if os.environ.get("ENVLAB_SKIP_E2E") == "1":
        return "ENVLAB_SKIP_E2E=1 is set"
    return pypi_reachable()


def extra_e2e_disabled() -> str | None:
    """Real-torch tests share one env per run; the ones that need another are opt-in."""
    if os.environ.get("ENVLAB_E2E_EXTRA") != "1":
        return "builds another real torch env (about 4 GB); set ENVLAB_E2E_EXTRA=1 to run it"
    return e2e_disabled()


CHECKS = {
    "network": pypi_reachable,
    "conda": conda_missing,
    "gpu": gpu_missing,
    "browser": browser_missing,
    "e2e": e2e_disabled,
    "e2e_extra": extra_e2e_disabled,
}


@pytest.fixture(scope="session")
def stable_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The real `stable` env, built once per session by envlab from its lock (needs PyPI).

    Returns the environment variables that point envlab at the session's envs/runs directories,
    plus ``PYTHON``: the env's interpreter.
    """
    from helpers import envlab

    base = tmp_path_factory.mktemp("stable-env")
    env = {
        "ENVLAB_ENVS_DIR": str(base / "envs"),
        "ENVLAB_RUNS_DIR": str(base / "runs"),
        "ENVLAB_HISTORY_DB": str(base / "history.sqlite"),
        "ENVLAB_HOST_ID": "e2e",
        "ENVLAB_RUN_ID": "build",
    }
    done = envlab("--root", str(ROOT), "test", "stable", "--no-compat", env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return {**env, "PYTHON": str(base / "envs" / "stable" / "bin" / "python"), "BASE": str(base)}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="rewrite golden files under tests/data/golden from the current output",
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """Compare text with tests/data/golden/NAME; rewrite it only with --regen-golden."""
    regen = request.config.getoption("--regen-golden")

    def check(name: str, text: str) -> None:
        path = ROOT / "tests" / "data" / "golden" / name
        if regen:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.exists(), (
            f"golden file {path} missing: run pytest --regen-golden once and review it"
        )
        assert text == path.read_text(encoding="utf-8"), (
            f"output differs from golden file {path.name}"
        )

    return check


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name, check in CHECKS.items():
            if item.get_closest_marker(name) is not None:
                reason = check()
                if reason:
                    item.add_marker(pytest.mark.skip(reason=f"[{name}] {reason}"))
