"""Named indexes, mirror overrides and reachability probes."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT
from localindex import serve

from envlab.errors import IndexUnavailable, SpecError
from envlab.spec.indexes import load_indexes, mirror_variable, probe


def test_shipped_indexes() -> None:
    found = load_indexes(ROOT / "envspecs" / "indexes.toml")
    assert found["pypi"].url == "https://pypi.org/simple"
    assert found["pytorch-cu128"].url == "https://download.pytorch.org/whl/cu128"
    assert {"pytorch-cu118", "pytorch-cpu", "pytorch-nightly-cu130"} <= set(found)


def test_mirror_variable_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mirror_variable("pytorch-cu128") == "ENVLAB_INDEX_PYTORCH_CU128"
    monkeypatch.setenv("ENVLAB_INDEX_PYTORCH_CU128", "http://127.0.0.1:9/mirror/")
    index = load_indexes(ROOT / "envspecs" / "indexes.toml")["pytorch-cu128"]
    assert index.url == "http://127.0.0.1:9/mirror" and index.mirrored
    assert index.declared_url == "https://download.pytorch.org/whl/cu128"


def test_bad_indexes_file(tmp_path: Path) -> None:
    path = tmp_path / "indexes.toml"
    path.write_text('[pypi]\nurl = "ftp://x"\n', encoding="utf-8")
    with pytest.raises(
        SpecError, match=r"field 'pypi.url': expected an http\(s\):// or file:// URL"
    ):
        load_indexes(path)
    path.write_text('[pypi]\nurl = "https://x"\nmirror = 1\n', encoding="utf-8")
    with pytest.raises(SpecError, match=r"unknown key 'pypi.mirror'"):
        load_indexes(path)
    path.write_text('[other]\nurl = "https://x"\n', encoding="utf-8")
    with pytest.raises(SpecError, match=r"expected an index named 'pypi', found other"):
        load_indexes(path)


def test_probe_local_index(tmp_path: Path) -> None:
    with serve(tmp_path) as idx:
        idx.add("torchidx", "torch", "2.10.0+cpu")
        (tmp_path / "indexes.toml").write_text(
            f'[pypi]\nurl = "{idx.url("torchidx")}"\n[gone]\nurl = "http://127.0.0.1:9/simple"\n',
            encoding="utf-8",
        )
        found = load_indexes(tmp_path / "indexes.toml")
        probe(found["pypi"], "torch")
        with pytest.raises(IndexUnavailable, match=r"does not serve 'numpy' \(HTTP 404\)"):
            probe(found["pypi"], "numpy")
        with pytest.raises(
            IndexUnavailable, match=r"index 'gone' unreachable .*set ENVLAB_INDEX_GONE"
        ):
            probe(found["gone"], "torch", timeout=2, attempts=1)
