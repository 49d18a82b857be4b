"""Every bad input gets the project's own error: one line on stderr, exit code 2, no traceback, and a
message naming the field, the rule and the value. Plus property-based tests of the request models."""
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamgen import ConfigError, StreamgenError
from streamgen import checkpoint as ckpt
from streamgen.cli import main
from streamgen.config import ModelConfig, SamplingConfig, parse
from streamgen.cli.generate import GenerateConfig
from streamgen.model import VisionDecoder
from streamgen.testing import tiny_config, tiny_engine

BASE = ["generate", "--model", "tiny", "--prompt", "a day sky", "--size", "16x16", "--frames", "2"]


@pytest.fixture
def files(tmp_path):
    png = tmp_path / "ok.png"
    main([*BASE, "--task", "t2i", "-o", str(png)])
    (tmp_path / "trunc.png").write_bytes(png.read_bytes()[: len(png.read_bytes()) // 3])
    (tmp_path / "notes.png").write_text("this is not an image\n")
    (tmp_path / "binary.json").write_bytes(bytes(range(128, 256)))
    (tmp_path / "unknown.json").write_text(json.dumps({"task": "t2v", "colour": "red"}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text('["t2v"]')
    model = VisionDecoder(tiny_config())
    good = tmp_path / "good"
    ckpt.save(good / "model.safetensors", model, model.cfg)
    trunc = tmp_path / "truncmodel"
    trunc.mkdir()
    (trunc / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:500])
    (trunc / "model.json").write_text((good / "model.json").read_text())
    shapes = tmp_path / "shapes"
    ckpt.save(shapes / "model.safetensors", model, model.cfg)
    info = json.loads((shapes / "model.json").read_text())
    info["config"]["width"] = 64
    (shapes / "model.json").write_text(json.dumps(info))
    (tmp_path / "empty").mkdir()
    from streamgen.engine import StreamState
    from streamgen.engine import snapshot as snap

    snap.save(tmp_path / "serve.snap", StreamState(1, {}, None), {"serve": {"id": "abcd"}})  # no request
    main([*BASE, "--snapshot", str(tmp_path / "gen.snap"), "--snapshot-every", "1", "-o", str(tmp_path / "a.mkv")])
    return tmp_path


# (arguments, words the one-line message must contain); {d} is the test's folder
TABLE = [
    (["--size", "0x16"], ["size", "WxH"]),
    (["--size", "16x20"], ["height", "multiple of 8", "20"]),
    (["--size", "2000000x16"], ["width", "1048576", "2000000"]),
    (["extent.w=-1"], ["extent.w", "greater than or equal to 0", "-1"]),
    (["extent.f=3"], ["extent.f", "at most the model's 1", "3"]),
    (["--frames", "0"], ["frames", "greater than or equal to 1", "0"]),
    (["--frames", "-4"], ["frames", "-4"]),
    (["--frames", "many"], ["frames", "many"]),
    (["--fps", "0"], ["fps", "greater than or equal to 0.01", "0"]),
    (["--fps", "0.0001"], ["fps", "greater than or equal to 0.01", "0.0001"]),
    (["--fps", "-1"], ["fps", "-1"]),
    (["--prompt", "x" * 100_000], ["prompt", "at most 2000 characters", "100000"]),
    (["--prompt", ""], ["prompt", "must not be empty"]),
    (["--prompt", "   "], ["prompt", "must not be empty"]),
    (["--task", "io", "--prompt", "", "--image", "{d}/trunc.png"], ["prompt"]),
    (["--task", "ia", "--image", "{d}/trunc.png", "--prompt", "x"], ["prompt", "not used"]),
    (["--task", "io", "--image", "{d}/missing.png"], ["prompt", "not used"]),
    (["--task", "nope"], ["unknown task 'nope'", "installed", "t2v"]),
    (["-o", "srt://127.0.0.1:9/x"], ["output", "unknown sink 'srt'"]),
    (["-o", "rtmp://"], ["output", "rtmp:// or rtmps:// URL with a host"]),
    (["-o", "rtmp:///live"], ["output", "with a host"]),
    (["-o", "{d}/out.gif"], ["output", "must end in one of"]),
    (["-o", "{d}/out.avi", "--control", "ctl"], ["output", "must end in one of"]),  # no FIFO left behind
    (["-o", "rtmp://127.0.0.1:9/live", "--control", "ctl"], ["nothing is listening"]),  # the FIFO goes too
    (["-o", "{d}/clip.png"], ["output", "one PNG, which holds one image", "frames=1"]),
    (["-o", "rtmp://alice:hunter2@127.0.0.1:99999/live"], ["output", "port from 1 to 65535",
                                                            "rtmp://***@127.0.0.1:99999/live"]),
    (["--top", "8"], ["top", "not used by task 't2v'", "8"]),
    (["--resume", "{d}/serve.snap"], ["snapshot", "saved by `streamgen serve`", "streamgen serve --resume"]),
    (["--resume", "{d}/gen.snap", "--seed", "5"], ["seed", "is the snapshot's when resuming (0)", "5"]),
    (["-o", "{d}/no/such/folder/out.mp4"], ["output", "existing folder"]),
    (["-o", "/proc/streamgen-test.mp4"], ["cannot open output", "/proc/streamgen-test.mp4"]),
    (["sampling.guidance=NaN"], ["sampling.guidance", "finite", "nan"]),
    (["sampling.guidance=-1"], ["sampling.guidance", "greater than or equal to 0", "-1"]),
    (["sampling.temperature=-0.5"], ["sampling.temperature", "-0.5"]),
    (["sampling.top_k=0"], ["sampling.top_k", "0"]),
    (["sampling.top_p=1.5"], ["sampling.top_p", "1.5"]),
    (["sampling.local=pnar"], ["sampling.local", "pnar", "trained for P-NAR"]),
    (["sampling.local=fast"], ["sampling.local", "fast"]),
    (["sampling.pnar_steps=0"], ["sampling.pnar_steps", "0"]),
    (["precision=fp8"], ["precision", "fp8"]),
    (["attention=xformers"], ["attention", "xformers"]),
    (["--seed", "-3"], ["seed", "-3"]),
    (["--config", "{d}/unknown.json"], ["colour", "Extra inputs are not permitted", "red"]),
    (["--config", "{d}/broken.json"], ["--config", "not valid JSON"]),
    (["--config", "{d}/list.json"], ["--config", "must hold a JSON object of settings", "list"]),
    (["--config", "{d}/missing.json"], ["--config", "existing JSON file"]),
    (["--config", "{d}/binary.json"], ["--config", "UTF-8 text", "binary.json", "is not text"]),
    (["--model", "{d}/empty"], ["model", "model.safetensors"]),
    (["--model", "{d}/truncmodel"], ["not a readable safetensors file", "truncated"]),
    (["--model", "{d}/shapes"], ["tensor", "has shape", "expects"]),
    (["--resume", "{d}/missing.snap"], ["snapshot", "does not exist"]),
    (["--resume", "{d}/notes.png"], ["snapshot", "not readable"]),
    (["--reconnect", "-1"], ["reconnect", "-1"]),
    (["--snapshot-every", "0"], ["snapshot_every", "0"]),
    (["--task", "t2i", "--size", "65536x16", "-o", "{d}/pano.png"], ["size", "at most 65535 px", "65536x16"]),
    (["--size", "64x16", "-o", "{d}/tiles/"], ["output", "image tasks", "'t2v' makes a video"]),
    (["--task", "t2i", "--scroll", "8", "-o", "{d}/pano.png"], ["scroll", "video output", "pano.png"]),
    (["--task", "t2i", "--scroll", "8", "--view", "63"], ["view", "multiple of 2", "63"]),
    (["--task", "t2i", "--scroll", "8", "--order", "zeta"], ["order", "omega", "zeta"]),
    (["--task", "t2i", "--size", "infx16", "-o", "{d}/pano.png"], ["size", "endless canvas goes strip by strip",
                                                                  "infx16"]),
    (["--size", "infx16", "-o", "{d}/tiles/"], ["size", "endless canvases", "'t2v'", "infx16"]),
    (["--task", "t2i", "--size", "infx16", "--order", "zeta", "-o", "{d}/tiles/"], ["order", "omega", "zeta"]),
    (["--task", "t2i", "--size", "infxwide"], ["size", "WxH", "infxwide"]),
    (["--task", "t2i", "--size", "128"], ["size", "WxH", "'128'"]),
    (["--task", "t2i", "--size", "infx16", "--scroll", "8", "-o", "{d}/pano.png"], ["scroll", "video output"]),
]


@pytest.mark.parametrize("args,words", TABLE, ids=[" ".join(a)[:40] for a, _ in TABLE])
def test_bad_cli_input_is_one_clear_line(files, capsys, monkeypatch, args, words):
    args = [a.replace("{d}", str(files)) for a in args]
    cwd = files / "cwd"  # where the default output, out.mp4, goes: the user's own file is there
    cwd.mkdir()
    (cwd / "out.mp4").write_bytes(b"the user's video")
    monkeypatch.chdir(cwd)
    assert main([*BASE, *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("frames")]  # progress
    assert len(err) == 1 and err[0].startswith("streamgen: error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
    assert [p.name for p in cwd.iterdir()] == ["out.mp4"]
    assert (cwd / "out.mp4").read_bytes() == b"the user's video"


@pytest.mark.parametrize("setting,value", [("precision", "fp8"), ("attention", "xformers")])
def test_bad_engine_settings_raise_when_the_stream_is_made(setting, value):
    eng = tiny_engine()
    setattr(eng, setting, value)
    with pytest.raises(ConfigError, match=setting):
        eng.run("uig", height=32, width=32)  # not at the first frame
    with pytest.raises(ConfigError, match=setting):
        eng.run_batch("uig", [{"height": 32, "width": 32}])
    with pytest.raises(ConfigError, match="sampling.local"):
        tiny_engine().run("uig", height=32, width=32, sampling={"local": "pnar"})


IMAGE_TABLE = [
    ("trunc.png", "not a readable image"),
    ("notes.png", "not a readable image"),
    ("missing.png", "existing image file"),
]


@pytest.mark.parametrize("name,words", IMAGE_TABLE)
@pytest.mark.parametrize("task", ["io", "ia"])
def test_bad_images_name_the_field(files, capsys, name, words, task):
    eng = tiny_engine()
    with pytest.raises(ConfigError, match=words):
        eng.run(task, image=str(files / name), height=32, width=32)
    args = ["generate", "--model", "tiny", "--task", task, "--image", str(files / name), "--size", "32x32",
            "-o", str(files / "out.mkv")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamgen: error: `") and words in err[0], err


def test_the_table_has_at_least_thirty_rows():
    assert len(TABLE) + len(IMAGE_TABLE) >= 30


# --- property-based: anything is either accepted and generates, or rejected with ConfigError ------

values = st.one_of(st.none(), st.booleans(), st.integers(-10**7, 10**7), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.integers(-3, 3), max_size=3))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["height", "width", "frames", "order", "seed", "sampling",
                                         "extent", "prompt", "colour"]), values, max_size=5))
def test_stream_requests_generate_or_raise_config_error(request_):
    eng = tiny_engine()
    try:
        gen = eng.stream(**request_)
    except ConfigError:
        return
    frame = next(gen)
    assert frame.dtype == np.uint8 and frame.ndim == 3
    gen.close()


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["temperature", "top_k", "top_p", "guidance", "x"]), values,
                       max_size=4))
def test_sampling_configs_are_valid_or_config_errors(data):
    try:
        cfg = parse(SamplingConfig, data)
    except ConfigError:
        return
    assert math.isfinite(cfg.temperature) and cfg.guidance >= 0
    logits = torch.randn(3, 16)
    from streamgen.engine.sampling import sample

    tok = sample(logits, torch.rand(3, dtype=torch.float64), cfg)
    assert tok.shape == (3,) and int(tok.min()) >= 0 and int(tok.max()) < 16


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["vocab_size", "width", "layers", "heads", "patch_h", "text_dim",
                                         "extent", "bogus"]), values, max_size=4))
def test_model_configs_are_valid_or_config_errors(data):
    try:
        cfg = parse(ModelConfig, data)
    except ConfigError:
        return
    assert cfg.width % cfg.heads == 0


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["task", "frames", "size", "fps", "seed", "output", "reconnect",
                                         "gop", "sampling", "nonsense"]), values, max_size=5))
def test_generate_configs_are_valid_or_config_errors(data):
    try:
        parse(GenerateConfig, data)
    except ConfigError:
        return
    except StreamgenError as exc:  # pragma: no cover - would be a wrong exception type
        raise AssertionError(f"not a ConfigError: {exc!r}")


def test_sampling_fields_given_are_laid_over_the_default_preset():
    from streamgen.config import DEFAULT_SAMPLING

    over = tiny_engine().sampling_for
    cfg = over(parse(GenerateConfig, {"task": "t2v", "sampling": {"top_k": 50}}).sampling)
    assert cfg.top_k == 50 and cfg.guidance == DEFAULT_SAMPLING["guidance"] == 3.0
    cfg = over(parse(GenerateConfig, {"task": "t2v", "sampling": {"refine_borders": 0.6}}).sampling)
    assert cfg.refine_borders == 0.6 and cfg.top_k == 64
    with pytest.raises(ConfigError, match=r"sampling\.refine_borders.*greater than or equal to 0.*-1"):
        parse(GenerateConfig, {"task": "t2v", "sampling": {"refine_borders": -1}})


def test_overrides_may_come_before_between_and_after_the_options(tmp_path, capsys):
    png = tmp_path / "a.png"
    args = ["generate", "--model", "tiny", "--task", "t2i", "--prompt", "a day sky", "frames=1",
            "-o", str(png), "--size", "16x16", "seed=3", "sampling.top_k=5"]
    assert main(args) == 0 and png.is_file()
    with pytest.raises(SystemExit) as exc:  # an unknown option is still argparse's one-line error
        main([*args, "--bogus"])
    assert exc.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # and so is a stray word that is not an override
        main([*args, "stray"])
