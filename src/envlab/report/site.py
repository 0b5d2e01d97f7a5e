"""The published report: a static site with a page per night and the latest report, kept on its own
branch of the results remote (the results branch stays small to pull) and deployed as it is, e.g.
by GitHub Pages.

    index.html               every night, newest first, and a link to latest/
    latest/                  the newest report (index.html, report.md, regressions.md, plots/)
    nights/<run>/index.html  each night's report as published that night: a stable URL
    nights.json              run id -> when its report was published (the index is made from it)

Publishing the same run again (a re-run of a workflow) replaces that night's page. A night's full
report embeds its plots (up to a few MB once the history is long), and a GitHub Pages site may not
pass 1 GB: past the newest ``keep`` nights, a night's page keeps its Markdown summary only, at the
same URL.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from envlab.fsutil import atomic_write_text
from envlab.log import log
from envlab.report.templating import environment
from envlab.results.gitstore import GitBranch, StoreError
from envlab.results.store import safe_name

DEFAULT_BRANCH = "envlab-site"
BRANCH_VAR = "ENVLAB_SITE_BRANCH"
CHECKOUT_VAR = "ENVLAB_SITE_CHECKOUT"
MANIFEST = "nights.json"
DEFAULT_KEEP = 60  # nights whose full report stays on the site
# What a night's page keeps of the report: the HTML embeds its plots, so it stands alone.
NIGHT_FILES = {
    "report.html": "index.html",
    "report.md": "report.md",
    "regressions.md": "regressions.md",
}


def default_checkout(root: Path) -> Path:
    return Path(os.environ.get(CHECKOUT_VAR) or root / ".envlab" / "site")


def branch() -> str:
    return os.environ.get(BRANCH_VAR) or DEFAULT_BRANCH


def _manifest(site: Path) -> dict[str, dict[str, str]]:
    path = site / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise StoreError(f"{path}: expected the site's JSON list of nights, found: {exc}") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path}: expected a JSON object of nights, found {type(data).__name__}")
    return data


def _index(nights: dict[str, dict[str, str]], latest: str) -> str:
    rows = sorted(nights.items(), key=lambda kv: (kv[1].get("published", ""), kv[0]), reverse=True)
    return (
        environment()
        .get_template("site.html.j2")
        .render(
            latest=latest,
            nights=[
                {
                    "run": run,
                    "path": safe_name(run),
                    "published": meta.get("published", ""),
                    "page": "summary" if meta.get("pruned") else "full report",
                }
                for run, meta in rows
            ],
        )
    )


def _prune(site: Path, nights: dict[str, dict[str, str]], keep: int) -> list[str]:
    """Past the newest ``keep`` nights, replace a night's full report by its Markdown summary."""
    by_age = sorted(nights, key=lambda r: (nights[r].get("published", ""), r), reverse=True)
    pruned = []
    for run in by_age[keep:]:
        if nights[run].get("pruned"):
            continue
        page = site / "nights" / safe_name(run)
        parts = [
            (title, (page / name).read_text(encoding="utf-8"))
            for name, title in (("report.md", "Report"), ("regressions.md", "Regressions"))
            if (page / name).is_file()
        ]
        html = (
            environment()
            .get_template("site-night.html.j2")
            .render(run=run, keep=keep, published=nights[run].get("published", ""), parts=parts)
        )
        atomic_write_text(page / "index.html", html)
        nights[run]["pruned"] = "true"
        pruned.append(run)
    return pruned


def _copy_latest(report_dir: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(report_dir, target, ignore=shutil.ignore_patterns(".*"))
    shutil.copyfile(report_dir / "report.html", target / "index.html")


def publish(
    branch: GitBranch,
    report_dir: Path,
    run_id: str,
    *,
    keep: int = DEFAULT_KEEP,
    attempts: int = 5,
    backoff_s: float = 1.0,
) -> Path:
    """Put ``report_dir`` (``envlab report``'s output) on the site as night ``run_id`` and as the
    latest, keep the full reports of the newest ``keep`` nights; commit and push the site branch.
    Returns the site directory (the checkout)."""
    if keep < 1:
        raise StoreError(f"publish: expected to keep at least 1 night's full report, found {keep}")
    if not (report_dir / "report.html").is_file():
        raise StoreError(
            f"publish: expected a report in {report_dir} (run `envlab report` first), found none"
        )
    if not run_id:
        raise StoreError("publish: expected the run id of the night to publish, found none")
    site = branch.path

    def apply(existed: bool) -> str:
        night = site / "nights" / safe_name(run_id)
        night.mkdir(parents=True, exist_ok=True)
        for name, target in NIGHT_FILES.items():
            if (report_dir / name).is_file():
                shutil.copyfile(report_dir / name, night / target)
        _copy_latest(report_dir, site / "latest")
        nights = _manifest(site)
        published = datetime.now(UTC).isoformat(timespec="seconds")
        nights[run_id] = {"published": published}
        pruned = _prune(site, nights, keep)
        if pruned:
            log(f"site: {len(pruned)} night(s) past the newest {keep} keep their summary only")
        atomic_write_text(site / MANIFEST, json.dumps(nights, indent=2, sort_keys=True) + "\n")
        atomic_write_text(site / "index.html", _index(nights, run_id))
        return f"envlab site: night {run_id}"

    branch.commit_and_push(apply, attempts=attempts, backoff_s=backoff_s)
    log(
        f"site {branch.remote}: published night {run_id} (nights/{safe_name(run_id)}/) "
        f"and latest/ from {report_dir}; the site is {site}"
    )
    return site
