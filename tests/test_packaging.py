"""The package layout: mapped folders import under ``streamgen`` and every sub-package is listed."""
import importlib
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_and_importable():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(meta["packages"])
    mapping = meta["package-dir"]
    found = set()
    for name, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base).parts
            found.add(".".join((name, *rel)))
    assert found == listed
    for name in listed:
        mod = importlib.import_module(name)
        assert pathlib.Path(mod.__file__).resolve().is_relative_to(ROOT), name


def test_codecs_do_not_shadow_the_standard_library():
    import codecs

    assert hasattr(codecs, "encode") and codecs.__name__ == "codecs"
    assert importlib.import_module("streamgen.codecs").PaletteCodec
