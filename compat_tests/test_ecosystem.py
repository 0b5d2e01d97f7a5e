"""Seed category 10: the rest of the stack imports and works (offline: nothing downloads)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from compat_support import need

CATEGORY = "ecosystem"


def _transformers(_: Path) -> None:
    torch = need("torch")
    transformers = need("transformers")
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
    )
    model = transformers.BertModel(config).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 2, 3, 4, 5]])).last_hidden_state
    assert tuple(out.shape) == (1, 5, 32) and bool(torch.isfinite(out).all())


def _accelerate(_: Path) -> None:
    torch = need("torch")
    accelerate = need("accelerate")
    accelerator = accelerate.Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(4, 2))
    assert tuple(model(torch.ones(3, 4)).shape) == (3, 2) and accelerator.device.type == "cpu"


def _safetensors(tmp: Path) -> None:
    torch = need("torch")
    st = need("safetensors.torch")
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    st.save_file(tensors, str(tmp / "t.safetensors"))
    back = st.load_file(str(tmp / "t.safetensors"))
    assert all(torch.equal(back[k], v) for k, v in tensors.items())


def _huggingface_hub(tmp: Path) -> None:
    hub = need("huggingface_hub")
    constants = need("huggingface_hub.constants")
    errors = need("huggingface_hub.errors")
    assert constants.HF_HUB_OFFLINE, "HF_HUB_OFFLINE did not take effect: the suite could download"
    offline = tuple(
        getattr(errors, n)
        for n in ("LocalEntryNotFoundError", "OfflineModeIsEnabled")
        if hasattr(errors, n)
    )
    with pytest.raises(offline):
        hub.hf_hub_download("envlab/does-not-exist", "config.json", cache_dir=str(tmp / "hf"))


def _nibabel(tmp: Path) -> None:
    np = need("numpy")
    nib = need("nibabel")
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp / "x.nii.gz"))
    assert np.array_equal(nib.load(str(tmp / "x.nii.gz")).get_fdata(), data)


def _nilearn(_: Path) -> None:
    np = need("numpy")
    nib = need("nibabel")
    image = need("nilearn.image")
    data = np.random.default_rng(0).standard_normal((3, 3, 3, 4)).astype(np.float32)
    mean = image.mean_img(nib.Nifti1Image(data, np.eye(4)))
    assert np.allclose(mean.get_fdata(), data.mean(axis=3), atol=1e-5)


def _h5py(tmp: Path) -> None:
    np = need("numpy")
    h5py = need("h5py")
    with h5py.File(tmp / "x.h5", "w") as handle:
        handle.create_dataset("d", data=np.arange(10), compression="gzip")
    with h5py.File(tmp / "x.h5", "r") as handle:
        assert np.array_equal(handle["d"][:], np.arange(10))


def _statsmodels(_: Path) -> None:
    np = need("numpy")
    sm = need("statsmodels.api")
    x = np.arange(10.0)
    fit = sm.OLS(1.0 + 2.0 * x, sm.add_constant(x)).fit()
    assert np.allclose(fit.params, [1.0, 2.0])


def _pingouin(_: Path) -> None:
    np = need("numpy")
    pingouin = need("pingouin")
    rng = np.random.default_rng(0)
    result = pingouin.ttest(rng.normal(0, 1, 50), rng.normal(1, 1, 50))
    assert "p-val" in result.columns or "p_val" in result.columns, (
        f"ttest columns {list(result.columns)}"
    )


def _cv2(_: Path) -> None:
    np = need("numpy")
    cv2 = need("cv2")
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:, :, 2] = 255
    ok, png = cv2.imencode(".png", image)
    assert ok and np.array_equal(cv2.imdecode(png, cv2.IMREAD_COLOR), image)
    assert cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).shape == (8, 8)


def _datasets(_: Path) -> None:
    datasets = need("datasets")
    ds = datasets.Dataset.from_dict({"x": [1, 2, 3]}).map(lambda row: {"y": row["x"] * 2})
    assert ds["y"] == [2, 4, 6] or list(ds["y"]) == [2, 4, 6]


def _pydantic(_: Path) -> None:
    pydantic = need("pydantic")

    class Point(pydantic.BaseModel):
        x: int

    assert Point.model_validate({"x": "3"}).x == 3
    with pytest.raises(pydantic.ValidationError):
        Point.model_validate({"x": "three"})


def _typer(_: Path) -> None:
    typer = need("typer")
    testing = need("typer.testing")
    app = typer.Typer()

    @app.command()
    def hello(name: str) -> None:
        typer.echo(f"hi {name}")

    result = testing.CliRunner().invoke(app, ["envlab"])
    assert result.exit_code == 0 and "hi envlab" in result.output, result.output


def _wandb(_: Path) -> None:
    wandb = need("wandb")
    run = wandb.init(mode="disabled", project="envlab-compat")
    run.log({"x": 1.0})
    run.finish()


def _rich(_: Path) -> None:
    console_mod = need("rich.console")
    table_mod = need("rich.table")
    console = console_mod.Console(record=True, width=40, file=io.StringIO())
    table = table_mod.Table("env", "ok")
    table.add_row("stable", "✓")
    console.print(table)
    assert "stable" in console.export_text()


def _tqdm(_: Path) -> None:
    tqdm = need("tqdm")
    assert sum(tqdm.tqdm(range(10), file=io.StringIO())) == 45


EXERCISES: dict[str, Callable[[Path], None]] = {
    "transformers": _transformers,
    "accelerate": _accelerate,
    "safetensors": _safetensors,
    "huggingface_hub": _huggingface_hub,
    "nibabel": _nibabel,
    "nilearn": _nilearn,
    "h5py": _h5py,
    "statsmodels": _statsmodels,
    "pingouin": _pingouin,
    "cv2": _cv2,
    "datasets": _datasets,
    "pydantic": _pydantic,
    "typer": _typer,
    "wandb": _wandb,
    "rich": _rich,
    "tqdm": _tqdm,
}


@pytest.mark.parametrize("package", list(EXERCISES))
def test_ecosystem_package(package: str, tmp_path: Path) -> None:
    """Each ecosystem package imports and does one small real task, offline.

    Fix: "not installed" means the stack layer missed it; an import error about torch or
    numpy APIs means the package is too old/new for this torch/numpy — pin a compatible
    version in the env's stack rather than letting it pull another torch.
    """
    EXERCISES[package](tmp_path)
