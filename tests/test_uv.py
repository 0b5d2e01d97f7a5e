"""The uv seam: command lines as assembled, output parsed, failures explained; a real uv check."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from localindex import build_wheel

from envlab.build.uv import UNSET_FOR_UV, Uv
from envlab.errors import CommandError
from envlab.outcome import Outcome
from envlab.proc import Completed
from envlab.spec.indexes import Index

PY = Path("/envs/demo/bin/python")
TORCH = Index("torchidx", "https://torch.example/whl/cpu", "https://torch.example/whl/cpu", "")
MIRRORED = Index("pypi", "http://127.0.0.1:8000/simple", "https://pypi.org/simple", "")


class Recorder:
    """A runner answering every command with ``output`` and ``returncode``, recording each call."""

    def __init__(self, output: str = "", returncode: int = 0) -> None:
        self.output, self.returncode = output, returncode
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, argv: list[Any], **kwargs: Any) -> Completed:
        args = [str(a) for a in argv]
        self.calls.append((args, kwargs))
        if kwargs.get("check", True) and self.returncode:
            raise CommandError(args, self.returncode, self.output)
        return Completed(args, self.returncode, self.output, 0.01)

    @property
    def argv(self) -> list[str]:
        return self.calls[-1][0]


def uv_with(output: str = "", returncode: int = 0) -> tuple[Uv, Recorder]:
    recorder = Recorder(output, returncode)
    return Uv(runner=recorder, exe="/bin/uv"), recorder


def test_every_command_is_scrubbed_and_ignores_uv_config() -> None:
    uv, rec = uv_with('[{"name": "x", "version": "1"}]')
    uv.venv(Path("/envs/.demo.partial-1"), Path("/usr/bin/python3.11"))
    uv.install(PY, ["torch"], index_url=TORCH.url)
    uv.installed(PY)
    uv.check(PY)
    for argv, kwargs in rec.calls:
        assert argv[0] == "/bin/uv" and "--no-config" in argv
        assert kwargs["unset"] == UNSET_FOR_UV
    assert {"UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL"} <= set(UNSET_FOR_UV)


def test_venv_is_relocatable_on_the_given_interpreter() -> None:
    uv, rec = uv_with()
    uv.venv(Path("/envs/.demo.partial-1"), Path("/usr/bin/python3.11"))
    assert rec.argv == [
        "/bin/uv",
        "venv",
        "--no-config",
        "--relocatable",
        "--python",
        "/usr/bin/python3.11",
        "/envs/.demo.partial-1",
    ]


def test_install_uses_one_index_and_puts_requirements_last() -> None:
    uv, rec = uv_with()
    uv.install(
        PY,
        ["torch==2.10.0", "torchvision"],
        index_url=TORCH.url,
        prerelease=True,
        reinstall=("torch", "torchvision"),
        constraints=Path("/tmp/pins.txt"),
        editables=(Path("/src/proj"),),
    )
    assert rec.argv == [
        "/bin/uv",
        "pip",
        "install",
        "--no-config",
        "--python",
        str(PY),
        "--index-url",
        TORCH.url,
        "--prerelease=allow",
        "--reinstall-package",
        "torch",
        "--reinstall-package",
        "torchvision",
        "--constraint",
        "/tmp/pins.txt",
        "--editable",
        "/src/proj",
        "torch==2.10.0",
        "torchvision",
    ]
    assert rec.calls[-1][1]["stream"] is True


def test_editables_alone_without_dependencies() -> None:
    uv, rec = uv_with()
    uv.install(PY, editables=(Path("/src/a"), Path("/src/b")), no_deps=True, stream=False)
    assert rec.argv[6:] == ["--no-deps", "--editable", "/src/a", "--editable", "/src/b"]
    assert "--index-url" not in rec.argv and rec.calls[-1][1]["stream"] is False


LOCKED_ARGV = ["/bin/uv", "pip", "install", "--no-config", "--preview-features", "pylock"]


def test_locked_install_installs_the_given_lock_from_the_cache_first(tmp_path: Path) -> None:
    """Mirror routing happens before (build.mirrors): uv gets the lock it is given, as is; a
    lock whose files are all in uv's cache installs offline, in one command."""
    lock = tmp_path / "pylock.linux-64-stack.toml"
    uv, rec = uv_with()
    uv.install_locked(PY, lock, reinstall=("torch",))
    assert [argv for argv, _ in rec.calls] == [
        [*LOCKED_ARGV, "--python", str(PY), "--reinstall-package", "torch"]
        + ["-r", str(lock), "--offline"]
    ]
    assert rec.calls[-1][1]["check"] is False


def test_locked_install_goes_online_when_a_file_is_not_cached(tmp_path: Path) -> None:
    lock = tmp_path / "pylock.linux-64-torch.toml"
    calls: list[list[str]] = []

    def runner(argv: list[Any], *, check: bool = True, **_: Any) -> Completed:
        args = [str(a) for a in argv]
        calls.append(args)
        if "--offline" in args:  # uv stops before installing anything
            out = "error: Network connectivity is disabled, but the requested data wasn't found"
            return Completed(args, 2, out, 0.01)
        return Completed(args, 0, "Installed 1 package", 0.01)

    done = Uv(runner=runner, exe="/bin/uv").install_locked(PY, lock)
    assert calls[1] == [*LOCKED_ARGV, "--python", str(PY), "-r", str(lock)]
    assert "--offline" in calls[0] and len(calls) == 2 and done.returncode == 0


def test_locked_install_failing_online_raises_the_online_error(tmp_path: Path) -> None:
    uv, rec = uv_with("error: hash mismatch for torch", returncode=1)
    with pytest.raises(CommandError, match="hash mismatch"):
        uv.install_locked(PY, tmp_path / "pylock.linux-64-torch.toml")
    assert ["--offline" in argv for argv, _ in rec.calls] == [True, False]


def test_compile_targets_the_platform_cross_platform() -> None:
    uv, rec = uv_with()
    uv.compile(
        Path("/w/torch.in"),
        Path("/w/pylock.torch.toml"),
        platform="win-64",
        python_version="3.12",
        index_url=TORCH.url,
        prerelease=True,
    )
    assert rec.argv == [
        "/bin/uv",
        "pip",
        "compile",
        "--no-config",
        "--quiet",
        "--format",
        "pylock.toml",
        "--python-version",
        "3.12",
        "--python-platform",
        "x86_64-pc-windows-msvc",
        "-o",
        "/w/pylock.torch.toml",
        "--prerelease=allow",
        "--index-url",
        TORCH.url,
        "/w/torch.in",
    ]
    uv.compile(
        Path("/w/stack/pyproject.toml"),
        Path("/w/out.toml"),
        platform="linux-64",
        python_version="3.11",
        default_index="https://pypi.org/simple",
        constraints=Path("/w/conda.txt"),
    )
    assert rec.argv[rec.argv.index("--python-platform") + 1] == "x86_64-manylinux_2_28"
    assert rec.argv[-5:] == [
        "--default-index",
        "https://pypi.org/simple",
        "--constraint",
        "/w/conda.txt",
        "/w/stack/pyproject.toml",
    ]
    assert "--index-url" not in rec.argv and "--prerelease=allow" not in rec.argv


def test_installed_reads_the_json_line_with_canonical_names() -> None:
    uv, rec = uv_with(
        "Using Python 3.11.7 environment at: /envs/demo\n"
        '[{"name": "Foo_Bar", "version": "1.0"}, {"name": "zope.interface", "version": "7"}]\n'
    )
    assert uv.installed(PY) == {"foo-bar": "1.0", "zope-interface": "7"}
    assert rec.argv[1:] == ["pip", "list", "--no-config", "--python", str(PY), "--format", "json"]


CHECK_PROBLEMS = """\
Using Python 3.11.7 environment at: /envs/demo
Checked 3 packages in 0.45ms
Found 2 incompatibilities
The package `alpha` requires `numpy>=2`, but `1.0` is installed
The package `timmish` requires `torch>=2`, but it's not installed
"""


def test_check_lists_each_problem_line() -> None:
    uv, rec = uv_with(CHECK_PROBLEMS, returncode=1)
    assert uv.check(PY) == [
        "The package `alpha` requires `numpy>=2`, but `1.0` is installed",
        "The package `timmish` requires `torch>=2`, but it's not installed",
    ]
    assert rec.argv[1:] == ["pip", "check", "--no-config", "--python", str(PY)]
    uv, _ = uv_with("Checked 4 packages in 1ms\nAll installed packages are compatible\n")
    assert uv.check(PY) == []


def test_check_raises_when_uv_itself_fails() -> None:
    uv, _ = uv_with("error: No virtual environment found for path `/nope`", returncode=2)
    with pytest.raises(CommandError) as info:
        uv.check(Path("/nope"))
    assert info.value.returncode == 2


def test_python_find_answers_a_path_or_nothing() -> None:
    uv, rec = uv_with("/opt/python/3.12.3/bin/python3.12\n")
    assert uv.python_find("3.12") == Path("/opt/python/3.12.3/bin/python3.12")
    assert rec.argv[1:] == ["python", "find", "--no-config", "--no-python-downloads", "3.12"]
    uv, _ = uv_with("error: No interpreter found for Python 3.99", returncode=2)
    assert uv.python_find("3.99") is None

    def missing(argv: list[Any], **kwargs: Any) -> Completed:
        raise CommandError([str(a) for a in argv], 127, "executable not found")

    assert Uv(runner=missing, exe="/nowhere/uv").python_find("3.12") is None


NETWORK = (
    "error: Failed to fetch: `https://torch.example/whl/cpu/torch/`\n"
    "  Caused by: error sending request for url (https://torch.example/whl/cpu/torch/)\n"
    "  Caused by: tcp connect error: Connection refused (os error 111)\n"
)
CONFLICT = (
    "  × No solution found when resolving dependencies:\n"
    "  ╰─▶ Because oldtorchpkg==1.0 depends on torch<2 and you require oldtorchpkg, we can "
    "conclude that your requirements and torch==2.10.0+cpu are incompatible.\n"
)
HASH = (
    "error: Failed to download `timmish==1.0`\n"
    "  Caused by: Hash mismatch for `timmish==1.0`\n\n"
    "Expected:\n  sha256:aaaa\n\nComputed:\n  sha256:bbbb\n"
)
MISSING = (
    "  × No solution found when resolving dependencies:\n"
    "  ╰─▶ Because there is no version of torch==2.1.2 and you require torch==2.1.2, we can "
    "conclude that your requirements are unsatisfiable.\n"
)


def test_explain_failure_maps_uv_output_to_outcomes() -> None:
    explain = Uv.explain_failure
    outcome, reason = explain("torch", TORCH, NETWORK)
    assert outcome is Outcome.UNAVAILABLE
    assert reason == (
        "torch layer: index 'torchidx' (https://torch.example/whl/cpu) unreachable; "
        "set ENVLAB_INDEX_TORCHIDX to a reachable mirror of https://torch.example/whl/cpu"
    )
    outcome, reason = explain("stack", MIRRORED, CONFLICT)
    assert outcome is Outcome.BUILD_FAILED
    assert reason.startswith("stack layer: oldtorchpkg requires torch<2, which conflicts with")
    outcome, reason = explain("stack", MIRRORED, HASH)
    assert outcome is Outcome.BUILD_FAILED
    assert reason == (
        "stack layer: a downloaded file does not match its locked hash, install refused "
        "(Caused by: Hash mismatch for `timmish==1.0`)"
    )
    outcome, reason = explain("torch", TORCH, MISSING)
    assert outcome is Outcome.UNAVAILABLE
    assert reason == (
        "torch layer: wheel missing: torch==2.1.2 is not served by index 'torchidx' "
        "(https://torch.example/whl/cpu)"
    )
    assert explain("stack", MIRRORED, MISSING)[0] is Outcome.BUILD_FAILED
    # the torch layer itself cannot conflict with the torch layer: its failure is reported as is
    assert explain("torch", TORCH, CONFLICT) == (
        Outcome.BUILD_FAILED,
        "torch layer failed: ╰─▶ Because oldtorchpkg==1.0 depends on torch<2 and you require "
        "oldtorchpkg, we can conclude that your requirements and torch==2.10.0+cpu are "
        "incompatible.",
    )
    assert explain("stack", None, "") == (Outcome.BUILD_FAILED, "stack layer failed: no output")


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_real_uv_pip_check_on_a_tiny_venv(tmp_path: Path) -> None:
    """The real uv: a venv with a broken and an unmet requirement; check names both."""
    uv = Uv()
    env = tmp_path / "env"
    uv.venv(env, Path(sys.executable))
    python = env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    assert uv.check(python) == []
    wheels = tmp_path / "wheels"
    paths = [
        build_wheel(wheels, "timmish", "1.0", ["torch>=2"]),
        build_wheel(wheels, "numpy", "1.0"),
        build_wheel(wheels, "alpha_pkg", "1.0", ["numpy>=2"]),
    ]
    uv.install(python, [str(p) for p in paths], no_deps=True, stream=False)
    assert uv.installed(python) == {"timmish": "1.0", "numpy": "1.0", "alpha-pkg": "1.0"}
    problems = uv.check(python)
    assert len(problems) == 2, problems
    assert any("alpha-pkg" in p and "numpy>=2" in p for p in problems), problems
    assert any("timmish" in p and "torch>=2" in p for p in problems), problems
