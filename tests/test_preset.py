"""A model folder's own sampling preset: model.json's `sampling` laid over DEFAULT_SAMPLING."""
import json
import os

import numpy as np
import pytest

from streamgen.bundle import load
from streamgen.cli import main
from streamgen.config import DEFAULT_SAMPLING, parse
from streamgen.errors import ConfigError
from streamgen.cli.generate import GenerateConfig
from streamgen.testing import tiny_folder


def folder(path, sampling=None, **over):
    return tiny_folder(path, None if sampling is None else {"sampling": sampling}, **over)


def image(path):
    import av

    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def test_the_folder_preset_is_what_generate_samples_with_unless_the_user_sets_a_field(tmp_path):
    plain = load(folder(tmp_path / "plain"))
    assert plain.preset == DEFAULT_SAMPLING
    own = load(folder(tmp_path / "own", sampling={"refine_borders": 0.6}))
    assert own.preset == {**DEFAULT_SAMPLING, "refine_borders": 0.6}

    def run(model, *over):  # a 2-patch canvas: the second patch's border with the first is redrawn
        out = tmp_path / f"{model}{len(over)}.png"
        assert main(["generate", "--model", str(tmp_path / model), "--task", "uig", "--size", "64x32",
                     "-o", str(out), "seed=1", *over]) == 0
        return image(out)
    redrawn, plain_img = run("own"), run("plain")
    assert not np.array_equal(redrawn, plain_img)  # the preset's redraw ran
    assert np.array_equal(run("own", "sampling.refine_borders=null"), plain_img)  # the user turned it off
    assert np.array_equal(run("plain", "sampling.refine_borders=0.6"), redrawn)  # or on
    # what a user gives is laid over the preset field by field
    cfg = parse(GenerateConfig, {"task": "t2v", "sampling": {"top_k": 50}})
    assert own.sampling_for(cfg.sampling).model_dump(exclude_defaults=True) == {
        "top_k": 50, "guidance": 3.0, "refine_borders": 0.6}
    assert own.sampling_for(parse(GenerateConfig, {"task": "t2v"}).sampling).refine_borders == 0.6


def test_a_stream_resumed_from_a_snapshot_keeps_the_sampling_it_ran_with(tmp_path):
    from streamgen.engine import snapshot as snap

    d = folder(tmp_path / "own", sampling={"refine_borders": 0.6})
    args = ["generate", "--model", str(d), "--task", "uig", "--size", "64x32", "-o", str(tmp_path / "a.png"),
            "--snapshot", str(tmp_path / "s.snap"), "snapshot_every=1"]
    assert main(args) == 0
    _, info = snap.load(tmp_path / "s.snap")
    assert info["request"]["sampling"]["refine_borders"] == 0.6 and info["request"]["sampling"]["top_k"] == 64
    # a preset changed after the snapshot does not change what the snapshot's request says
    saved = parse(GenerateConfig, info["request"])
    assert load("tiny").sampling_for(saved.sampling).refine_borders == 0.6


@pytest.mark.parametrize("sampling, words", [
    ({"top_k": 0}, ["model.json", "sampling.top_k", "greater than or equal to 1", "0"]),
    ({"colour": 1}, ["model.json", "sampling.colour", "xtra"]),
    ([64], ["model.json", "`sampling`", "object", "[64]"]),
])
def test_a_bad_preset_is_a_one_line_error_naming_the_file(tmp_path, capsys, sampling, words):
    d = folder(tmp_path / "bad", sampling=sampling)
    assert main(["generate", "--model", str(d), "--task", "uig", "--size", "32x32", "-o", str(tmp_path / "x.png")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not (tmp_path / "x.png").exists()


def test_a_preset_the_model_cannot_run_fails_when_the_folder_is_loaded(tmp_path):
    d = folder(tmp_path / "ar", sampling={"refine_borders": 0.6}, pnar=False)
    with pytest.raises(ConfigError, match=r"model\.json: .*sampling\.refine_borders.*pnar.*0\.6"):
        load(d)


def test_request_sampling_is_refused_for_it_would_bypass_the_preset(tmp_path, capsys):
    d = folder(tmp_path / "own", sampling={"refine_borders": 0.6})
    out = tmp_path / "x.png"
    assert main(["generate", "--model", str(d), "--task", "uig", "--size", "32x32", "-o", str(out),
                 'request.sampling={"top_k": 5}']) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`request.sampling`" in err[0] and "'top_k': 5" in err[0] and not out.exists()


def test_export_bundle_writes_a_checked_preset(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "export_bundle.py"
    src = folder(tmp_path / "src")
    ar = folder(tmp_path / "ar", pnar=False)

    def export(model, sampling, out):
        return subprocess.run([sys.executable, str(script), "--model", str(model), "--codec", str(src),
                               "--out", str(out), "--sampling", sampling], capture_output=True, text=True)
    for model, bad, words in ((src, '{"top_k": 0}', "sampling.top_k"), (src, "[64]", "JSON object"),
                              (ar, '{"refine_borders": 0.6}', "pnar"), (src, "{top_k", "JSON object")):
        r = export(model, bad, tmp_path / "bad")
        assert r.returncode == 2 and words in r.stderr.strip().splitlines()[-1], r.stderr
        assert not (tmp_path / "bad").exists()  # nothing written
    r = export(src, '{"refine_borders": 0.6}', tmp_path / "good")
    assert r.returncode == 0, r.stderr
    assert load(tmp_path / "good").preset["refine_borders"] == 0.6
    assert '`{"refine_borders": 0.6}`' in (tmp_path / "good" / "model.md").read_text()


def test_a_killed_stream_resumes_with_its_own_sampling_when_the_preset_changed_since(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    d = folder(tmp_path / "own", sampling={"refine_borders": 0.6})
    photo = tmp_path / "photo.png"
    assert main(["generate", "--model", str(d), "--task", "uig", "--size", "64x32", "-o", str(photo)]) == 0
    gen = [sys.executable, "-m", "streamgen.cli", "generate", "--model", str(d), "--task", "ia", "--image",
           str(photo), "--size", "64x32", "--frames", "40"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole, broken, state = tmp_path / "whole", tmp_path / "broken", tmp_path / "s.snap"
    whole.mkdir()
    broken.mkdir()
    subprocess.run([*gen, "-o", str(whole / "%02d.png")], check=True, capture_output=True, env=env)
    proc = subprocess.Popen([*gen, "-o", str(broken / "%02d.png"), "--realtime", "--fps", "15", "--snapshot",
                             str(state), "snapshot_every=5"], stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 60
    while len(list(broken.iterdir())) < 12 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 12 <= len(list(broken.iterdir())) < 40
    model_json = json.loads((d / "model.json").read_text())
    model_json["sampling"] = {"refine_borders": None}  # the folder's preset changes meanwhile
    (d / "model.json").write_text(json.dumps(model_json))
    subprocess.run([*gen[:3], "generate", "--resume", str(state)], check=True, capture_output=True, env=env)
    names = sorted(p.name for p in whole.iterdir())
    assert sorted(p.name for p in broken.iterdir()) == names
    assert all(np.array_equal(image(broken / n), image(whole / n)) for n in names)
    # a fresh stream now samples without the redraw
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    subprocess.run([*gen, "-o", str(fresh / "%02d.png")], check=True, capture_output=True, env=env)
    assert not all(np.array_equal(image(fresh / n), image(whole / n)) for n in names)
