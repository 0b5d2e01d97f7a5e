"""Where a project's files live:
envspecs/, locks/, compat_tests/, benchmarks/, reports/, .envlab/."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from envlab.errors import UserError


@dataclass(frozen=True)
class Project:
    root: Path

    @classmethod
    def discover(cls, root: Path | None = None) -> Project:
        """``root``, else $ENVLAB_ROOT, else the nearest directory upwards holding envspecs/."""
        if root is None and os.environ.get("ENVLAB_ROOT"):
            root = Path(os.environ["ENVLAB_ROOT"])
        if root is not None:
            if not (root / "envspecs").is_dir():
                raise UserError(
                    f"{root}: expected a project with an envspecs/ directory, found none"
                )
            return cls(root.resolve())
        here = Path.cwd().resolve()
        for candidate in (here, *here.parents):
            if (candidate / "envspecs").is_dir():
                return cls(candidate)
        raise UserError(
            "expected to run inside an envlab project (a directory with envspecs/), "
            f"found none above {here}"
        )

    envspecs = property(lambda self: self.root / "envspecs")
    locks = property(lambda self: self.root / "locks")
    compat_tests = property(lambda self: self.root / "compat_tests")
    benchmarks = property(lambda self: self.root / "benchmarks")
    reports = property(lambda self: self.root / "reports")

    @property
    def runs(self) -> Path:
        return Path(os.environ.get("ENVLAB_RUNS_DIR") or self.reports / "runs")

    @property
    def history_db(self) -> Path:
        return Path(os.environ.get("ENVLAB_HISTORY_DB") or self.reports / "history.sqlite")

    @property
    def envs(self) -> Path:
        return Path(os.environ.get("ENVLAB_ENVS_DIR") or self.root / ".envlab" / "envs")

    @property
    def work(self) -> Path:
        return self.root / ".envlab" / "work"
