"""Seed category 1: the core scientific stack imports and does real work."""

from __future__ import annotations

import io
from collections.abc import Callable
from types import ModuleType

import pytest
from compat_support import need

CATEGORY = "core-imports"


def _numpy(np: ModuleType) -> None:
    a = np.arange(12.0).reshape(3, 4)
    assert float((a @ a.T)[0, 0]) == 14.0, "numpy matmul gave a wrong result"


def _scipy(_: ModuleType) -> None:
    linalg = need("scipy.linalg")
    x = linalg.solve([[3.0, 1.0], [1.0, 2.0]], [9.0, 8.0])
    assert abs(x[0] - 2.0) < 1e-12 and abs(x[1] - 3.0) < 1e-12, f"scipy.linalg.solve gave {x}"


def _pandas(pd: ModuleType) -> None:
    frame = pd.DataFrame({"k": ["a", "b", "a"], "v": [1, 2, 3]})
    assert frame.groupby("k")["v"].sum().to_dict() == {"a": 4, "b": 2}


def _sklearn(_: ModuleType) -> None:
    linear = need("sklearn.linear_model")
    model = linear.LinearRegression().fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])
    assert abs(model.coef_[0] - 2.0) < 1e-9 and abs(model.intercept_ - 1.0) < 1e-9


def _matplotlib(mpl: ModuleType) -> None:
    mpl.use("Agg")
    pyplot = need("matplotlib.pyplot")
    fig, ax = pyplot.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pyplot.close(fig)
    assert buffer.getvalue().startswith(b"\x89PNG"), "matplotlib did not render a PNG"


def _pil(_: ModuleType) -> None:
    image_mod = need("PIL.Image")
    image = image_mod.new("RGB", (8, 8), (255, 0, 0)).resize((4, 4))
    assert image.getpixel((0, 0)) == (255, 0, 0)


def _yaml(yaml: ModuleType) -> None:
    data = {"a": [1, 2.5, "x"], "b": {"c": None}}
    assert yaml.safe_load(yaml.safe_dump(data)) == data


def _torch(torch: ModuleType) -> None:
    assert float(torch.arange(6.0).reshape(2, 3).sum()) == 15.0


def _torchvision(_: ModuleType) -> None:
    torch = need("torch")
    ops = need("torchvision.ops")
    area = ops.box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0]]))
    assert float(area[0]) == 6.0


def _torchaudio(_: ModuleType) -> None:
    torch = need("torch")
    functional = need("torchaudio.functional")
    db = functional.amplitude_to_DB(torch.tensor([1.0, 10.0]), 20.0, 1e-10, 0.0)
    assert torch.allclose(db, torch.tensor([0.0, 20.0])), f"amplitude_to_DB gave {db.tolist()}"


EXERCISES: dict[str, Callable[[ModuleType], None]] = {
    "numpy": _numpy,
    "scipy": _scipy,
    "pandas": _pandas,
    "sklearn": _sklearn,
    "matplotlib": _matplotlib,
    "PIL": _pil,
    "yaml": _yaml,
    "torch": _torch,
    "torchvision": _torchvision,
    "torchaudio": _torchaudio,
}


@pytest.mark.parametrize("module", list(EXERCISES))
def test_core_import(module: str) -> None:
    """Each core package imports and does a small real computation.

    Fix: "not installed" means the stack layer missed it; an import error naming a DLL/.so or
    "undefined symbol" means a binary mismatch (e.g. conda and pip copies mixed): reinstall the
    package from one source.
    """
    EXERCISES[module](need(module))
