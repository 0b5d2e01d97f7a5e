"""The results store that outlives CI: a branch of a git repository holding
``runs/<run>/<host>/<env>.json``, one small file per result, readable without envlab.

``pull`` fetches the branch into a local checkout and copies its results into ``reports/runs``;
``push`` copies the local results into the checkout, commits and pushes. When another push landed
first, the commit is rebased on the remote's new tip (the checkout is reset to it and the local
results are applied again) and pushed again, a bounded number of times; what the others pushed
comes back into ``reports/runs``. Results never conflict: every (run, host, env) has its own
path, and where two copies of one path differ (a re-run of the same job) the one created later
wins, on both sides.

The checkout is envlab's own (marked in its git config): syncing resets it hard to the remote, so
envlab refuses to sync a repository it did not create.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from envlab.errors import ResultError, UserError
from envlab.fsutil import atomic_write_text
from envlab.log import detail, log
from envlab.proc import Completed, run
from envlab.results.schema import load
from envlab.results.store import Store

DEFAULT_BRANCH = "envlab-results"
REMOTE_VAR = "ENVLAB_RESULTS_REMOTE"
BRANCH_VAR = "ENVLAB_RESULTS_BRANCH"
CHECKOUT_VAR = "ENVLAB_RESULTS_CHECKOUT"
RUNS = "runs"
MARK = "envlab.store"  # git config key set in checkouts envlab created
# Who commits to the store (GIT_AUTHOR_*/GIT_COMMITTER_* in the environment still override it):
# CI runners have no git identity, and a person's own is not what a result commit is about.
IDENTITY = ("-c", "user.name=envlab", "-c", "user.email=envlab@localhost")
GIT_TIMEOUT = 600.0
# A push rejected because the remote moved on (another push landed first): worth a rebase and retry.
# Anything else (authentication, a protected branch, a hook) is reported at once.
_MOVED_ON = re.compile(
    r"\[rejected\]|non-fast-forward|fetch first|failed to update ref|cannot lock ref"
    r"|incorrect old value|stale info"
)
# Set by git for hooks and by tools wrapping git: they would point these commands at another repo.
_REPO_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_COMMON_DIR",
)
_BRANCH = re.compile(r"[A-Za-z0-9._/-]+")
_STORE_README = """\
# envlab results

Written by `envlab results push`; read with `envlab results pull` (or any JSON reader).

    runs/<run-id>/<host>/<env>.json    one result document per (run, host, env)

Every document carries its `schema_version`, the run, the host's identity and the env's outcome,
checks, compat tests and benchmark samples. Files are only added or replaced by a newer result of
the same (run, host, env); nothing else in this branch is needed to read them.
"""


class StoreError(UserError):
    """The results store cannot be reached, read or written."""


@dataclass(frozen=True)
class Remote:
    """Where the store lives: a git URL (or path) and a branch."""

    url: str
    branch: str = DEFAULT_BRANCH

    def __str__(self) -> str:
        return f"{redact(self.url)} (branch {self.branch})"


def redact(text: str) -> str:
    """``text`` with the credentials of any ``scheme://user:secret@host`` URL in it hidden."""
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


def resolve_remote(root: Path, url: str | None = None, branch: str | None = None) -> Remote:
    """The store's remote: ``url``, else ``$ENVLAB_RESULTS_REMOTE``, else the project's ``origin``;
    the branch: ``branch``, else ``$ENVLAB_RESULTS_BRANCH``, else ``envlab-results``."""
    branch = branch or os.environ.get(BRANCH_VAR) or DEFAULT_BRANCH
    if not _BRANCH.fullmatch(branch) or branch.startswith(("-", "/")) or ".." in branch:
        raise StoreError(f"results branch: expected a plain branch name, found {branch!r}")
    url = url or os.environ.get(REMOTE_VAR) or _origin(root)
    if "://" not in url and Path(url).exists():
        url = str(Path(url).resolve())  # git runs in the checkout: a relative path would move
    return Remote(url, branch)


def _origin(root: Path) -> str:
    done = run(["git", "-C", str(root), "remote", "get-url", "origin"], check=False, quiet=True)
    url = done.output.strip()
    if done.returncode != 0 or not url:
        raise StoreError(
            f"results store: expected --remote URL, ${REMOTE_VAR} or an 'origin' remote in {root}, "
            "found none"
        )
    return url


def default_checkout(root: Path) -> Path:
    """Where the store is checked out: ``$ENVLAB_RESULTS_CHECKOUT``, else under ``.envlab/``."""
    return Path(os.environ.get(CHECKOUT_VAR) or root / ".envlab" / "results-store")


# --------------------------------------------------------------------------- copying results


@dataclass
class Transfer:
    """What a pull or push copied, by relative path ``<run>/<host>/<env>.json``."""

    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # the destination's copy is newer
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): not results

    @property
    def changed(self) -> int:
        return len(self.new) + len(self.updated)

    def summary(self) -> str:
        parts = [
            f"{len(self.new)} new",
            f"{len(self.updated)} updated",
            f"{self.unchanged} unchanged",
        ]
        if self.kept:
            parts.append(f"{len(self.kept)} kept (the copy there is newer)")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (not valid results)")
        return ", ".join(parts)

    def runs(self) -> list[str]:
        return sorted({p.split("/", 1)[0] for p in [*self.new, *self.updated]})


def _created(data: bytes) -> datetime | None:
    try:
        return datetime.fromisoformat(json.loads(data)["created"])
    except (ValueError, KeyError, TypeError):
        return None


def _newer(source: bytes, target: bytes) -> bool:
    """Whether ``source`` holds a later result than ``target`` (an unreadable one is the oldest)."""
    new, old = _created(source), _created(target)
    if new is None:
        return False
    return old is None or new > old


def _invalid(path: Path, rel: str) -> str | None:
    """Why ``path`` may not enter the store: not a valid result, or not at its own path."""
    try:
        result = load(path)
    except ResultError as exc:
        return str(exc)
    expected = Store(Path()).path_for(result).as_posix()
    if expected != rel:
        return f"expected it at {expected} (its run, host and env), found it at {rel}"
    return None


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it over ``path``: readers see the old file or the
    whole new one. No fsync, unlike fsutil.atomic_write_bytes: the store is the durable copy (a
    file a crash left empty is unreadable, so the next pull replaces it), and one fsync per file
    made a pull of 15,000 results seven times slower."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_results(source: Path, target: Path, *, validate: bool = False) -> Transfer:
    """Copy every ``<run>/<host>/<env>.json`` under ``source`` that ``target`` lacks or holds an
    older copy of; with ``validate``, a file that is not a valid result at its own path is skipped.
    """
    transfer = Transfer()
    for path in Store(source).files():
        rel = path.relative_to(source).as_posix()
        dest = target / rel
        data = path.read_bytes()
        old = dest.read_bytes() if dest.is_file() else None
        if old == data:
            transfer.unchanged += 1
            continue
        if old is not None and not _newer(data, old):
            transfer.kept.append(rel)
            continue
        why = _invalid(path, rel) if validate else None
        if why is not None:
            transfer.skipped.append((rel, why))
            log(f"results store: skipped {path}: {why}")
            continue
        _replace(dest, data)
        (transfer.new if old is None else transfer.updated).append(rel)
    return transfer


# --------------------------------------------------------------------------- the checkout


class GitBranch:
    """A local checkout of one branch of a remote, synced by fetch and hard reset."""

    def __init__(self, remote: Remote, path: Path) -> None:
        self.remote = remote
        self.path = path

    def git(self, *args: str, check: bool = True) -> Completed:
        argv = ["git", "-c", "commit.gpgsign=false", *args]
        detail(redact(f"$ {shlex.join(argv)}"))
        # no prompt for a password: a store without credentials fails at once instead of hanging
        done = run(
            argv,
            cwd=self.path,
            check=False,
            quiet=True,
            timeout=GIT_TIMEOUT,
            env={"GIT_TERMINAL_PROMPT": "0"},
            unset=_REPO_VARS,
        )
        if check and done.returncode != 0:
            raise StoreError(f"{self._failed(args[0], done)}")
        return done

    def _failed(self, what: str, done: Completed) -> str:
        lines = [ln for ln in done.output.strip().splitlines() if ln.strip()]
        tail = redact(lines[-1].strip()) if lines else "no output"
        return f"results store {self.remote}: git {what} failed (exit {done.returncode}): {tail}"

    def _init(self) -> None:
        if (self.path / ".git").is_dir():
            done = self.git("config", "--get", MARK, check=False)
            if done.output.strip() != "true":
                raise StoreError(
                    f"{self.path}: expected a results store checkout made by envlab (or no "
                    "directory), found another git repository; syncing would reset it"
                )
            return
        if self.path.exists() and any(self.path.iterdir()):
            raise StoreError(
                f"{self.path}: expected an empty directory for the results store checkout, "
                "found files"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.git("init", "--quiet")
        self.git("config", MARK, "true")

    def sync(self) -> str | None:
        """Make the checkout the remote branch's tip; None when the branch does not exist yet."""
        self._init()
        url, branch = self.remote.url, self.remote.branch
        probe = self.git("ls-remote", "--exit-code", url, f"refs/heads/{branch}", check=False)
        if probe.returncode not in (0, 2):  # 2: reachable, but no such branch
            raise StoreError(self._failed("ls-remote", probe) + "; is the remote reachable?")
        if probe.returncode == 2:
            log(f"results store {self.remote}: no such branch yet; the first push creates it")
            self.git("update-ref", "-d", f"refs/heads/{branch}", check=False)
            self.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
            self.git("read-tree", "--empty")
            self.git("clean", "-ffdxq")
            return None
        tracking = f"refs/remotes/store/{branch}"
        # The store's history is not needed to read or extend it: only the tip is fetched.
        self.git(
            "fetch", "--quiet", "--no-tags", "--depth=1", url, f"+refs/heads/{branch}:{tracking}"
        )
        self.git("checkout", "--quiet", "--force", "-B", branch, tracking)
        self.git("clean", "-ffdxq")
        return self.git("rev-parse", "HEAD").output.strip()

    def commit_and_push(
        self,
        apply: Callable[[bool], str | None],
        *,
        attempts: int = 5,
        backoff_s: float = 1.0,
    ) -> bool:
        """Sync, ``apply`` changes to the checkout, commit and push; on a push rejected because the
        remote moved on, sync to its new tip and apply again (up to ``attempts`` times).

        ``apply(existed)`` edits files under :attr:`path` and returns the commit message, or None
        when there is nothing to commit. Returns whether a commit was pushed.
        """
        if attempts < 1:
            raise StoreError(f"push attempts: expected at least 1, found {attempts}")
        for attempt in range(1, attempts + 1):
            existed = self.sync() is not None
            message = apply(existed)
            if message is None:
                return False
            self.git("add", "--all", "--", ".")
            self.git(*IDENTITY, "commit", "--quiet", "--no-verify", "-m", message)
            ref = f"HEAD:refs/heads/{self.remote.branch}"
            done = self.git("push", "--quiet", self.remote.url, ref, check=False)
            if done.returncode == 0:
                return True
            if not _MOVED_ON.search(done.output):
                raise StoreError(self._failed("push", done))
            log(
                f"results store {self.remote}: push rejected, another push landed first; "
                f"rebasing on the new tip (attempt {attempt} of {attempts})"
            )
            if attempt < attempts:
                time.sleep(random.uniform(0, backoff_s * 2 ** (attempt - 1)))
        raise StoreError(
            f"results store {self.remote}: expected the push to land within {attempts} attempts, "
            f"found the branch moved on before each one; run `envlab results push` again"
        )


# --------------------------------------------------------------------------- pull and push


def pull(branch: GitBranch, runs_dir: Path) -> Transfer:
    """Copy the store's results into ``runs_dir`` (a newer local copy of a result is kept)."""
    tip = branch.sync()
    transfer = copy_results(branch.path / RUNS, runs_dir)
    where = f"@ {tip[:12]}" if tip else "(empty: no branch yet)"
    log(f"results pull from {branch.remote} {where} into {runs_dir}: {transfer.summary()}")
    if transfer.kept:
        log(f"results pull: {len(transfer.kept)} local result(s) newer than the store's: push them")
    return transfer


def push(
    branch: GitBranch, runs_dir: Path, *, attempts: int = 5, backoff_s: float = 1.0
) -> Transfer:
    """Add the results under ``runs_dir`` that the store lacks (or holds older copies of)."""
    if not Store(runs_dir).files():
        raise StoreError(f"results push: expected results under {runs_dir}, found none")
    transfers: list[Transfer] = []

    def apply(existed: bool) -> str | None:
        if not existed:
            atomic_write_text(branch.path / "README.md", _STORE_README)
        transfer = copy_results(runs_dir, branch.path / RUNS, validate=True)
        transfers.append(transfer)
        if not transfer.changed:
            return None
        return (
            f"envlab results: {len(transfer.new)} new, {len(transfer.updated)} updated\n\n"
            + "runs: "
            + ", ".join(transfer.runs())
            + "\n"
        )

    pushed = branch.commit_and_push(apply, attempts=attempts, backoff_s=backoff_s)
    transfer = transfers[-1]
    if pushed:
        log(f"results push to {branch.remote}: {transfer.summary()}")
    else:
        log(f"results push: the store {branch.remote} already holds every result under {runs_dir}")
    # Results others pushed meanwhile (met on a rebase) come back too: after a push, runs_dir
    # holds everything the store held, so a report made next forgets nothing.
    back = copy_results(branch.path / RUNS, runs_dir)
    if back.new or back.updated:
        log(f"results push: {back.changed} result(s) pushed by others meanwhile, now in {runs_dir}")
    return transfer
