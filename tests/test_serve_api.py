"""`streamgen serve` over real HTTP: a server in a subprocess (tiny model), httpx and a WebSocket client
as its clients, ffprobe reading what it wrote, nginx receiving its RTMP pushes."""
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streamgen.cli import main

FFPROBE = shutil.which("ffprobe")
NGINX = shutil.which("nginx")
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

pytestmark = pytest.mark.skipif(not FFPROBE, reason="needs Debian's ffprobe (.ci/run installs it)")

DAY = {"prompt": "a day sky over hills", "width": 32, "height": 32, "frames": None}


def count_frames(path) -> int:
    out = subprocess.run([FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[0])


def cli_error(capsys, *args) -> str:
    """What `streamgen generate` says about the same bad input, without its prefix."""
    assert main(["generate", "--model", "tiny", "--task", "t2v", "--prompt", "x", *args]) == 2
    return capsys.readouterr().err.strip().removeprefix("streamgen: error: ")


def test_changes_need_the_token_and_bad_requests_get_the_command_lines_messages(serve, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    s = serve("--output-dir", str(tmp_path / "out"), "--max-streams", "1", "--max-size", "64x64", "--max-fps", "16")
    body = {"request": DAY}
    for token in (None, "wrong"):
        assert s.call("POST", "/streams", body, token=token).status_code == 401
        assert s.call("PATCH", "/streams/x", {"prompt": "a"}, token=token).status_code == 401
        assert s.call("DELETE", "/streams/x", token=token).status_code == 401
    assert s.call("POST", "/streams", body, token=None).headers["www-authenticate"] == "Bearer"
    assert s.call("GET", "/streams", token=None).json() == {"streams": []}  # reads are open

    def refused(body, code=400):
        r = s.call("POST", "/streams", body)
        assert r.status_code == code, r.text
        return r.json()["detail"]

    assert refused({"request": {**DAY, "width": 30}}) == cli_error(capsys, "--size", "30x32")
    assert refused({"request": {**DAY, "seed": -1}}) == cli_error(capsys, "--size", "32x32", "seed=-1")
    assert refused({"task": "nope"}) == cli_error(capsys, "--task", "nope")
    assert refused({"request": {**DAY, "width": 128}}) == \
        "`request.width` must be at most 64 on this server (--max-size), but got 128"
    assert refused({"request": DAY, "fps": 30}) == "`fps` must be at most 16 on this server (--max-fps), but got 30.0"
    for name in ("../x.mp4", str(tmp_path / "x.mp4"), "-", "a/../../x.mp4"):
        assert refused({"request": DAY, "output": name}).startswith("`output` must be a file name inside")
    assert refused({"request": DAY, "output": "ftp://h/x"}).startswith("`output` must be an rtmp:// or rtmps://")
    assert refused({"request": DAY, "output": "one.png"}).startswith("`output` is one PNG, which holds one image")
    assert refused({"request": DAY, "output": "no/such/x.mp4"}) == ("`output` must be in an existing folder "
                                                                     "inside the server's output folder, but got 'no/such/x.mp4'")
    assert refused({"request": DAY, "fps": 0.001}).startswith("`fps`: Input should be greater than or equal to 0.01")
    assert refused({"request": DAY, "volume": 3}) == "`volume`: Extra inputs are not permitted (got 3)"
    r = s.client.post("/streams", content=b'{"request": ', headers={"Authorization": f"Bearer {s.token}",
                                                                     "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"].startswith("the body must be a JSON object")
    assert s.call("POST", "/streams", body).status_code == 201
    assert refused(body, 429).startswith("`streams` must be at most 1 at once on this server")
    assert s.call("GET", "/streams/nope").status_code == 404

    # closed to other sites: no CORS answer, another Host refused, the schema served
    pre = s.client.options("/streams", headers={"Origin": "http://elsewhere.example",
                                                "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    assert s.client.get("/streams", headers={"Host": "elsewhere.example"}).status_code == 400
    schema = s.call("GET", "/openapi.json").json()
    assert {"/streams", "/streams/{id}", "/load"} <= set(schema["paths"])
    assert set(schema["paths"]["/streams/{id}"]) == {"get", "patch", "delete"}
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert "Traceback" not in s.stderr


def test_streams_run_together_steer_and_stop_and_the_live_view_is_mp4(serve, tmp_path):
    from websockets.sync.client import connect

    out = tmp_path / "out"
    out.mkdir()
    s = serve("--output-dir", str(out))
    a = s.call("POST", "/streams", {"request": DAY, "output": "a.mp4", "fps": 16}).json()
    b = s.call("POST", "/streams", {"request": {**DAY, "frames": 6, "seed": 1}, "fps": 16}).json()
    assert a["outputs"] == ["a.mp4", "the server's live view"] and b["outputs"] == ["the server's live view"]
    again = s.call("POST", "/streams", {"request": DAY, "output": "./a.mp4"})  # the same file, named otherwise
    assert again.status_code == 400 and again.json()["detail"] == \
        f"`output` is being written by stream {a['id']}, but got './a.mp4'"
    with ThreadPoolExecutor(2) as pool:  # two requests for one new file at once: one of them gets it
        codes = sorted(pool.map(lambda seed: s.call("POST", "/streams", {"request": {**DAY, "seed": seed},
                                                                         "output": "c.mp4"}).status_code, (5, 6)))
    assert codes == [201, 400]
    ended = s.wait(b["id"], lambda st: st["state"] != "live")
    assert ended["state"] == "ended" and ended["frames"] == 6
    load = s.call("GET", "/load").json()
    assert load["streams"] == 2 and load["threads"] == 1  # OMP_NUM_THREADS=1: one thread, nothing to tune

    r = s.call("PATCH", f"/streams/{a['id']}", {"prompt": "a night sky over dunes"})
    assert r.status_code == 200 and r.json()["ok"] == "prompt"
    st = s.wait(a["id"], lambda st: st["applied"])
    assert st["prompt"] == "a night sky over dunes" and st["applied"][0]["prompt"] == "a night sky over dunes"
    for command, message in (({"sampling": {"temperature": -2}}, "`sampling.temperature`: Input should be greater"),
                             ({"volume": 3}, "`command` may only hold prompt, sampling, snapshot, stop"),
                             ({"snapshot": True}, "`snapshot` needs a server started with --state-dir"),
                             ([1], "`command` must be a JSON object")):
        r = s.call("PATCH", f"/streams/{a['id']}", command)
        assert r.status_code == 400 and r.json()["detail"].startswith(message), r.text
    assert s.call("PATCH", f"/streams/{b['id']}", {"prompt": "x"}).status_code == 400  # it has ended

    with pytest.raises(Exception):  # another site's page may not open the live view
        connect(f"ws{s.base[4:]}/streams/{a['id']}/video", origin="http://elsewhere.example", open_timeout=10).recv()
    messages = []
    with connect(f"ws{s.base[4:]}/streams/{a['id']}/video", open_timeout=10) as ws:
        while len(messages) < 12:
            data = ws.recv(timeout=30)
            n = int.from_bytes(data[:4], "big")
            messages.append((json.loads(data[4:4 + n]), data[4 + n:]))
        assert s.call("GET", f"/streams/{a['id']}").json()["viewers"] == 1
    head, init = messages[0]
    assert head["init"] and head["codec"].startswith("avc1.42") and (head["width"], head["height"]) == (32, 32)
    assert messages[1][0]["key"] and [m[0]["i"] for m in messages[1:]] == list(range(11))
    (tmp_path / "view.mp4").write_bytes(init + b"".join(m[1] for m in messages[1:]))
    assert count_frames(tmp_path / "view.mp4") == 11  # a fragment a frame, readable as MP4

    gone = s.call("DELETE", f"/streams/{a['id']}")
    assert gone.status_code == 200 and gone.json()["state"] == "stopped"
    assert count_frames(out / "a.mp4") == gone.json()["frames"] > 11  # finished: every frame made
    assert s.call("GET", f"/streams/{a['id']}").status_code == 404
    assert "Traceback" not in s.stderr


@pytest.mark.skipif(not (NGINX and RTMP_MODULE.is_file()), reason="needs Debian's nginx and libnginx-mod-rtmp")
def test_rtmp_credentials_are_never_shown_and_a_lost_receiver_stops_only_its_stream(serve, nginx):
    s = serve()
    url = nginx.url("cam", userinfo="alice:hunter2@")
    pushed = s.call("POST", "/streams", {"request": DAY, "output": url, "fps": 16}).json()
    other = s.call("POST", "/streams", {"request": {**DAY, "seed": 2}, "fps": 16}).json()
    assert pushed["outputs"][0] == f"rtmp://***@127.0.0.1:{nginx.port}/live/***"
    nginx.wait_for_frames(5)
    nginx.stop()
    failed = s.wait(pushed["id"], lambda st: st["state"] != "live")
    assert failed["state"] == "failed" and "went away" in failed["error"]
    frames = s.call("GET", f"/streams/{other['id']}").json()["frames"]
    s.wait(other["id"], lambda st: st["frames"] > frames + 3 and st["state"] == "live")
    refused = s.call("POST", "/streams", {"request": DAY, "output": url})
    assert refused.status_code == 400 and "rtmp://***@127.0.0.1" in refused.json()["detail"]
    shown = json.dumps(s.call("GET", "/streams").json()) + refused.text
    assert s.stop() == 143
    for text in (shown, s.stderr):
        assert "hunter2" not in text and "alice" not in text


def test_requests_read_input_images_only_inside_the_input_folder(serve, tmp_path):
    """A token holder cannot read the server's files through a task's input image: without --input-dir
    a request naming a file is refused, with it only names inside that folder are read."""
    import numpy as np

    from streamgen.output.sinks import PngSink

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    PngSink(str(inputs / "still.png")).write(np.full((32, 32, 3), 128, np.uint8))
    secret = tmp_path / "secret.png"
    PngSink(str(secret)).write(np.zeros((32, 32, 3), np.uint8))
    ia = lambda image: {"task": "ia", "request": {"image": image, "frames": None}}  # noqa: E731

    closed = serve()
    r = closed.call("POST", "/streams", ia(str(secret)))
    assert r.status_code == 400 and r.json()["detail"] == (
        f"`image` must not name a file: this server reads no files (start it with --input-dir DIR), "
        f"but got {str(secret)!r}")

    opened = serve("--input-dir", str(inputs))
    for name in (str(secret), "../secret.png", str(inputs / "still.png")):
        r = opened.call("POST", "/streams", ia(name))
        assert r.status_code == 400 and r.json()["detail"].startswith(
            "`image` must be a file name inside the server's input folder"), (name, r.text)
    r = opened.call("POST", "/streams", ia("missing.png"))
    assert r.status_code == 400 and r.json()["detail"] == "`image` must be an existing image file, but got 'missing.png'"
    r = opened.call("POST", "/streams", ia("still.png"))
    assert r.status_code == 201, r.text
    first = opened.wait(r.json()["id"], lambda st: st["frames"] >= 1)
    assert first["state"] == "live" and (first["width"], first["height"]) == (32, 32)
