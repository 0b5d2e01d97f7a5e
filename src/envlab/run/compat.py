"""Run the compat suite (``compat_tests/``) inside an env and read its structured outcomes.

In an env envlab built, the suite's compiler caches live in the env (``CACHES``): inductor's and
triton's kernels and Python's bytecode are built once per env, so a second run in an unchanged env
compiles nothing; a rebuilt env starts with empty caches.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from envlab.errors import CommandError
from envlab.log import log
from envlab.proc import run
from envlab.results.schema import CompatRun, CompatTest, Host
from envlab.spec.envspec import Expectations

CACHES = "envlab-cache"  # under the env's directory
# Set by a user or an image to keep bytecode out of read-only trees; an env envlab built is its
# own tree, and recompiling every module on every run doubles the suite's import time.
KEEP_CACHES = ("PYTHONDONTWRITEBYTECODE",)


def expectations_json(
    name: str, expect: Expectations | None, host: Host | None = None
) -> dict | None:
    """The env's expectations for ``--compat-expect``, with the host's NVIDIA GPUs as the doctor
    detected them (``host_gpus``: a GPU there means CUDA must work, not skip)."""
    if expect is None:
        return None
    gpus = [gpu.model_dump(mode="json") for gpu in host.gpus] if host else []
    driver = host.driver if host else None
    return {"env": name, **expect.model_dump(mode="json"), "host_gpus": gpus, "driver": driver}


# What the suite's vector-ISA check records after inductor built and loaded its ISA test kernel.
ISA_VERDICT = "envlab-vec-isa.json"


def compiler_identity() -> str | None:
    """The C++ compiler inductor builds with, as a path and its size and mtime (None: none).

    The compat suite computes the same (compat_tests/test_compile.py): a changed compiler voids
    an ISA verdict recorded with the old one.
    """
    found = shutil.which(os.environ.get("CXX") or "g++") or shutil.which("c++")
    if found is None:
        return None
    real = Path(found).resolve()
    stat = real.stat()
    return f"{real}:{stat.st_size}:{stat.st_mtime_ns}"


def _isa_trusted(inductor: Path) -> bool:
    """Whether an earlier run in this env, with this compiler, built the ISA test kernels."""
    try:
        recorded = json.loads((inductor / ISA_VERDICT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded.get("compiler") == compiler_identity()


def cache_variables(caches: Path) -> dict[str, str]:
    """Where torch's compilers keep their caches, under ``caches``; and whether inductor may skip
    rebuilding its vector-ISA test kernels (six fresh interpreters importing torch, each run)."""
    found = {
        "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
        "TRITON_CACHE_DIR": str(caches / "triton"),
    }
    if _isa_trusted(caches / "inductor"):
        found["TORCHINDUCTOR_VEC_ISA_OK"] = "1"
    return found


def run_suite(
    python: Path,
    suite: Path,
    expect: dict | None,
    *,
    timeout: float = 1800,
    extra_args: list[str] | None = None,
    select: Sequence[str] = (),
    caches: Path | None = None,
) -> CompatRun:
    """Run ``suite`` with ``python``; a crash of the suite is recorded, not raised.

    ``select``: only these node ids of the suite (``test_torchaudio.py::test_melspectrogram_cpu``).
    ``caches``: a directory of the env's own for compiler and bytecode caches (kept across runs).
    """
    env = cache_variables(caches) if caches else None
    with tempfile.TemporaryDirectory(prefix="envlab-compat-") as tmp:
        out = Path(tmp) / "compat.json"
        argv = [
            str(python),
            "-m",
            "pytest",
            *([f"{suite}/{nodeid}" for nodeid in select] or [str(suite)]),
            "-q",
            "-p",
            "no:cacheprovider",
            f"--compat-json={out}",
        ]
        if expect is not None:
            expect_file = Path(tmp) / "expect.json"
            expect_file.write_text(json.dumps(expect), encoding="utf-8")
            argv.append(f"--compat-expect={expect_file}")
        argv += extra_args or []
        log(f"compat suite: {suite.name} with {python}")
        try:
            done = run(
                argv,
                cwd=Path(tmp),
                check=False,
                stream=True,
                timeout=timeout,
                env=env,
                unset=KEEP_CACHES if caches else (),
            )
        except CommandError as exc:  # e.g. interpreter missing
            return CompatRun(error=str(exc), returncode=exc.returncode)
        if not out.exists():
            tail = done.output.strip().splitlines()[-1:] or ["no output"]
            return CompatRun(
                returncode=done.returncode,
                duration_s=round(done.duration_s, 2),
                error=f"the compat suite wrote no results (exit {done.returncode}): {tail[0]}",
            )
        try:
            data = json.loads(out.read_text(encoding="utf-8"))
            tests = [CompatTest.model_validate(t) for t in data.get("tests", [])]
        except (ValueError, ValidationError) as exc:
            return CompatRun(returncode=done.returncode, error=f"unreadable compat results: {exc}")
        run_result = CompatRun(
            tests=tests, duration_s=round(done.duration_s, 2), returncode=done.returncode
        )
        counts = run_result.counts()
        log(
            f"compat suite: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped "
            f"in {done.duration_s:.1f}s"
        )
        return run_result
