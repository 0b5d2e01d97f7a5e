"""Typed environment facts: what :mod:`envlab.verify.probe` prints from inside an env.

Every key the probe can emit has a field here; every field is optional, so the partial facts of a
broken env (torch that does not import, a probe that crashed) still parse. Facts are stored in the
result document (``Result.facts``) and versioned with it: a change to these models is a change to
the result schema. A new optional field is additive (older documents still parse, without it); any
other change bumps ``SCHEMA_VERSION`` in :mod:`envlab.results.schema` with a migration.

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
    # why torch.cuda.is_available() is False on a CUDA build (torch.cuda.init()'s error)
    cuda_init_error: str | None = None
    # build features (what check_binary.sh and collect_env look at)
    debug: bool | None = None
    mkl: bool | None = None
    mkldnn: bool | None = None
    openmp: bool | None = None
    xnnpack: bool | None = None
    magma: bool | None = None
    features_error: str | None = None
    # the cuDNN torch was compiled against and the one it loaded ("9.10.2"); NCCL loaded
    cudnn_compiled: str | None = None
    cudnn_runtime: str | None = None
    nccl: str | None = None
    nccl_error: str | None = None
    # torch's own Requires-Dist lines (the nvidia-*/triton pins of its build)
    requires: list[str] = Field(default_factory=list)


class ModuleFacts(FactsModel):
    """An imported module (numpy, torchvision, torchaudio): its version, or why it did not load."""

    version: str | None = None
    error: str | None = None


class TorchvisionFacts(ModuleFacts):
    """torchvision, and the JPEG library its image ops were compiled against."""

    jpeg_version: int | None = None  # torch.ops.image._jpeg_version(): 80 is the libjpeg 8 API
    jpeg_turbo: bool | None = None
    jpeg_error: str | None = None


class ToolchainFacts(FactsModel):
    """The compilers a CUDA/C++ extension build in this env would use (torch's own search)."""

    cuda_home: str | None = None
    cuda_home_source: str | None = None  # CUDA_HOME, CUDA_PATH, nvcc on PATH, /usr/local/cuda
    nvcc: str | None = None
    nvcc_version: str | None = None  # "13.0"
    cxx: str | None = None
    cxx_version: str | None = None  # first line of `c++ --version`
    error: str | None = None


class RuntimeEnvFacts(FactsModel):
    """Variables that change how torch runs here, as they were set for the probe (unset: None)."""

    cuda_module_loading: str | None = None
    cuda_alloc_conf: str | None = None  # PYTORCH_CUDA_ALLOC_CONF
    alloc_conf: str | None = None  # PYTORCH_ALLOC_CONF (its newer name)
    cuda_visible_devices: str | None = None
    omp_num_threads: str | None = None
    gomp_cpu_affinity: str | None = None
    ld_library_path: str | None = None


class MediaFacts(FactsModel):
    """The FFmpeg shared libraries the dynamic loader finds (torchcodec needs them)."""

    ffmpeg_libraries: list[str] = Field(default_factory=list)  # sonames that load: libavutil.so.57


class FileProblem(FactsModel):
    """One installed file that does not match its distribution's RECORD."""

    dist: str
    path: str
    problem: str  # "missing", "size 10 != recorded 12", "sha256 differs"


class IntegrityFacts(FactsModel):
    """Installed files against each distribution's RECORD, and ``uv pip check``'s findings.

    Gathered at every verification (files can change without any reinstall); never cached.
    """

    distributions: int | None = None
    files: int | None = None
    deep: bool | None = None  # hashes compared too, not only presence and size
    problems: list[FileProblem] = Field(default_factory=list)
    problems_total: int | None = None  # problems can be many; ``problems`` holds the first ones
    no_record: list[str] = Field(default_factory=list)  # distributions without a RECORD
    error: str | None = None
    pip_check: list[str] | None = None  # None: not run
    pip_check_error: str | None = None


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
    # PEP 508 marker environment, to evaluate requirements (torch's pins) as this env would
    markers: dict[str, str] = Field(default_factory=dict)


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
    torchvision: TorchvisionFacts = Field(default_factory=TorchvisionFacts)
    torchaudio: ModuleFacts = Field(default_factory=ModuleFacts)
    numpy: ModuleFacts = Field(default_factory=ModuleFacts)
    blas: BlasFacts = Field(default_factory=BlasFacts)
    toolchain: ToolchainFacts = Field(default_factory=ToolchainFacts)
    runtime_env: RuntimeEnvFacts = Field(default_factory=RuntimeEnvFacts)
    media: MediaFacts = Field(default_factory=MediaFacts)
    # not printed by the probe: added by verification from a scan run every time
    integrity: IntegrityFacts = Field(default_factory=IntegrityFacts)
    # Keyed by normalised distribution name ("nvidia-cublas-cu12").
    distributions: dict[str, Distribution] = Field(default_factory=dict)

    def versions(self) -> dict[str, str | None]:
        """Installed distribution name -> version."""
        return {name: dist.version for name, dist in self.distributions.items()}
