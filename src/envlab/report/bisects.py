"""Bisects in Markdown: one bisect's steps as a table (its own file, the CI step summary, the
report's section)."""

from __future__ import annotations

from envlab.report.templating import environment
from envlab.results.bisects import Bisect


def render_markdown(bisect: Bisect, *, heading_level: int = 1) -> str:
    return environment().get_template("bisect.md.j2").render(b=bisect, h="#" * heading_level)
