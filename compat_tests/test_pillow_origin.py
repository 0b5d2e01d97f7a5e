"""Seed category 9: Pillow comes from pip (PyPI), never from conda, and only once."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from compat_support import need

CATEGORY = "pillow-origin"

FIX = (
    "Fix: conda remove pillow --force -y && pip install Pillow "
    "(torchvision's pip wheels expect pip's Pillow)."
)


def test_pillow_installed_by_pip() -> None:
    """Pillow's INSTALLER is a pip-style installer and conda-meta has no pillow record.

    Fix: a conda Pillow ships imaging DLLs that clash with pip torchvision on Windows
    (0xc0000138): conda remove pillow --force, then pip install Pillow.
    """
    try:
        dist = metadata.distribution("pillow")
    except metadata.PackageNotFoundError:
        raise AssertionError(
            f"Pillow is not installed in {sys.executable}. Fix: pip install Pillow"
        ) from None
    installer = (dist.read_text("INSTALLER") or "").strip().lower()
    conda_records = sorted(p.name for p in (Path(sys.prefix) / "conda-meta").glob("pillow-*.json"))
    assert installer != "conda" and not conda_records, (
        f"Pillow {dist.version} was installed by conda (INSTALLER={installer or 'missing'!r}, "
        f"conda-meta: {', '.join(conda_records) or 'none'}). {FIX}"
    )
    assert installer, f"Pillow {dist.version} has no INSTALLER record: origin unknown. {FIX}"


def test_single_pil_provider() -> None:
    """Exactly one distribution provides the PIL package, and it is the one imported.

    Fix: PIL from two distributions (pillow + pillow-simd, or pip + conda copies) means the
    imported one is arbitrary; uninstall all and reinstall Pillow once.
    """
    providers = sorted({d.lower() for d in metadata.packages_distributions().get("PIL", [])})
    assert providers == ["pillow"], (
        f"PIL is provided by {providers or 'nothing'}, expected only pillow. {FIX}"
    )
    pil = need("PIL")
    dist = metadata.distribution("pillow")
    files = {
        str(Path(str(dist.locate_file(f))).resolve())
        for f in (dist.files or [])
        if f.name == "__init__.py"
    }
    imported = str(Path(pil.__file__ or "").resolve())
    assert imported in files, (
        f"imported PIL from {imported}, which is not the installed pillow's file. {FIX}"
    )


def test_pillow_codecs_available() -> None:
    """Pillow has the JPEG, PNG (zlib) and WebP codecs compiled in.

    Fix: a missing codec means a Pillow built against absent system libraries (typical of
    conda/source builds); pip's Pillow wheels bundle them.
    """
    features = need("PIL.features")
    missing = [codec for codec in ("jpg", "zlib", "webp") if not features.check(codec)]
    assert not missing, f"Pillow lacks codecs {missing}. {FIX}"
