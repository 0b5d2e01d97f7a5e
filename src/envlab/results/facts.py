"""Typed environment facts: what :mod:`envlab.verify.probe` prints from inside an env.

Every key the probe can emit has a field here; every field is optional, so the partial facts of a
broken env (torch that does not import, a probe that crashed) still parse. Facts are stored in the
result document (``Result.facts``) and versioned with it: a change to these models is a change to
the result schema (bump ``SCHEMA_VERSION`` in :mod:`envlab.results.schema` and add a migration).

Serialising writes back only the keys that were set, so a document round-trips with exactly the
keys the probe printed (no ``null`` padding for facts a probe never reported).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class FactsModel(BaseModel):
    """Strict about unknown keys (they are schema drift); writes only the keys that hold facts."""

    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _as_found(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        # Every field defaults to None or an empty container, so "unset and empty" means "not
        # reported"; a default sub-model or list filled in place is unset but holds facts.
        return {
            key: value
            for key, value in data.items()
            if key in self.model_fields_set or value not in (None, {}, [])
        }


class Device(FactsModel):
    """One CUDA device torch saw."""

    index: int | None = None
    name: str | None = None
    compute_capability: str | None = None


class TorchFacts(FactsModel):
    """torch's build and runtime; ``error`` alone when ``import torch`` failed."""

    error: str | None = None
    version: str | None = None
    git_version: str | None = None
    cuda: str | None = None
    hip: str | None = None
    cudnn: int | None = None
    cudnn_error: str | None = None
    arch_flags: list[str] = Field(default_factory=list)
    arch_flags_error: str | None = None
    cuda_available: bool | None = None
    device_count: int | None = None
    arch_list: list[str] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)
    cuda_error: str | None = None
    blas: str | None = None
    lapack: str | None = None
    parallel: list[str] = Field(default_factory=list)
    config_error: str | None = None
    num_threads: int | None = None
    num_threads_error: str | None = None


class ModuleFacts(FactsModel):
    """An imported module (numpy, torchvision, torchaudio): its version, or why it did not load."""

    version: str | None = None
    error: str | None = None


class ThreadpoolLibrary(FactsModel):
    """One native thread pool threadpoolctl found (a BLAS or an OpenMP runtime)."""

    user_api: str | None = None
    internal_api: str | None = None
    prefix: str | None = None
    filepath: str | None = None
    version: str | None = None
    num_threads: int | None = None


class BlasFacts(FactsModel):
    """The BLAS and OpenMP runtimes loaded in the env (numpy's and torch's together)."""

    libraries: list[ThreadpoolLibrary] = Field(default_factory=list)
    openmp: list[ThreadpoolLibrary] = Field(default_factory=list)
    torch_import_error: str | None = None
    error: str | None = None


class Distribution(FactsModel):
    """An installed distribution and the tool that installed it (pip, uv, conda)."""

    version: str | None = None
    installer: str | None = None


class PythonFacts(FactsModel):
    version: str | None = None
    implementation: str | None = None
    executable: str | None = None
    prefix: str | None = None


class PlatformFacts(FactsModel):
    system: str | None = None
    release: str | None = None
    machine: str | None = None
    libc: str | None = None
    preferred_encoding: str | None = None
    conda_prefix: str | None = None


class Facts(FactsModel):
    """Everything the probe found in one env; ``probe_error`` alone when the probe itself failed."""

    probe_error: str | None = None
    python: PythonFacts = Field(default_factory=PythonFacts)
    platform: PlatformFacts = Field(default_factory=PlatformFacts)
    torch: TorchFacts = Field(default_factory=TorchFacts)
    torchvision: ModuleFacts = Field(default_factory=ModuleFacts)
    torchaudio: ModuleFacts = Field(default_factory=ModuleFacts)
    numpy: ModuleFacts = Field(default_factory=ModuleFacts)
    blas: BlasFacts = Field(default_factory=BlasFacts)
    # Keyed by normalised distribution name ("nvidia-cublas-cu12").
    distributions: dict[str, Distribution] = Field(default_factory=dict)

    def versions(self) -> dict[str, str | None]:
        """Installed distribution name -> version."""
        return {name: dist.version for name, dist in self.distributions.items()}
