"""envlab's sessions. Thin by design: every session calls the `envlab` CLI; the env list comes
from envspecs/ (one `test-<env>` and `bench-<env>` per envspec), never from literals here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT / "src"))
from envlab.spec.catalog import entries  # stdlib-only: safe before envlab is installed

# Index settings of the caller's environment are ignored by envlab's builds; the sessions' own
# installs (uv pip install -e .) must not break on them either.
for _var in (
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
):
    os.environ.pop(_var, None)

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["matrix"]
PYTHON = None  # the interpreter nox runs with (envlab needs >= 3.11)


def envlab(session: nox.Session, *args: str) -> None:
    session.install("-e", ".")
    session.run("envlab", *args, *session.posargs)


@nox.session(python=PYTHON, tags=["ci"])
def tests(session: nox.Session) -> None:
    """envlab's own tests (unit, local-index integration, end-to-end on a real PyPI env)."""
    session.install(
        "-e", ".", *nox.project.dependency_groups(nox.project.load_toml("pyproject.toml"), "test")
    )
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON, tags=["ci"])
def lint(session: nox.Session) -> None:
    """ruff (rules, format, line length, complexity), the layers contract, generated files up to
    date, and actionlint on the scheduled workflow."""
    groups = nox.project.dependency_groups(nox.project.load_toml("pyproject.toml"), "lint")
    session.install("-e", ".", *groups)  # import-linter reads the installed package's imports
    paths = ("src", "tests", "tools", "benchmarks", "compat_tests", "noxfile.py")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    session.run("lint-imports")
    session.run("python", "compat_tests/catalogue.py", "--check")
    session.run("python", "tools/sync_archrule.py", "--check")
    session.run("python", "tools/which_env.py", "--check")
    session.run("actionlint", ".github/workflows/scheduled.yml")


@nox.session(python=PYTHON, tags=["lock"])
def lock(session: nox.Session) -> None:
    """Per-platform lockfiles (`-- --check`, `-- --diff`, `-- --verify`)."""
    envlab(session, "lock")


@nox.session(python=PYTHON, tags=["matrix"])
def matrix(session: nox.Session) -> None:
    """Default envs end to end (build, verify, compat), the others checked, then the report."""
    envlab(session, "matrix")


@nox.session(python=PYTHON, tags=["report"])
def report(session: nox.Session) -> None:
    """HTML + Markdown + PNG report from reports/runs."""
    envlab(session, "report")


@nox.session(python=PYTHON, tags=["report"])
def regress(session: nox.Session) -> None:
    """Compare the newest run with a baseline; non-zero exit on regression."""
    envlab(session, "regress")


@nox.session(python=PYTHON, tags=["report"])
def results(session: nox.Session) -> None:
    """The results store on its git branch: `-- pull`, `-- push`, `-- publish` (the report site)."""
    envlab(session, "results")


@nox.session(python=PYTHON, tags=["report"])
def bisect(session: nox.Session) -> None:
    """Name the package change (or nightly) that broke one item: `-- ENV --good RUN --bad RUN`."""
    envlab(session, "bisect")


@nox.session(python=PYTHON, tags=["doctor"])
def doctor(session: nox.Session) -> None:
    """This machine's GPU, driver and CPU, and which envs will run here."""
    envlab(session, "doctor")


@nox.session(name="test-host", python=PYTHON, tags=["host"])
def test_host(session: nox.Session) -> None:
    """Compat suite against an existing interpreter: `nox -s test-host -- --python PATH`."""
    envlab(session, "test-host")


def _env_sessions(name: str, tags: tuple[str, ...], default: bool) -> None:
    extra = [*tags, "default" if default else "opt-in"]

    @nox.session(name=f"test-{name}", python=PYTHON, tags=["test", *extra])
    def test_env(session: nox.Session) -> None:
        envlab(session, "test", name)

    @nox.session(name=f"bench-{name}", python=PYTHON, tags=["bench", *extra])
    def bench_env(session: nox.Session) -> None:
        envlab(session, "bench", name)

    test_env.__doc__ = f"Build, verify and run the compat suite in the {name!r} env."
    bench_env.__doc__ = f"Benchmarks in the {name!r} env (`-- --quick`, `-- --full`)."


for _entry in entries(ROOT / "envspecs"):
    _env_sessions(_entry.name, _entry.tags, _entry.default)
