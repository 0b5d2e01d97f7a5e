"""Locked files through a mirror, project pages in both formats, and download progress."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from envlab.build import mirrors, progress
from envlab.errors import IndexUnavailable, Unavailable
from envlab.spec.indexes import Index, IndexFile, _parse_page

MIRROR = Index("pypi", "http://127.0.0.1:8000/simple", "https://pypi.org/simple", "")
PLAIN = Index("pypi", "https://pypi.org/simple", "https://pypi.org/simple", "")
HOST = "https://files.pythonhosted.org/packages/ab/cd"
LOCK = f"""lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.11"

[[packages]]
name = "numpy"
version = "2.0"
sdist = {{ url = "{HOST}/numpy-2.0.tar.gz", upload-time = 2026-09-30T04:39:23Z, size = 10, \
hashes = {{ sha256 = "{"a" * 64}" }} }}
wheels = [
    {{ url = "{HOST}/numpy-2.0-cp311-cp311-manylinux_2_28_x86_64.whl", hashes = {{ sha256 = \
"{"b" * 64}" }} }},
    {{ url = "{HOST}/numpy-2.0-cp311-cp311-manylinux_2_28_aarch64.whl", hashes = {{ sha256 = \
"{"c" * 64}" }} }},
]

[[packages]]
name = "colorama"
version = "0.4.6"
marker = "sys_platform == 'win32'"
wheels = [{{ url = "{HOST}/colorama-0.4.6-py2.py3-none-any.whl", hashes = {{ sha256 = \
"{"d" * 64}" }} }}]

[tool.envlab]
env = "demo"
layer = "stack"
"""


def page(*names: str) -> dict[str, list[IndexFile]]:
    files = [IndexFile(n, f"{MIRROR.url}/numpy/{n}") for n in names]
    return {"numpy": files}


def fetcher(pages: dict[str, list[IndexFile]]) -> mirrors.Fetch:
    def fetch(index: Index, name: str) -> list[IndexFile]:
        assert index is MIRROR
        if name not in pages:
            raise IndexUnavailable(index.name, index.url, f"no {name} (HTTP 404)", "", True)
        return pages[name]

    return fetch


def lock_file(tmp_path: Path) -> Path:
    path = tmp_path / "pylock.linux-64-stack.toml"
    path.write_text(LOCK, encoding="utf-8")
    return path


def test_every_locked_file_is_pointed_at_the_mirror(tmp_path: Path) -> None:
    lock, copy = lock_file(tmp_path), tmp_path / "copy.toml"
    served = page(
        "numpy-2.0.tar.gz",
        "numpy-2.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "numpy-2.0-cp311-cp311-manylinux_2_28_aarch64.whl",
    )
    found = mirrors.route(lock, MIRROR, copy, marker_env={}, fetch=fetcher(served))
    text = copy.read_text(encoding="utf-8")
    assert "pythonhosted" not in text and "[tool.envlab]" not in text
    data = tomllib.loads(text)
    (numpy,) = data["packages"]  # colorama is for Windows: not installed here, not fetched
    assert numpy["sdist"]["url"] == f"{MIRROR.url}/numpy/numpy-2.0.tar.gz"
    assert numpy["sdist"]["hashes"]["sha256"] == "a" * 64  # uv still checks the locked hash
    assert str(numpy["sdist"]["upload-time"]).startswith("2026-09-30")
    assert [c.mirror for c in found] == [True, True, True]
    assert lock.read_text(encoding="utf-8") == LOCK  # the committed lock is untouched


def test_files_the_mirror_lacks_are_left_out(tmp_path: Path) -> None:
    copy = tmp_path / "copy.toml"
    served = page("numpy-2.0-cp311-cp311-manylinux_2_28_x86_64.whl")
    mirrors.route(lock_file(tmp_path), MIRROR, copy, marker_env={}, fetch=fetcher(served))
    (numpy,) = tomllib.loads(copy.read_text(encoding="utf-8"))["packages"]
    assert "sdist" not in numpy and len(numpy["wheels"]) == 1


def test_a_package_the_mirror_lacks_refuses_naming_it(tmp_path: Path) -> None:
    copy = tmp_path / "copy.toml"
    with pytest.raises(Unavailable) as info:
        mirrors.route(lock_file(tmp_path), MIRROR, copy, marker_env={}, fetch=fetcher({}))
    message = str(info.value)
    assert "the mirror http://127.0.0.1:8000/simple (ENVLAB_INDEX_PYPI)" in message
    assert "1 package(s): numpy 2.0" in message and "nothing was fetched" in message
    assert not copy.exists()


def test_a_mirror_that_is_down_is_unavailable(tmp_path: Path) -> None:
    def down(index: Index, name: str) -> list[IndexFile]:
        raise IndexUnavailable(index.name, index.url, "Connection refused", index.hint())

    with pytest.raises(IndexUnavailable, match="Connection refused"):
        mirrors.route(lock_file(tmp_path), MIRROR, tmp_path / "c.toml", fetch=down)


def test_without_a_mirror_the_lock_is_installed_as_is(tmp_path: Path) -> None:
    copy = tmp_path / "copy.toml"
    found = mirrors.route(lock_file(tmp_path), PLAIN, copy, fetch=fetcher({}))
    assert copy.read_text(encoding="utf-8") == LOCK
    assert {c.name for c in found} == {"numpy", "colorama"} and not any(c.mirror for c in found)


def test_the_installed_wheel_is_told_from_its_tags(tmp_path: Path) -> None:
    copy = tmp_path / "copy.toml"
    found = mirrors.route(lock_file(tmp_path), PLAIN, copy)
    tags = {"numpy": {"cp311-cp311-manylinux_2_28_aarch64"}}
    (numpy,) = mirrors.installed_sources(found, {"numpy": "2.0"}, tags)
    assert numpy.url.endswith("manylinux_2_28_aarch64.whl") and numpy.sha256 == "c" * 64
    built_here = {"numpy": {"cp311-cp311-linux_x86_64"}}  # from the sdist
    (numpy,) = mirrors.installed_sources(found, {"numpy": "2.0"}, built_here)
    assert numpy.url.endswith(".tar.gz")


def test_installed_tags_read_the_wheel_files(tmp_path: Path) -> None:
    info = tmp_path / "lib" / "python3.11" / "site-packages" / "numpy-2.0.dist-info"
    info.mkdir(parents=True)
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nTag: cp311-cp311-manylinux_2_28_x86_64\n")
    assert mirrors.installed_tags(tmp_path)["numpy"] >= {"cp311-cp311-manylinux_2_28_x86_64"}


# --------------------------------------------------------------------------- project pages


def test_pep_503_html_with_relative_and_encoded_links() -> None:
    html = (
        b'<a href="../../files/torch-2.10.0%2Bcpu-py3-none-any.whl#sha256=' + b"e" * 64 + b'">t</a>'
        b'<a href="https://elsewhere/x/torch-2.10.0.tar.gz">s</a><a name="x">no href</a>'
    )
    files = _parse_page(html, "text/html", "http://m/simple/torch/")
    assert files[0] == IndexFile(
        "torch-2.10.0+cpu-py3-none-any.whl",
        "http://m/files/torch-2.10.0%2Bcpu-py3-none-any.whl",
        "e" * 64,
    )
    assert files[1].url == "https://elsewhere/x/torch-2.10.0.tar.gz" and files[1].sha256 is None


def test_pep_691_json() -> None:
    body = (
        b'{"meta": {"api-version": "1.1"}, "name": "torch", "files": [{"filename": '
        b'"torch-2.10.0-py3-none-any.whl", "url": "w/torch.whl", "hashes": {"sha256": "ff"}}]}'
    )
    (found,) = _parse_page(body, "application/vnd.pypi.simple.v1+json", "http://m/simple/torch/")
    assert found == IndexFile(
        "torch-2.10.0-py3-none-any.whl", "http://m/simple/torch/w/torch.whl", "ff"
    )
    assert _parse_page(b"not json", "application/json", "http://m/") == []
    assert _parse_page(b'{"files": 3}', "application/json", "http://m/") == []


# --------------------------------------------------------------------------- download progress


class Clock:
    def __init__(self) -> None:
        self.now, self.bytes = 0.0, 0

    def advance(self, seconds: float, received: int) -> None:
        self.now += seconds
        self.bytes += received


def test_download_progress_from_uv_announcements_and_the_network_counter() -> None:
    clock, lines = Clock(), []
    downloads = progress.Downloads(
        "torch layer", lines.append, counter=lambda: clock.bytes, clock=lambda: clock.now
    )
    downloads.tick()
    assert lines == []  # nothing announced: nothing to say
    downloads.on_line(" Downloading torch (800.0MiB)")
    downloads.on_line(" Downloading nvidia-cublas-cu12 (200.0MiB)")
    clock.advance(10, 100 * 1024**2)
    downloads.tick()
    assert lines[-1] == (
        "torch layer: downloading 2 of 2 file(s): 100.0 MiB of 1000.0 MiB (10%) at 10.0 MiB/s"
    )
    downloads.on_line(" Downloaded nvidia-cublas-cu12")
    clock.advance(10, 300 * 1024**2)
    downloads.tick()
    assert lines[-1] == (
        "torch layer: downloading 1 of 2 file(s): 400.0 MiB of 1000.0 MiB (40%) at 30.0 MiB/s"
    )
    downloads.on_line(" Downloaded torch")
    downloads.tick()
    assert len(lines) == 2  # all done: quiet


def test_download_progress_without_a_network_counter() -> None:
    clock, lines = Clock(), []
    downloads = progress.Downloads("stack layer", lines.append, lambda: None, lambda: clock.now)
    downloads.on_line("Downloading a (2.0GiB)")
    downloads.on_line("Downloading b (1.0GiB)")
    downloads.on_line("Downloaded b")
    clock.advance(4, 0)
    downloads.tick()
    assert lines == [
        "stack layer: downloading 1 of 2 file(s): 1.0 GiB of 3.0 GiB (33%) at 256.0 MiB/s"
    ]
