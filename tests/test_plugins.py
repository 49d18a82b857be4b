import itertools
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from streamgen import ConfigError, hookimpl, plugins
from streamgen.plugins import hookspecs
from streamgen.plugins import PluginError
from streamgen.testing import check_task, tiny_engine

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOOKS = [n for n in dir(hookspecs) if n.startswith("streamgen_")]


def test_every_hook_is_prefixed_typed_documented_and_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert len(HOOKS) == 4
    for name in HOOKS:
        fn = getattr(hookspecs, name)
        doc = fn.__doc__ or ""
        assert "Called" in doc and "Returns" in doc and "firstresult" in doc, name
        assert fn.__annotations__.get("return") in (None, "None"), name
        assert "registry" in fn.__annotations__, name
        assert f"`{name}`" in readme, f"{name} is not documented in README.md"


def test_importing_streamgen_creates_no_plugin_manager():
    code = "import streamgen, streamgen.plugins.registry as p; assert p._current is None; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_builtins_come_from_the_streamgen_entry_points():
    p = plugins.load()
    for name in ("uig", "t2i", "io", "ia", "t2v"):
        reg = p.tasks.registration(name)
        assert reg.plugin == "builtin_tasks" and reg.dist == "streamgen"
    assert {"palette", "vqgan"} <= set(p.codecs.names())
    assert "minilm" in p.text_encoders.names()


def test_every_registered_codec_loads_a_model_folder_as_streamgen_load_calls_it():
    """Codec factories take the folder's codec weights (`streamgen_register_codecs`): the palette codec,
    which has none, loads beside the shipped model too."""
    import streamgen

    for name in plugins.load().codecs.names():
        engine = streamgen.load(codec=name)
        assert engine.codec.vocab_size == engine.model.cfg.vocab_size
        assert engine.codec.decode(torch.zeros(1, 2, 2, dtype=torch.long)).dtype == torch.uint8


def test_an_environment_variable_disables_named_plugins(monkeypatch):
    monkeypatch.setenv(plugins.DISABLE_ENV, "builtin_tasks, builtin_text")
    p = plugins.load()
    assert not {"uig", "t2v"} & set(p.tasks.names())
    assert "minilm" not in p.text_encoders.names()
    assert "palette" in p.codecs.names()


class Clash:
    @hookimpl
    def streamgen_register_tasks(self, registry):
        registry.add("uig", object())

    @hookimpl
    def streamgen_register_codecs(self, registry):
        registry.add("palette", object())

    @hookimpl
    def streamgen_register_sinks(self, registry):
        registry.add("file", object())


def test_a_name_two_plugins_register_is_an_error_naming_both_only_where_it_is_used():
    p = plugins.load(extra=[("clash", Clash())])
    for registry, name, other in ((p.tasks, "uig", "t2v"), (p.codecs, "palette", "vqgan"), (p.sinks, "file", "pipe")):
        assert other in registry and name not in registry  # the rest of the registry keeps working
        with pytest.raises(ConfigError, match=rf"{registry.kind} `{name}` is registered twice: by plugin "
                                              rf"`builtin_\w+` from `streamgen` and by plugin `clash` from "
                                              rf"`\(registered directly\)`; uninstall one or disable it with "
                                              rf"STREAMGEN_DISABLE_PLUGINS=clash$") as info:
            registry.get(name)
        assert isinstance(info.value, PluginError)
        assert any(f"`{name}` is registered twice" in str(f) for f in registry.failures)


class Broken:
    @hookimpl
    def streamgen_register_tasks(self, registry):
        raise RuntimeError("boom")


def test_a_plugin_raising_in_a_hook_is_named_and_the_others_keep_working():
    p = plugins.load(extra=[("broken", Broken())])
    assert "uig" in p.tasks
    with pytest.raises(PluginError, match=r"unknown task 'fancy'; installed: ia, io, .*plugin `broken` "
                                          r"from .* failed: streamgen_register_tasks raised RuntimeError: boom"):
        p.tasks.get("fancy")


class BadName:
    @hookimpl
    def streamgen_register_tasks(self, registry):
        registry.add("", object())


class Misspelt:
    @hookimpl
    def streamgen_register_taks(self, registry):
        pass


def test_a_plugin_registering_an_invalid_name_or_a_misspelt_hook_fails_alone():
    p = plugins.load(extra=[("badname", BadName()), ("misspelt", Misspelt())])
    assert "uig" in p.tasks
    failures = [str(f) for f in p.tasks.failures]
    assert any(f.startswith("plugin `misspelt` from `(registered directly)` failed: implements a hook "
                            "streamgen does not have") and "streamgen_register_taks" in f for f in failures)
    assert "plugin `badname` from `(registered directly)` failed: streamgen_register_tasks raised PluginError: " \
           "plugin `badname` registered a task with an invalid name ''" in failures


def test_a_plugin_that_fails_to_import_is_named_with_its_distribution(monkeypatch):
    import importlib.metadata as md

    real = md.entry_points
    ghost = md.EntryPoint(name="ghost", value="streamgen_no_such_module_xyz", group="streamgen")

    def fake(**kw):
        return list(real(**kw)) + [ghost]

    monkeypatch.setattr(plugins.registry.md, "entry_points", fake)
    p = plugins.load()
    assert "uig" in p.tasks  # the others keep working
    (failure,) = p.failures
    assert failure.plugin == "ghost" and "ModuleNotFoundError" in failure.error
    with pytest.raises(PluginError, match="plugin `ghost` from `.*` failed: ModuleNotFoundError"):
        p.tasks.get("nope")


def test_unknown_task_lists_installed_ones(engine):
    with pytest.raises(PluginError, match="unknown task 'paint'; installed: ia, io, (predict, )?t2i, t2v, uig"):
        engine.run("paint")


@pytest.mark.parametrize("task,request_,field", [
    ("t2v", dict(frames=2), "prompt"),
    ("t2i", dict(prompt="   "), "prompt"),
    ("t2i", dict(prompt="x" * 100_000), "prompt"),
    ("io", dict(height=16, width=16), "image"),
    ("ia", dict(frames=2), "image"),
])
def test_a_request_missing_what_its_task_needs_names_the_field(task, request_, field):
    eng = tiny_engine(text_dim=8)
    with pytest.raises(ConfigError, match=f"`{field}`"):
        eng.run(task, request_)


IMG16 = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("task,request_", [
    ("uig", dict(height=16, width=64)),
    ("t2i", dict(prompt="a sunset over dunes", height=16, width=24)),
    ("io", dict(image=IMG16[:8, :8], height=24, width=32)),
    ("io", dict(image=IMG16[:8], height=8, width=40, left=0)),
    ("ia", dict(image=IMG16, frames=3)),
    ("t2v", dict(prompt="night hills, the camera pans left", height=16, width=16, frames=3)),
])
def test_builtin_tasks_pass_the_conformance_kit(task, request_):
    frames = check_task(task, request_)
    assert frames[0].shape[:2] == (request_.get("height", 16), request_.get("width", 16))


def test_outpainting_keeps_the_known_region_and_animation_starts_from_the_image():
    eng = tiny_engine()
    img = eng.codec.decode(eng.codec.encode(__import__("torch").from_numpy(IMG16)[None]))[0].numpy()
    out = next(eng.run("io", image=img[:8, :8], height=24, width=24))
    assert np.array_equal(out[8:16, 8:16], img[:8, :8])  # palette codec: exact round trip
    video = list(eng.run("ia", image=IMG16, frames=3))
    assert np.array_equal(video[0], IMG16) and not np.array_equal(video[1], IMG16)


def test_wide_image_streams_with_few_caches(monkeypatch):
    import streamgen.engine.core as engine_mod

    sizes = []

    class Spy(engine_mod.NearbyContextPool):
        def add(self, *a, **k):
            super().add(*a, **k)
            sizes.append(len(self))

    monkeypatch.setattr(engine_mod, "NearbyContextPool", Spy)
    eng = tiny_engine()
    frame = next(eng.run("uig", height=16, width=8 * 64))  # a panorama 64 patches wide
    assert frame.shape == (16, 512, 3)
    assert max(sizes) <= 2 * 2  # (ew + 1) columns of 2 patches, whatever the width


# --- the third-party path: a real package with its own pyproject, installed with pip ---------------

@pytest.fixture(scope="module")
def predict_plugin():
    src = ROOT / "examples" / "streamgen-predict"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    str(src)], check=True, capture_output=True)
    import importlib

    importlib.invalidate_caches()
    plugins.reset()
    yield
    plugins.reset()


def test_third_party_task_installs_and_generates_through_the_api(predict_plugin):
    reg = plugins.manager().tasks.registration("predict")
    assert reg.dist == "streamgen-predict" and reg.plugin == "predict"
    given = [IMG16, np.roll(IMG16, 2, axis=1)]
    frames = check_task("predict", dict(images=given, frames=4), frames=4)
    assert np.array_equal(frames[0], given[0]) and np.array_equal(frames[1], given[1])
    with pytest.raises(ConfigError, match=r"`frames` must be at least the 2 given frames"):
        tiny_engine().run("predict", images=given, frames=1)


def test_third_party_task_generates_through_the_cli(predict_plugin, tmp_path):
    import av
    import json

    from streamgen.cli import main

    paths = []
    for i, img in enumerate([IMG16, np.roll(IMG16, 2, axis=1)]):
        eng = tiny_engine()
        p = tmp_path / f"given{i}.png"
        from streamgen.output.sinks import PngSink

        PngSink(str(p)).write(img)
        paths.append(str(p))
    out = tmp_path / "predicted.mkv"
    code = main(["generate", "--model", "tiny", "--task", "predict", "--size", "16x16", "--frames", "5",
                 f"request.images={json.dumps(paths)}", "-o", str(out)])
    assert code == 0
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5


def test_streamgen_tasks_lists_tasks_and_their_packages(capsys):
    from streamgen.cli import main

    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines}
    assert {name: rows[name] for name in ("uig", "t2i", "io", "ia", "t2v")} == dict.fromkeys(
        ("uig", "t2i", "io", "ia", "t2v"), "streamgen")
