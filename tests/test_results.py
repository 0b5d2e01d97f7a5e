"""The result schema: versioned, validated on read, written atomically.

Bad files are reported, not fatal; the probe's facts are typed and write back with their keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import factories as f
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


def test_existing_facts_parse_to_the_typed_model_and_write_back_unchanged() -> None:
    doc = json.loads(result().to_json())
    doc["facts"] = f.probe_document()
    parsed = parse(json.dumps(doc), "x.json")
    facts = parsed.facts
    assert (facts.torch.version, facts.torch.cuda, facts.torch.cudnn) == (
        "2.10.0+cu128",
        "12.8",
        91002,
    )
    assert facts.torch.devices[0].compute_capability == "9.0"
    assert facts.torchaudio.error and facts.torchaudio.version is None
    assert facts.blas.libraries[0].internal_api == "openblas"
    assert facts.distributions["pillow"].installer == "conda"
    assert facts.versions()["torch"] == "2.10.0+cu128"
    # The same keys come back out: no nulls padded in for facts the probe never reported.
    assert json.loads(parsed.to_json())["facts"] == doc["facts"]


def test_partial_and_missing_facts_parse() -> None:
    doc = json.loads(result().to_json())
    assert doc["facts"] == {}  # a result with no facts is written as before
    doc["facts"] = {"torch": {"error": "ImportError: libcudnn.so.9"}}
    facts = parse(json.dumps(doc)).facts
    assert facts.torch.error == "ImportError: libcudnn.so.9"
    assert facts.torch.version is None and facts.torch.arch_flags == []
    assert facts.python.version is None and facts.distributions == {}
    assert json.loads(parse(json.dumps(doc)).to_json())["facts"] == doc["facts"]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("torch", "cudnn"), "nine", "facts.torch.cudnn"),
        (("torch", "arch_flags"), "sm_90", "facts.torch.arch_flags"),
        (("distributions", "torch", "version"), 2, "facts.distributions.torch.version"),
        (("torch", "surprise"), 1, "facts.torch.surprise"),
    ],
)
def test_facts_of_the_wrong_shape_name_the_field(
    path: tuple[str, ...], value: object, field: str
) -> None:
    doc = json.loads(result().to_json())
    doc["facts"] = f.probe_document()
    *parents, last = path
    target = doc["facts"]
    for key in parents:
        target = target[key]
    target[last] = value
    with pytest.raises(ResultError) as caught:
        parse(json.dumps(doc), "x.json")
    message = str(caught.value)
    assert message.startswith(f"x.json: field {field!r}: ")
    assert "\n" not in message


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
