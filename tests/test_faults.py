"""The fault catalogue: what a hostile new user does to envlab, one case per fault.

Every case runs envlab as a user would (``python -m envlab.cli``, a project on a local index on
127.0.0.1) and asserts three things: the exit code; a one-line message naming what is wrong, with
no traceback; and that nothing was lost: the earlier run's result file byte for byte, the history
holding every result on disk, no partial env reused, no directory left by a dead build.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import factories
import pytest
from helpers import ROOT, make_project
from localindex import LocalIndexes, serve

from envlab import cli
from envlab.build import progress
from envlab.proc import alive, run
from envlab.results.history import open_history
from envlab.results.schema import load
from envlab.results.store import Skipped, Store

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
DECLARED = {"pypi": "https://pypi.org/simple", "torchidx": "https://download.pytorch.org/whl/cpu"}
DEMO = f"""
description = "demo env of the fault catalogue"
python = "{PY}"
platforms = ["linux-64"]
[torch]
packages = ["torch==2.10.0"]
index = "torchidx"
[stack]
add = [{{stack}}]
[expect]
torch-version = "2.10.0"
torch-local = "cpu"
cpu-only = true
"""
HOST = "h"
JSON_TYPE = "application/json"
EARLIER_RUN = factories.run_id(0)[0]
IN_FLIGHT = re.compile(r"^\.([a-z][a-z0-9-]*)\.(?:partial|old)-(\d+)$")

pytestmark = pytest.mark.timeout(300)


def named(cases: list[tuple[Any, ...]]) -> list[Any]:
    """Parametrize cases whose first value is the fault's name, with that name as the id."""
    return [pytest.param(*case, id=case[0]) for case in cases]


def spec(stack: str = '"timmish"', **replace: str) -> str:
    text = DEMO.format(stack=stack)
    for old, new in replace.items():
        text = text.replace(old.replace("_", "-"), new)
    return text


def populate(idx: LocalIndexes) -> None:
    idx.add("torchidx", "torch", "2.10.0+cpu", ["filelock"])
    idx.add("torchidx", "filelock", "3.0")
    idx.add("pypi", "filelock", "3.0")
    idx.add("pypi", "numpy", "2.0")
    idx.add("pypi", "timmish", "1.0", ["torch>=2", "numpy"])
    idx.add("pypi", "torch", "1.12.0")
    idx.add("pypi", "allennlpish", "1.0", ["torch>=1.6.0,<1.13.0"])


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local index's files, made once (each lab serves a copy)."""
    root = tmp_path_factory.mktemp("wheels")
    populate(LocalIndexes(root))
    return root


@dataclass
class Lab:
    """A project on a local index, with an earlier run's result in its runs and history."""

    root: Path
    idx: LocalIndexes
    env: dict[str, str]
    earlier: Path
    earlier_bytes: bytes

    runs = property(lambda self: self.root / "reports" / "runs")
    db = property(lambda self: self.root / "reports" / "history.sqlite")
    envs = property(lambda self: self.root / ".envlab" / "envs")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "envlab.cli", "--root", str(self.root), *args]

    def environ(self, env: dict[str, str] | None = None) -> dict[str, str]:
        full = {**os.environ, **self.env, **(env or {})}
        return {k: v for k, v in full.items() if v is not None}

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            env=self.environ(env),
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environ(env),
            stdin=subprocess.DEVNULL,
        )

    def write_spec(self, name: str, text: str) -> None:
        (self.root / "envspecs" / f"{name}.toml").write_text(text, encoding="utf-8")

    def result(self, run_id: str = "fault", env: str = "demo") -> dict:
        return json.loads(load(self.runs / run_id / HOST / f"{env}.json").model_dump_json())

    def lock(self) -> None:
        done = self.run("lock")
        assert done.returncode == 0, done.stderr[-3000:]


def make_lab(base: Path, wheels: Path, idx: LocalIndexes, envs: dict[str, str] | None) -> Lab:
    root = make_project(base, indexes=DECLARED, envs=envs or {"demo": spec()}, stack=[])
    env = {
        **idx.mirrors("pypi", "torchidx"),
        "ENVLAB_HOST_ID": HOST,
        "ENVLAB_RUN_ID": "fault",
        "ENVLAB_FALLBACK_DIR": str(base / "fallback"),
        "PATH": f"{base / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    (base / "bin").mkdir()
    earlier = factories.result(run=0, env="demo", host_=factories.host(HOST))
    (path,) = factories.write(root / "reports" / "runs", [earlier])
    history, _ = open_history(root / "reports" / "history.sqlite", root / "reports" / "runs")
    history.close()
    return Lab(root, idx, env, path, path.read_bytes())


@pytest.fixture
def lab_factory(tmp_path: Path, wheels: Path) -> Iterator[Callable[..., Lab]]:
    """Labs served from a copy of the wheels (``delays``: slow projects)."""
    with contextlib.ExitStack() as stack:
        count = iter(range(100))

        def make(envs: dict[str, str] | None = None, delays: dict[str, float] | None = None) -> Lab:
            base = tmp_path / f"lab{next(count)}"
            shutil.copytree(wheels, base / "index")
            idx = stack.enter_context(serve(base / "index", delays=delays))
            return make_lab(base, wheels, idx, envs)

        yield make


@pytest.fixture
def lab(lab_factory: Callable[..., Lab]) -> Lab:
    return lab_factory()


# --------------------------------------------------------------------------- the three checks


def one_line(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The exit code is ``code`` and the last line is envlab's one-line error naming ``needles``."""
    out = done.stdout + done.stderr
    assert done.returncode == code, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("envlab: error: "), last
    for needle in needles:
        assert needle in last, last
    return last


def clean(done: subprocess.CompletedProcess[str], code: int = 0) -> None:
    out = done.stdout + done.stderr
    assert done.returncode == code, out[-4000:]
    assert "Traceback" not in out, out[-4000:]


def nothing_lost(lab: Lab) -> None:
    """The earlier result intact, the history holding every result on disk, no leftovers."""
    assert lab.earlier.read_bytes() == lab.earlier_bytes, "the earlier result was changed"
    on_disk = {
        (r.run_id, r.host.id, r.env) for r in Store(lab.runs).scan() if not isinstance(r, Skipped)
    }
    history, _ = open_history(lab.db, lab.runs)
    with history:
        rows = {(r.run_id, r.host_id, r.env) for r in history.latest_per_pair()}
        every = {
            (row[0], row[1], row[2])
            for row in history.db.execute("SELECT run_id, host_id, env FROM results")
        }
    assert on_disk <= every, f"results missing from the history: {on_disk - every}"
    assert (EARLIER_RUN, HOST, "demo") in every and rows
    no_orphans(lab.envs)
    for env_dir in lab.envs.iterdir() if lab.envs.is_dir() else []:
        if env_dir.is_dir() and not env_dir.name.startswith("."):
            assert (env_dir / "envlab-build.json").exists(), f"{env_dir} is a half-built env"


def no_orphans(envs: Path) -> None:
    left = [
        p.name
        for p in (envs.iterdir() if envs.is_dir() else [])
        if (m := IN_FLIGHT.match(p.name)) and not alive(int(m.group(2)))
    ]
    assert not left, f"directories of dead builds left behind: {left}"


def wait_for(proc: subprocess.Popen[str], text: str, seen: list[str], limit: float = 120) -> None:
    """Read ``proc``'s stderr until a line contains ``text`` (lines kept in ``seen``)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + limit
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return
        assert time.monotonic() < deadline, f"no {text!r} within {limit}s: {''.join(seen)}"
    raise AssertionError(f"process ended before printing {text!r}: {''.join(seen)}")


def finish(proc: subprocess.Popen[str], seen: list[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(seen) + err)


# --------------------------------------------------------------------------- servers and files


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every GET with one fixed body: a portal page, a proxy's error, a JSON blob."""

    status = 200
    body = b"<html><body>Welcome! Please sign in.</body></html>"
    ctype = "text/html"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.ctype)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


@contextlib.contextmanager
def answering(
    status: int = 200, body: bytes | None = None, ctype: str = "text/html"
) -> Iterator[str]:
    """A server on 127.0.0.1 that answers anything with the same page; yields its /simple URL."""
    attrs = {"status": status, "ctype": ctype, "body": body or _Answer.body}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("A", (_Answer,), attrs))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


class Refuser:
    """An HTTP(S) proxy on 127.0.0.1 that refuses everything and records what was asked of it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.asked: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    first = conn.recv(4096).decode(errors="replace").splitlines()
                    self.asked.append(first[0] if first else "")
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    def env(self) -> dict[str, str]:
        """Every proxy variable at the refuser; only 127.0.0.1 (the local index) bypasses it."""
        names = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
        env = {n: self.url for n in names} | {n.lower(): self.url for n in names}
        return env | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` read-only for the block: a mode for a normal user; root ignores modes, so for root
    a read-only bind mount (skipped where mounts are not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    bind = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"root ignores modes and cannot bind-mount here: {bind.stderr!r}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {ro.stderr!r}")
        yield
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def fake_smi(lab: Lab, script: str) -> None:
    """An ``nvidia-smi`` first on the lab's PATH running ``script`` (sh)."""
    exe = lab.root.parent / "bin" / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    exe.chmod(0o755)


def smi_csv(driver: str) -> str:
    return f'echo "0, NVIDIA H100 80GB HBM3, 9.0, {driver}, 81559 MiB"\n'


# =========================================================================== input and specs


@pytest.mark.parametrize(
    ("fault", "text", "needles"),
    named(
        [
            ("malformed TOML", 'python = "3.11\n', ["expected valid TOML"]),
            ("unknown key", "colour = 'red'\n" + spec(), ["unknown key 'colour'"]),
            (
                "lax bool default = 'yes'",
                'default = "yes"\n' + spec(),
                ["field 'default': expected a boolean (true or false), found 'yes'"],
            ),
            (
                "lax bool default = 1",
                "default = 1\n" + spec(),
                ["field 'default': expected a boolean (true or false), found 1"],
            ),
            (
                "lax bool locked = 'false'",
                'locked = "false"\n' + spec(),
                ["field 'locked': expected a boolean (true or false), found 'false'"],
            ),
            (
                "bad requirement",
                spec().replace('"torch==2.10.0"', '"torch=2.10.0"'),
                ["field 'torch.packages.0'", "PEP 508"],
            ),
            (
                "unknown index name",
                spec().replace('index = "torchidx"', 'index = "nope"'),
                ["field 'torch.index': expected a named index", "found 'nope'"],
            ),
            ("missing [torch]", spec().split("[torch]")[0], ["field 'torch'"]),
        ]
    ),
)
def test_malformed_envspec(lab: Lab, fault: str, text: str, needles: list[str]) -> None:
    """A malformed envspec: invalid-spec, exit 2, one line naming the file and the field."""
    lab.write_spec("demo", text)
    last = one_line(lab.run("test", "demo", "--no-compat"), 2, "demo.toml", *needles)
    assert "invalid-spec" in last or "demo.toml" in last
    nothing_lost(lab)


def test_lax_bool_default_the_noxfile_and_envlab_agree(lab: Lab) -> None:
    """``default = "yes"``: the noxfile's catalogue does not count it as default, and envlab
    rejects the file, so no command treats the env as default."""
    from envlab.spec.catalog import entries

    lab.write_spec("demo", 'default = "yes"\n' + spec())
    assert [e.default for e in entries(lab.root / "envspecs")] == [False]
    one_line(lab.run("list"), 2, "field 'default': expected a boolean")
    nothing_lost(lab)


def test_unrelated_malformed_envspec_is_a_warning(lab: Lab) -> None:
    lab.write_spec("broken", "this is = = not toml")
    done = lab.run("test", "demo", "--no-compat")
    clean(done)
    assert "warning: env 'broken' left out" in done.stderr or "broken" not in done.stderr
    assert lab.result()["outcome"] == "built"
    nothing_lost(lab)


def test_unknown_env(lab: Lab) -> None:
    one_line(lab.run("test", "nope"), 2, "unknown env 'nope': expected one of demo")
    nothing_lost(lab)


def test_malformed_indexes_file(lab: Lab) -> None:
    (lab.root / "envspecs" / "indexes.toml").write_text('[pypi]\nurl = "ftp://x"\n')
    one_line(lab.run("test", "demo"), 2, "indexes.toml", "expected an http(s):// or file:// URL")
    nothing_lost(lab)


def test_root_that_is_no_project(lab: Lab, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "envlab.cli", "--root", str(tmp_path / "nowhere"), "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    one_line(done, 2, "expected a project with an envspecs/ directory")
    nothing_lost(lab)


def test_unknown_option(lab: Lab) -> None:
    done = lab.run("test", "demo", "--bogus")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "envlab: error: unrecognized arguments: --bogus"
    nothing_lost(lab)


def test_python_not_installed(lab: Lab) -> None:
    lab.write_spec("demo", spec().replace(f'python = "{PY}"', 'python = "3.99"'))
    one_line(lab.run("test", "demo"), 2, "demo: unavailable", "3.99")
    assert lab.result()["outcome"] == "unavailable"
    nothing_lost(lab)


def test_platform_not_declared(lab: Lab) -> None:
    lab.write_spec("demo", spec().replace('["linux-64"]', '["win-64"]'))
    one_line(lab.run("test", "demo"), 2, "unavailable", "does not declare platform linux-64")
    nothing_lost(lab)


def test_lock_for_an_unknown_platform(lab: Lab) -> None:
    one_line(lab.run("lock", "--platform", "amiga-68k"), 2, "--platform: expected one of")
    nothing_lost(lab)


# =========================================================================== indexes and builds


def test_unreachable_index(lab: Lab) -> None:
    done = lab.run("test", "demo", env={"ENVLAB_INDEX_TORCHIDX": "http://127.0.0.1:9/simple"})
    one_line(
        done,
        2,
        "unavailable: index 'torchidx' unreachable (http://127.0.0.1:9/simple)",
        "set ENVLAB_INDEX_TORCHIDX to a reachable mirror of https://download.pytorch.org/whl/cpu",
    )
    assert lab.result()["outcome"] == "unavailable"
    nothing_lost(lab)


@pytest.mark.parametrize(
    ("fault", "status", "body", "ctype", "needle"),
    named(
        [
            ("a portal page (any HTML, 200)", 200, None, "text/html", "not a package index"),
            ("JSON that is no index", 200, b'{"hello": "world"}', JSON_TYPE, "not a package"),
            ("PEP 691 JSON without the package", 200, b'{"files": []}', JSON_TYPE, "not a package"),
            ("HTTP 500", 500, b"oops", "text/plain", "HTTP 500"),
        ]
    ),
)
def test_garbage_mirror_is_unavailable_naming_it(
    lab: Lab, fault: str, status: int, body: bytes | None, ctype: str, needle: str
) -> None:
    """ENVLAB_INDEX_PYPI at something that answers, but is no package index."""
    with answering(status, body, ctype) as url:
        done = lab.run("test", "demo", env={"ENVLAB_INDEX_PYPI": url})
    one_line(done, 2, "unavailable", "index 'pypi'", url, needle, "ENVLAB_INDEX_PYPI")
    assert lab.result()["outcome"] == "unavailable"
    nothing_lost(lab)


def test_stack_package_that_does_not_exist_is_named(lab: Lab) -> None:
    lab.write_spec("demo", spec('"timmish", "nonexistentpkg"'))
    one_line(
        lab.run("test", "demo"),
        2,
        "build-failed: stack layer: wheel missing: nonexistentpkg is not served by index 'pypi'",
    )
    nothing_lost(lab)


def test_stack_version_that_does_not_exist_is_named(lab: Lab) -> None:
    lab.write_spec("demo", spec('"timmish", "filelock>=7,<8"'))
    one_line(
        lab.run("test", "demo"),
        2,
        "wheel missing: filelock>=7,<8 is not served by index 'pypi'",
        "it serves only filelock==3.0",
    )
    nothing_lost(lab)


def test_conflict_keeps_the_whole_specifier(lab: Lab) -> None:
    lab.write_spec("demo", spec('"allennlpish"'))
    one_line(
        lab.run("test", "demo"),
        2,
        "build-failed: stack layer: allennlpish requires torch>=1.6.0,<1.13.0, which conflicts",
    )
    nothing_lost(lab)


def test_torch_version_not_served(lab: Lab) -> None:
    lab.write_spec("demo", spec().replace("torch==2.10.0", "torch==2.1.2"))
    one_line(lab.run("test", "demo"), 2, "unavailable: torch layer: wheel missing: torch==2.1.2")
    nothing_lost(lab)


def test_caller_index_settings_are_ignored_by_builds(lab: Lab) -> None:
    garbage = "http://127.0.0.1:9/garbage"
    env = {"UV_INDEX_URL": garbage, "UV_EXTRA_INDEX_URL": garbage, "PIP_INDEX_URL": garbage}
    clean(lab.run("test", "demo", "--no-compat", env=env))
    assert lab.result()["outcome"] == "built"
    nothing_lost(lab)


def test_noxfile_scrubs_caller_index_settings() -> None:
    """The nox sessions' own installs must not break on UV_*/PIP_* index settings either."""
    garbage = "http://127.0.0.1:9/garbage"
    names = ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "PIP_INDEX_URL")
    code = (
        "import os, runpy; runpy.run_path('noxfile.py'); "
        f"print(sorted(n for n in {names!r} if n in os.environ))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **dict.fromkeys(names, garbage)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_paths_with_spaces(lab_factory: Callable[..., Lab], tmp_path: Path) -> None:
    lab = lab_factory()
    spaced = lab.root.parent / "my lab (copy)"
    shutil.copytree(lab.root, spaced)
    moved = Lab(spaced, lab.idx, lab.env, spaced / lab.earlier.relative_to(lab.root), b"")
    moved.earlier_bytes = moved.earlier.read_bytes()
    clean(moved.run("test", "demo", "--no-compat"))
    assert moved.result()["outcome"] == "built"
    nothing_lost(moved)


def test_odd_run_id_is_made_safe(lab: Lab) -> None:
    clean(lab.run("test", "demo", "--no-compat", env={"ENVLAB_RUN_ID": "../../etc/x y"}))
    assert lab.result(".._.._etc_x_y")["outcome"] == "built"
    nothing_lost(lab)


def test_compat_suite_that_cannot_run_is_recorded(lab: Lab) -> None:
    """No pytest in the env: the compat suite crashes; the result says so, exit 1."""
    shutil.copytree(ROOT / "compat_tests", lab.root / "compat_tests")
    done = lab.run("test", "demo")
    clean(done, 1)
    result = lab.result()
    assert result["outcome"] == "built" and "No module named pytest" in result["compat"]["error"]
    assert "compat suite: the compat suite wrote no results" in done.stderr
    nothing_lost(lab)


def test_broken_torch_import_is_verify_failed(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory()
    torch_dir = lab.root.parent / "index" / "torchidx" / "torch"
    shutil.rmtree(torch_dir)
    lab.idx.add("torchidx", "torch", "2.10.0+cpu", ["filelock"], payload="raise OSError('boom')\n")
    done = lab.run("test", "demo", "--no-compat")
    clean(done, 1)
    result = lab.result()
    assert result["outcome"] == "verify-failed" and "boom" in result["reason"]
    nothing_lost(lab)


# =========================================================================== locks and mirrors


def public_file_urls(lab: Lab) -> None:
    """Point the stack lock's files at PyPI's file host, as real PyPI locks have them."""
    path = lab.root / "locks" / "demo" / "pylock.linux-64-stack.toml"
    text = re.sub(
        r"https://pypi\.org/simple/[^/\"]+/([^\"]+)",
        r"https://files.pythonhosted.org/packages/ab/cd/\1",
        path.read_text(encoding="utf-8"),
    )
    assert "files.pythonhosted.org" in text
    path.write_text(text, encoding="utf-8")


def test_mirror_serves_every_locked_file_and_nothing_else_is_fetched(lab: Lab) -> None:
    """The locked env, its lock naming public hosts, every proxy variable at a refusing proxy
    that records each request: built from the mirror alone, each file's source recorded."""
    lab.lock()
    public_file_urls(lab)
    proxy = Refuser()
    try:
        done = lab.run("test", "demo", "--no-compat", env=proxy.env())
        clean(done)
        assert proxy.asked == [], f"fetched from other hosts: {proxy.asked}"
        layers = {layer["name"]: layer for layer in lab.result()["build"]["layers"]}
        files = layers["torch"]["files"] + layers["stack"]["files"]
        assert {f["name"] for f in files} == {"torch", "filelock", "numpy", "timmish"}
        for f in files:
            assert f["mirror"] and f["url"].startswith(lab.idx.base_url + "/"), f
            assert f["sha256"] and len(f["sha256"]) == 64
        # the trap is armed: without the mirror, the public index is asked, through the proxy
        lab.env.pop("ENVLAB_INDEX_PYPI")
        done = lab.run("test", "demo", "--no-compat", "--force", env=proxy.env())
        one_line(done, 2, "unavailable", "index 'pypi' unreachable (https://pypi.org/simple)")
        assert any("pypi.org" in line for line in proxy.asked), proxy.asked
    finally:
        proxy.close()
    nothing_lost(lab)


def test_mirror_lacking_a_locked_file_refuses_without_fetching_elsewhere(lab: Lab) -> None:
    lab.lock()
    public_file_urls(lab)
    shutil.rmtree(lab.root.parent / "index" / "pypi" / "numpy")
    proxy = Refuser()
    try:
        done = lab.run("test", "demo", "--no-compat", env=proxy.env())
    finally:
        proxy.close()
    one_line(
        done,
        2,
        "unavailable: stack layer: index 'pypi': the mirror",
        "(ENVLAB_INDEX_PYPI) does not serve the locked files of 1 package(s): numpy 2.0",
        "nothing was fetched from https://pypi.org/simple or any other host",
    )
    assert proxy.asked == []
    nothing_lost(lab)


@contextlib.contextmanager
def pull_through() -> Iterator[str]:
    """A local mirror of PyPI, as sites run them: its project pages are PyPI's (PEP 691) with
    every file URL made local, and it fetches each file from PyPI when asked for it."""
    upstream: dict[str, str] = {}

    class Mirror(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if len(parts) == 2 and parts[0] == "simple":
                headers = {"Accept": "application/vnd.pypi.simple.v1+json"}
                request = urllib.request.Request(
                    f"https://pypi.org/simple/{parts[1]}/", None, headers
                )
                with urllib.request.urlopen(request, timeout=60) as answer:
                    page = json.load(answer)
                for f in page["files"]:
                    token = hashlib.sha256(f["url"].encode()).hexdigest()[:24]
                    upstream[token] = f["url"]
                    f["url"] = f"/files/{token}/{f['filename']}"
                body, ctype = json.dumps(page).encode(), "application/vnd.pypi.simple.v1+json"
            elif len(parts) == 3 and parts[0] == "files" and parts[1] in upstream:
                with urllib.request.urlopen(upstream[parts[1]], timeout=60) as answer:
                    body, ctype = answer.read(), "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.network
def test_real_pypi_lock_through_a_mirror_fetches_nothing_elsewhere(
    lab_factory: Callable[..., Lab],
) -> None:
    """A lock of real PyPI files (files.pythonhosted.org URLs, a package with three candidate
    wheels), installed through a local pull-through mirror while every proxy variable of envlab
    and uv points at a refusing proxy: nothing is asked of any other host, and the result names
    the mirror's copy of the very file uv picked."""
    stack = '"pyyaml==6.0.3", "charset-normalizer==3.5.2"'
    lab = lab_factory(envs={"demo": spec(stack)})
    lab.env.pop("ENVLAB_INDEX_PYPI")  # locked against PyPI itself
    lab.lock()
    lock = lab.root / "locks" / "demo" / "pylock.linux-64-stack.toml"
    assert lock.read_text().count("https://files.pythonhosted.org/") >= 4
    proxy = Refuser()
    try:
        with pull_through() as mirror:
            done = lab.run(
                "test", "demo", "--no-compat", env=proxy.env() | {"ENVLAB_INDEX_PYPI": mirror}
            )
    finally:
        proxy.close()
    clean(done)
    assert proxy.asked == [], f"fetched from other hosts: {proxy.asked}"
    files = {f["name"]: f for f in lab.result()["build"]["layers"][2]["files"]}
    assert set(files) == {"pyyaml", "charset-normalizer"}
    locked = {
        w["hashes"]["sha256"]: w["url"]
        for p in tomllib.loads(lock.read_text())["packages"]
        for w in p.get("wheels", [])
    }
    for f in files.values():
        assert f["mirror"] and f["url"].startswith(mirror.removesuffix("/simple") + "/files/")
        assert f["sha256"] in locked, "the installed file is a locked one"
        assert f["url"].endswith(locked[f["sha256"]].rsplit("/", 1)[1])
    nothing_lost(lab)


def test_drift_check_through_a_mirror_never_asks_the_public_host(lab: Lab) -> None:
    """``lock --verify`` with the mirror set checks the mirror's copies, not PyPI's files."""
    lab.lock()
    public_file_urls(lab)
    proxy = Refuser()
    try:
        done = lab.run("lock", "--verify", env=proxy.env())
        clean(done)
        assert "checked 4 locked file(s): 0 gone, 0 unreachable (network), 4 ok" in done.stdout
        shutil.rmtree(lab.root.parent / "index" / "pypi" / "numpy")
        done = lab.run("lock", "--verify", env=proxy.env())
    finally:
        proxy.close()
    clean(done, 1)
    assert (
        "GONE     demo linux-64 stack: numpy 2.0" in done.stdout
        and "not on the mirror" in done.stdout
    )
    assert proxy.asked == []
    nothing_lost(lab)


def test_tampered_file_on_the_mirror_is_refused(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory()
    lab.lock()
    lab.idx.remove("pypi", "timmish", "1.0")
    lab.idx.add("pypi", "timmish", "1.0", ["torch>=2", "numpy"], payload="# tampered\n")
    one_line(
        lab.run("test", "demo"),
        2,
        "build-failed: stack layer: a downloaded file does not match its locked hash",
    )
    assert not (lab.envs / "demo").exists()
    nothing_lost(lab)


def test_stale_lock_is_refused(lab: Lab) -> None:
    lab.lock()
    lab.write_spec("demo", spec('"timmish", "numpy<3"'))
    one_line(lab.run("test", "demo"), 2, "build-failed: locks/demo (linux-64) is stale")
    nothing_lost(lab)


def test_garbage_lockfile(lab: Lab) -> None:
    lab.lock()
    (lab.root / "locks" / "demo" / "pylock.linux-64-stack.toml").write_text("[[packages]\n")
    one_line(lab.run("test", "demo"), 2, "pylock.linux-64-stack.toml", "expected valid TOML")
    nothing_lost(lab)


def test_half_a_lock_is_refused(lab: Lab) -> None:
    lab.lock()
    (lab.root / "locks" / "demo" / "pylock.linux-64-stack.toml").unlink()
    one_line(lab.run("test", "demo"), 2, "the stack layer lock(s) for linux-64 are missing")
    nothing_lost(lab)


# =========================================================================== envs on disk


def test_corrupt_build_marker_is_rebuilt_not_reused(lab: Lab) -> None:
    clean(lab.run("test", "demo", "--no-compat"))
    (lab.envs / "demo" / "envlab-build.json").write_text("{not json")
    done = lab.run("test", "demo", "--no-compat", env={"ENVLAB_RUN_ID": "again"})
    clean(done)
    assert "reusing" not in done.stderr and "layer torch" in done.stderr
    nothing_lost(lab)


def test_env_without_its_interpreter_is_rebuilt(lab: Lab) -> None:
    clean(lab.run("test", "demo", "--no-compat"))
    (lab.envs / "demo" / "bin" / "python").unlink()
    done = lab.run("test", "demo", "--no-compat", env={"ENVLAB_RUN_ID": "again"})
    clean(done)
    assert "layer torch" in done.stderr and lab.result("again")["outcome"] == "built"
    nothing_lost(lab)


def test_unwritable_envs_dir_refuses_before_building(lab: Lab, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = lab.run("test", "demo", env={"ENVLAB_ENVS_DIR": str(blocker / "envs")})
    one_line(done, 2, f"cannot write {blocker / 'envs'}", "expected a writable directory")
    assert not (lab.runs / "fault").exists()
    nothing_lost(lab)


# =========================================================================== concurrency and kills


def test_two_forced_builds_of_one_env_take_turns(lab_factory: Callable[..., Lab]) -> None:
    """The second waits for the first (saying so); neither deletes the other's partial env."""
    lab = lab_factory(delays={"timmish": 3.0})
    first, seen = (
        lab.start("test", "demo", "--no-compat", "--force", env={"ENVLAB_RUN_ID": "a"}),
        [],
    )
    wait_for(first, "layer stack", seen)
    partial = [p for p in lab.envs.iterdir() if p.name.startswith(".demo.partial-")]
    second = lab.start("test", "demo", "--no-compat", "--force", env={"ENVLAB_RUN_ID": "b"})
    done_a = finish(first, seen)
    done_b = finish(second, [])
    clean(done_a)
    clean(done_b)
    assert partial and f"partial-{first.pid}" in partial[0].name
    assert "waiting for another envlab (pid" in done_b.stderr
    assert lab.result("a")["outcome"] == lab.result("b")["outcome"] == "built"
    nothing_lost(lab)


def test_no_wait_refuses_while_another_builds(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory(delays={"timmish": 3.0})
    first, seen = lab.start("test", "demo", "--no-compat", env={"ENVLAB_RUN_ID": "a"}), []
    wait_for(first, "layer stack", seen)
    done = lab.run("test", "demo", "--no-compat", "--no-wait", env={"ENVLAB_RUN_ID": "b"})
    one_line(done, 75, "demo: another envlab (pid", "is building or testing this env; not waiting")
    clean(finish(first, seen))
    assert not (lab.runs / "b").exists() and lab.result("a")["outcome"] == "built"
    nothing_lost(lab)


def test_sigkill_mid_build_leaves_an_orphan_the_next_command_removes(
    lab_factory: Callable[..., Lab],
) -> None:
    lab = lab_factory(envs={"demo": spec(), "other": spec('"numpy"')}, delays={"timmish": 30.0})
    proc, seen = lab.start("test", "demo", "--no-compat"), []
    wait_for(proc, "layer stack", seen)
    proc.kill()
    proc.communicate(timeout=30)
    orphan = lab.envs / f".demo.partial-{proc.pid}"
    assert orphan.is_dir() and not (lab.envs / "demo").exists()
    done = lab.run("test", "other", "--no-compat", "--no-wait", env={"ENVLAB_RUN_ID": "o"})
    clean(done)
    assert f"removed .demo.partial-{proc.pid}: left by a build whose process" in done.stderr
    assert not orphan.exists()
    nothing_lost(lab)


def test_partial_of_a_live_process_is_never_removed(lab: Lab) -> None:
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        live = lab.envs / f".other.partial-{sleeper.pid}"
        live.mkdir(parents=True)
        clean(lab.run("test", "demo", "--no-compat"))
        assert live.is_dir(), "a live process's partial env was removed"
    finally:
        sleeper.kill()
        sleeper.wait()
    clean(lab.run("test", "demo", "--no-compat", env={"ENVLAB_RUN_ID": "again"}))
    assert not live.exists(), "the dead process's partial env was kept"
    nothing_lost(lab)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_mid_build(lab_factory: Callable[..., Lab], sig: signal.Signals) -> None:
    """Ctrl-C, or a CI job cancelled: exit 130, the partial env removed, uv not left running."""
    lab = lab_factory(delays={"timmish": 30.0})
    proc, seen = lab.start("test", "demo", "--no-compat"), []
    wait_for(proc, "layer stack", seen)
    proc.send_signal(sig)
    done = finish(proc, seen)
    assert done.returncode == 130 and done.stderr.strip().splitlines()[-1] == "envlab: interrupted"
    assert "Traceback" not in done.stderr
    assert not [p for p in lab.envs.iterdir() if p.is_dir()], "the partial env is gone"
    assert not running_in(lab.envs), "a command envlab started outlived it"
    nothing_lost(lab)


def running_in(directory: Path) -> list[str]:
    """Command lines of live processes that name ``directory`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = entry.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(directory) in argv and alive(int(entry.parent.name)):
                found.append(argv)
    return found


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A wrapper whose child hangs (no exec): the timeout holds, the grandchild dies too."""
    marker = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {marker}; wait"
    done = run(["sh", "-c", script], timeout=1, check=False, quiet=True)
    assert done.returncode != 0 and "killed after 1s timeout" in done.output
    pid = int(marker.read_text())
    for _ in range(50):  # the kill is sent at once; the process may take a moment to go
        if not alive(pid):
            break
        time.sleep(0.1)
    assert not alive(pid), "the grandchild survived the timeout"


def test_a_detached_process_holding_the_output_does_not_hang(tmp_path: Path) -> None:
    """A daemon that left the group keeps the pipe open: envlab stops waiting for it."""
    marker = tmp_path / "daemon.pid"
    daemon = "import os, time; os.setsid(); time.sleep(300)"
    script = f"{sys.executable} -c '{daemon}' & echo $! > {marker}; exit 0"
    try:
        done = run(["sh", "-c", script], timeout=30, check=False, quiet=True)
        assert done.returncode == 0
        assert "stopped reading: a detached process still holds the output" in done.output
    finally:
        with contextlib.suppress(Exception):
            os.kill(int(marker.read_text()), signal.SIGKILL)


# =========================================================================== the machine


def test_doctor_with_a_hanging_nvidia_smi_wrapper(lab: Lab) -> None:
    fake_smi(lab, "sleep 3600\n")
    done = lab.run("doctor", timeout=120)
    clean(done)
    assert "note     nvidia-smi did not answer in time: killed after" in done.stdout
    nothing_lost(lab)


def test_test_with_a_hanging_nvidia_smi_wrapper(lab: Lab) -> None:
    fake_smi(lab, "sleep 3600\n")
    clean(lab.run("test", "demo", "--no-compat", timeout=180))
    problems = lab.result()["host"]["doctor"]["host"]["problems"]
    assert any("nvidia-smi did not answer in time" in p for p in problems), problems
    nothing_lost(lab)


@pytest.mark.parametrize("driver", ["550.54.15-beta", "-", "N/A-ish", "550..1"])
def test_unparsable_driver_version_is_unknown(lab: Lab, driver: str) -> None:
    fake_smi(lab, smi_csv(driver))
    done = lab.run("doctor")
    clean(done)
    assert f"driver version unknown: reported {driver!r}, which is no version" in done.stdout
    assert "gpu 0    NVIDIA H100" in done.stdout and "\ndriver   " not in done.stdout
    nothing_lost(lab)


def test_unparsable_driver_version_in_a_test_run(lab: Lab) -> None:
    fake_smi(lab, smi_csv("550.54.15-beta"))
    clean(lab.run("test", "demo", "--no-compat"))
    host = lab.result()["host"]
    assert host["driver"] is None and host["gpus"][0]["driver"] is None
    nothing_lost(lab)


@pytest.mark.parametrize(
    ("fault", "script", "needle"),
    named(
        [
            ("garbage output", "echo 'hello there'\n", "nvidia-smi: expected 5 columns"),
            (
                "driver failure",
                "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA "
                "driver.'; exit 9\n",
                "NVIDIA-SMI has failed",
            ),
            ("crash", "kill -SEGV $$\n", "nvidia-smi exited with"),
        ]
    ),
)
def test_broken_nvidia_smi(lab: Lab, fault: str, script: str, needle: str) -> None:
    fake_smi(lab, script)
    done = lab.run("doctor")
    clean(done)
    assert needle in done.stdout
    nothing_lost(lab)


# =========================================================================== results and history


def test_read_only_runs_dir_refuses_before_building(lab: Lab) -> None:
    with read_only(lab.runs):
        done = lab.run("test", "demo")
    one_line(done, 2, f"cannot write {lab.runs}", "expected a writable directory")
    assert not (lab.envs / "demo").exists(), "nothing is built that could not be recorded"
    nothing_lost(lab)


def test_result_that_cannot_be_written_goes_to_a_printed_fallback(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store fails after the env was built and tested (a disk filling up): the result lands
    in the fallback directory, which is printed, and the command fails in one line."""
    for key, value in lab.environ().items():
        monkeypatch.setenv(key, value)
    real_write = Store.write

    def failing(self: Store, result: object) -> Path:
        if self.root == lab.runs:
            raise OSError(28, "No space left on device")
        return real_write(self, result)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "write", failing)
    code = cli.main(["--root", str(lab.root), "test", "demo", "--no-compat"])
    err = capsys.readouterr().err
    fallback = lab.root.parent / "fallback" / "fault" / HOST / "demo.json"
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("envlab: error: 1 result(s) could not be written")
    assert "No space left on device" in last and str(fallback) in last
    assert load(fallback).outcome == "built"
    monkeypatch.undo()
    nothing_lost(lab)


def test_read_only_reports_report_and_regress(lab: Lab) -> None:
    with read_only(lab.root / "reports"):
        report = lab.run("report")
        regress = lab.run("regress")
    one_line(report, 2, "cannot write", "expected a writable directory")
    one_line(regress, 2, "cannot write", "expected a writable directory")
    nothing_lost(lab)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_history_is_rebuilt_from_the_results(lab: Lab, damage: str) -> None:
    size = lab.db.stat().st_size
    if damage == "truncated":
        with lab.db.open("r+b") as handle:
            handle.truncate(size // 3)
    else:
        lab.db.write_bytes(b"" if damage == "empty" else b"\x00garbage" * 512)
    for suffix in ("-wal", "-shm"):
        lab.db.with_name(lab.db.name + suffix).unlink(missing_ok=True)
    done = lab.run("regress")
    clean(done)
    if damage != "empty":  # an empty file is a new database to SQLite: nothing to rebuild
        rebuilt = [ln for ln in done.stderr.splitlines() if "rebuilding it from" in ln]
        assert len(rebuilt) == 1 and "unreadable" in rebuilt[0], done.stderr
        assert list(lab.db.parent.glob("history.sqlite.corrupt-*"))
    nothing_lost(lab)


def test_history_that_is_a_directory(lab: Lab) -> None:
    lab.db.unlink()
    lab.db.mkdir()
    one_line(lab.run("regress"), 2, "history", "cannot open it")
    shutil.rmtree(lab.db)
    nothing_lost(lab)


@pytest.mark.parametrize(
    ("fault", "content", "needle"),
    named(
        [
            ("truncated JSON", '{"schema_version": 1, "run_id": ', "found invalid JSON"),
            ("future schema", None, "schema"),
            ("foreign JSON", '{"hello": "world"}', "demo.json"),
        ]
    ),
)
def test_bad_result_files_are_skipped_and_said(
    lab: Lab, fault: str, content: str | None, needle: str
) -> None:
    bad = lab.runs / "later" / HOST / "demo.json"
    bad.parent.mkdir(parents=True)
    if content is None:
        data = json.loads(lab.earlier_bytes)
        content = json.dumps(data | {"schema_version": 99, "run_id": "later"})
    bad.write_text(content)
    done = lab.run("regress")
    clean(done)
    skipped = [ln for ln in done.stderr.splitlines() if "skipped" in ln and "demo.json" in ln]
    assert skipped and needle in skipped[0], done.stderr
    bad.unlink()
    nothing_lost(lab)


@pytest.mark.parametrize(
    ("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)], ids=["umask 022", "umask 002"]
)
def test_files_honour_the_umask(lab: Lab, umask: int, mode: int) -> None:
    argv = " ".join(f"'{a}'" for a in lab.argv("test", "demo", "--no-compat"))
    done = subprocess.run(
        ["sh", "-c", f"umask {umask:03o} && exec {argv}"],
        capture_output=True,
        text=True,
        env=lab.environ(),
        check=False,
    )
    clean(done)
    written = lab.runs / "fault" / HOST / "demo.json"
    assert stat.S_IMODE(written.stat().st_mode) == mode
    nothing_lost(lab)


# =========================================================================== test-host


@pytest.mark.parametrize(
    ("fault", "make", "needle"),
    named(
        [
            ("a directory", lambda d: d, "found a directory"),
            ("nothing there", lambda d: d / "nope", "found nothing at"),
            ("not executable", lambda d: _script(d, "py", "echo hi", mode=0o644), "not executable"),
            ("not Python", lambda d: Path("/bin/ls"), "which answers"),
            ("Python 2", lambda d: _script(d, "python2", "echo 'python 2.7'"), "found Python 2.7"),
            ("crashes", lambda d: _script(d, "py", "kill -SEGV $$"), "which answers"),
        ]
    ),
)
def test_test_host_with_no_usable_python(
    lab: Lab, tmp_path: Path, fault: str, make: Callable[[Path], Path], needle: str
) -> None:
    python = make(tmp_path)
    one_line(lab.run("test-host", "--python", str(python)), 2, "--python: expected", needle)
    assert not (lab.runs / "fault").exists(), "no junk result"
    nothing_lost(lab)


def _script(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


# =========================================================================== the console


def test_closing_table_keeps_the_whole_reason(lab: Lab) -> None:
    done = lab.run("test", "demo", env={"ENVLAB_INDEX_TORCHIDX": "http://127.0.0.1:9/simple"})
    fix = "set ENVLAB_INDEX_TORCHIDX to a reachable mirror of https://download.pytorch.org/whl/cpu"
    row = next(ln for ln in done.stderr.splitlines() if ln.startswith("demo  "))
    assert row.endswith(fix) and "..." not in row
    nothing_lost(lab)


def test_console_is_short_by_default_and_verbose_with_v(lab: Lab) -> None:
    lab.lock()
    done = lab.run("test", "demo", "--no-compat")
    clean(done)
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 16, done.stderr
    assert not [ln for ln in lines if "$ " in ln or ln.startswith("    ")], done.stderr
    verbose = lab.run("-v", "test", "demo", "--no-compat", "--force", env={"ENVLAB_RUN_ID": "v"})
    clean(verbose)
    assert " $ " in verbose.stderr and "uv pip install" in verbose.stderr
    assert "    Installed" in verbose.stderr or "    Prepared" in verbose.stderr
    nothing_lost(lab)


def test_long_downloads_report_bytes_percent_and_rate(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 3 MB torch wheel sent at 1 MB/s: progress lines while it comes."""
    big = lab.root.parent / "slow-index"
    slow = LocalIndexes(big)
    noise = os.urandom(1_500_000).hex()  # hex of random bytes: it does not compress below 3 MB
    slow.add("torchidx", "torch", "2.10.0+cpu", ["filelock"], payload=f"_NOISE = '{noise}'\n")
    slow.add("torchidx", "filelock", "3.0")
    with throttled(big, rate=1_000_000) as url:
        for key, value in (lab.environ() | {"ENVLAB_INDEX_TORCHIDX": url}).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(progress, "INTERVAL_S", 0.5)
        code = cli.main(["--root", str(lab.root), "test", "demo", "--no-compat"])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "torch layer: downloading" in ln]
    assert lines, err
    assert re.search(
        r"downloading 1 of 1 file\(s\): [\d.]+ \w+ of [\d.]+ MiB \(\d+%\) at ", lines[0]
    )
    monkeypatch.undo()
    nothing_lost(lab)


@contextlib.contextmanager
def throttled(root: Path, rate: float) -> Iterator[str]:
    """A PEP 503 index of ``root/torchidx`` whose files are sent at ``rate`` bytes per second."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, head: bool) -> None:
            parts = [p for p in self.path.split("/") if p]
            target = root / "torchidx" / Path(*parts[2:]) if len(parts) > 2 else None
            if target is not None and target.is_dir():
                links = "".join(f'<a href="{w.name}">{w.name}</a>\n' for w in target.iterdir())
                body, ctype = links.encode(), "text/html"
            elif target is not None and target.is_file():
                body, ctype = target.read_bytes(), "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if head:
                return
            step = int(rate / 20) if ctype != "text/html" else len(body)
            for start in range(0, len(body), step):
                self.wfile.write(body[start : start + step])
                if ctype != "text/html":
                    time.sleep(step / rate)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/torchidx/simple"
    finally:
        server.shutdown()
        server.server_close()


# =========================================================================== load


@pytest.mark.timeout(600)
def test_load_four_tests_and_two_reports_at_once(lab: Lab) -> None:
    """4 concurrent `test` runs of one env and 2 concurrent `report` runs: every result recorded,
    the history consistent, no crash, the env built once."""
    tests = [
        lab.start("test", "demo", "--no-compat", env={"ENVLAB_RUN_ID": f"load-{i}"})
        for i in range(4)
    ]
    reports = [lab.start("report", env={"MPLBACKEND": "Agg"}) for _ in range(2)]
    done = [finish(p, []) for p in tests + reports]
    for d in done:
        clean(d)
    for i in range(4):
        assert lab.result(f"load-{i}")["outcome"] == "built"
    built = [d for d in done[:4] if "layer torch" in d.stderr]
    assert len(built) == 1, "one build, the others reused it"
    clean(lab.run("report"))
    with open_history(lab.db, lab.runs)[0] as history:
        runs = {r.run_id for r in history.runs()}
    assert {f"load-{i}" for i in range(4)} | {EARLIER_RUN} <= runs
    assert (lab.root / "reports" / "latest" / "report.html").exists()
    nothing_lost(lab)
