"""The one place envlab runs uv: every uv command line is assembled here; its failures explained.

A :class:`Uv` locates the executable, scrubs the caller's uv/pip settings (``UNSET_FOR_UV``) and
passes ``--no-config`` so that no index is added or replaced behind the lab's back. Its runner has
the signature of :func:`envlab.proc.run` and is injectable, so builds and locks can be driven
in-process by a fake that records argv and simulates uv.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

from envlab import proc
from envlab.errors import CommandError, UserError
from envlab.log import detail
from envlab.outcome import Outcome
from envlab.spec.indexes import Index
from envlab.spec.platforms import UV_TARGETS

# uv/pip settings from the caller's environment must not add or replace indexes behind our back.
UNSET_FOR_UV = (
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_FIND_LINKS",
    "UV_INDEX_STRATEGY",
    "UV_PRERELEASE",
    "UV_CONSTRAINT",
    "UV_OVERRIDE",
    "UV_TORCH_BACKEND",
    "UV_NO_INDEX",
    "UV_PYTHON",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
)

Runner = Callable[..., proc.Completed]
"""A callable with the signature of :func:`envlab.proc.run`."""

# A version specifier as uv prints it, every clause of it: ">=0.8.1,<0.14.0" (never cut at a comma).
_SPEC = r"(?:[=<>!~]=?[^\s,]+(?:,\s?[=<>!~]=?[^\s,]+)*)"
_MISSING = re.compile(rf"(?:there (?:is|are) )?no versions? of ([A-Za-z0-9_.\-]+{_SPEC}?)")
_NAME = r"[A-Za-z0-9_.\-]+"
_UNKNOWN = re.compile(rf"({_NAME}) was not found in the package registry")
_ONLY = re.compile(rf"only ({_NAME}{_SPEC}) (?:is|are) available and you require ({_NAME}{_SPEC})")
_CONFLICT = re.compile(
    rf"(?:all versions of|[Bb]ecause) ([A-Za-z0-9_.\-]+){_SPEC}? "
    rf"depends? on (torch[a-z]*{_SPEC}?)"
)
_HASH = re.compile(
    r"hash mismatch|Hash mismatch|doesn't match the hash|hashes? (?:do|does) not match",
    re.IGNORECASE,
)
_NETWORK = re.compile(
    r"(Failed to fetch|error sending request|Connection refused|dns error|timed out"
    r"|Could not connect)",
    re.IGNORECASE,
)
# What `uv pip check` prints around its findings (it writes everything to stderr).
_CHECK_CHATTER = re.compile(
    r"^(Using Python |Checked \d+ packages?|Found \d+ incompatibilit|All installed packages are "
    r"compatible|warning: )"
)


def find_executable() -> str:
    """The uv executable: on PATH, else the binary shipped by the PyPI ``uv`` package."""
    exe = shutil.which("uv")
    if exe:
        return exe
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except Exception:  # noqa: BLE001 - any failure means "not installed"
        raise UserError(
            "uv not found: expected the 'uv' executable on PATH (pip install uv)"
        ) from None


class Uv:
    """uv, run through ``runner`` (default :func:`envlab.proc.run`).

    ``exe`` defaults to the located executable, found on first use so that a ``Uv`` can be made
    (and injected) where uv is not installed.
    """

    def __init__(self, runner: Runner = proc.run, exe: str | None = None) -> None:
        self._runner = runner
        self._exe = exe

    @property
    def exe(self) -> str:
        if self._exe is None:
            self._exe = find_executable()
        return self._exe

    def _run(self, args: Sequence[str], **kwargs: object) -> proc.Completed:
        return self._runner([self.exe, *args], unset=UNSET_FOR_UV, **kwargs)

    def _pip(self, command: str, python: Path, *args: str, **kwargs: object) -> proc.Completed:
        return self._run(["pip", command, "--no-config", "--python", str(python), *args], **kwargs)

    # ------------------------------------------------------------------ environments

    def venv(self, target: Path, python: Path) -> proc.Completed:
        """A venv at ``target`` on ``python``, relocatable: envs are built aside, then moved."""
        argv = ["venv", "--no-config", "--relocatable", "--python", str(python), str(target)]
        return self._run(argv)

    def install(
        self,
        python: Path,
        requirements: Sequence[str] = (),
        *,
        index_url: str | None = None,
        find_links: str | None = None,
        prerelease: bool = False,
        reinstall: Sequence[str] = (),
        constraints: Path | None = None,
        editables: Sequence[Path] = (),
        no_deps: bool = False,
        stream: bool = True,
        on_line: Callable[[str], None] | None = None,
    ) -> proc.Completed:
        """Resolve and install into the env of ``python``; ``index_url`` is the *only* index,
        or ``find_links`` (a wheelhouse) the only source, with no index at all.

        ``on_line`` sees uv's output as it comes (download progress)."""
        args = ["--index-url", index_url] if index_url else []
        if find_links:
            # uv caches a find-links wheel by its file name, and a rebuilt custom torch often
            # keeps its version: without a refresh the old build would be installed
            args += ["--no-index", "--find-links", find_links, "--refresh"]
        if no_deps:
            args.append("--no-deps")
        if prerelease:
            args.append("--prerelease=allow")
        for name in reinstall:
            args += ["--reinstall-package", name]
        if constraints:
            args += ["--constraint", str(constraints)]
        for path in editables:
            args += ["--editable", str(path)]
        extra = {"on_line": on_line} if on_line else {}
        return self._pip("install", python, *args, *requirements, stream=stream, **extra)

    def install_locked(
        self,
        python: Path,
        lock: Path,
        reinstall: Sequence[str] = (),
        on_line: Callable[[str], None] | None = None,
    ) -> proc.Completed:
        """Install exactly the files of pylock ``lock`` (hashes checked by uv), from the URLs it
        names: a mirrored index's lock is routed through its mirror first (build.mirrors).

        uv's cache is tried first, offline: a locked file is fixed by its hash, so asking the
        server again only costs time, and behind a proxy that drops the validators of immutable
        files uv downloads every file again (torch's 3.9 GB per env build) and keeps each copy.
        When a file is not in the cache the offline attempt stops before installing anything,
        and the install runs online: the index answers for what it serves, as ever.
        """
        argv = ["pip", "install", "--no-config", "--preview-features", "pylock"]
        argv += ["--python", str(python)]
        for name in reinstall:
            argv += ["--reinstall-package", name]
        argv += ["-r", str(lock)]
        cached = self._run([*argv, "--offline"], check=False, stream=True)
        if cached.returncode == 0:
            detail(f"{lock.name}: every locked file was in uv's cache (installed offline)")
            return cached
        detail(f"{lock.name}: not every locked file is in uv's cache: installing online")
        extra = {"on_line": on_line} if on_line else {}
        return self._run(argv, stream=True, **extra)

    def compile(
        self,
        source: Path,
        output: Path,
        *,
        platform: str,
        python_version: str,
        index_url: str | None = None,
        default_index: str | None = None,
        find_links: str | None = None,
        prerelease: bool = False,
        constraints: Path | None = None,
    ) -> proc.Completed:
        """Resolve ``source`` for envlab ``platform`` (cross-platform) into pylock ``output``;
        with ``find_links`` (a wheelhouse) and no index URL, from the wheelhouse alone."""
        argv = [
            "pip",
            "compile",
            "--no-config",
            "--quiet",
            "--format",
            "pylock.toml",
            "--python-version",
            python_version,
            "--python-platform",
            UV_TARGETS[platform],
            "-o",
            str(output),
        ]
        if prerelease:
            argv.append("--prerelease=allow")
        if index_url:
            argv += ["--index-url", index_url]
        if default_index:
            argv += ["--default-index", default_index]
        if find_links:  # refreshed: see install()
            argv += ["--find-links", find_links, "--refresh"]
            argv += [] if index_url else ["--no-index"]
        if constraints:
            argv += ["--constraint", str(constraints)]
        return self._run([*argv, str(source)])

    # ------------------------------------------------------------------ inspecting

    def installed(self, python: Path) -> dict[str, str]:
        """{canonical name: version} of what is installed in the env of ``python``."""
        done = self._pip("list", python, "--format", "json", quiet=True)
        # the JSON is the last line: uv may print notes before it on the same merged stream
        rows = json.loads(done.output.strip().splitlines()[-1])
        return {canonicalize_name(row["name"]): row["version"] for row in rows}

    def check(self, python: Path) -> list[str]:
        """``uv pip check``: one line per broken requirement in the env of ``python`` (none: [])."""
        done = self._pip("check", python, quiet=True, check=False)
        if done.returncode not in (0, 1):  # 1 means "incompatibilities found"; more is uv failing
            raise CommandError(done.argv, done.returncode, done.output)
        lines = (ln.strip() for ln in done.output.splitlines())
        return [ln for ln in lines if ln and not _CHECK_CHATTER.match(ln)]

    def python_find(self, minor: str) -> Path | None:
        """An interpreter of version ``minor`` that uv knows of (never downloaded), if any."""
        try:
            argv = ["python", "find", "--no-config", "--no-python-downloads", minor]
            done = self._run(argv, check=False, quiet=True, timeout=30)
        except UserError:  # uv not installed, or not runnable: one place fewer to look
            return None
        out = done.output.strip()
        return Path(out.splitlines()[-1]) if done.returncode == 0 and out else None

    # ------------------------------------------------------------------ failures

    @staticmethod
    def explain_failure(layer: str, index: Index | None, output: str) -> tuple[Outcome, str]:
        """(outcome, one-line reason) for a failed uv command of ``layer`` using ``index``."""
        where = f"index {index.name!r} ({index.url})" if index else "no index"
        if _HASH.search(output):
            line = next(
                (ln.strip() for ln in output.splitlines() if _HASH.search(ln)), "hash mismatch"
            )
            return Outcome.BUILD_FAILED, (
                f"{layer} layer: a downloaded file does not match its locked hash, "
                f"install refused ({line})"
            )
        if _NETWORK.search(output):
            hint = index.hint() if index else ""
            return Outcome.UNAVAILABLE, f"{layer} layer: {where} unreachable; {hint}"
        conflict = _CONFLICT.search(output)
        if conflict and layer != "torch":
            return Outcome.BUILD_FAILED, (
                f"{layer} layer: {conflict.group(1)} requires {conflict.group(2)}, "
                "which conflicts with the installed torch layer "
                "(torch is a layer, never a transitive dependency)"
            )
        only = _ONLY.search(output)
        missing = _UNKNOWN.search(output) or _MISSING.search(output) or only
        if missing:
            # a torch build its one index lacks cannot be had here; a stack wheel is the spec's
            unavailable = layer in ("torch", "nightly")
            outcome = Outcome.UNAVAILABLE if unavailable else Outcome.BUILD_FAILED
            wanted = only.group(2) if only else missing.group(1)
            served = f" (it serves only {only.group(1)})" if only else ""
            return (
                outcome,
                f"{layer} layer: wheel missing: {wanted} is not served by {where}{served}",
            )
        last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "no output")
        return Outcome.BUILD_FAILED, f"{layer} layer failed: {last}"
