"""Run envlab's benchmarks inside an env (needs only the stack: torch, numpy, timm, torchaudio).

    <env-python> benchmarks/run.py --mode quick|default|full --out out.json
        [--threads N] [--only NAME ...]

Writes ``{"benchmarks": [record, ...], "context": {...}}`` atomically, after every benchmark, so a
crash leaves the records measured so far (``context["complete"]`` is false then and
``context["running"]`` names the benchmark that was running). A record is ``{name, version,
params, unit, higher_is_better, samples, device, error}``; ``samples`` are the raw per-repeat
values in ``unit``. A benchmark that cannot run here is left out with its reason in
``context["skipped"]``; one that fails while running is a record with ``error`` set and no
samples. Must not import envlab.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# Cold, private compiler caches so compile time means the same thing in every run; no downloads.
_CACHE = tempfile.mkdtemp(prefix="envlab-bench-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(_CACHE, "inductor")
os.environ["TRITON_CACHE_DIR"] = os.path.join(_CACHE, "triton")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import measure
import suite


def _error(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()[:500]


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cpu_name() -> str:
    try:
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _module_missing(name: str) -> str | None:
    try:
        importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001 - ImportError, OSError from a shared library, ...
        return _error(exc)
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(measure.MODES), default="default")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: all usable CPUs)"
    )
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="NAME", help="run only these benchmarks"
    )
    return parser


def _torch_context(torch: Any, threads: int, context: dict[str, Any]) -> bool:
    """Set torch's thread count, record the stack and devices in ``context``; whether CUDA works."""
    torch.set_num_threads(threads)
    context["torch"] = torch.__version__
    context["torch_cuda"] = torch.version.cuda
    context["num_threads"] = torch.get_num_threads()
    context["interop_threads"] = torch.get_num_interop_threads()
    for dist in ("numpy", "torchvision", "torchaudio", "timm"):
        try:
            context[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            context[dist] = None
    cuda = False
    try:
        cuda = bool(torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001
        context["cuda_error"] = _error(exc)
    if cuda:
        context["devices"]["cuda:0"] = torch.cuda.get_device_name(0)
        major, minor = torch.cuda.get_device_capability(0)
        context["compute_capability"] = f"{major}.{minor}"
        context["cudnn"] = torch.backends.cudnn.version()
    return cuda


def _selected(
    parser: argparse.ArgumentParser, specs: list[suite.Bench], only: list[str] | None
) -> list[suite.Bench]:
    """``specs`` narrowed to ``--only``: a benchmark's key or the name of a record it writes
    (``compile_time_cpu`` selects ``compile_speedup_cpu``); an unknown name is a usage error."""
    if not only:
        return specs
    names = {s.key: {s.key, *(out.name for out in s.outputs)} for s in specs}
    known = set().union(*names.values())
    unknown = sorted(set(only) - known)
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return [s for s in specs if names[s.key] & set(only)]


def _skip_reason(spec: suite.Bench, ctx: suite.Ctx, only: list[str] | None) -> str | None:
    """Why ``spec`` cannot or should not run here, or None to run it."""
    if spec.device.startswith("cuda") and not ctx.cuda:
        return "no CUDA device: torch.cuda.is_available() is False" + (
            " (CPU-only torch build)" if ctx.torch.version.cuda is None else ""
        )
    if ctx.mode.name == "quick" and not spec.quick and not only:
        return "not in the --quick set"
    if spec.key.startswith("compile_"):
        return suite.compile_unavailable(ctx.torch, spec.device)
    return None


def _measure(spec: suite.Bench, ctx: suite.Ctx) -> tuple[dict[str, list[float]], str | None]:
    """Run one benchmark: its samples per output name, or the error that stopped it."""
    missing = next((m for m in map(_module_missing, spec.needs) if m), None)
    if missing:
        return {}, f"cannot import a module this benchmark needs: {missing}"
    try:
        return spec.fn(ctx, spec.params), None
    except BaseException as exc:  # one failure must not end the run
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {}, _error(exc)
    finally:
        if spec.device.startswith("cuda"):
            with contextlib.suppress(Exception):
                ctx.torch.cuda.empty_cache()


def _records(
    spec: suite.Bench, samples: dict[str, list[float]], error: str | None
) -> list[dict[str, Any]]:
    params = {k: v for k, v in spec.params.items() if k != "name"}
    return [
        {
            "name": out.name,
            "version": spec.version,
            "params": params,
            "unit": out.unit,
            "higher_is_better": out.higher_is_better,
            "device": spec.device,
            "samples": [float(x) for x in samples.get(out.name, [])] if error is None else [],
            "error": error,
        }
        for out in spec.outputs
    ]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    mode = measure.MODES[args.mode]
    threads = args.threads or _default_threads()

    context: dict[str, Any] = {
        "mode": mode.name,
        "threads": threads,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "devices": {"cpu": _cpu_name()},
        "skipped": {},
        "complete": False,
        "running": None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    doc: dict[str, Any] = {"benchmarks": [], "context": context}
    _write(args.out, doc)

    try:
        import torch
    except BaseException as exc:  # noqa: BLE001
        context["error"] = f"import torch failed: {_error(exc)}"
        context["complete"] = True
        _write(args.out, doc)
        return 0

    cuda = _torch_context(torch, threads, context)
    ctx = suite.Ctx(torch=torch, mode=mode, threads=threads, cuda=cuda)
    specs = _selected(parser, suite.benchmarks(threads), args.only)

    for spec in specs:
        reason = _skip_reason(spec, ctx, args.only)
        if reason:
            for out in spec.outputs:
                context["skipped"][out.name] = reason
            continue
        context["running"] = spec.key
        _write(args.out, doc)
        samples, error = _measure(spec, ctx)
        doc["benchmarks"].extend(_records(spec, samples, error))
    context["running"] = None
    context["complete"] = True
    context["duration_s"] = round(time.perf_counter() - start, 3)
    _write(args.out, doc)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        shutil.rmtree(_CACHE, ignore_errors=True)
