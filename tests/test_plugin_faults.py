"""Plugins fail alone: a name two plugins register, an exception inside a task plugin and a plan of
the wrong size each stop only what they touch, with one line that names the plugin.

The plugins here are a real package (its own pyproject and entry points) built and installed by pip
with ``--target`` into a folder of the test's own, so the shared venv never sees a plugin that takes
`t2v` out of use; tests put that folder on ``sys.path`` (``PYTHONPATH`` for the CLI), which is how
`importlib.metadata` finds installed distributions.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from streamgen import ConfigError, plugins
from streamgen.cli import main
from streamgen.plugins import PluginError
from streamgen.testing import check_task, tiny_engine

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "streamgen-faulty"
version = "0.1.0"
dependencies = ["streamgen"]

[project.entry-points.streamgen]
faulty = "streamgen_faulty"
dup_t2v = "streamgen_faulty.dup"

[tool.setuptools.packages.find]
where = ["src"]
"""

FAULTY = '''\
"""Tasks that each break one rule of the task contract."""
from pydantic import field_validator

from streamgen import hookimpl
from streamgen.engine.adc import Plan
from streamgen.errors import bad
from streamgen.plugins.task import Job, Task, TaskRequest

LEVELS = {"low": 1, "high": 2}


def plan(env, req, width):
    rows, cols = env.grid(req.height, width)
    return Plan.basic("omega", rows, cols, 1, env.extent(req.extent))


class BoomRequest(TaskRequest):
    parts: int = 0


class Boom(Task):
    name, Request = "boom", BoomRequest

    def job(self, req, env):
        if req.parts < 0:
            raise bad("parts", "must be at least 0", req.parts)
        return Job(plan(env, req, req.width // req.parts), "image")  # the default 0 divides by zero


class PickyRequest(TaskRequest):
    level: str = "low"

    @field_validator("level")
    @classmethod
    def _level(cls, v):
        if not v:
            raise ValueError("must not be empty")
        LEVELS[v]  # a KeyError for any other level: the check the author forgot
        return v


class Picky(Task):
    name, Request = "picky", PickyRequest

    def job(self, req, env):
        return Job(plan(env, req, req.width), "image")


class Wide(Task):
    name = "wide"

    def job(self, req, env):
        return Job(plan(env, req, 2 * req.width), "image")


class Swallow(Task):
    name = "swallow"

    def job(self, req, env):
        try:
            return Job(plan(env, req, req.width), "image")
        except Exception as exc:  # passes any fault off as the user's input
            raise bad("width", "must fit the model", req.width) from exc


@hookimpl
def streamgen_register_tasks(registry):
    for task in (Boom(), Picky(), Wide(), Swallow()):
        registry.add(task.name, task)
'''

DUP = '''\
"""A second `t2v`: a name streamgen's own tasks already have."""
from streamgen import hookimpl
from streamgen.plugins.task import Task


class T2V(Task):
    name = "t2v"


@hookimpl
def streamgen_register_tasks(registry):
    registry.add("t2v", T2V())
'''

CONFLICT = ("task `t2v` is registered twice: by plugin `builtin_tasks` from `streamgen` and by plugin `dup_t2v` "
            "from `streamgen-faulty`; uninstall one or disable it with STREAMGEN_DISABLE_PLUGINS=dup_t2v")
BOOM = ("task `boom` of plugin `faulty` from `streamgen-faulty` failed in job(): "
        "ZeroDivisionError: integer division or modulo by zero")
HINT = " (`streamgen --debug ...` or STREAMGEN_DEBUG=1 prints the traceback)"
WIDE = ("task `wide` of plugin `faulty` from `streamgen-faulty` plans frames of 32x16 px (WxH), but the "
        "request asks for 16x16 px: a task's plan must make frames of the requested size")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    src = tmp_path_factory.mktemp("streamgen-faulty")
    (src / "pyproject.toml").write_text(PYPROJECT)
    pkg = src / "src" / "streamgen_faulty"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAULTY)
    (pkg / "dup.py").write_text(DUP)
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True)
    assert list(target.glob("streamgen_faulty-0.1.0.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def installed(site, monkeypatch):
    """The package importable and its entry points visible, in this process, for this test only."""
    monkeypatch.delenv(plugins.DISABLE_ENV, raising=False)
    monkeypatch.delenv("STREAMGEN_DEBUG", raising=False)
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    yield site
    plugins.reset()
    for name in [m for m in sys.modules if m.split(".")[0] == "streamgen_faulty"]:
        del sys.modules[name]


def cli(site, *args):
    env = {k: v for k, v in os.environ.items() if k not in (plugins.DISABLE_ENV, "STREAMGEN_DEBUG")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "streamgen.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


# --- a name registered twice -------------------------------------------------------------------------

def test_a_task_name_registered_twice_fails_only_where_it_is_used(installed, monkeypatch):
    tasks = plugins.manager().tasks
    assert {"uig", "t2i", "io", "ia", "boom", "wide"} <= set(tasks.names()) and "t2v" not in tasks.names()
    assert next(tiny_engine().run("uig", height=16, width=16)).shape == (16, 16, 3)
    with pytest.raises(ConfigError) as info:
        tiny_engine(text_dim=8).run("t2v", prompt="hills", height=16, width=16)
    assert str(info.value) == CONFLICT and isinstance(info.value, PluginError)

    monkeypatch.setenv(plugins.DISABLE_ENV, "dup_t2v")  # what the message says to do
    plugins.reset()
    reg = plugins.manager().tasks.registration("t2v")
    assert (reg.plugin, reg.dist) == ("builtin_tasks", "streamgen")
    assert plugins.manager().tasks.registration("boom").dist == "streamgen-faulty"


def test_streamgen_tasks_lists_the_other_tasks_and_the_conflict(site):
    out = cli(site, "tasks")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()}
    assert {rows[n] for n in ("uig", "t2i", "io", "ia")} == {"streamgen"}
    assert rows["boom"] == "streamgen-faulty" and "t2v" not in rows
    assert f"streamgen: warning: {CONFLICT}\n" in out.stderr


def test_generating_with_the_conflicting_name_is_one_line(installed, capsys):
    assert main(["generate", "--model", "tiny", "--task", "t2v", "--prompt", "hills", "-o", "x.mp4"]) == 2
    assert capsys.readouterr().err == f"streamgen: error: {CONFLICT}\n"


# --- an exception inside a task plugin ---------------------------------------------------------------

def test_an_exception_in_job_is_one_plugin_error_naming_task_plugin_and_distribution(installed):
    eng = tiny_engine()
    with pytest.raises(PluginError) as info:
        eng.run("boom", height=16, width=16)
    assert str(info.value) == BOOM and isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(PluginError, match=r"^task `boom` of plugin `faulty` .* ZeroDivisionError"):
        eng.run_batch("boom", [dict(height=16, width=16)] * 2)


def test_bad_input_a_task_reports_stays_a_config_error_naming_the_parameter(installed):
    eng = tiny_engine()
    with pytest.raises(ConfigError) as info:
        eng.run("boom", height=16, width=16, parts=-1)
    assert str(info.value) == "`parts` must be at least 0, but got -1" and not isinstance(info.value, PluginError)
    with pytest.raises(ConfigError) as info:
        eng.run("picky", height=16, width=16, level="")
    assert str(info.value) == "`level`: must not be empty (got '')" and not isinstance(info.value, PluginError)


def test_an_exception_in_request_validation_is_one_plugin_error(installed):
    with pytest.raises(PluginError) as info:
        tiny_engine().run("picky", height=16, width=16, level="mid")
    assert str(info.value) == ("task `picky` of plugin `faulty` from `streamgen-faulty` failed validating its "
                               "request: KeyError: 'mid'")
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(PluginError, match="^task `picky` .* failed validating its request: KeyError"):
        tiny_engine().run_batch("picky", [dict(height=16, width=16, level="mid")])


def test_the_cli_prints_one_line_and_exits_2_and_the_traceback_with_debug(site, tmp_path):
    out_png = tmp_path / "boom.png"
    args = ["generate", "--model", "tiny", "--task", "boom", "--size", "16x16", "-o", str(out_png)]
    plain = cli(site, *args)
    assert plain.returncode == 2
    assert plain.stderr == f"streamgen: error: {BOOM}{HINT}\n"
    assert not out_png.exists()

    debug = cli(site, "--debug", *args)
    assert debug.returncode == 2
    lines = debug.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "streamgen_faulty/__init__.py" in debug.stderr and "req.width // req.parts" in debug.stderr
    assert "ZeroDivisionError: integer division or modulo by zero" in lines
    assert lines[-1] == f"streamgen: error: {BOOM}"
    assert not out_png.exists()


def test_the_debug_environment_variable_prints_the_traceback(installed, monkeypatch, capsys):
    args = ["generate", "--model", "tiny", "--task", "boom", "--size", "16x16", "-o", "never.png"]
    monkeypatch.setenv("STREAMGEN_DEBUG", "1")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and "req.width // req.parts" in err
    assert err.endswith(f"streamgen: error: {BOOM}\n")
    monkeypatch.setenv("STREAMGEN_DEBUG", "0")
    assert main(args) == 2
    assert capsys.readouterr().err == f"streamgen: error: {BOOM}{HINT}\n"


# --- a plan of another size --------------------------------------------------------------------------

def test_a_plan_of_another_size_than_the_request_is_refused_when_the_job_is_made(installed):
    eng = tiny_engine()
    with pytest.raises(PluginError) as info:
        eng.run("wide", height=16, width=16)
    assert str(info.value) == WIDE
    with pytest.raises(PluginError) as info:
        eng.run_batch("wide", [dict(height=16, width=16)])
    assert str(info.value) == WIDE
    assert next(eng.run("uig", height=16, width=16)).shape == (16, 16, 3)


def test_the_cli_writes_nothing_for_a_plan_of_another_size(installed, tmp_path, capsys):
    out = tmp_path / "wide.png"
    assert main(["generate", "--model", "tiny", "--task", "wide", "--size", "16x16", "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"streamgen: error: {WIDE}\n"
    assert not out.exists()


# --- the conformance kit -------------------------------------------------------------------------------

@pytest.mark.parametrize("task,expected", [
    ("wide", "plans frames of 32x16 px .WxH., but the request asks for 16x16 px"),
    ("boom", r"failed in job\(\): ZeroDivisionError"),
    ("swallow", r"job\(\) turned an internal fault into bad input \(ConfigError\): `width` must fit the model"),
])
def test_check_task_refuses_a_task_breaking_the_contract(installed, task, expected):
    with pytest.raises(AssertionError, match=expected):
        check_task(task, dict(height=16, width=16))


def test_check_task_passes_a_task_of_the_same_package_that_keeps_the_contract(installed):
    frames = check_task("picky", dict(height=16, width=24, level="high"))
    assert frames[0].shape == (16, 24, 3) and frames[0].dtype == np.uint8


def test_a_task_object_no_plugin_registered_is_named_by_its_class():
    from streamgen.plugins.task import Task

    class Local(Task):
        name = "local"

        def job(self, req, env):
            raise OSError("no such device")

    with pytest.raises(PluginError) as info:
        tiny_engine().run(Local(), height=16, width=16)
    assert str(info.value) == (f"task `local` ({__name__}.test_a_task_object_no_plugin_registered_is_named_"
                               "by_its_class.<locals>.Local, registered by no installed plugin) failed in job(): "
                               "OSError: no such device")


TWIN = '''\
from streamgen import hookimpl
from streamgen.plugins.task import Task


class Twin(Task):
    name, output = "twin_{x}", "image"


@hookimpl
def streamgen_register_tasks(registry):
    registry.add("twin_{x}", Twin())
'''


def test_two_distributions_with_one_entry_point_name_are_reported(tmp_path, monkeypatch):
    """Two installed packages whose entry points share a name: one is loaded, the other is a failure
    naming both distributions (it used to vanish without a word)."""
    site = tmp_path / "site"
    for x in ("a", "b"):
        src = tmp_path / x
        (src / "src" / f"twin_{x}").mkdir(parents=True)
        (src / "src" / f"twin_{x}" / "__init__.py").write_text(TWIN.replace("{x}", x))
        (src / "pyproject.toml").write_text(PYPROJECT.replace("streamgen-faulty", f"streamgen-twin-{x}").replace(
            'faulty = "streamgen_faulty"\ndup_t2v = "streamgen_faulty.dup"', f'twin = "twin_{x}"'))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(src)], check=True, capture_output=True)
    monkeypatch.delenv(plugins.DISABLE_ENV, raising=False)
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    try:
        pm = plugins.manager()
        loaded = {"twin_a", "twin_b"} & set(pm.tasks.names())
        assert len(loaded) == 1
        other = "b" if loaded == {"twin_a"} else "a"
        failed = [str(f) for f in pm.failures if f.plugin == "twin"]
        assert failed == [f"plugin `twin` from `streamgen-twin-{other}` failed: its entry point name 'twin' is "
                          f"taken by streamgen-twin-{'a' if other == 'b' else 'b'}; rename one of them"]
    finally:
        plugins.reset()
        for name in [m for m in sys.modules if m.startswith("twin_")]:
            del sys.modules[name]
