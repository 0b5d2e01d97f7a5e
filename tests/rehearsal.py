"""Plays a GitHub Actions workflow file locally, job by job and step by step, without GitHub.

Enough of the runner for `.github/workflows/scheduled.yml`: ``needs`` order, job and step ``if``,
matrices from expressions, ``env`` at every level, ``continue-on-error``, step outputs,
``GITHUB_OUTPUT``/``GITHUB_ENV``/``GITHUB_STEP_SUMMARY``, job outputs, and the expressions the
workflow uses (contexts, ``&&``, ``||``, ``==``, ``!``, status functions, ``fromJSON``). ``run``
steps run in bash in a fresh workspace per job (a hosted runner keeps nothing between jobs),
with ``nox`` and ``python -m pip install`` answered by stand-ins (:func:`shims`). The
actions it uses are emulated: checkout copies the repository, the artifact actions copy files
(with upload-artifact's refusal to replace an artifact without ``overwrite``), the Pages actions
deploy to a directory. Anything else is an error: the rehearsal must break when the workflow
starts to depend on something it does not play.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
STEP_TIMEOUT = 900


class RehearsalError(Exception):
    """The workflow uses something the rehearsal does not play, or plays it wrongly."""


# --------------------------------------------------------------------------- expressions

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<op>&&|\|\||==|!=|[!()\[\],.])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "")


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


class Expr:
    """A recursive-descent evaluator of one GitHub Actions expression."""

    def __init__(self, text: str, context: dict[str, Any], status: Callable[[str], bool]) -> None:
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.context = context
        self.status = status

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        out, pos = [], 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise RehearsalError(f"expression {text!r}: cannot read it at {text[pos:]!r}")
            kind = m.lastgroup or ""
            out.append((kind, m.group(kind)))
            pos = m.end()
        return out

    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.tokens[self.pos]
        if expected is not None and token[1] != expected:
            raise RehearsalError(f"expression: expected {expected!r}, found {token[1]!r}")
        self.pos += 1
        return token

    def evaluate(self) -> Any:
        value = self._or()
        if self.pos != len(self.tokens):
            raise RehearsalError(f"expression: unexpected {self._peek()!r}")
        return value

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == "||":
            self._take()
            right = self._and()
            value = value if truthy(value) else right
        return value

    def _and(self) -> Any:
        value = self._cmp()
        while self._peek() == "&&":
            self._take()
            right = self._cmp()
            value = right if truthy(value) else value
        return value

    def _cmp(self) -> Any:
        left = self._unary()
        if self._peek() in ("==", "!="):
            op = self._take()[1]
            right = self._unary()
            same = to_text(left).lower() == to_text(right).lower()
            return same if op == "==" else not same
        return left

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not truthy(self._unary())
        return self._primary()

    def _primary(self) -> Any:
        kind, text = self._take()
        if text == "(":
            value = self._or()
            self._take(")")
            return value
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind != "name":
            raise RehearsalError(f"expression: unexpected {text!r}")
        if text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if self._peek() == "(":
            return self._call(text)
        return self._access(self.context.get(text))

    def _call(self, name: str) -> Any:
        self._take("(")
        args = []
        while self._peek() != ")":
            args.append(self._or())
            if self._peek() == ",":
                self._take()
        self._take(")")
        if name in ("always", "success", "failure", "cancelled"):
            return self.status(name)
        if name == "fromJSON":
            return json.loads(to_text(args[0]))
        if name == "toJSON":
            return json.dumps(args[0])
        raise RehearsalError(f"expression: the rehearsal does not play function {name}()")

    def _access(self, value: Any) -> Any:
        while self._peek() in (".", "["):
            if self._take()[1] == ".":
                key: Any = self._take()[1]
            else:
                key = self._or()
                self._take("]")
            value = value.get(key) if isinstance(value, dict) else None
        return value


_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def render(value: Any, context: dict[str, Any], status: Callable[[str], bool]) -> Any:
    """``value`` with its ``${{ }}`` expressions evaluated (a lone expression keeps its type)."""
    if isinstance(value, dict):
        return {k: render(v, context, status) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, status) for v in value]
    if not isinstance(value, str):
        return value
    whole = _TEMPLATE.fullmatch(value.strip())
    if whole:
        return Expr(whole.group(1), context, status).evaluate()
    return _TEMPLATE.sub(lambda m: to_text(Expr(m.group(1), context, status).evaluate()), value)


def condition(text: Any, context: dict[str, Any], status: Callable[[str], bool]) -> bool:
    """An ``if:``: without a status function it means ``success() && (...)``."""
    if text is None:
        return status("success")
    if isinstance(text, bool):
        return text
    body = str(text).strip()
    whole = _TEMPLATE.fullmatch(body)
    body = whole.group(1) if whole else body
    value = truthy(Expr(body, context, status).evaluate())
    if not re.search(r"\b(always|success|failure|cancelled)\(", body):
        value = value and status("success")
    return value


# --------------------------------------------------------------------------- runs


@dataclass
class StepRun:
    name: str
    id: str | None
    outcome: str  # success, failure, skipped
    conclusion: str
    outputs: dict[str, str] = field(default_factory=dict)
    log: str = ""


@dataclass
class JobRun:
    job: str
    matrix: dict[str, Any]
    result: str = "success"
    outputs: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRun] = field(default_factory=list)
    workspace: Path | None = None
    summary: str = ""
    runner: str = ""
    duration_s: float = 0.0

    def step(self, name: str) -> StepRun:
        found = [s for s in self.steps if s.name == name]
        if len(found) != 1:
            raise RehearsalError(f"job {self.job}: expected one step named {name!r}")
        return found[0]


# Called before each step with (job run, step name, workspace); may start something alongside.
BeforeStep = Callable[[JobRun, str, Path], None]


def _parse_file_commands(path: Path) -> dict[str, str]:
    """``key=value`` lines and ``key<<DELIM`` blocks of ``GITHUB_OUTPUT``/``GITHUB_ENV``."""
    out: dict[str, str] = {}
    lines = iter(path.read_text(encoding="utf-8").splitlines()) if path.exists() else iter(())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delim = line.split("<<", 1)
            out[key] = "\n".join(_until(lines, delim))
        elif "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def _until(lines: Iterator[str], delim: str) -> Iterator[str]:
    for line in lines:
        if line == delim:
            return
        yield line


def load_workflow(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


@dataclass
class Rehearsal:
    """One attempt of one workflow run. ``machine_env``: the runners' own environment (mirrors,
    caches); ``runner_name(job, runs_on, matrix)``: the runner that picks a job up."""

    workflow: Path
    repo: Path
    work: Path
    run_id: int
    attempt: int = 1
    event: str = "schedule"
    inputs: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    machine_env: dict[str, str] = field(default_factory=dict)
    server_url: str = "https://github.com"
    repository: str = "lab/envlab"
    runner_name: Callable[[str, Any, dict[str, Any]], str] = lambda job, runs_on, matrix: "hosted"
    before_step: BeforeStep | None = None
    jobs: dict[str, list[JobRun]] = field(default_factory=dict)

    @property
    def artifacts(self) -> Path:  # artifacts belong to the workflow run, across its attempts
        return self.work / "artifacts" / str(self.run_id)

    @property
    def pages(self) -> Path:
        return self.work / "pages"

    def github(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id),
            "run_attempt": str(self.attempt),
            "event_name": self.event,
            "server_url": self.server_url,
            "repository": self.repository,
            "token": "rehearsal-token",
            "workspace": "",
        }

    def run(self) -> dict[str, list[JobRun]]:
        doc = load_workflow(self.workflow)
        shims(self.work / "bin")
        for name in self._order(doc["jobs"]):
            self.jobs[name] = self._job(name, doc, doc["jobs"][name])
        return self.jobs

    @staticmethod
    def _order(jobs: dict[str, Any]) -> list[str]:
        done: list[str] = []
        while len(done) < len(jobs):
            ready = [
                n for n, j in jobs.items() if n not in done and all(d in done for d in _needs(j))
            ]
            if not ready:
                raise RehearsalError("jobs: a cycle in `needs`")
            done += ready
        return done

    def _needs_context(self, job: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name in _needs(job):
            runs = self.jobs[name]
            result = _combined(runs)
            outputs: dict[str, Any] = {}
            for r in runs:
                outputs.update(r.outputs)
            out[name] = {"result": result, "outputs": outputs}
        return out

    def _base_context(self, doc: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        context: dict[str, Any] = {
            "github": self.github(),
            "inputs": self.inputs,
            "vars": self.vars,
            "secrets": {"GITHUB_TOKEN": "rehearsal-token"},
            "needs": self._needs_context(job),
            "env": {},
        }
        context["env"] = {
            k: to_text(v) for k, v in render(doc.get("env", {}), context, _always).items()
        }
        return context

    def _job(self, name: str, doc: dict[str, Any], job: dict[str, Any]) -> list[JobRun]:
        context = self._base_context(doc, job)
        needs = context["needs"]

        def status(fn: str) -> bool:
            failed = any(n["result"] != "success" for n in needs.values())
            return {"always": True, "success": not failed, "failure": failed}.get(fn, False)

        if not condition(job.get("if"), context, status):
            return [JobRun(name, {}, result="skipped")]
        strategy = render(job.get("strategy", {}), context, status)
        matrices = _expand(strategy.get("matrix"))
        # a matrix's jobs run side by side, as on GitHub
        with ThreadPoolExecutor(max_workers=min(4, len(matrices))) as pool:
            return list(
                pool.map(lambda m: self._instance(name, job, dict(context, matrix=m), m), matrices)
            )

    def _instance(
        self, name: str, job: dict[str, Any], context: dict[str, Any], matrix: dict[str, Any]
    ) -> JobRun:
        key = "-".join([name, *(to_text(v) for v in matrix.values() if not isinstance(v, list))])
        runs_on = render(job.get("runs-on"), context, _always)
        run = JobRun(name, matrix, runner=self.runner_name(name, runs_on, matrix))
        context["runner"] = {"name": run.runner, "os": "Linux", "temp": ""}
        context["steps"] = {}
        context["job"] = {"status": "success"}
        job_env = {k: to_text(v) for k, v in render(job.get("env", {}), context, _always).items()}
        context["env"] = {**context["env"], **job_env}
        workspace = self.work / "attempt" / str(self.attempt) / _safe(key)
        run.workspace = workspace
        start = time.monotonic()
        for index, step in enumerate(job.get("steps", [])):
            self._step(run, step, index, context, workspace)
        run.duration_s = time.monotonic() - start
        run.outputs = {
            k: to_text(v) for k, v in render(job.get("outputs", {}), context, _always).items()
        }
        return run

    def _step(
        self,
        run: JobRun,
        step: dict[str, Any],
        index: int,
        context: dict[str, Any],
        workspace: Path,
    ) -> None:
        name = step.get("name") or step.get("uses") or f"step {index + 1}"
        name = to_text(render(name, context, _always))

        def status(fn: str) -> bool:
            failed = run.result == "failure"
            return {"always": True, "success": not failed, "failure": failed}.get(fn, False)

        if not condition(step.get("if"), context, status):
            done = StepRun(name, step.get("id"), "skipped", "skipped")
        else:
            env = {**context["env"]}
            env.update(
                {k: to_text(v) for k, v in render(step.get("env", {}), context, _always).items()}
            )
            if self.before_step:
                self.before_step(run, name, workspace)
            if "uses" in step:
                done = self._uses(run, name, step, context, env, workspace)
            else:
                done = self._run(run, name, step, context, env, workspace)
            if done.outcome == "failure" and not step.get("continue-on-error"):
                run.result = "failure"
            elif done.outcome == "failure":
                done.conclusion = "success"
        run.steps.append(done)
        if done.id:
            context["steps"][done.id] = {
                "outcome": done.outcome,
                "conclusion": done.conclusion,
                "outputs": done.outputs,
            }

    def _run(
        self,
        run: JobRun,
        name: str,
        step: dict[str, Any],
        context: dict[str, Any],
        env: dict[str, str],
        workspace: Path,
    ) -> StepRun:
        script = to_text(render(step["run"], context, _always))
        files = self.work / "files" / str(self.attempt) / workspace.name / str(len(run.steps))
        if files.exists():
            shutil.rmtree(files)
        files.mkdir(parents=True)
        output, genv, summary = files / "output", files / "env", files / "summary"
        (files / "script.sh").write_text(script, encoding="utf-8")
        full = {
            **self.machine_env,
            "PATH": os.pathsep.join(
                [
                    str(self.work / "bin"),
                    str(Path(sys.executable).parent),
                    self.machine_env.get("PATH", os.environ.get("PATH", "")),
                ]
            ),  # fmt: skip
            "REHEARSAL_PYTHON": sys.executable,
            "GITHUB_ACTIONS": "true",
            "GITHUB_OUTPUT": str(output),
            "GITHUB_ENV": str(genv),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_RUN_ID": str(self.run_id),
            "GITHUB_RUN_ATTEMPT": str(self.attempt),
            "RUNNER_TEMP": str(files),
            **env,
        }
        workspace.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(files / "script.sh")],
            cwd=workspace,
            env=full,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        context["env"].update(_parse_file_commands(genv))
        if summary.exists():
            run.summary += summary.read_text(encoding="utf-8")
        outcome = "success" if done.returncode == 0 else "failure"
        log = f"$ {name} (exit {done.returncode})\n{done.stdout}{done.stderr}"
        return StepRun(name, step.get("id"), outcome, outcome, _parse_file_commands(output), log)

    # ----------------------------------------------------------------------- actions

    def _uses(
        self,
        run: JobRun,
        name: str,
        step: dict[str, Any],
        context: dict[str, Any],
        env: dict[str, str],
        workspace: Path,
    ) -> StepRun:
        action = step["uses"].split("@", 1)[0]
        args = {k: render(v, context, _always) for k, v in (step.get("with") or {}).items()}
        handler = ACTIONS.get(action)
        if handler is None:
            raise RehearsalError(f"step {name!r}: the rehearsal does not play {step['uses']}")
        try:
            outputs = handler(self, args, workspace) or {}
        except ActionFailed as exc:
            return StepRun(name, step.get("id"), "failure", "failure", log=str(exc))
        return StepRun(name, step.get("id"), "success", "success", outputs)

    def checkout(self, args: dict[str, Any], workspace: Path) -> None:
        if workspace.exists():
            shutil.rmtree(workspace)
        shutil.copytree(self.repo, workspace, ignore=shutil.ignore_patterns(".git"))

    def upload_artifact(self, args: dict[str, Any], workspace: Path) -> None:
        target = self.artifacts / to_text(args["name"])
        paths = [workspace / p for p in to_text(args["path"]).split("\n") if p.strip()]
        files = [
            (f, f.relative_to(_root(paths)))
            for p in paths
            for f in _files(p, hidden=truthy(args.get("include-hidden-files")))
        ]
        if not files:
            if args.get("if-no-files-found", "warn") == "error":
                raise ActionFailed(f"no files found at {args['path']}")
            return
        if target.exists():
            if not truthy(args.get("overwrite")):
                raise ActionFailed(
                    "Failed to CreateArtifact: (409) Conflict: an artifact with this name "
                    "already exists on the workflow run"
                )
            shutil.rmtree(target)
        for source, rel in files:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / rel)

    def download_artifact(self, args: dict[str, Any], workspace: Path) -> None:
        pattern = to_text(args.get("pattern") or args.get("name") or "*")
        dest = workspace / to_text(args.get("path") or ".")
        names = sorted(p.name for p in self.artifacts.glob("*") if fnmatch.fnmatch(p.name, pattern))
        for name in names:
            into = dest if truthy(args.get("merge-multiple")) else dest / name
            shutil.copytree(self.artifacts / name, into, dirs_exist_ok=True)

    def upload_pages_artifact(self, args: dict[str, Any], workspace: Path) -> None:
        source = workspace / to_text(args.get("path") or "_site/")
        target = self.artifacts / to_text(args.get("name") or "github-pages")
        if target.exists():
            shutil.rmtree(target)
        # as the action's tar: no .git, no .github, no hidden files
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*"))

    def deploy_pages(self, args: dict[str, Any], workspace: Path) -> dict[str, str]:
        source = self.artifacts / to_text(args.get("artifact_name") or "github-pages")
        if not source.is_dir():
            raise ActionFailed("no github-pages artifact in this workflow run")
        if self.pages.exists():
            shutil.rmtree(self.pages)
        shutil.copytree(source, self.pages)
        return {"page_url": self.pages.as_uri() + "/"}


class ActionFailed(Exception):
    """An emulated action failed the way the real one would."""


ACTIONS: dict[str, Callable[[Rehearsal, dict[str, Any], Path], dict[str, str] | None]] = {
    "actions/checkout": Rehearsal.checkout,
    "actions/setup-python": lambda self, args, ws: None,  # the tests' interpreter plays it
    "actions/upload-artifact": Rehearsal.upload_artifact,
    "actions/download-artifact": Rehearsal.download_artifact,
    "actions/upload-pages-artifact": Rehearsal.upload_pages_artifact,
    "actions/deploy-pages": Rehearsal.deploy_pages,
}


def shims(bin_dir: Path) -> Path:
    """``nox`` (tests/rehearsal_nox.py) and a ``python`` that answers ``-m pip install`` (the
    tools are installed already) and is the tests' interpreter otherwise."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    scripts = {
        "nox": f'#!/bin/sh\nexec "$REHEARSAL_PYTHON" "{HERE / "rehearsal_nox.py"}" "$@"\n',
        "python": (
            "#!/bin/sh\n"
            'if [ "$1" = -m ] && [ "$2" = pip ] && [ "$3" = install ]; then\n'
            '  echo "rehearsal: already installed: $*"; exit 0\n'
            "fi\n"
            'exec "$REHEARSAL_PYTHON" "$@"\n'
        ),
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text, encoding="utf-8")
        path.chmod(0o755)
    return bin_dir


def _always(fn: str) -> bool:
    return fn == "always" or fn == "success"


def _needs(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def _combined(runs: list[JobRun]) -> str:
    results = {r.result for r in runs}
    for result in ("failure", "skipped"):
        if result in results:
            return result
    return "success"


def _expand(matrix: Any) -> list[dict[str, Any]]:
    if not matrix:
        return [{}]
    if set(matrix) != {"include"}:
        raise RehearsalError("strategy.matrix: the rehearsal plays `include` lists only")
    return list(matrix["include"])


def _files(path: Path, *, hidden: bool) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and (hidden or not any(part.startswith(".") for part in p.relative_to(path).parts))
    )


def _root(paths: list[Path]) -> Path:
    """upload-artifact's root: the directory itself for one, the common parent for several."""
    if len(paths) == 1:
        return paths[0] if paths[0].is_dir() else paths[0].parent
    return Path(os.path.commonpath([str(p) for p in paths]))


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)
