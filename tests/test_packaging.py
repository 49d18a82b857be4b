"""The package as a user installs it: the wheel holds every module of the mapped folders, the shipped
weights and the entry points, and the standard library's `codecs` is not shadowed."""
import configparser
import importlib
import pathlib
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                    "-w", str(out)], check=True, capture_output=True)
    (path,) = out.glob("streamgen-*.whl")
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
    return names, entry_points


def test_the_wheel_holds_every_module_of_the_mapped_folders(wheel):
    names, _ = wheel
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    expected = set()
    for package, folder in mapping.items():
        if package == "streamgen":
            continue
        for path in (ROOT / folder).rglob("*.py"):
            expected.add(package.replace(".", "/") + "/" + path.relative_to(ROOT / folder).as_posix())
    for path in (ROOT / "streamgen").rglob("*.py"):
        expected.add(path.relative_to(ROOT).as_posix())
    assert expected - names == set()  # a sub-package missing from `packages` would be left out
    for name in ("model", "vqgan", "pg"):
        assert {f"streamgen/weights/{name}.safetensors", f"streamgen/weights/{name}.json"} <= names


def test_every_subpackage_is_listed():
    """setuptools still copies an unlisted sub-package's files into the wheel as data, with a warning
    that a later release will not: the list must name them all."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join((name, *init.parent.relative_to(ROOT / folder).parts))
             for name, folder in meta["package-dir"].items() for init in (ROOT / folder).rglob("__init__.py")}
    assert found == set(meta["packages"])


def test_the_wheel_declares_the_builtin_plugins_and_the_command(wheel):
    _, text = wheel
    ep = configparser.ConfigParser()
    ep.read_string(text)
    assert dict(ep["console_scripts"]) == {"streamgen": "streamgen.cli:main"}
    declared = dict(ep["streamgen"])
    assert set(declared) == {"builtin_tasks", "builtin_codecs", "builtin_text", "builtin_sinks"}
    for module in declared.values():
        assert importlib.util.find_spec(module) is not None, module


def test_codecs_do_not_shadow_the_standard_library():
    code = "import codecs, streamgen.codecs; assert codecs.encode and codecs.__name__ == 'codecs'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "ok"


def test_ci_runs_exactly_the_readmes_test_command():
    """What CI installs is what a reader of the README installs (the browser too)."""
    readme = (ROOT / "README.md").read_text().splitlines()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci[ci.index("# The README's test command:") + 1]
    assert command in readme and "chromium chromium-driver" in command
