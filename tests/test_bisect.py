"""`envlab bisect` against local indexes on 127.0.0.1 holding small generated wheels.

Two result documents (written through envlab's schema) differ in a handful of packages; a planted
compat test, check or benchmark breaks with one of them (or a pair, or the torch family); bisect
builds real candidate envs with uv from the local index and must name it within its step bound.
A nightly index serves eight dated torch builds, one of which introduces the break.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from factories import benchmark, exact
from helpers import ROOT, envlab, make_project
from localindex import LocalIndexes, serve

from envlab.bisect import changes, search
from envlab.bisect.changes import Change
from envlab.bisect.index import IndexReader, nightlies, parse_page
from envlab.outcome import Outcome
from envlab.report import judge
from envlab.results.bisects import read_all
from envlab.results.schema import load
from envlab.results.store import Store
from envlab.spec.indexes import Index

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
PYTEST = ("pytest", "pluggy", "iniconfig", "packaging", "pygments")
STACK = [f"pkg-{c}" for c in "abcdefgh"]
PLANTED = "test_planted.py::test_planted"
SPEC = """
description = "bisect demo"
python = "{python}"
platforms = ["linux-64"]
locked = false
[torch]
packages = ["torch"]
index = "torchidx"
[stack]
add = ["pytest"]
index = "pypi"
[expect]
cpu-only = true
"""
NIGHTLY = SPEC.replace(
    "[expect]", '[nightly]\npackages = ["torch"]\nindex = "nightlyidx"\n[expect]'
)
FIRST_NIGHT = date(2026, 11, 18)
SLEEP = {"1.0": 0.020, "2.0": 0.026}  # slowpkg's benchmark sleep: 2.0 is 30 % slower
FAKE_BENCH = '''
"""A benchmark program whose samples are slowpkg's sleep, in envlab's raw format.

It reports the time each sleep is meant to take, not the clock: a loaded machine stretches short
sleeps at random, and what is tested here is the bisect and the judge, not the timer.
"""
import argparse, json, time
import slowpkg
parser = argparse.ArgumentParser()
parser.add_argument("--mode"); parser.add_argument("--out"); parser.add_argument("--threads")
parser.add_argument("--only", nargs="+")
args = parser.parse_args()
samples = []
for i in range(7):
    time.sleep(slowpkg.DELAY)
    samples.append(slowpkg.DELAY * 1000 * (1 + 0.003 * (i % 3)))
record = {"name": "fake_sleep", "version": 1, "params": {}, "unit": "ms",
          "higher_is_better": False, "device": "cpu", "samples": samples, "error": None}
with open(args.out, "w") as out:
    json.dump({"benchmarks": [record], "context": {"complete": True}}, out)
'''


def _pytest_dists() -> dict[str, str]:
    from importlib import metadata

    return {name: metadata.version(name) for name in PYTEST}


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIndexes]:
    """torchidx (two torch families), pypi (the stack, pytest), nightlyidx (eight nights)."""
    with serve(tmp_path_factory.mktemp("index"), ranges=True) as idx:
        for torch, family in (("2.10.0+cpu", "2.10.0+cpu"), ("2.11.0+cpu", "2.11.0+cpu")):
            idx.add("torchidx", "torch", torch, git_version="f" * 40)
            idx.add("torchidx", "torchaudio", family, [f"torch=={torch}"])
        idx.add("torchidx", "triton", "3.5.0")
        idx.add("torchidx", "triton", "3.6.0")
        for name in STACK:
            idx.add("pypi", name, "1.0")
            requires = ["pkg-g>=2.0"] if name == "pkg-h" else []
            idx.add("pypi", name, "2.0", requires)
        for version, delay in SLEEP.items():
            idx.add("pypi", "slowpkg", version, payload=f"DELAY = {delay}\n")
        for name in PYTEST:
            idx.add_installed("pypi", name)
        for night in range(8):
            when = (FIRST_NIGHT + timedelta(days=night)).strftime("%Y%m%d")
            broken = "BROKEN = True\n" if night >= 5 else ""
            git = f"{night:02d}" + "abc" * 12 + "de"
            idx.add("nightlyidx", "torch", f"2.12.0.dev{when}+cpu", payload=broken, git_version=git)
        yield idx


def project(
    tmp_path: Path, idx: LocalIndexes, planted: str, text: str = SPEC
) -> tuple[Path, dict[str, str]]:
    """A project with a planted compat test (``planted`` is its body) and the local indexes."""
    root = make_project(
        tmp_path,
        indexes={
            "pypi": "https://pypi.org/simple",
            "torchidx": "https://download.pytorch.org/whl/cpu",
            "nightlyidx": "https://download.pytorch.org/whl/nightly/cpu",
        },
        envs={"demo": text.format(python=PY)},
        stack=[],
    )
    suite = root / "compat_tests"
    suite.mkdir()
    for name in ("conftest.py", "compat_support.py", "_archrule.py", "pytest.ini"):
        shutil.copy(ROOT / "compat_tests" / name, suite / name)
    (suite / "test_planted.py").write_text(
        '"""A planted break."""\n\nfrom importlib import metadata\n\nCATEGORY = "planted"\n\n\n'
        f"def test_planted() -> None:\n    {planted}\n",
        encoding="utf-8",
    )
    env = {
        **idx.mirrors("pypi", "torchidx", "nightlyidx"),
        "ENVLAB_HOST_ID": "testhost",
    }
    return root, env


def ends(root: Path, good: dict[str, str], bad: dict[str, str], test: str = PLANTED) -> None:
    """Write the good and bad results (runs good-run and bad-run, host ci-cpu-1): ``test``
    passed in the first and failed in the second."""
    store = Store(root / "reports" / "runs")
    for run, dists, outcome, day in (
        ("good-run", good, "passed", 20),
        ("bad-run", bad, "failed", 21),
    ):
        created = f"2026-11-{day}T02:00:00+00:00"
        store.write(exact(run, "demo", dists, tests={test: outcome}, created=created))


def good_set() -> dict[str, str]:
    return {"torch": "2.10.0+cpu", **{n: "1.0" for n in STACK}, **_pytest_dists()}


def bisect(root: Path, env: dict[str, str], *args: str) -> tuple[int, str, dict]:
    """Run `envlab bisect demo ARGS`; (exit code, stdout, the bisect record)."""
    done = envlab("--root", str(root), "bisect", "demo", *args, env=env, timeout=300)
    records, skipped = read_all(root / "reports" / "bisect")
    assert not skipped
    assert len(records) == 1, done.stderr[-3000:]
    return done.returncode, done.stdout.strip(), json.loads(records[0].model_dump_json())


def assert_clean(root: Path) -> None:
    """No candidate env left behind, and no env of the env under test ever made."""
    assert not (root / ".envlab" / "bisect").exists()
    assert not (root / ".envlab" / "envs" / "demo").exists()


# --------------------------------------------------------------------------- package bisects


def test_one_upgrade_among_eight_is_named_in_five_builds(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    culprit = random.choice(STACK)
    root, env = project(tmp_path, indexes, f'assert metadata.version("{culprit}") != "2.0"')
    good = good_set()
    ends(root, good, {**good, **{n: "2.0" for n in STACK}})
    code, out, record = bisect(root, env, "--good", "good-run", "--bad", "bad-run")
    assert code == 0, out
    # pkg-h 2.0 requires pkg-g >= 2.0: the two move together, so eight changes are seven groups
    expected = {
        "pkg-g": "pkg-g 1.0 → 2.0, pkg-h 1.0 → 2.0",
        "pkg-h": "pkg-g 1.0 → 2.0, pkg-h 1.0 → 2.0",
    }
    named = expected.get(culprit, f"{culprit} 1.0 → 2.0")
    assert out.startswith(f"{named} breaks {PLANTED} ("), out
    assert record["status"] == "found" and record["culprit"] == [named]
    assert len(record["candidates"]) == 7
    assert record["builds"] == len(record["steps"]) <= math.ceil(math.log2(7)) + 2
    assert record["target"] == PLANTED  # the first regression between the two ends
    steps = record["steps"]
    assert all(Outcome(s["outcome"]).has_env for s in steps), "every candidate was built"
    assert any(s["broke"] is False for s in steps) and any(s["broke"] for s in steps)
    # every step is a normal result, tagged bisect, with its own run id
    results = [load(p) for p in sorted((root / "reports" / "bisect").glob("*/*/*/demo.json"))]
    assert [r.run_id for r in results] == [s["run_id"] for s in steps]
    assert all("bisect" in r.tags and r.compat and r.compat.tests for r in results)
    assert not list((root / "reports" / "runs").glob("bisect-*")), "steps stay out of the runs"
    md = (root / "reports" / "bisect" / record["bisect_id"] / "bisect.md").read_text()
    assert named in md and "| step | run id |" in md
    assert_clean(root)


def test_two_upgrades_that_only_break_together_are_named_as_a_pair(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    planted = 'assert not (metadata.version("pkg-a") == metadata.version("pkg-c") == "2.0")'
    root, env = project(tmp_path, indexes, planted)
    good = good_set()
    ends(root, good, {**good, **{n: "2.0" for n in STACK[:3]}})
    code, out, record = bisect(root, env, "--good", "good-run", "--bad", "bad-run")
    assert code == 0, out
    assert out.startswith(
        f"pkg-a 1.0 → 2.0 and pkg-c 1.0 → 2.0 break {PLANTED} together (neither alone) ("
    ), out
    assert record["culprit"] == ["pkg-a 1.0 → 2.0", "pkg-c 1.0 → 2.0"]
    broke = {tuple(s["applied"]): s["broke"] for s in record["steps"]}
    assert broke[("pkg-a 1.0 → 2.0", "pkg-c 1.0 → 2.0")] is True
    assert broke[("pkg-a 1.0 → 2.0",)] is broke[("pkg-c 1.0 → 2.0",)] is False, "neither alone"
    assert_clean(root)


def test_a_torch_family_culprit_is_named_as_the_group(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    spec = SPEC.replace("cpu-only = true", 'cpu-only = true\ntorch-version = "2.10.0"')
    root, env = project(tmp_path, indexes, "pass", text=spec)
    good = {"torchaudio": "2.10.0+cpu", "triton": "3.5.0", **good_set()}
    bad = {**good, "torch": "2.11.0+cpu", "torchaudio": "2.11.0+cpu", "triton": "3.6.0"}
    ends(root, good, {**bad, "pkg-a": "2.0", "pkg-b": "2.0"})
    code, out, record = bisect(
        root, env, "--good", "good-run", "--bad", "bad-run", "--check", "torch-version"
    )
    assert code == 0, out
    family = (
        "the torch family (torch 2.10.0+cpu → 2.11.0+cpu, "
        "torchaudio 2.10.0+cpu → 2.11.0+cpu and 1 more)"
    )
    assert out.startswith(f"{family} breaks check torch-version ("), out
    assert record["candidates"] == [family, "pkg-a 1.0 → 2.0", "pkg-b 1.0 → 2.0"]
    assert record["builds"] <= math.ceil(math.log2(3)) + 2
    last = load(
        next((root / "reports" / "bisect").glob(f"*/{record['steps'][0]['run_id']}/*/demo.json"))
    )
    assert last.facts.versions()["triton"] == "3.6.0", "the group moved as one"
    assert_clean(root)


def test_max_steps_stops_inconclusive_and_keep_leaves_the_candidates(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    root, env = project(tmp_path, indexes, 'assert metadata.version("pkg-c") != "2.0"')
    good = good_set()
    ends(root, good, {**good, **{n: "2.0" for n in STACK[:4]}})
    code, out, record = bisect(
        root, env, "--good", "good-run", "--bad", "bad-run", "--max-steps", "2", "--keep"
    )
    assert code == 1, out
    assert record["status"] == "max-steps" and record["builds"] == 2
    assert out.startswith(f"inconclusive after 2 builds (--max-steps): {PLANTED} breaks with one")
    assert "pkg-c 1.0 → 2.0" in out
    kept = sorted(p.name for p in (root / ".envlab" / "bisect" / "demo").iterdir())
    assert kept == [s["run_id"] for s in record["steps"]], "--keep leaves each candidate env"
    assert all((root / ".envlab" / "bisect" / "demo" / k / "bin" / "python").exists() for k in kept)


def test_a_benchmark_thirty_percent_slower_is_pinned_on_its_package(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    root, env = project(tmp_path, indexes, "pass")
    (root / "benchmarks").mkdir()
    (root / "benchmarks" / "run.py").write_text(FAKE_BENCH, encoding="utf-8")
    good = {**good_set(), "slowpkg": "1.0"}
    bad = {**good, "slowpkg": "2.0", "pkg-a": "2.0", "pkg-b": "2.0", "pkg-c": "2.0"}
    runs = Store(root / "reports" / "runs")
    for run, dists in (("good-run", good), ("bad-run", bad)):
        ms = 1000 * SLEEP[dists["slowpkg"]]
        record = benchmark("fake_sleep", [ms * (1 + 0.002 * i) for i in range(7)])
        runs.write(exact(run, "demo", dists, tests={PLANTED: "passed"}, benchmarks=[record]))
    code, out, record = bisect(root, env, "--good", "good-run", "--bad", "bad-run")
    assert code == 0, out
    assert record["target"] == "benchmark fake_sleep"  # the first regression: the judge's
    assert out.startswith("slowpkg 1.0 → 2.0 breaks benchmark fake_sleep ("), out
    slow = [s for s in record["steps"] if s["broke"]]
    assert slow and all("x worse" in s["detail"] for s in slow)
    assert_clean(root)


def test_nightly_bisect_names_the_first_bad_night_and_its_commit(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    planted = 'import torch\n    assert not getattr(torch, "BROKEN", False), "nightly broke"'
    root, env = project(tmp_path, indexes, planted, text=NIGHTLY)
    last = FIRST_NIGHT + timedelta(days=7)
    code, out, record = bisect(
        root, env, "--good", str(FIRST_NIGHT), "--bad", last.strftime("%Y%m%d"), "--test", PLANTED
    )
    assert code == 0, out
    sixth = FIRST_NIGHT + timedelta(days=5)
    git = "05" + "abc" * 12 + "de"
    assert out.startswith(
        f"nightly {sixth} (torch 2.12.0.dev{sixth:%Y%m%d}+cpu, git {git}) breaks {PLANTED}; "
        f"{sixth - timedelta(days=1)} was the last good nightly ("
    ), out
    assert record["kind"] == "nightly" and len(record["candidates"]) == 8
    assert record["builds"] <= 4
    assert_clean(root)


# --------------------------------------------------------------------------- refusals


def test_bad_input_is_one_line(indexes: LocalIndexes, tmp_path: Path) -> None:
    root, env = project(tmp_path, indexes, "pass")
    ends(root, good_set(), good_set())
    cases = [
        (["--good", "nope", "--bad", "bad-run"], "expected a result of env 'demo' in run 'nope'"),
        (["--good", "good-run", "--bad", "bad-run"], "the two ends have the same packages"),
        (
            ["--good", "2026-11-18", "--bad", "2026-11-20", "--test", PLANTED],
            "dates need a nightly env",
        ),
        (["--good", "2026-11-18", "--bad", "bad-run"], "expected two dates"),
        (["--auto", "--test", PLANTED], "--auto takes no ENV"),
    ]
    for args, message in cases:
        done = envlab(
            "--root",
            str(root),
            "bisect",
            *(["demo"] if "--auto" not in args else []),
            *args,
            env=env,
        )
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 2 and last.startswith("envlab: error: "), done.stderr
        assert message in last and "Traceback" not in done.stderr
    assert not (root / "reports" / "bisect").exists(), "nothing half-written"


# --------------------------------------------------------------------------- the parts


def _simulate(culprit: set[int]) -> tuple[search.Breaks, list[tuple[int, ...]]]:
    """A target that breaks when every group of ``culprit`` is applied; records what was built."""
    built: list[tuple[int, ...]] = []

    def breaks(candidate: tuple[int, ...]) -> bool:
        built.append(candidate)
        return culprit <= set(candidate)

    return breaks, built


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 16, 33])
def test_one_culprit_costs_at_most_log2_plus_two_builds(n: int) -> None:
    bound = math.ceil(math.log2(n)) + 2
    for culprit in range(n):
        breaks, built = _simulate({culprit})
        found = search.minimal_culprit(n, breaks)
        assert found.status is search.Status.FOUND and found.culprit == (culprit,)
        assert found.builds == len(built) == len(set(built)) <= bound, (culprit, built)
        assert any(not breaks(c) for c in built), "a passing build confirms the good side"


def test_every_pair_and_triple_is_found_and_minimal() -> None:
    n = 6
    for first in range(n):
        for second in range(first + 1, n):
            for third in (None, *range(second + 1, n)):
                culprit = {first, second} | ({third} if third is not None else set())
                found = search.minimal_culprit(n, _simulate(culprit)[0])
                assert found.status is search.Status.FOUND
                assert set(found.culprit) == culprit


def test_searches_say_when_the_ends_do_not_hold() -> None:
    assert search.minimal_culprit(4, lambda c: False).status is search.Status.NOT_REPRODUCED
    assert search.minimal_culprit(4, lambda c: True).status is search.Status.GOOD_BREAKS
    stopped = search.minimal_culprit(16, _simulate({11})[0], max_steps=3)
    assert stopped.status is search.Status.MAX_STEPS and stopped.builds == 3
    assert 11 in stopped.culprit + stopped.remaining
    assert search.first_bad(8, lambda c: False).status is search.Status.NOT_REPRODUCED
    assert search.first_bad(8, lambda c: True).status is search.Status.GOOD_BREAKS
    for bad in range(1, 8):
        found = search.first_bad(8, lambda c, bad=bad: c[0] >= bad)
        assert found.culprit == (bad,) and found.builds <= math.ceil(math.log2(7)) + 1


def test_grouping_couples_the_torch_family_and_requirements() -> None:
    from packaging.requirements import Requirement

    good = {
        "torch": "2.10.0",
        "nvidia-cublas-cu12": "12.8",
        "nvidia-ml-py": "13.0",
        "a": "1",
        "b": "1",
        "c": "1",
        "gone": "1",
    }
    bad = {
        "torch": "2.11.0",
        "nvidia-cublas-cu13": "13.0",
        "nvidia-ml-py": "13.1",
        "a": "2",
        "b": "2",
        "c": "2",
        "new": "1",
    }
    declared = {
        ("a", "2"): ["b>=2"],  # a's new version needs b's new one
        ("c", "1"): ["new<1; python_version < '3'"],  # a marker that is false here
        ("b", "1"): ["gone"],  # the old b needs a package the bad end removed
        ("new", "1"): [],
    }

    def requires(name: str, version: str) -> list[Requirement]:
        return [Requirement(r) for r in declared.get((name, version), [])]

    found = changes.diff(good, bad)
    assert Change("gone", "1", None) in found and Change("new", None, "1") in found
    groups = changes.group(found, requires, {"python_version": PY, "extra": ""})
    names = [g.names for g in groups]
    assert names[0] == ["nvidia-cublas-cu12", "nvidia-cublas-cu13", "torch"], "family first"
    assert ["a", "b", "gone"] in names and ["c"] in names and ["new"] in names
    assert ["nvidia-ml-py"] in names, "NVML's bindings are a stack package"
    assert groups[0].label().startswith("the torch family (torch 2.10.0 → 2.11.0 and 2 more")
    assert "a 2 requires b>=2" in next(g.why() for g in groups if "a" in g.names)
    applied = changes.apply(good, [g for g in groups if "a" in g.names])
    assert applied["a"] == applied["b"] == "2" and "gone" not in applied


def test_index_pages_and_metadata_are_read_three_ways(tmp_path: Path) -> None:
    page = parse_page(
        "https://download.pytorch.org/whl/cu128/torch/",
        b'<a href="/whl/cu128/torch-2.10.0%2Bcu128-cp311-cp311-manylinux_2_28_x86_64.whl'
        b'#sha256=abc" data-core-metadata="sha256=def">x</a><a href="README.txt">no</a>',
        "text/html",
    )
    assert [(f.filename, str(f.version), f.sha256, f.metadata) for f in page] == [
        ("torch-2.10.0+cu128-cp311-cp311-manylinux_2_28_x86_64.whl", "2.10.0+cu128", "abc", True)
    ]
    assert page[0].url.startswith("https://download.pytorch.org/whl/cu128/torch-2.10.0%2Bcu128")
    doc = {"files": [{"filename": "a-1.0.tar.gz", "url": "a-1.0.tar.gz", "hashes": {}}]}
    assert not parse_page("https://x/a/", json.dumps(doc).encode(), "application/json")[0].wheel
    for ranges, metadata in ((True, False), (False, False), (False, True)):
        with serve(tmp_path / f"idx-{ranges}-{metadata}", ranges=ranges, metadata=metadata) as idx:
            idx.add(
                "pypi", "alpha", "2.0", ["beta>=2", "gamma; extra == 'x'"], payload="#" * 200_000
            )
            index = Index("pypi", idx.url("pypi"), idx.url("pypi"), "")
            reader = IndexReader()
            (wheel,) = reader.release(index, "alpha", "2.0")
            assert wheel.metadata is metadata and wheel.sha256
            assert [str(r) for r in reader.requirements(wheel)] == [
                "beta>=2",
                'gamma; extra == "x"',
            ]
            assert reader.release(index, "alpha", "1.0") == [] and reader.files(index, "nope") == []


def test_nightlies_are_listed_by_date() -> None:
    class Reader(IndexReader):
        def files(self, index, project):  # type: ignore[no-untyped-def, override]
            return parse_page(
                "http://x/torch/",
                "".join(
                    f'<a href="torch-2.12.0.dev2026112{d}+{tag}-py3-none-any.whl#sha256=0">w</a>'
                    for d in range(1, 6)
                    for tag in ("cpu", "cu130")
                ).encode(),
                "text/html",
            )

    index = Index("n", "http://x", "http://x", "")
    found = nightlies(Reader(), index, "torch", date(2026, 11, 22), date(2026, 11, 24), "cu130")
    assert [str(v) for v in found.values()] == [f"2.12.0.dev2026112{d}+cu130" for d in (2, 3, 4)]
    assert list(found) == [date(2026, 11, d) for d in (22, 23, 24)]


def test_a_run_against_one_reference_run() -> None:
    good = judge.Point("good", 20.0, tuple(20.0 * (1 + 0.001 * i) for i in range(7)))
    slower = judge.Point("new", 26.0, tuple(26.0 * (1 + 0.001 * i) for i in range(7)))
    same = judge.Point("new", 20.2, tuple(20.2 * (1 + 0.001 * i) for i in range(7)))
    verdict = judge.judge_against(good, slower, higher_is_better=False)
    assert verdict.regressed and verdict.factor == pytest.approx(1.3, rel=1e-3)
    assert not judge.judge_against(good, same, higher_is_better=False).regressed
    assert judge.judge_against(slower, good, higher_is_better=True).regressed, "throughput fell"
    noisy = judge.Point("new", 26.0, (10.0, 26.0, 45.0, 13.0, 38.0, 26.0, 30.0))
    assert not judge.judge_against(good, noisy, higher_is_better=False).regressed, "within noise"


def test_auto_bisects_the_new_hard_break_and_summarises_it(
    indexes: LocalIndexes, tmp_path: Path
) -> None:
    root, env = project(tmp_path, indexes, 'assert metadata.version("pkg-b") != "2.0"')
    good = good_set()
    ends(root, good, {**good, "pkg-a": "2.0", "pkg-b": "2.0"})
    summary = tmp_path / "summary.md"
    env = {**env, "GITHUB_STEP_SUMMARY": str(summary)}
    done = envlab("--root", str(root), "bisect", "--auto", "--host", "ci-cpu-1", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"pkg-b 1.0 → 2.0 breaks {PLANTED} (")
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## envlab bisect of `demo`: pkg-b 1.0 → 2.0 breaks")
    assert "good `good-run`, bad `bad-run`" in text and "| step | run id |" in text
    (record,), _ = read_all(root / "reports" / "bisect")
    assert record.host == "testhost" and record.status == "found"


def test_regress_prints_the_bisect_command_next_to_each_regression(tmp_path: Path) -> None:
    from factories import result, write

    from envlab.report import regress
    from envlab.results.history import open_history

    failing = {"compat_tests/test_blas.py::test_1": "BLAS broke"}
    write(tmp_path / "runs", [result(run=0), result(run=1, failing=failing)])
    history, _ = open_history(tmp_path / "h.sqlite", tmp_path / "runs")
    with history:
        report = regress.compare(history)
    (pair,) = report.regressions
    runs = [r.run_id for r in (pair.baseline, pair.newest) if r]
    assert pair.bisect_commands() == [
        f"nox -s bisect -- stable --good {runs[0]} --bad {runs[1]} --host ci-cpu-1 "
        "--test compat_tests/test_blas.py::test_1"
    ]
    assert "**Which change did it?**" in regress.render_markdown(report)
    assert pair.bisect_commands()[0] in regress.render_markdown(report)


def test_the_scheduled_workflow_bisects_new_hard_breaks() -> None:
    import yaml

    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "scheduled.yml").read_text())
    steps = doc["jobs"]["report"]["steps"]
    names = [s.get("name", "") for s in steps]
    at = next(i for i, n in enumerate(names) if n.startswith("nox -s bisect"))
    assert at > names.index("nox -s regress")
    step = steps[at]
    assert step["if"] == "${{ steps.regress.outcome == 'failure' }}"
    assert "nox -s bisect -- --auto" in step["run"] and step["continue-on-error"] is True
    upload = next(s for s in steps if s.get("name") == "Upload the report")
    assert "reports/bisect" in upload["with"]["path"]


def test_the_report_shows_each_bisect_with_its_steps(tmp_path: Path) -> None:
    from factories import first_run, write

    from envlab.report.render import build_report
    from envlab.results import bisects
    from envlab.results.bisects import Bisect, BisectStep

    write(tmp_path / "runs", first_run())
    steps = [
        BisectStep(
            run_id="b-01",
            candidate="good + 2 of 2 group(s): 1, 2",
            outcome=Outcome.BUILT,
            broke=True,
            detail="failed: boom",
            duration_s=3.0,
        ),
        BisectStep(
            run_id="b-02",
            candidate="good + 1 of 2 group(s): 1",
            outcome=Outcome.BUILT,
            broke=False,
            detail="passed",
            duration_s=2.5,
        ),
    ]
    record = Bisect(
        bisect_id="b",
        created="2026-11-21T03:00:00+00:00",
        env="latest",
        host="ci-cpu-1",
        kind="packages",
        good="r1",
        bad="r2",
        target=PLANTED,
        candidates=["pkg-a 1.0 → 2.0", "pkg-b 1.0 → 2.0"],
        status="found",
        culprit=["pkg-b 1.0 → 2.0"],
        verdict=f"pkg-b 1.0 → 2.0 breaks {PLANTED}",
        builds=2,
        duration_s=9.0,
        steps=steps,
    )
    bisects.write(tmp_path / "bisect", record)
    (tmp_path / "bisect" / "broken").mkdir()
    (tmp_path / "bisect" / "broken" / "bisect.json").write_text("{", encoding="utf-8")
    paths = build_report(tmp_path / "runs", tmp_path / "out", tmp_path / "h.sqlite")
    md = paths.markdown.read_text(encoding="utf-8")
    assert "## Bisects" in md and f"| `b` | `{PLANTED}` | pkg-b 1.0 → 2.0 breaks" in md
    html = paths.html.read_text(encoding="utf-8")
    assert 'id="bisects"' in html and "<code>b-02</code>" in html and "failed: boom" in html
    assert "broken/bisect.json" in html, "an unreadable record is listed as skipped"


def test_a_file_whose_hash_differs_from_the_lock_is_refused(
    indexes: LocalIndexes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envlab.bisect.candidate import Candidates
    from envlab.build import interpreters
    from envlab.build.uv import Uv
    from envlab.errors import UserError
    from envlab.project import Project
    from envlab.spec.envspec import Matrix

    root, env = project(tmp_path, indexes, "pass")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    wheel = indexes.wheel("pypi", "pkg-a", "1.0").name
    for layer in ("torch", "stack"):
        (root / "locks" / "demo").mkdir(parents=True, exist_ok=True)
        (root / "locks" / "demo" / f"pylock.linux-64-{layer}.toml").write_text(
            'lock-version = "1.0"\n[[packages]]\nname = "pkg-a"\nversion = "1.0"\n'
            f'wheels = [{{ url = "https://pypi.org/simple/pkg-a/{wheel}", '
            f'hashes = {{ sha256 = "{"0" * 64}" }} }}]\n'
            f'[tool.envlab]\nenv = "demo"\nplatform = "linux-64"\nlayer = "{layer}"\n'
            'input-hash = "x"\nindex = "pypi"\n',
            encoding="utf-8",
        )
    proj = Project(root)
    matrix = Matrix(proj.envspecs)
    candidates = Candidates(
        proj,
        matrix,
        matrix.get("demo"),
        tmp_path / "c",
        IndexReader(),
        Uv(),
        interpreters.find(PY),
        "linux-64",
    )
    with pytest.raises(UserError, match=f"{wheel}: index 'pypi' serves sha256 .* recorded 0000"):
        candidates.files("pkg-a", "1.0")
    index, files = candidates.files("pkg-b", "1.0")  # not in the lock: the index's hash stands
    assert index.name == "pypi" and files[0].sha256
    with pytest.raises(UserError, match="pkg-a==9.9 is not served by the env's index"):
        candidates.files("pkg-a", "9.9")


def test_the_benchmark_program_selects_a_benchmark_by_the_record_it_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bisect watches a record (compile_time_cpu); --only must select the benchmark writing it."""
    import argparse
    import importlib.util
    import os

    # the program sets cache and offline variables and imports its helpers when loaded
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    for name in ("measure", "suite"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec and spec.loader
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    try:
        specs = run.suite.benchmarks(1)
        chosen = run._selected(
            argparse.ArgumentParser(), specs, ["compile_time_cpu", "melspec_cpu"]
        )
        assert [s.key for s in chosen] == ["melspec_cpu", "compile_speedup_cpu"]
        with pytest.raises(SystemExit):
            run._selected(argparse.ArgumentParser(), specs, ["no_such_benchmark"])
    finally:
        shutil.rmtree(run._CACHE, ignore_errors=True)
        for name in ("measure", "suite"):
            sys.modules.pop(name, None)
