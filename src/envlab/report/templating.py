"""The Jinja2 environment for reports: templates shipped in the package, autoescaped HTML."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def md_cell(value: object) -> str:
    """A value made safe for one cell of a Markdown table."""
    text = str(value if value is not None else "")
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("envlab.report", "templates"),
        autoescape=select_autoescape(["html", "html.j2"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_cell
    env.filters["num"] = lambda v: f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    env.filters["seconds"] = lambda v: f"{v:.0f} s" if v >= 10 else f"{v:.1f} s"
    return env
