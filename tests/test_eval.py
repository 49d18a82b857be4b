import numpy as np
import pytest
import torch

from streamgen import evaluation as E
from streamgen.cli import main
from streamgen.training.data import landscapes as L


def test_attribute_classifier_reads_ground_truth():
    clf = E.AttributeClassifier.fit(size=64, per_combo=6)
    frames, labels = E.render_set(64, 3, seed=4242)
    pred = clf.predict(frames)
    for a in ("sky", "terrain"):
        assert (pred[a] == labels[a]).float().mean() >= 0.95, a


@pytest.mark.parametrize("blur, noise", [(4, 0.0), (1, 16.0)])
def test_attribute_classifier_reads_degraded_frames(blur, noise):
    """Generated frames come blurred by the codec and speckled by sampling; the reader must still read
    them (fitted on sharp renders alone it misread, at 128 px, 14% of 4-blurred terrains and 67% of noisy ones)."""
    clf = E.AttributeClassifier.fit(size=64, per_combo=6)
    frames, labels = E.render_set(64, 3, seed=4242)
    pred = clf.predict(E.degrade(frames, blur, noise, seed=5))
    for a in ("sky", "terrain"):
        assert (pred[a] == labels[a]).float().mean() >= 0.95, a


def test_degrade():
    frames = E.render_set(32, 1, seed=1)[0][:2]
    assert np.array_equal(E.degrade(frames), frames)
    soft = E.degrade(frames, blur=4)
    assert soft.shape == frames.shape and soft.dtype == np.uint8
    grad = lambda x: np.abs(np.diff(x.astype(float), axis=2)).mean()  # noqa: E731
    assert grad(soft) < 0.7 * grad(frames)
    noisy = E.degrade(frames, noise=16.0, seed=3)
    assert 8 < np.abs(noisy.astype(float) - frames).mean() < 16
    assert np.array_equal(noisy, E.degrade(frames, noise=16.0, seed=3))
    odd = frames[:, :30, :27]  # sizes that are not multiples of the blur: nothing is cropped
    soft_odd = E.degrade(odd, blur=8)
    assert soft_odd.shape == odd.shape
    assert np.abs(soft_odd.astype(float).mean((1, 2)) - odd.astype(float).mean((1, 2))).max() < 6


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
                 "Block-FID", "drift", "sky accuracy (held-out combinations, held-out words)",
                 "camera-motion accuracy (held-out combinations, held-out words)"):
        assert what in out


def test_eval_seam_score_is_the_mean_over_its_wide_canvases(capsys):
    from streamgen.bundle import load
    from streamgen.config import DEFAULT_SAMPLING
    engine = load("tiny")
    res = E.run_eval(engine, samples=2, frames=3, drift_frames=0, size=32, wide_patches=4,
                     wide_canvases=3, seed=5, log=lambda line: None)
    px = engine.codec.factor * engine.model.cfg.patch_w
    scores = [E.seam_score(next(engine.run("uig", height=32, width=4 * px, seed=5 + k,
                                           sampling=dict(DEFAULT_SAMPLING, guidance=1.0))), px) for k in range(3)]
    assert len(set(scores)) == 3  # three different canvases
    assert res["seam score (4 patches wide, mean of 3 canvases)"] == pytest.approx(np.mean(scores))
    for option, value, message in (("--wide-canvases", "0", "`wide_canvases` must be at least 1, but got 0"),
                                   ("--samples", "0", "`samples` must be at least 1, but got 0"),
                                   ("--threads", "0", "`threads` must be at least 1, but got 0"),
                                   ("--drift-frames", "5", "`drift_frames` must be 0 (no drift row) or at least 8")):
        assert main(["eval", "--model", "tiny", "--threads", "1", option, value]) == 2  # the last value counts
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def _always_night_desert(self, frames):
    """A reader that says night + desert dunes of every frame."""
    n = len(frames)
    return {"sky": torch.full((n,), L.ATTRIBUTES["sky"].index("night")),
            "terrain": torch.full((n,), L.ATTRIBUTES["terrain"].index("desert dunes"))}


def test_eval_samples_with_the_sampling_it_is_given_over_the_preset(monkeypatch, capsys):
    from streamgen.testing import HashTextEncoder, tiny_engine

    engine = tiny_engine(text_dim=8, pnar=True)  # "tiny" with P-NAR
    engine.text_encoder = HashTextEncoder(8)
    seen = []
    run = type(engine).run
    monkeypatch.setattr(type(engine), "run", lambda self, task, request=None, **f: (
        seen.append((task, f.get("sampling"))), run(self, task, request, **f))[1])
    E.run_eval(engine, samples=1, frames=2, drift_frames=0, size=32, wide_patches=2, wide_canvases=1,
               sampling={"local": "pnar", "pnar_steps": 2, "top_k": 8}, log=lambda line: None)
    assert seen and all(s["local"] == "pnar" and s["pnar_steps"] == 2 and s["top_k"] == 8 for _, s in seen)
    assert {s["guidance"] for t, s in seen if t == "uig"} == {1.0}  # unconditional rows stay unguided
    assert {s["guidance"] for t, s in seen if t != "uig"} == {engine.preset["guidance"]}
    for value, message in (('{"top_k": 0}', "`sampling.top_k`: Input should be greater than or equal to 1"),
                           ('{"top_k": 8', "`sampling` must be a JSON object (Expecting ',' delimiter)"),
                           ("[1]", "`sampling` must be a JSON object of sampling fields, but got '[1]'")):
        assert main(["eval", "--model", "tiny", "--threads", "1", "--sampling", value]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_eval_counts_images_with_both_attributes_right(monkeypatch):
    """With a reader that always says night + desert dunes: on training combinations the sky is right
    for night scenes and the terrain for desert ones, never both; on held-out ones both are right
    exactly for the night + desert scenes."""
    from streamgen.bundle import load

    monkeypatch.setattr(E.AttributeClassifier, "predict", _always_night_desert)
    samples, seed = 8, 3
    res = E.run_eval(load("tiny"), samples=samples, frames=2, drift_frames=0, size=32, wide_patches=2,
                     wide_canvases=1, seed=seed, log=lambda line: None)
    train = [L.sample_scene(seed * 1000 + i, split="train") for i in range(samples)]
    held = [L.sample_scene(seed * 1000 + i, split="heldout") for i in range(samples)]
    assert res["sky accuracy (training combinations)"] == sum(s.sky == "night" for s in train) / samples > 0
    desert = sum(s.terrain == "desert dunes" for s in train) / samples
    assert res["terrain accuracy (training combinations)"] == desert > 0
    assert res["sky+terrain right (training combinations)"] == 0
    night_desert = sum(s.sky == "night" for s in held) / samples
    assert 0 < night_desert < 1
    for what in ("sky accuracy", "terrain accuracy", "sky+terrain right"):
        assert res[f"{what} (held-out combinations)"] == night_desert


def test_eval_logs_each_figure_as_it_is_measured():
    from streamgen.bundle import load
    engine = load("tiny")
    seen = []  # (line, frames the engine had generated when the line was logged)
    res = E.run_eval(engine, samples=2, frames=3, drift_frames=10, size=32, wide_patches=4,
                     log=lambda line: seen.append((line, engine.stats.frames)))
    assert len(seen) == len(res) and all(k in line for k, (line, _) in zip(res, seen))
    assert seen[0][1] == 0 and "ground truth" in seen[0][0]  # before anything was generated
    assert seen[-1][1] > seen[0][1]


@pytest.mark.parametrize("motion", ["pan left", "pan right", "still"])
def test_camera_motion_reads_token_aligned_pans(motion):
    # the default model's training pans: one 16 px token per frame at 128 px
    for seed in range(2):
        scene = L.Scene("night", "desert dunes", True, motion, seed)
        assert E.camera_motion(L.render(scene, 128, 128, frames=4, speed=16)) == motion


def test_unseen_wordings_are_not_training_captions():
    for i in range(40):
        scene = L.sample_scene(i)
        text = E.unseen_caption(scene, i)
        seen = {L.caption(scene, v, video=v % 2 == 0) for v in range(2 * L.paraphrase_count())}
        assert text not in seen and scene.terrain in text


def test_temporal_error_of_a_still_clip_is_zero_for_the_plain_decoder():
    import torch

    from streamgen.codecs import CodecConfig, VQGAN
    from streamgen.codecs.neural import NeuralCodec
    from streamgen.codecs.vqgan import PixelGuidedDecoder

    torch.manual_seed(0)
    vq = VQGAN(CodecConfig(factor=8, codebook_size=16, code_dim=8, channels=[8, 8, 16, 16]))
    pg = PixelGuidedDecoder.from_vqgan(vq)
    with torch.no_grad():  # a PG decoder that uses its guide: the chained output drifts
        for p in pg.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    codec = NeuralCodec(vq, pg)
    still = torch.from_numpy(L.render(L.Scene("day", "grassy hills", False, "still", 3), 32, 32, frames=4))
    still[1:] = still[0]
    plain, chained = E.temporal_errors(codec, still)
    assert plain == 0.0 and chained > 0.0


def test_eval_reads_codec_reconstructions_of_held_out_combinations(monkeypatch):
    """The codec never trains on the held-out combinations: the eval reads its reconstructions of
    them apart (what the codec's own tokens of true renders would score on the held-out rows). Half of
    those renders are night + desert dunes."""
    from streamgen.bundle import load
    from streamgen.codecs import VQGAN, CodecConfig
    from streamgen.codecs.neural import NeuralCodec

    engine = load("tiny")
    torch.manual_seed(0)
    engine.codec = NeuralCodec(VQGAN(CodecConfig(factor=8, codebook_size=engine.model.cfg.vocab_size,
                                                 code_dim=8, channels=[8, 8, 16, 16])), None)
    monkeypatch.setattr(E.AttributeClassifier, "predict", _always_night_desert)
    res = E.run_eval(engine, samples=2, frames=2, drift_frames=0, size=32, wide_patches=2,
                     wide_canvases=1, log=lambda line: None)
    for a in ("sky", "terrain"):
        assert res[f"classifier {a} accuracy on codec reconstructions (held-out combinations)"] == 0.5
        assert 0 < res[f"classifier {a} accuracy on codec reconstructions"] < 0.5  # 3 skies, 3 terrains
