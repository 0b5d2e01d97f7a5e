"""Candidate envs of a bisect, built with the layered builder in their own directory.

A package candidate is a package set pinned exactly: the build-coupled packages (the torch
family) in the torch layer, everything else in the stack layer, each resolved by uv from the env's
declared index only (uv checks every file against the sha256 the index lists; those hashes are
first checked against the env's committed lock: a file that changed since is refused), so uv's
cache makes each candidate a matter of links. The session compares what got installed with the
candidate and reports a difference. A nightly candidate is the env as declared with its nightly
layer pinned to one date's builds. Candidates live under ``.envlab/bisect/<env>/`` and never
touch the env under test.
"""

from __future__ import annotations

import contextlib
import shutil
import tomllib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envlab.bisect.index import IndexFile, IndexReader
from envlab.build import interpreters, layers, lock
from envlab.build.layers import BuildPlan, BuildResult, LayerPlan, build_coupled
from envlab.build.uv import Uv
from envlab.errors import UserError
from envlab.log import log
from envlab.project import Project
from envlab.spec import platforms
from envlab.spec.envspec import EnvSpec, Matrix
from envlab.spec.indexes import Index


def project_name(path: Path) -> str:
    """The distribution name of the local project at ``path`` (its pyproject.toml)."""
    try:
        data = tomllib.loads((path / "pyproject.toml").read_text(encoding="utf-8"))
        return canonicalize_name(data["project"]["name"])
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError):
        raise UserError(f"{path}: expected a pyproject.toml with [project] name") from None


@dataclass
class Candidates:
    """Builds candidate envs of one env under ``root`` (``.envlab/bisect/<env>``)."""

    project: Project
    matrix: Matrix
    spec: EnvSpec
    root: Path
    reader: IndexReader
    uv: Uv
    interpreter: interpreters.Interpreter
    platform: str = ""

    def __post_init__(self) -> None:
        self.platform = self.platform or platforms.current()
        self.editables = self.matrix.editables(self.spec)
        self.editable_names = {project_name(p) for p in self.editables}
        self._locked = self._locked_hashes()

    # ------------------------------------------------------------------ where packages come from

    @property
    def torch_indexes(self) -> list[Index]:
        """Where the torch family may come from: the nightly index first, then the torch index."""
        idx = self.matrix.indexes
        names = ([self.spec.nightly.index] if self.spec.nightly else []) + [
            self.spec.torch.index_for(self.platform)
        ]
        return [idx[n] for n in dict.fromkeys(names)]

    @property
    def stack_indexes(self) -> list[Index]:
        """Where everything else may come from: the stack index, then the torch indexes."""
        idx = self.matrix.indexes
        rest = [i for i in self.torch_indexes if i.name != self.spec.stack.index]
        return [idx[self.spec.stack.index], *rest]

    def indexes_for(self, name: str) -> list[Index]:
        return self.torch_indexes if build_coupled(name) else self.stack_indexes

    def files(self, name: str, version: str) -> tuple[Index, list[IndexFile]]:
        """The files of ``name`` ``version`` on the first of its indexes serving it, checked."""
        index, files = self.reader.find(self.indexes_for(name), name, version)
        for f in files:
            if f.sha256 is None:
                raise UserError(
                    f"bisect: {f.url} has no sha256 on index {index.name!r}: refusing to "
                    "install a file that cannot be checked"
                )
            locked = self._locked.get(f.filename)
            if locked is not None and locked != f.sha256:
                raise UserError(
                    f"bisect: {f.filename}: index {index.name!r} serves sha256 {f.sha256}, "
                    f"locks/{self.spec.name} recorded {locked}: the file changed on the index"
                )
        return index, files

    def _locked_hashes(self) -> dict[str, str]:
        """File name -> sha256 of every file in the env's committed locks for this platform."""
        try:
            found = lock.env_locks(self.project, self.spec, self.platform) or {}
        except UserError:
            return {}  # a broken lock leaves nothing to cross-check against
        return {
            urllib.parse.unquote(f.url.rsplit("/", 1)[-1]): f.sha256
            for layer in found.values()
            for f in layer.files
            if f.sha256
        }

    # ------------------------------------------------------------------ building

    def _layer(
        self, layer: str, pins: Mapping[str, str], indexes: Sequence[Index], **extra: Any
    ) -> LayerPlan:
        """A layer pinning exactly ``pins``, from the first of ``indexes`` that serves them all."""
        served = [self.files(n, v)[0] for n, v in sorted(pins.items())]
        index = next((i for i in indexes if all(s.name == i.name for s in served)), None)
        if index is None:
            where = ", ".join(
                f"{n} from {s.name!r}" for n, s in zip(sorted(pins), served, strict=True)
            )
            raise UserError(
                f"bisect: the {layer} layer would need several indexes ({where}); "
                "a layer installs from one"
            )
        return LayerPlan(layer, [f"{n}=={v}" for n, v in sorted(pins.items())], index, **extra)

    def pinned(self, key: str, pins: Mapping[str, str]) -> BuildResult:
        """Build the env holding exactly ``pins`` (plus the env's editable projects)."""
        pins = {n: v for n, v in pins.items() if n not in self.editable_names}
        coupled = {n: v for n, v in pins.items() if build_coupled(n)}
        rest = {n: v for n, v in pins.items() if n not in coupled}
        plan = BuildPlan(
            self.spec,
            self.platform,
            self.interpreter,
            [
                self._layer("torch", coupled, self.torch_indexes),
                self._layer("stack", rest, self.stack_indexes[:1], editables=tuple(self.editables)),
            ],
            self.root / key,
            mirrors=[i for i in self.matrix.indexes.values() if i.mirrored],
        )
        return layers.build(plan, probe_indexes=False, uv=self.uv)

    def nightly(self, key: str, versions: Mapping[str, str]) -> BuildResult:
        """Build the env as declared, its nightly layer pinned to ``versions``."""
        assert self.spec.nightly is not None
        base = layers.plan(
            self.matrix, self.spec, self.root, self.platform, self.interpreter, uv=self.uv
        )
        pinned = [
            replace(
                layer,
                requirements=[f"{n}=={v}" for n, v in versions.items()],
                lock=None,
            )
            if layer.name == "nightly"
            else layer
            for layer in base.layers
        ]
        plan = replace(base, layers=pinned, env_dir=self.root / key)
        return layers.build(plan, probe_indexes=False, uv=self.uv)

    def remove(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)

    def remove_all(self) -> None:
        """Remove every candidate env of this env (and the directory, once empty)."""
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(OSError):  # other envs' candidates may be there
            self.root.parent.rmdir()
        log(f"bisect: removed the candidate envs under {self.root}")


def family_names(spec: EnvSpec) -> list[str]:
    """The packages of the env's nightly layer (canonical names)."""
    assert spec.nightly is not None
    return [canonicalize_name(Requirement(r).name) for r in spec.nightly.packages]
