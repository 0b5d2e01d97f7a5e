"""The result schema: versioned, validated on read, written atomically; bad files are reported, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envlab.errors import ResultError
from envlab.results.schema import SCHEMA_VERSION, Host, Result, parse
from envlab.results.store import Skipped, Store

HOST = Host(
    id="h1",
    hostname="h1",
    os="Linux",
    platform="linux-64",
    machine="x86_64",
    cpu="cpu",
    cpu_count=2,
)


def result(env: str = "stable", run_id: str = "20261122T000000Z-aaaaaa") -> Result:
    return Result(
        schema_version=SCHEMA_VERSION,
        run_id=run_id,
        created="2026-11-22T00:00:00+00:00",
        env=env,
        spec_hash="x",
        host=HOST,
        outcome="unavailable",
        reason="index gone",
    )


def test_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs")
    path = store.write(result())
    assert path == tmp_path / "runs" / "20261122T000000Z-aaaaaa" / "h1" / "stable.json"
    assert parse(path.read_text()) == result()
    assert not list(path.parent.glob(".*.tmp")), "no temporary file left behind"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "invalid JSON"),
        ('{"hello": 1}', "found another JSON document"),
        ('{"schema_version": 99}', "schema_version 99 is newer .* upgrade envlab"),
        ('{"schema_version": 0}', "schema_version 0 cannot be migrated .* re-run the env"),
        ('{"schema_version": "1"}', "expected an integer schema_version"),
    ],
)
def test_bad_documents(text: str, match: str) -> None:
    with pytest.raises(ResultError, match=match):
        parse(text, "x.json")


def test_invalid_field_names_the_field() -> None:
    doc = json.loads(result().to_json())
    doc["outcome"] = "fine"
    with pytest.raises(ResultError, match=r"x.json: field 'outcome'"):
        parse(json.dumps(doc), "x.json")
    doc["outcome"] = "built"
    doc["surprise"] = 1
    with pytest.raises(ResultError, match=r"field 'surprise'"):
        parse(json.dumps(doc), "x.json")


def test_scan_skips_corrupt_and_foreign(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write(result("stable"))
    bad = tmp_path / "run2" / "h1" / "broken.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{", encoding="utf-8")
    (bad.parent / "foreign.json").write_text('{"schema_version": 99}', encoding="utf-8")
    items = list(store.scan())
    skipped = [i for i in items if isinstance(i, Skipped)]
    assert len(skipped) == 2 and {s.path.name for s in skipped} == {"broken.json", "foreign.json"}
    assert [i.env for i in items if not isinstance(i, Skipped)] == ["stable"]
