"""Factor expansion: an envspec with a ``[matrix]`` table declares one env per cell.

``[matrix]`` maps each factor to its values: a list (``python = ["3.11", "3.12"]``), or a table
of value -> the envspec fields that value sets (``[matrix.variant.cu126]`` with
``torch.index = "pytorch-cu126"``). Reserved keys: ``name`` (the cells' name template),
``exclude`` (partial combinations to drop) and ``include`` (whole combinations to add). Every
string of the spec may say ``{factor}``, the cell's value of that factor (``{{`` is a brace).

Standard library only: the noxfile expands factored envspecs for its sessions and tags before
envlab's dependencies are installed, and :mod:`envlab.spec.envspec` validates the same cells, so
one expansion serves both.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RESERVED = ("name", "exclude", "include")
LAB_KEYS = ("name", "cell")  # set by envlab for every env, never written in a file
_FACTOR = re.compile(r"^[a-z][a-z0-9_]*$")
_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_ENV_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_NOT_IN_NAME = re.compile(r"[^a-z0-9-]+")


class FactorError(ValueError):
    """A malformed ``[matrix]`` table: one line, without the file name (the caller adds it)."""


@dataclass(frozen=True)
class Factor:
    name: str
    values: tuple[str, ...]
    settings: Mapping[str, Mapping[str, Any]]  # value -> the envspec fields it sets


@dataclass(frozen=True)
class Cell:
    """One env of a factored envspec."""

    name: str
    values: dict[str, str]  # factor -> value, in the order the factors are declared
    data: dict[str, Any]  # its envspec: [matrix] gone, the values' fields merged and filled in

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


def is_factored(data: Mapping[str, Any]) -> bool:
    return "matrix" in data


def name_part(value: str) -> str:
    """A factor value as env names show it: its lowercase letters, digits and '-' (3.12: 312)."""
    return _NOT_IN_NAME.sub("", value.lower())


def expand(stem: str, data: Mapping[str, Any]) -> list[Cell]:
    """The cells of the factored envspec ``data`` (file ``<stem>.toml``), in declaration order:
    the product of the factors' values, less ``exclude``, plus ``include``."""
    table = data["matrix"]
    if not isinstance(table, dict):
        raise FactorError(
            f"field 'matrix': expected a table of factors (name = [values]), found {table!r}"
        )
    for key in LAB_KEYS:
        if key in data:
            raise FactorError(f"unknown key {key!r} (envlab sets it for every cell)")
    factors = _factors(table)
    template = table.get("name", f"{stem}-" + "-".join(f"{{{f.name}}}" for f in factors))
    if not isinstance(template, str):
        raise FactorError(
            f"field 'matrix.name': expected a name template string, found {template!r}"
        )
    base = {k: v for k, v in data.items() if k != "matrix"}
    cells = [_cell(stem, base, factors, combo, template) for combo in _combinations(factors, table)]
    seen: dict[str, Cell] = {}
    for cell in cells:
        if cell.name in seen:
            raise FactorError(
                f"field 'matrix.name': cells ({seen[cell.name].label}) and ({cell.label}) are both "
                f"named {cell.name!r}: expected a template that tells every cell apart"
            )
        seen[cell.name] = cell
    return cells


# --------------------------------------------------------------------------- factors


def _factors(table: Mapping[str, Any]) -> list[Factor]:
    factors = [_factor(key, body) for key, body in table.items() if key not in RESERVED]
    if not factors:
        raise FactorError(
            'field \'matrix\': expected at least one factor (e.g. python = ["3.11", "3.12"]), '
            "found none"
        )
    return factors


def _factor(key: str, body: Any) -> Factor:
    where = f"matrix.{key}"
    if not _FACTOR.match(key):
        raise FactorError(f"field {where!r}: expected a factor name like 'python', found {key!r}")
    if isinstance(body, dict):
        values, settings = tuple(body), body
        for value, fields in body.items():
            _check_settings(f"{where}.{value}", fields)
    elif isinstance(body, list):
        values, settings = tuple(body), {}
        bad = [v for v in body if not isinstance(v, str)]
        if bad:
            raise FactorError(
                f"field {where!r}: expected a list of strings (quote numbers: 3.10 is the number "
                f"3.1), found {bad[0]!r}"
            )
        if len(set(body)) != len(body):
            raise FactorError(f"field {where!r}: expected distinct values, found {body!r}")
    else:
        raise FactorError(
            f"field {where!r}: expected a list of values or a table of value -> fields, "
            f"found {body!r}"
        )
    if not values:
        raise FactorError(f"field {where!r}: expected at least one value, found none")
    return Factor(key, values, settings)


def _check_settings(where: str, fields: Any) -> None:
    if not isinstance(fields, dict):
        raise FactorError(
            f"field {where!r}: expected a table of the envspec fields this value sets, "
            f"found {fields!r}"
        )
    for key in ("matrix", *LAB_KEYS):
        if key in fields:
            raise FactorError(f"field {where!r}: a value cannot set {key!r}")


# --------------------------------------------------------------------------- combinations


def _combinations(factors: list[Factor], table: Mapping[str, Any]) -> list[dict[str, str]]:
    names = [f.name for f in factors]
    combos = [
        dict(zip(names, c, strict=True)) for c in itertools.product(*(f.values for f in factors))
    ]
    for i, rule in enumerate(_rules(table, "exclude")):
        match = _exclusion(factors, rule, f"matrix.exclude.{i}")
        combos = [c for c in combos if not all(c[k] in vs for k, vs in match.items())]
    for i, rule in enumerate(_rules(table, "include")):
        combo = _inclusion(factors, rule, f"matrix.include.{i}")
        if combo in combos:
            raise FactorError(
                f"field 'matrix.include.{i}': expected a combination the matrix lacks, found "
                f"({', '.join(f'{k}={v}' for k, v in combo.items())}), already a cell"
            )
        combos.append(combo)
    if not combos:
        raise FactorError(
            "field 'matrix.exclude': expected some cells left, found every one excluded"
        )
    return combos


def _rules(table: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    rules = table.get(key, [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) and r for r in rules):
        raise FactorError(
            f"field 'matrix.{key}': expected a list of tables like "
            f'{{ python = "3.13", variant = "cu118" }}, found {rules!r}'
        )
    return rules


def _exclusion(factors: list[Factor], rule: dict[str, Any], where: str) -> dict[str, set[str]]:
    """factor -> excluded values; every factor and value must be declared (a typo excludes
    nothing, silently, otherwise)."""
    declared = {f.name: f.values for f in factors}
    match: dict[str, set[str]] = {}
    for key, value in rule.items():
        if key not in declared:
            raise FactorError(
                f"field {where!r}: expected a factor ({', '.join(declared)}), found {key!r}"
            )
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v not in declared[key]:
                known = ", ".join(declared[key])
                raise FactorError(f"field '{where}.{key}': expected one of {known}, found {v!r}")
        match[key] = set(values)
    return match


def _inclusion(factors: list[Factor], rule: dict[str, Any], where: str) -> dict[str, str]:
    """A whole combination; a value new to its factor is allowed only where it sets nothing."""
    declared = [f.name for f in factors]
    if set(rule) != set(declared):
        raise FactorError(
            f"field {where!r}: expected a value for each factor ({', '.join(declared)}), "
            f"found {', '.join(rule) or 'none'}"
        )
    combo = {}
    for factor in factors:
        value = rule[factor.name]
        if not isinstance(value, str):
            raise FactorError(f"field '{where}.{factor.name}': expected a string, found {value!r}")
        if factor.settings and value not in factor.values:
            raise FactorError(
                f"field '{where}.{factor.name}': expected one of {', '.join(factor.values)} "
                f"(its values set fields), found {value!r}"
            )
        combo[factor.name] = value
    return combo


# --------------------------------------------------------------------------- one cell


def _cell(
    stem: str, base: dict[str, Any], factors: list[Factor], values: dict[str, str], template: str
) -> Cell:
    data = copy.deepcopy(base)
    owners: dict[str, str] = {}
    for factor in factors:
        value = values[factor.name]
        fields = factor.settings.get(value, {})
        _merge(data, copy.deepcopy(dict(fields)), owners, f"{factor.name}={value}", "")
    data = _fill(data, values, "")
    tags = data.get("tags", [])
    if isinstance(tags, list):
        data["tags"] = list(dict.fromkeys([*tags, stem, *values.values()]))
    name = _fill(template, {k: name_part(v) for k, v in values.items()}, "matrix.name")
    if not _ENV_NAME.match(name):
        label = ", ".join(f"{k}={v}" for k, v in values.items())
        raise FactorError(
            f"field 'matrix.name': expected a lowercase env name like 'wide-py312' for ({label}), "
            f"found {name!r}"
        )
    return Cell(name, dict(values), data)


def _merge(
    target: dict[str, Any], fields: dict[str, Any], owners: dict[str, str], who: str, at: str
) -> None:
    """Deep-merge ``fields`` into ``target``: tables merge, anything else replaces the base's
    value; two factors' values setting the same field is an error (which would win is a guess)."""
    for key, value in fields.items():
        path = f"{at}.{key}" if at else key
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value, owners, who, path)
            continue
        if path in owners and owners[path] != who:
            raise FactorError(
                f"field {path!r}: expected one factor value to set it, found both "
                f"{owners[path]} and {who}"
            )
        owners[path] = who
        target[key] = value


def _fill(value: Any, values: Mapping[str, str], at: str) -> Any:
    """``value`` with every ``{factor}`` in its strings replaced by the cell's value."""
    if isinstance(value, dict):
        return {k: _fill(v, values, f"{at}.{k}" if at else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values, f"{at}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        key = match.group(1)
        if key not in values:
            raise FactorError(
                f"field {at!r}: expected a factor name in {{...}} ({', '.join(values)}), "
                f"found {match.group(0)!r}"
            )
        return values[key]

    return _FIELD.sub(one, value)
