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
