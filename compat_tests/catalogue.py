"""Generate CATALOGUE.md from the compat checks' docstrings (stdlib only; nothing is imported).

    python compat_tests/catalogue.py           # (re)write compat_tests/CATALOGUE.md
    python compat_tests/catalogue.py --check   # exit 1 if CATALOGUE.md is out of date

Every check needs a docstring: its first line says what it checks, and a paragraph starting
with "Fix:" says what a failure usually means and how to fix it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "CATALOGUE.md"


@dataclass(frozen=True)
class Check:
    module: str
    name: str
    category: str
    gpu: bool
    items: int
    what: str
    fix: str


def _mark(decorator: ast.expr) -> tuple[str, ast.Call | None] | None:
    """'gpu' for @pytest.mark.gpu, ('parametrize', call) for @pytest.mark.parametrize(...)."""
    call = decorator if isinstance(decorator, ast.Call) else None
    target = call.func if call else decorator
    if (
        isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Attribute)
        and target.value.attr == "mark"
    ):
        return target.attr, call
    return None


def _length(node: ast.expr, constants: dict[str, ast.expr]) -> int | None:
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("list", "tuple")
        and node.args
    ):
        return _length(node.args[0], constants)
    if isinstance(node, ast.Name) and node.id in constants:
        return _length(constants[node.id], constants)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return len(node.elts)
    if isinstance(node, ast.Dict):
        return len(node.keys)
    return None


def _fix_paragraph(doc: str) -> str:
    lines = [line.strip() for line in doc.splitlines()]
    for start, line in enumerate(lines):
        if line.startswith("Fix:"):
            paragraph = []
            for part in lines[start:]:
                if not part:
                    break
                paragraph.append(part)
            return " ".join(paragraph).removeprefix("Fix:").strip()
    return ""


def _constants(tree: ast.Module) -> dict[str, ast.expr]:
    """The module-level assignments by name (the last one wins), for counting parametrize values."""
    constants: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and node.value is not None:
                    constants[target.id] = node.value
    return constants


def _marks(
    node: ast.FunctionDef,
    constants: dict[str, ast.expr],
    category: str | None,
    problems: list[str],
    where: str,
) -> tuple[bool, int, str | None]:
    """What the check's pytest marks say: needs a GPU, test items, category (its own or the
    module's)."""
    gpu, items = False, 1
    for decorator in node.decorator_list:
        mark = _mark(decorator)
        if mark is None:
            continue
        kind, call = mark
        if kind == "gpu":
            gpu = True
        elif kind == "parametrize" and call is not None and len(call.args) >= 2:
            count = _length(call.args[1], constants)
            if count is None:
                problems.append(f"{where}: cannot count the parametrize values statically")
            items *= count or 1
        elif (
            kind == "category"
            and call is not None
            and call.args
            and isinstance(call.args[0], ast.Constant)
        ):
            category = str(call.args[0].value)
    return gpu, items, category


def _check(
    path: Path,
    node: ast.FunctionDef,
    constants: dict[str, ast.expr],
    category: str | None,
    problems: list[str],
) -> Check:
    where = f"{path.name}::{node.name}"
    gpu, items, own_category = _marks(node, constants, category, problems, where)
    doc = ast.get_docstring(node) or ""
    what = doc.strip().splitlines()[0].strip() if doc.strip() else ""
    fix = _fix_paragraph(doc)
    if not what:
        problems.append(f"{where}: no docstring")
    if not fix:
        problems.append(f"{where}: docstring has no 'Fix:' paragraph")
    if not own_category:
        problems.append(f"{where}: no category (module CATEGORY or @pytest.mark.category)")
    return Check(path.name, node.name, own_category or "?", gpu, items, what, fix)


def collect(root: Path = HERE) -> tuple[list[Check], list[str]]:
    checks: list[Check] = []
    problems: list[str] = []
    for path in sorted(root.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        constants = _constants(tree)
        category = None
        if isinstance(constants.get("CATEGORY"), ast.Constant):
            category = constants["CATEGORY"].value  # type: ignore[union-attr]
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                checks.append(_check(path, node, constants, category, problems))
    return checks, problems


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(checks: list[Check]) -> str:
    items = sum(check.items for check in checks)
    categories = sorted({check.category for check in checks})
    gpu_items = sum(check.items for check in checks if check.gpu)
    lines = [
        "# Compat suite catalogue",
        "",
        "Generated by `python compat_tests/catalogue.py` from the checks' docstrings; "
        "do not edit by hand.",
        "",
        (
            f"{len(checks)} checks, {items} test items ({gpu_items} need a GPU), "
            f"in {len(categories)} categories. GPU checks skip with the reason when the host has "
            "no NVIDIA GPU, and fail naming why (driver, arch) when it has one CUDA cannot use; "
            "in a CPU-only env (`cpu_only: true`) they assert that CUDA is absent instead."
        ),
        "",
        "| Category | Check | GPU | Items | What it checks | What a failure usually means / fix |",
        "|---|---|---|---|---|---|",
    ]
    for check in sorted(checks, key=lambda c: (c.category, c.module, c.name)):
        lines.append(
            f"| {check.category} | `{check.module}::{check.name}` "
            f"| {'yes' if check.gpu else ''} | {check.items} "
            f"| {_cell(check.what)} | {_cell(check.fix)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if CATALOGUE.md is out of date"
    )
    args = parser.parse_args(argv)
    checks, problems = collect()
    if problems:
        for problem in problems:
            print(f"catalogue: {problem}", file=sys.stderr)
        return 2
    text = render(checks)
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(
                f"catalogue: {TARGET} is out of date; run: python compat_tests/catalogue.py",
                file=sys.stderr,
            )
            return 1
        print(f"catalogue: {TARGET.name} is up to date ({len(checks)} checks)")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"catalogue: wrote {TARGET} ({len(checks)} checks, {sum(c.items for c in checks)} items)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
