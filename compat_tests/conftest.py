"""Compat suite plumbing: options, offline guards, the GPU gate and the structured JSON output."""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from compat_support import (
    Expect,
    assert_cuda_absent,
    gpu_unusable,
    host_gpus,
    load_expect,
    need,
    no_cuda_reason,
)

EXPECT_KEY = pytest.StashKey[Expect]()
MESSAGE_LIMIT = 1000


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("compat", "envlab compat suite")
    group.addoption(
        "--compat-json", default=None, help="write structured outcomes to this JSON file"
    )
    group.addoption("--compat-expect", default=None, help="JSON file with the env's expectations")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[EXPECT_KEY] = load_expect(config.getoption("--compat-expect"))
    # Nothing in this suite may reach a model hub or tracking server.
    os.environ.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
        MPLBACKEND="Agg",
    )
    if config.getoption("--compat-json"):
        config.pluginmanager.register(CompatRecorder(config), "compat-recorder")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Let a module of chosen checks start slow background work now (``start_early()``, e.g.
    fresh interpreters importing the whole stack), so that it overlaps the other checks."""
    if session.config.option.collectonly:
        return
    modules = {id(m): m for m in (getattr(item, "module", None) for item in session.items)}
    for module in modules.values():
        start = getattr(module, "start_early", None)
        if callable(start):
            start()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Spare the interpreter's exit a garbage collection over the whole imported stack.

    After the suite, torch, transformers, scikit-learn and the rest hold millions of objects:
    the collections at shutdown cost seconds and check nothing. Frozen objects are still torn
    down by reference counting (and native destructors still run), so a crash at exit shows.
    """
    gc.freeze()


@pytest.fixture(scope="session")
def expect(request: pytest.FixtureRequest) -> Expect:
    return request.config.stash[EXPECT_KEY]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """GPU checks: skip on a host without an NVIDIA GPU, fail naming why on a host with one where
    CUDA does not work, or assert CUDA's absence in a CPU-only env."""
    if pyfuncitem.get_closest_marker("gpu") is None:
        return None
    torch = need("torch")
    expect = pyfuncitem.config.stash[EXPECT_KEY]
    if expect.cpu_only:
        assert_cuda_absent(torch)
        return True  # the absence of CUDA is this check's result in a CPU-only env
    reason = no_cuda_reason(torch)
    if reason:
        gpus = host_gpus(expect)
        # a GPU the env cannot use is a broken env, not a machine without GPUs
        if gpus and (expect.raw("cuda") or getattr(torch.version, "cuda", None)):
            pytest.fail(gpu_unusable(torch, gpus, expect.raw("driver")), pytrace=False)
        pytest.skip(reason)
    return None


def category_of(item: pytest.Item) -> str:
    markers = list(item.iter_markers("category"))
    if len(markers) > 1:
        raise pytest.UsageError(f"{item.nodeid}: more than one category marker")
    if markers:
        return str(markers[0].args[0])
    module = getattr(item, "module", None)
    category = getattr(module, "CATEGORY", None)
    if not isinstance(category, str):
        raise pytest.UsageError(f"{item.nodeid}: no category (set CATEGORY in the module)")
    return category


def short_message(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """The assertion text or the exception line, never the traceback."""
    exc = excinfo.value
    if isinstance(exc, AssertionError):
        # pytest appends its rewritten-assert explanation; keep our message, or the assert line.
        full = str(exc).strip()
        text = full.split("\nassert ")[0].strip()
        if not text or text.startswith("assert "):
            text = full.splitlines()[0] if full else "AssertionError"
    elif excinfo.typename == "Failed":
        text = str(exc).strip()
    else:
        text = f"{excinfo.typename}: {str(exc).strip()}"
    text = text.strip()
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 3] + "..."
    return text


class CompatRecorder:
    """Collects one record per test (setup + call + teardown folded) and writes the JSON."""

    def __init__(self, config: pytest.Config) -> None:
        self.out = Path(config.getoption("--compat-json")).resolve()
        self.start = time.monotonic()
        self.records: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, tuple[str, bool]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.meta[item.nodeid] = (category_of(item), item.get_closest_marker("gpu") is not None)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.records[report.nodeid] = {
                "id": report.nodeid,
                "category": "collection",
                "outcome": "error",
                "duration_s": 0.0,
                "message": str(report.longrepr).strip().splitlines()[-1][:MESSAGE_LIMIT],
                "skip_reason": None,
                "gpu": False,
            }

    def _record(self, nodeid: str) -> dict[str, Any]:
        if nodeid not in self.records:
            category, gpu = self.meta.get(nodeid, ("unknown", False))
            self.records[nodeid] = {
                "id": nodeid,
                "category": category,
                "outcome": None,
                "duration_s": 0.0,
                "message": None,
                "skip_reason": None,
                "gpu": gpu,
            }
        return self.records[nodeid]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = self._record(report.nodeid)
        record["duration_s"] = round(record["duration_s"] + report.duration, 4)
        if hasattr(report, "wasxfail"):
            record["outcome"] = "xfailed" if report.skipped else "xpassed"
            return
        if report.skipped:
            record["outcome"] = "skipped"
            if isinstance(report.longrepr, tuple):
                record["skip_reason"] = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            record["outcome"] = "failed" if report.when == "call" else "error"
        elif report.when == "call":
            record["outcome"] = "passed"

    def pytest_exception_interact(
        self,
        node: pytest.Item | pytest.Collector,
        call: pytest.CallInfo[Any],
        report: pytest.TestReport | pytest.CollectReport,
    ) -> None:
        if call.excinfo is not None and isinstance(report, pytest.TestReport):
            record = self._record(report.nodeid)
            record["message"] = record["message"] or short_message(call.excinfo)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        tests = []
        for record in self.records.values():
            if record["outcome"] is None:  # e.g. interrupted before the call phase
                record["outcome"] = "error"
                record["message"] = record["message"] or "the check did not run to completion"
            tests.append(record)
        data = {"tests": tests, "duration_s": round(time.monotonic() - self.start, 3)}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.out.name, suffix=".tmp", dir=self.out.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
        os.replace(tmp, self.out)
