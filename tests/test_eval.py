import numpy as np
import pytest

from streamgen import evaluate as E
from streamgen.cli import main
from streamgen.data import landscapes as L


def test_attribute_classifier_reads_ground_truth():
    clf = E.AttributeClassifier.fit(size=64, per_combo=6)
    frames, labels = E.render_set(64, 3, seed=4242)
    pred = clf.predict(frames)
    for a in ("sky", "terrain"):
        assert (pred[a] == labels[a]).float().mean() >= 0.95, a


@pytest.mark.parametrize("motion", ["pan left", "pan right", "still"])
def test_camera_motion_reads_ground_truth(motion):
    for seed in range(3):
        scene = L.Scene("day", "grassy hills", False, motion, seed)
        assert E.camera_motion(L.render(scene, 64, 64, frames=4)) == motion


def test_seam_score_sees_seams():
    img = L.render(L.sample_scene(1), 64, 256)[0]
    assert E.seam_score(img, 32) < 1.3
    broken = img.copy()
    broken[:, 32::32] = 255 - broken[:, 32::32]  # a bright line at every patch boundary
    assert E.seam_score(broken, 32) > 2


def test_eval_command_runs_end_to_end(capsys):
    assert main(["eval", "--model", "tiny", "--samples", "2", "--frames", "3", "--drift-frames", "10",
                 "--size", "32", "--wide-patches", "8", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for what in ("classifier sky accuracy on ground truth", "camera-motion accuracy", "seam score", "FID",
                 "Block-FID", "drift"):
        assert what in out
