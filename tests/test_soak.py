"""A short soak (the full 10,000-frame run is benchmarks/soak.py): flat RSS, no leaked descriptors,
strictly increasing pts read back from the file."""
import importlib.util
import pathlib
import sys

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the script imports its sibling _common
SPEC = importlib.util.spec_from_file_location(
    "soak", pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py")
soak_mod = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(soak_mod)


def test_short_soak(tmp_path):
    r = soak_mod.soak(300, str(tmp_path / "soak.mkv"))
    assert r["pts_ok"] and r["packets"] == 300
    assert r["fds1"] <= r["fds0"]
    assert r["rss_late"] <= r["rss_early"] * 1.05


def test_streams_that_come_and_go_leave_no_encoder_behind():
    """A server opens a live view (an x264 encoder into fragmented MP4) for every stream; one that is
    closed must free its encoder, or a server's memory grows with every stream come and gone (about
    0.6 MB each at 128x128 when the finished sink still held its PyAV stream)."""
    import numpy as np

    from _common import rss_mb
    from streamgen.serve.video import LiveView

    frames = np.random.default_rng(0).integers(0, 255, (6, 128, 128, 3), dtype=np.uint8)

    def views(n):
        for _ in range(n):
            view = LiveView(fps=8, size=(128, 128), publish=lambda item: None)
            for i, f in enumerate(frames):
                view.write(f, i, 0.0)
            view.close()

    views(20)  # the allocator's and x264's first buffers
    before = rss_mb()
    views(100)
    assert rss_mb() - before < 15, f"{rss_mb() - before:.1f} MB more after 100 live views"
