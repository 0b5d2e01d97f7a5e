"""Envspec models and loading: one TOML file per env under ``envspecs/``, validated strictly.

A malformed file raises :class:`SpecError` with one line naming the file, the field, what was
expected and what was found. Unknown keys are rejected.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from envlab.errors import SpecError, UnknownEnvError
from envlab.fsutil import read_toml, stable_hash
from envlab.log import log
from envlab.spec import catalog, factors, platforms, releases
from envlab.spec.indexes import Index, wheelhouse_index

M = TypeVar("M", bound=BaseModel)
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
ARCH = re.compile(r"^(sm|compute)_\d{2,3}[a-z]?$")
# the name a wheelhouse goes by where an index name is expected (layer records, lock metadata)
WHEELHOUSE = "wheelhouse"


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=_kebab, populate_by_name=True, frozen=True
    )


def _check_requirement(value: str) -> str:
    try:
        Requirement(value)
    except InvalidRequirement as exc:
        detail = str(exc).splitlines()[0]
        raise ValueError(
            f"a PEP 508 requirement like 'torch==2.10.0', found {value!r} ({detail})"
        ) from None
    return value


RequirementStr = Annotated[str, AfterValidator(_check_requirement)]


def _check_flag(value: Any) -> Any:
    # TOML has booleans: "yes" or 1 would be read as true here but not by the noxfile's catalog
    if not isinstance(value, bool):
        raise ValueError(f"a boolean (true or false), found {value!r}")
    return value


Flag = Annotated[bool, BeforeValidator(_check_flag)]


class TorchLayer(Strict):
    """torch/torchvision/torchaudio, from the env's torch index only, or from a wheelhouse of
    one's own builds (uv --find-links with no index)."""

    packages: list[RequirementStr]
    index: str | None = None
    wheelhouse: str | None = None  # a directory (from the project root) or URL of wheels
    index_by_platform: dict[str, str] = Field(default_factory=dict)
    pre: Flag = False

    @model_validator(mode="after")
    def _one_source(self) -> TorchLayer:
        if (self.index is None) == (self.wheelhouse is None):
            found = f"both ({self.index!r}, {self.wheelhouse!r})" if self.index else "neither"
            raise ValueError(
                "a source: one of index (a named index) or wheelhouse (a directory or URL of "
                f"wheels), found {found}"
            )
        return self

    @field_validator("packages")
    @classmethod
    def _torch_first(cls, value: list[str]) -> list[str]:
        names = [Requirement(v).name.lower() for v in value]
        if "torch" not in names:
            raise ValueError(f"a list that includes 'torch', found {value!r}")
        return value

    def index_for(self, platform: str) -> str:
        """The index name for ``platform``; :data:`WHEELHOUSE` for the wheelhouse."""
        return self.index_by_platform.get(platform, self.index or WHEELHOUSE)


class StackLayer(Strict):
    """Everything else, resolved with the installed torch layer as a constraint."""

    use_shared: Flag = True
    add: list[RequirementStr] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)
    index: str = "pypi"
    editable: list[str] = Field(
        default_factory=list
    )  # local projects (paths from the project root)


class NightlyLayer(Strict):
    """The final forced reinstall from a nightly index, with pre-releases allowed."""

    packages: list[RequirementStr] = Field(default_factory=lambda: list(TORCH_FAMILY))
    index: str


class Expectations(Strict):
    """What the built env must turn out to be; checked after every build."""

    torch_version: str | None = None
    torch_local: str | None = None
    cuda: str | None = None
    cpu_only: Flag = False
    arch_covers: list[str] = Field(default_factory=list)
    arch_exact: list[str] = Field(default_factory=list)  # the compiled list, exactly (own builds)
    torch_family_match: Flag = True
    nightly_max_age_days: int | None = None
    blas: Literal["openblas", "mkl", "accelerate", "any"] = "any"
    numpy_major: int | None = None

    @field_validator("arch_covers", "arch_exact")
    @classmethod
    def _arch(cls, value: list[str]) -> list[str]:
        for arch in value:
            if not ARCH.match(arch):
                raise ValueError(f"architectures like 'sm_120' or 'compute_90', found {arch!r}")
        return value

    @model_validator(mode="after")
    def _cpu_vs_cuda(self) -> Expectations:
        if self.cpu_only and self.cuda:
            raise ValueError(f"cpu-only = true with no cuda, found cuda = {self.cuda!r}")
        return self


class MatrixCell(Strict):
    """Set by envlab on each env of a factored envspec: where it comes from and, when the
    published-releases tables say its build does not exist, why."""

    matrix: str  # the factored envspec's name (its file name)
    factors: dict[str, str]  # factor -> value, in declaration order
    no_such_build: str | None = None  # why the published-releases tables rule its build out


class EnvSpec(Strict):
    """One env of the matrix."""

    name: str = ""
    description: str
    python: str
    default: Flag = False
    tags: list[str] = Field(default_factory=list)
    platforms: list[str]
    unsupported: dict[str, str] = Field(default_factory=dict)
    version_notes: str = ""
    locked: Flag = True
    torch: TorchLayer
    stack: StackLayer = Field(default_factory=StackLayer)
    nightly: NightlyLayer | None = None
    expect: Expectations = Field(default_factory=Expectations)
    cell: MatrixCell | None = None  # set by envlab for a cell of a factored envspec

    @field_validator("python")
    @classmethod
    def _python(cls, value: str) -> str:
        if not re.fullmatch(r"3\.\d{1,2}", value):
            raise ValueError(f"a Python minor version like '3.11', found {value!r}")
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str]) -> list[str]:
        for item in value:
            if item not in platforms.KNOWN:
                raise ValueError(f"one of {', '.join(platforms.KNOWN)}, found {item!r}")
        if not value:
            raise ValueError("at least one platform, found an empty list")
        return value

    @field_validator("unsupported")
    @classmethod
    def _unsupported(cls, value: dict[str, str]) -> dict[str, str]:
        for item in value:
            if item not in platforms.KNOWN:
                raise ValueError(f"platform names ({', '.join(platforms.KNOWN)}), found {item!r}")
        return value

    def dump(self, exclude: set[str] | None = None) -> dict[str, Any]:
        """The spec as JSON data for hashing. Fields newer than the first envspecs (a cell, a
        wheelhouse, arch-exact) are left out while unset, so that the hashes of the specs that
        do not use them, and so their committed locks, stay what they were."""
        data = self.model_dump(mode="json", exclude=exclude)
        if self.cell is None:
            data.pop("cell", None)
        if self.torch.wheelhouse is None:
            data["torch"].pop("wheelhouse", None)
        if not self.expect.arch_exact:
            data["expect"].pop("arch_exact", None)
        return data

    @cached_property
    def spec_hash(self) -> str:
        return stable_hash(self.dump())


class SharedStack(Strict):
    """``envspecs/stack.toml``: the stack every env shares unless it opts out."""

    description: str = ""
    packages: list[RequirementStr]


def stack_requirements(spec: EnvSpec, shared: SharedStack | None) -> list[str]:
    """The env's stack requirements: the shared stack (if used), minus removals, plus additions."""
    base = list(shared.packages) if (spec.stack.use_shared and shared) else []
    removed = {r.lower() for r in spec.stack.remove}
    added = {Requirement(r).name.lower() for r in spec.stack.add}
    kept = [r for r in base if Requirement(r).name.lower() not in removed | added]
    return kept + list(spec.stack.add)


# --------------------------------------------------------------------------- loading


def format_validation_error(path: Path, exc: ValidationError) -> str:
    """One line: file, field, what was expected, what was found."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"]) or "(top level)"
    kind = first["type"]
    found = first.get("input")
    if kind == "extra_forbidden":
        message = f"unknown key {loc!r}"
        parent = _model_at(first["loc"][:-1])
        if parent is not None:
            allowed = ", ".join(sorted(_kebab(f) for f in parent.model_fields if f != "name"))
            message += f" (expected one of: {allowed})"
    elif kind == "missing":
        message = f"field {loc!r}: expected a value, found nothing (the key is required)"
    else:
        msg = first["msg"].removeprefix("Value error, ")
        if msg.startswith(
            ("a ", "an ", "one of", "at least", "cpu-only", "platform", "architectures")
        ):
            message = f"field {loc!r}: expected {msg}"
        else:
            message = f"field {loc!r}: expected {msg.lower()}, found {found!r}"
    more = f" (+{len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{path}: {message}{more}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = EnvSpec
    for part in loc:
        field = next(
            (f for n, f in model.model_fields.items() if n == part or _kebab(n) == part), None
        )
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if nxt is None:
            return None
        model = nxt
    return model


class Matrix:
    """All envspecs of a project, the shared stack and the named indexes."""

    def __init__(self, envspecs: Path) -> None:
        from envlab.spec.indexes import load_indexes

        self.dir = envspecs
        if not envspecs.is_dir():
            raise SpecError(f"{envspecs}: expected a directory of envspecs, found nothing there")
        self.indexes = load_indexes(envspecs / "indexes.toml")
        shared_path = envspecs / "stack.toml"
        self.shared = load_model(SharedStack, shared_path) if shared_path.exists() else None
        self._sources = {s.name: s for s in catalog.sources(envspecs)}
        self.names = list(self._sources)
        self._cache: dict[str, EnvSpec] = {}
        self._warned: set[str] = set()

    def get(self, name: str) -> EnvSpec:
        if name not in self.names:
            valid = ", ".join(self.names) or "(none)"
            cells = self.cells_of(name)
            hint = f" ({name}.toml is a matrix of {', '.join(cells)})" if cells else ""
            raise UnknownEnvError(f"unknown env {name!r}: expected one of {valid}{hint}")
        if name not in self._cache:
            self._cache[name] = self._load(name)
        return self._cache[name]

    def cell_of(self, name: str) -> tuple[str, dict[str, str]] | None:
        """(factored envspec, factor values) of env ``name``, read without validating it."""
        source = self._sources.get(name)
        if source is None or source.cell is None:
            return None
        return source.path.stem, dict(source.cell.values)

    def cells_of(self, matrix: str) -> list[str]:
        """The envs expanded from factored envspec ``<matrix>.toml`` (none: not a matrix)."""
        return [s.name for s in self._sources.values() if s.cell and s.path.stem == matrix]

    def _load(self, name: str) -> EnvSpec:
        source = self._sources[name]
        path = source.path
        if source.error is not None:
            raise SpecError(f"{path}: {source.error}")
        if source.cell is not None:
            spec = self._load_cell(path, source.cell)
        elif not ENV_NAME.match(name):
            raise SpecError(f"{path}: expected a lowercase env name like 'stable', found {name!r}")
        else:
            spec = load_model(EnvSpec, path, extra={"name": name, "cell": None})
        for where, index in self._index_refs(spec):
            if index not in self.indexes:
                known = ", ".join(self.indexes)
                raise SpecError(
                    f"{path}: field {where!r}: expected a named index ({known}), found {index!r}"
                )
        return spec

    @staticmethod
    def _load_cell(path: Path, cell: factors.Cell) -> EnvSpec:
        """A cell of a factored envspec, marked unavailable when the published-releases tables
        say its build does not exist (nothing is built to find out)."""
        data = {**cell.data, "name": cell.name}
        data["cell"] = {"matrix": path.stem, "factors": cell.values}
        try:
            spec = EnvSpec.model_validate(data)
        except ValidationError as exc:
            where = Path(f"{path} (cell {cell.name}: {cell.label})")
            raise SpecError(format_validation_error(where, exc)) from None
        reason = releases.no_such_build(spec)
        if reason is None:
            return spec
        marked = spec.cell.model_copy(update={"no_such_build": reason})  # type: ignore[union-attr]
        return spec.model_copy(update={"cell": marked})

    def torch_index(self, spec: EnvSpec, platform: str) -> Index:
        """The torch layer's source on ``platform``: a named index, or the env's wheelhouse."""
        name = spec.torch.index_for(platform)
        if spec.torch.wheelhouse and platform not in spec.torch.index_by_platform:
            return wheelhouse_index(spec.torch.wheelhouse, self.dir.parent)
        return self.indexes[name]

    @staticmethod
    def _index_refs(spec: EnvSpec) -> list[tuple[str, str]]:
        refs = [("torch.index", spec.torch.index)] if spec.torch.index else []
        refs += [("stack.index", spec.stack.index)]
        refs += [
            (f"torch.index-by-platform.{p}", i) for p, i in spec.torch.index_by_platform.items()
        ]
        if spec.nightly:
            refs.append(("nightly.index", spec.nightly.index))
        return refs

    def all(self) -> list[EnvSpec]:
        """Every env, validated: a malformed envspec fails here (commands over the whole matrix)."""
        return [self.get(n) for n in self.names]

    def valid(self) -> list[EnvSpec]:
        """Every env whose envspec is valid; a malformed one is warned about (once) and left out.

        For commands about this machine or one env, which must not fail because an unrelated
        envspec is broken.
        """
        found = []
        for name in self.names:
            try:
                found.append(self.get(name))
            except SpecError as exc:
                if name not in self._warned:
                    self._warned.add(name)
                    log(f"warning: env {name!r} left out: {exc}")
        return found

    def default_names(self) -> list[str]:
        """Envs with ``default = true``, read without validating the rest of each file."""
        return [e.name for e in catalog.entries(self.dir) if e.default]

    def stack_for(self, spec: EnvSpec) -> list[str]:
        return stack_requirements(spec, self.shared)

    def editables(self, spec: EnvSpec) -> list[Path]:
        """The env's local projects installed editable on top of the stack; each must exist."""
        found = []
        for rel in spec.stack.editable:
            path = (self.dir.parent / rel).resolve()
            if not (path / "pyproject.toml").is_file():
                raise SpecError(
                    f"{self.dir / (spec.name + '.toml')}: field 'stack.editable': expected a local "
                    f"project with a pyproject.toml, found nothing at {path}"
                )
            found.append(path)
        return found


def load_model(model: type[M], path: Path, extra: dict[str, Any] | None = None) -> M:
    data = read_toml(path, SpecError, f"a {model.__name__} file")
    if extra:
        clash = set(extra) & set(data)
        if clash:
            raise SpecError(f"{path}: unknown key {min(clash)!r} (envlab sets it)")
        data = {**data, **extra}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(path, exc)) from None
