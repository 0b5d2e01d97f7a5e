"""Envspec validation: the shipped matrix is valid;
bad files fail in one line naming file, field, expected, found."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT, envlab, make_project

from envlab.errors import SpecError, UnknownEnvError
from envlab.spec.envspec import Matrix, stack_requirements

GOOD = """
description = "test env"
python = "3.11"
platforms = ["linux-64"]
[torch]
packages = ["torch==2.10.0"]
index = "pypi"
"""


def test_shipped_matrix_is_valid() -> None:
    matrix = Matrix(ROOT / "envspecs")
    names = {s.name for s in matrix.all()}
    assert {"stable", "latest", "nightly", "cpu", "legacy"} <= names
    assert set(matrix.default_names()) == {"stable", "latest"}
    stable = matrix.get("stable")
    assert stable.torch.packages == ["torch==2.10.0", "torchvision==0.25.0", "torchaudio==2.10.0"]
    assert stable.torch.index_for("linux-64") == "pypi"
    assert stable.torch.index_for("win-64") == "pytorch-cu128"
    assert stable.expect.cuda == "12.8" and "sm_120" in stable.expect.arch_covers
    assert matrix.get("nightly").nightly is not None
    assert matrix.get("cpu").expect.cpu_only


def test_shipped_stack_covers_seed_packages() -> None:
    matrix = Matrix(ROOT / "envspecs")
    stack = {r.lower() for r in matrix.stack_for(matrix.get("stable"))}
    seed = [
        "numpy",
        "scipy",
        "pandas",
        "scikit-learn",
        "matplotlib",
        "timm",
        "transformers",
        "accelerate",
        "safetensors",
        "huggingface-hub",
        "nibabel",
        "nilearn",
        "h5py",
        "statsmodels",
        "pingouin",
        "opencv-python",
        "pillow",
        "datasets",
        "pydantic",
        "pyyaml",
        "typer",
        "nvidia-ml-py",
        "wandb",
        "rich",
        "tqdm",
        "pytest",
    ]
    assert set(seed) <= stack
    assert not stack & {"torch", "torchvision", "torchaudio", "pynvml"}
    legacy = matrix.stack_for(matrix.get("legacy"))
    assert "numpy>=2" in legacy and "numpy" not in legacy


def test_stack_overrides(tmp_path: Path) -> None:
    text = GOOD + '[stack]\nadd = ["numpy<2", "extra-pkg"]\nremove = ["scipy"]\n'
    root = make_project(tmp_path, envs={"e": text}, stack=["numpy", "scipy", "pandas"])
    matrix = Matrix(root / "envspecs")
    assert stack_requirements(matrix.get("e"), matrix.shared) == ["pandas", "numpy<2", "extra-pkg"]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "colour = 'red'\n" + GOOD,
            ["e.toml", "unknown key 'colour'", "expected one of", "python"],
        ),
        (GOOD.replace('"3.11"', '"three"'), ["field 'python'", "3.11", "'three'"]),
        (
            GOOD.replace('["linux-64"]', '["linux-128"]'),
            ["field 'platforms", "linux-64", "'linux-128'"],
        ),
        (
            GOOD.replace('index = "pypi"', 'index = "nowhere"'),
            ["field 'torch.index'", "named index", "'nowhere'"],
        ),
        (
            GOOD.replace('["torch==2.10.0"]', '["torch=2.10"]'),
            ["field 'torch.packages.0'", "PEP 508", "'torch=2.10'"],
        ),
        (GOOD.replace('["torch==2.10.0"]', '["numpy"]'), ["field 'torch.packages'", "'torch'"]),
        (
            GOOD + "[expect]\narch-covers = ['blackwell']\n",
            ["field 'expect.arch-covers", "sm_120", "'blackwell'"],
        ),
        (
            GOOD + "[expect]\ncpu-only = true\ncuda = '12.8'\n",
            ["field 'expect'", "cpu-only", "'12.8'"],
        ),
        (GOOD.replace('python = "3.11"\n', ""), ["field 'python'", "required"]),
        (GOOD + "[torch.extra]\n", ["unknown key 'torch.extra'"]),
        ("description = [\n", ["expected valid TOML"]),
    ],
)
def test_bad_spec_is_one_line(tmp_path: Path, text: str, fragments: list[str]) -> None:
    root = make_project(tmp_path, envs={"e": text})
    with pytest.raises(SpecError) as info:
        Matrix(root / "envspecs").get("e")
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_unknown_env_lists_valid_ones() -> None:
    with pytest.raises(
        UnknownEnvError,
        match=(
            r"unknown env 'stabel': expected one of "
            r"brain-encoders, cpu, latest, legacy, legacy-cu118, nightly, stable, stable-conda, "
            r"stable-py310, stable-py311, stable-py312, stable-py313"
        ),
    ):
        Matrix(ROOT / "envspecs").get("stabel")


def test_cli_bad_spec_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    root = make_project(tmp_path, envs={"e": "bogus = 1\n" + GOOD})
    done = envlab("--root", str(root), "test", "e")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("envlab: error: ")
        and "unknown key 'bogus'" in lines[0]
    )
    assert "Traceback" not in done.stderr
    assert not (root / ".envlab").exists()


def test_cli_unknown_env(tmp_path: Path) -> None:
    root = make_project(tmp_path, envs={"e": GOOD})
    done = envlab("--root", str(root), "test", "nope")
    assert done.returncode == 2
    assert done.stderr.strip() == "envlab: error: unknown env 'nope': expected one of e"


def test_catalog_matches_models() -> None:
    from envlab.spec.catalog import entries

    matrix = Matrix(ROOT / "envspecs")
    assert [(e.name, e.default, list(e.tags)) for e in entries(ROOT / "envspecs")] == [
        (s.name, s.default, s.tags) for s in matrix.all()
    ]
