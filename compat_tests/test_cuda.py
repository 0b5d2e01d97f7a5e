"""Seed category 2: CUDA — device usable, its arch in the build's list, matmul in three dtypes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from compat_support import (
    Expect,
    arch_flags,
    coverage,
    cuda_absence_problems,
    local_tag,
    need,
    nvidia_cuda_distributions,
)

CATEGORY = "cuda"

# Relative error bound (max |gpu - ref| / max |ref|) for a 256x256 matmul per dtype.
MATMUL_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}


@pytest.mark.gpu
def test_cuda_device_usable() -> None:
    """Every visible CUDA device runs a kernel and synchronizes.

    Fix: "no kernel image is available" means the build lacks this GPU's arch (see arch
    checks); a driver error means the NVIDIA driver is older than the CUDA the build needs.
    """
    torch = need("torch")
    count = torch.cuda.device_count()
    assert count >= 1, "torch.cuda.is_available() is True but device_count() is 0"
    for index in range(count):
        x = torch.arange(1024, device=f"cuda:{index}", dtype=torch.float32)
        total = float((x * 2).sum().item())
        torch.cuda.synchronize(index)
        assert total == 1023 * 1024, f"cuda:{index} computed {total}, expected {1023 * 1024}"


@pytest.mark.gpu
def test_device_arch_in_arch_list() -> None:
    """Each device's compute capability is covered by the build's compiled arch list.

    Fix: a Blackwell GPU (sm_120) needs a cu128+ build; Maxwell/Pascal (sm_52/sm_61) were
    removed from cu128 wheels and need cu118 (torch 2.4-2.7) or a source build.
    """
    torch = need("torch")
    flags = arch_flags(torch)
    for index in range(torch.cuda.device_count()):
        cap = tuple(torch.cuda.get_device_capability(index))
        verdict, why = coverage(flags, (cap[0], cap[1]))
        name = torch.cuda.get_device_name(index)
        assert verdict, (
            f"GPU {index} ({name}) is sm_{cap[0]}{cap[1]}; {why}. Fix: install a torch build "
            f"whose arch list includes sm_{cap[0]}{cap[1]} (e.g. cu128 for sm_120, cu118 or a "
            "source build for sm_52/sm_61)."
        )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(MATMUL_TOLERANCE))
def test_gpu_matmul(dtype: str) -> None:
    """A 256x256 GPU matmul in fp32/fp16/bf16 agrees with a float64 CPU reference.

    Fix: wrong results usually mean a broken cuBLAS (mismatched nvidia-cublas wheel) or a
    GPU without native support for the dtype (bf16 needs sm_80+).
    """
    torch = need("torch")
    kind = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(256, 256, generator=generator).to(kind)
    b = torch.randn(256, 256, generator=generator).to(kind)
    reference = a.double() @ b.double()
    found = (a.cuda() @ b.cuda()).double().cpu()
    error = float((found - reference).abs().max() / reference.abs().max())
    limit = MATMUL_TOLERANCE[dtype]
    assert error <= limit, (
        f"{dtype} GPU matmul relative error {error:.2e} > {limit:.0e} vs CPU reference"
    )


# A first CUDA op that takes longer than this hangs for a user (PyTorch's check_binary.sh allows
# 20 s; here 60 s leaves room for a loaded CI machine).
FIRST_OP_TIMEOUT = 60


def _fresh_process(code: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter of this env (a CUDA context of its own)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.gpu
def test_first_cuda_op_in_time() -> None:
    """A fresh process runs its first CUDA op and synchronizes within 60 s.

    Fix: a hang usually means the build has no SASS for this GPU and the driver JIT-compiles
    every kernel from PTX (pick a build whose arch list has the GPU's sm_XY, see the arch
    checks), or a GPU that does not answer (check nvidia-smi; a reset may be needed).
    """
    code = "import torch; x = torch.randn(3, 5).cuda(); torch.cuda.synchronize(); print(x.sum())"
    try:
        done = _fresh_process(code, FIRST_OP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the first CUDA op did not finish within {FIRST_OP_TIMEOUT} s in a fresh process",
            pytrace=False,
        )
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    assert done.returncode == 0, f"the first CUDA op failed in a fresh process: {tail}"


@pytest.mark.gpu
def test_device_side_assert_propagates() -> None:
    """A failing device-side assert (torch._assert_async on the GPU) raises a CUDA RuntimeError.

    Fix: no error means GPU errors are lost (asserts compiled out, or an error-checking bug in
    this build): report it upstream; a hang means the assert killed the CUDA context without
    telling the host (driver problem).
    """
    code = (
        "import torch\n"
        "try:\n"
        "    torch._assert_async(torch.tensor(0, device='cuda'))\n"
        "    torch.cuda.synchronize()\n"
        "except RuntimeError as exc:\n"
        "    print('raised:', str(exc).splitlines()[0])\n"
        "else:\n"
        "    print('no error')\n"
    )
    try:
        done = _fresh_process(code, FIRST_OP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a device-side assert hung for {FIRST_OP_TIMEOUT} s", pytrace=False)
    out = done.stdout.strip()
    raised = out.startswith("raised:") and ("CUDA" in out or "assert" in out.lower())
    assert raised, (
        f"a failing device-side assert did not raise a CUDA error in Python (got: "
        f"{out or (done.stderr.strip().splitlines() or ['no output'])[-1]})"
    )


@pytest.mark.gpu
def test_cuda_errors_are_python_exceptions() -> None:
    """A CUDA error on the host side (a device index that does not exist) raises RuntimeError.

    Fix: a crash (abort, segfault) instead means C++ exceptions do not cross the library
    boundary: a linker problem of this build (PyTorch's check_binary.sh checks the same); report it.
    """
    torch = need("torch")
    missing = torch.cuda.device_count()
    with pytest.raises(RuntimeError):
        torch.eye(7, 7, device=f"cuda:{missing}")


@pytest.mark.gpu
def test_lstm_gpu_matches_cpu() -> None:
    """An LSTM (cuDNN's RNN kernels) on the GPU gives the CPU's output.

    Fix: CUDNN_STATUS_* errors or wrong values point at a cuDNN that does not fit torch (see the
    cuDNN checks); fp32 differences around 1e-3 mean TF32 is on (torch.backends.cudnn.allow_tf32).
    """
    torch = need("torch")
    generator = torch.Generator().manual_seed(0)
    lstm = torch.nn.LSTM(16, 32, num_layers=2, batch_first=True)
    x = torch.randn(4, 10, 16, generator=generator)
    with torch.no_grad():
        cpu, _ = lstm(x)
        gpu, _ = lstm.cuda()(x.cuda())
    error = float((gpu.cpu() - cpu).abs().max())
    assert error <= 1e-3, f"LSTM on the GPU differs from the CPU by {error:.2e}"


def test_cuda_build_consistent() -> None:
    """torch's CUDA facts agree: version.cuda, backends.cuda.is_built() and the +cuXYZ tag.

    Fix: a mismatch means a hand-assembled or clobbered install (a CPU wheel over a CUDA one);
    reinstall torch, torchvision and torchaudio together from one index.
    """
    torch = need("torch")
    cuda = torch.version.cuda
    built = torch.backends.cuda.is_built()
    assert built == (cuda is not None), (
        f"torch.backends.cuda.is_built() is {built} but torch.version.cuda is {cuda!r}"
    )
    tag = local_tag(torch.__version__)
    if tag and tag.startswith("cu"):
        wanted = "cu" + "".join((cuda or "?").split(".")[:2])
        assert tag == wanted, (
            f"torch {torch.__version__} is tagged +{tag} but torch.version.cuda is {cuda!r}"
        )
    if tag == "cpu":
        assert cuda is None, (
            f"torch {torch.__version__} is tagged +cpu but torch.version.cuda is {cuda!r}"
        )


def test_cuda_version_matches_expectation(expect: Expect) -> None:
    """torch.version.cuda is the env's declared CUDA (or None in a CPU-only env).

    Fix: another torch build got installed (an index fallback, or a stack package pulled
    torch from PyPI); rebuild the env so torch comes from the env's torch index only.
    """
    torch = need("torch")
    if expect.declared and expect.cpu_only:
        problems = cuda_absence_problems(torch)
        assert not problems, (
            "expected a CPU-only build (cpu_only: true) but found: "
            + "; ".join(problems)
            + ". Fix: install torch from the CPU index (https://download.pytorch.org/whl/cpu)."
        )
        return
    wanted = str(expect.get("cuda"))
    found = torch.version.cuda
    assert found is not None and found.split(".")[:2] == wanted.split(".")[:2], (
        f"expected CUDA {wanted}, found torch.version.cuda = {found!r} "
        f"(torch {torch.__version__}). "
        "Fix: install torch from the index for that CUDA version (e.g. .../whl/cu"
        f"{''.join(wanted.split('.')[:2])}) and check no later step replaced it."
    )


def test_nvidia_wheels_match_build(expect: Expect) -> None:
    """The nvidia-* CUDA wheels fit the build: none in a CPU env, same CUDA major otherwise.

    Fix: nvidia-* wheels next to a CPU torch are leftovers of a CUDA torch (GBs; remove them);
    a -cuNN suffix other than torch's CUDA major means two CUDA stacks got mixed.
    """
    torch = need("torch")
    wheels = nvidia_cuda_distributions()
    cuda = torch.version.cuda
    if expect.cpu_only:
        assert not wheels, (
            f"expected a CPU-only env (cpu_only: true) but {len(wheels)} nvidia-* CUDA wheels "
            f"are installed ({', '.join(sorted(wheels)[:5])}). "
            "Fix: install torch from the CPU index and remove them."
        )
    if cuda is None:
        assert not wheels, (
            f"torch {torch.__version__} is a CPU build but {len(wheels)} nvidia-* CUDA wheels are "
            f"installed ({', '.join(sorted(wheels)[:5])}). "
            "Fix: uninstall them, or install the CUDA torch the env was meant to have."
        )
        return
    major = cuda.split(".")[0]
    wrong = sorted(
        name for name in wheels if (m := re.search(r"-cu(\d+)$", name)) and m.group(1) != major
    )
    assert not wrong, (
        f"torch is built for CUDA {cuda} but these wheels target another CUDA major: {wrong}"
    )
    for runtime in (f"nvidia-cuda-runtime-cu{major}", "nvidia-cuda-runtime"):
        if runtime in wheels:
            found = ".".join(wheels[runtime].split(".")[:2])
            assert found == ".".join(cuda.split(".")[:2]), (
                f"{runtime} {wheels[runtime]} is CUDA {found} but torch is built for CUDA {cuda}. "
                "Fix: reinstall torch so its pinned nvidia-* wheels come back."
            )
