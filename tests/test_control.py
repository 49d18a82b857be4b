"""Steering a running `streamgen generate`: a storyboard from the command line, and live commands
through a real FIFO and through standard input, each answered, a bad one never stopping the stream."""
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from streamgen.cli import main
from streamgen.cli.control import Control
from streamgen.engine import snapshot as snap

BASE = ["--model", "tiny", "--task", "t2v", "--prompt", "a day sky", "--size", "16x16"]


def cli(*args):
    return [sys.executable, "-m", "streamgen.cli", "generate", *BASE, *args]


def pngs(folder):
    out = []
    for path in sorted(folder.glob("*.png")):
        with av.open(str(path)) as c:
            out.append(next(c.decode(video=0)).to_ndarray(format="rgb24"))
    return out


def test_prompt_at_is_the_storyboard_a_schedule_gives(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    assert main(["generate", *BASE, "--frames", "5", "--prompt-at", "3=a night sky", "-o", str(tmp_path / "a/%03d.png")]) == 0
    assert main(["generate", *BASE, "--frames", "5", 'prompts={"3": "a night sky"}', "-o", str(tmp_path / "b/%03d.png")]) == 0
    assert main(["generate", *BASE, "--frames", "5", "-o", str(tmp_path / "c/%03d.png")]) == 0
    a, b, c = pngs(tmp_path / "a"), pngs(tmp_path / "b"), pngs(tmp_path / "c")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], c[:3])) and not np.array_equal(a[3], c[3])


def test_commands_through_a_fifo_steer_the_stream_and_a_bad_one_does_not_stop_it(tmp_path):
    fifo, frames = tmp_path / "ctl", tmp_path / "f"
    frames.mkdir()
    proc = subprocess.Popen(cli("--frames", "400", "--control", str(fifo), "-o", str(frames / "%03d.png")),
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (fifo.exists() and len(list(frames.glob("*.png"))) >= 3):  # the stream is running
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        for command in ('{"prompt": ', '{"sampling": {"temperature": -2}}', '{"volume": 3}',
                        '{"prompt": "a night sky over desert dunes"}'):
            with open(fifo, "w") as f:  # one writer at a time, as `echo ... > ctl` does
                f.write(command + "\n")
            time.sleep(0.3)
        time.sleep(1.0)
        with open(fifo, "w") as f:
            f.write('{"stop": true}\n')
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    answers = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("streamgen: control:")]
    assert len(answers) == 5, err
    assert "error: a command must be one JSON object per line" in answers[0]
    assert "error: `sampling.temperature`" in answers[1]
    assert "error: `command` may only hold" in answers[2] and "volume" in answers[2]
    assert answers[3] == "streamgen: control: ok prompt" and answers[4] == "streamgen: control: ok stop"
    assert "stopped by a control command" in err and "Traceback" not in err
    assert not fifo.exists()  # the FIFO it made is gone
    got = pngs(frames)
    assert 3 < len(got) < 400
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["generate", *BASE, "--frames", str(len(got)), "-o", str(plain / "%03d.png")]) == 0
    want = pngs(plain)
    k = next(i for i, (x, y) in enumerate(zip(got, want)) if not np.array_equal(x, y))
    assert k >= 3 and not any(np.array_equal(x, y) for x, y in zip(got[k:], want[k:]))


def test_commands_on_standard_input_and_a_snapshot_on_request(tmp_path):
    state = tmp_path / "s.snap"
    proc = subprocess.Popen(cli("--frames", "inf", "--control", "-", "--snapshot", str(state), "--snapshot-every",
                                "1000", "-o", str(tmp_path / "out.mkv")),
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        proc.stdin.write('{"prompt": "a sunset sky", "sampling": {"temperature": 0.7}}\n{"snapshot": true}\n')
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not state.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        err = proc.communicate('{"stop": true}\n', timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "streamgen: control: ok prompt, sampling" in err and "streamgen: control: ok snapshot" in err
    saved, _ = snap.load(state)
    assert saved.frames_done % 1000  # on request, not on the schedule
    assert saved.conditioning["prompt"] == "a sunset sky" and saved.conditioning["sampling"]["temperature"] == 0.7


def test_a_control_path_that_is_not_a_fifo_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["generate", *BASE, "--frames", "3", "--control", str(tmp_path / "notes.txt"),
                 "-o", str(tmp_path / "x.mkv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("streamgen: error: `control` must be a FIFO") and "notes.txt" in err[-1]
    assert not (tmp_path / "x.mkv").exists() and (tmp_path / "notes.txt").read_text() == "mine"


def test_the_channel_answers_every_command_and_never_raises():
    said, steered = [], []

    def steer(**kw):
        if kw["prompt"] == "":
            from streamgen import ConfigError

            raise ConfigError("`prompt` must not be empty for a text task")
        steered.append(kw)

    c = Control("-", steer=steer, snapshot=None, stop=lambda: steered.append("stop"), say=said.append)
    for line in ('{"prompt": "x"}', "[1, 2]", '{"prompt": ""}', '{"snapshot": true}', '{"stop": 1}',
                 "[" * 100_000, '{"prompt": null}', '{"prompt": "breaks"}', '{"stop": true}'):
        if "breaks" in line:
            c.steer = lambda **kw: 1 / 0  # a plugin's steering that raises something of its own
        c.handle(line)
    assert said == ["streamgen: control: ok prompt",
                    "streamgen: control: error: `command` must be a JSON object with some of prompt, sampling, "
                    "snapshot, stop, but got [1, 2]",
                    "streamgen: control: error: `prompt` must not be empty for a text task",
                    "streamgen: control: error: `snapshot` needs --snapshot FILE to know where to save, but got True",
                    "streamgen: control: error: `stop` must be true, but got 1",
                    "streamgen: control: error: a command must be one JSON object per line, but got "
                    f"{'[' * 80!r} (RecursionError)",
                    "streamgen: control: error: `prompt` must be given to change it (leave it out to keep it), "
                    "but got None",
                    "streamgen: control: error: the command failed: division by zero",
                    "streamgen: control: ok stop"]
    assert steered == [{"prompt": "x", "sampling": None}, "stop"]
