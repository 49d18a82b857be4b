"""The procedural captioned landscapes (streamgen.training.data.landscapes)."""
import itertools
import re

import numpy as np
import pytest

from streamgen.training.data import landscapes as L
from streamgen.training.data.landscapes import ATTRIBUTES, HELD_OUT, Scene, caption, render, sample_scene
from streamgen.errors import ConfigError

SKIES, TERRAINS, MOTIONS = ATTRIBUTES["sky"], ATTRIBUTES["terrain"], ATTRIBUTES["motion"]


def all_scenes(seed=3, motion="still"):
    return [Scene(s, t, lake, motion, seed) for s in SKIES for t in TERRAINS for lake in (False, True)]


def test_attributes_and_held_out():
    assert ATTRIBUTES == {
        "sky": ("day", "sunset", "night"),
        "terrain": ("grassy hills", "snowy mountains", "desert dunes"),
        "lake": (False, True),
        "motion": ("pan left", "pan right", "still"),
    }
    assert HELD_OUT == ({"sky": "night", "terrain": "desert dunes"},
                        {"sky": "sunset", "terrain": "snowy mountains"})
    assert Scene("night", "desert dunes", True, "still", 0).is_held_out()
    assert Scene("sunset", "snowy mountains", False, "pan left", 0).is_held_out()
    assert not Scene("night", "snowy mountains", False, "still", 0).is_held_out()
    assert not Scene("day", "desert dunes", False, "still", 0).is_held_out()


@pytest.mark.parametrize("bad", [dict(sky="noon"), dict(terrain="forest"), dict(lake=1),
                                 dict(motion="zoom"), dict(seed=1.5)])
def test_scene_validation(bad):
    kw = dict(sky="day", terrain="grassy hills", lake=False, motion="still", seed=0) | bad
    field = next(iter(bad))
    with pytest.raises(ConfigError, match=re.escape(f"`Scene.{field}` must be") + ".* but got"):
        Scene(**kw)


def test_sample_scene_deterministic():
    for seed in (0, 1, 12345, 2**40 + 7, -3):
        assert sample_scene(seed) == sample_scene(seed)
        assert sample_scene(seed, "all").seed == seed
    assert len({sample_scene(s, "all") for s in range(50)}) > 30
    with pytest.raises(ConfigError, match="`split` must be one of .* but got 'test'"):
        sample_scene(0, "test")


def test_splits():
    train = [sample_scene(s, "train") for s in range(3000)]
    held = [sample_scene(s, "heldout") for s in range(300)]
    everything = [sample_scene(s, "all") for s in range(1000)]
    assert not any(sc.is_held_out() for sc in train)
    assert all(sc.is_held_out() for sc in held)
    combos = lambda scenes: {(sc.sky, sc.terrain) for sc in scenes}  # noqa: E731
    assert len(combos(train)) == 7 and len(combos(everything)) == 9
    assert combos(held) == {(h["sky"], h["terrain"]) for h in HELD_OUT}
    for scenes in (train, held):
        assert {sc.lake for sc in scenes} == {False, True}
        assert {sc.motion for sc in scenes} == set(MOTIONS)
    # roughly uniform over the allowed sky + terrain combinations
    counts = np.array([sum((sc.sky, sc.terrain) == c for sc in train) for c in combos(train)])
    assert counts.min() > 0.7 * len(train) / 7


def test_shapes_and_dtype():
    sc = sample_scene(0, "all")
    for (h, w, f) in [(64, 64, 1), (48, 80, 3), (17, 5, 2), (128, 96, 2), (1, 1, 1)]:
        out = render(sc, h, w, frames=f)
        assert out.shape == (f, h, w, 3) and out.dtype == np.uint8
    with pytest.raises(ConfigError, match="`height` must be an int >= 1, but got 0"):
        render(sc, 0, 8)
    with pytest.raises(ConfigError, match="`frames` must be an int >= 1, but got -2"):
        render(sc, 8, 8, frames=-2)
    with pytest.raises(ConfigError, match="`width` must be an int >= 1, but got 0.5"):
        render(sc, 8, 0.5)


def test_render_deterministic_and_seeded():
    sc = Scene("day", "snowy mountains", True, "pan left", 11)
    assert np.array_equal(render(sc, 64, 64, 4), render(sc, 64, 64, 4))
    other = Scene("day", "snowy mountains", True, "pan left", 12)
    assert np.abs(render(sc, 64, 64).astype(int) - render(other, 64, 64)).mean() > 2


@pytest.mark.parametrize("motion", MOTIONS)
def test_width_consistency(motion):
    for sc in all_scenes(seed=5, motion=motion):
        wide = render(sc, 64, 150, frames=3)
        for w1 in (1, 37, 64):
            assert np.array_equal(wide[..., :w1, :], render(sc, 64, w1, frames=3)), sc


def test_x0_offset_consistency():
    for sc in all_scenes(seed=8, motion="pan right")[::2]:
        for k in (1, 7, 64, 300):
            wide = render(sc, 64, 40 + k, frames=2)
            shifted = render(sc, 64, 40, frames=2, x0=k)
            assert np.array_equal(shifted[0], wide[0][:, k:]), (sc, k)
            assert np.array_equal(shifted, wide[:, :, k:]), (sc, k)  # every frame, in fact
    # non-integer and large offsets render fine (the codec trainer uses x0 in [0, 4096))
    out = render(sample_scene(1), 64, 64, frames=2, x0=4095.3)
    assert out.shape == (2, 64, 64, 3)


@pytest.mark.parametrize("height", [64, 128])
def test_pan_is_a_camera_translation(height):
    speed = height // 16
    bottom = slice(height - height // 8, height)  # near ridge / near shore rows
    for terrain, lake in itertools.product(TERRAINS, (False, True)):
        for motion, sign in (("pan left", 1), ("pan right", -1)):
            v = render(Scene("day", terrain, lake, motion, 21), height, 64, frames=3).astype(int)
            for t in range(2):
                a, b = v[t, bottom], v[t + 1, bottom]
                # pan left: the scene slides right, frame t+1 at column c = frame t at c - speed
                same = b[:, speed:] - a[:, :-speed] if sign > 0 else b[:, :-speed] - a[:, speed:]
                wrong = b[:, :-speed] - a[:, speed:] if sign > 0 else b[:, speed:] - a[:, :-speed]
                assert np.abs(same).max() <= 1 and np.abs(same).mean() < 0.01, (terrain, lake, motion)
                assert np.abs(wrong).mean() > 1.0, (terrain, lake, motion)


def test_speed_and_still():
    sc = Scene("sunset", "desert dunes", False, "pan right", 4)
    v = render(sc, 64, 64, frames=2, speed=2).astype(int)
    assert np.array_equal(v[1, -8:, :-2], v[0, -8:, 2:])
    still = render(Scene("day", "grassy hills", True, "still", 4), 64, 64, frames=12).astype(int)
    assert np.array_equal(still[0, 40:], still[-1, 40:])      # terrain and lake do not move
    assert np.abs(still[-1, :24] - still[0, :24]).max() > 30  # but the clouds drift
    assert np.abs(still[-1, :24] - still[0, :24]).mean() > 0.2


def test_captions():
    assert L.paraphrase_count() >= 6
    sky_words = {"day": "day", "sunset": "sunset", "night": "night"}
    for sc in (Scene(s, t, lake, m, 0) for s in SKIES for t in TERRAINS for lake in (False, True)
               for m in MOTIONS):
        videos = [caption(sc, v) for v in range(L.paraphrase_count())]
        stills = [caption(sc, v, video=False) for v in range(L.paraphrase_count())]
        assert len(set(videos)) == L.paraphrase_count() == len(set(stills))
        for text, video in [(c, True) for c in videos] + [(c, False) for c in stills]:
            assert text == text.strip() and "  " not in text and text == text.lower()
            words = set(re.findall(r"[a-z]+", text))
            assert [s for s in SKIES if sky_words[s] in text] == [sc.sky], text
            assert [t for t in TERRAINS if t in text] == [sc.terrain], text
            assert ("lake" in words) == sc.lake, text
            motion_words = {"pan", "pans", "panning", "left", "right", "still", "camera", "shot"}
            if not video:
                assert not words & motion_words, text
            elif sc.motion == "still":
                assert "still" in words and not words & {"pan", "pans", "panning", "left", "right"}
            else:
                side = sc.motion.split()[1]
                assert side in words and ({"left", "right"} - {side}).isdisjoint(words), text
                assert words & {"pan", "pans", "panning"}, text
    sc = Scene("sunset", "snowy mountains", True, "pan left", 0)
    assert caption(sc, 0) == "a sunset sky over snowy mountains with a lake, the camera pans left"
    assert caption(sc, 0, video=False) == "a sunset sky over snowy mountains with a lake"
    assert caption(sc) == caption(sc) in videos_of(sc)
    assert caption(sc, L.paraphrase_count() + 2) == caption(sc, 2)
    picked = {caption(sample_scene(s), video=False).split(" ")[0] for s in range(60)}
    assert len(picked) > 3  # None picks different templates for different seeds


def videos_of(sc):
    return [caption(sc, v) for v in range(L.paraphrase_count())]


def _means(sky, terrain, rows, seeds=range(6), lakes=(False, True)):
    return np.array([render(Scene(sky, terrain, lake, "still", s), 64, 64)[0, rows].reshape(-1, 3)
                     .mean(0) for s in seeds for lake in lakes])


def test_skies_differ():
    sky_rows = slice(0, 20)
    means = {s: np.concatenate([_means(s, t, sky_rows) for t in TERRAINS]) for s in SKIES}
    day, sunset, night = (means[s].mean(0) for s in SKIES)
    assert night.mean() < 0.4 * day.mean() and night.mean() < 0.4 * sunset.mean()
    assert day[2] > day[0] + 60          # blue
    assert sunset[0] > sunset[1] + 40    # warm: orange, pink, purple
    # every single image is on the right side of simple thresholds
    assert means["night"].mean(1).max() < means["day"].mean(1).min()
    assert means["night"].mean(1).max() < means["sunset"].mean(1).min()
    assert (means["day"][:, 2] - means["day"][:, 0]).min() > 40
    assert (means["sunset"][:, 0] - means["sunset"][:, 2]).min() > 0
    assert (means["sunset"][:, 0] - means["sunset"][:, 1]).min() > 30
    # and whole frames too
    whole = {s: np.concatenate([_means(s, t, slice(None)) for t in TERRAINS]).mean(0) for s in SKIES}
    for a, b in itertools.combinations(SKIES, 2):
        assert np.linalg.norm(whole[a] - whole[b]) > 40, (a, b)


@pytest.mark.parametrize("sky", SKIES)
def test_terrains_differ(sky):
    lower = slice(32, 64)
    feats = {t: _means(sky, t, lower) for t in TERRAINS}
    centroids = {t: f.mean(0) for t, f in feats.items()}
    for a, b in itertools.combinations(TERRAINS, 2):
        assert np.linalg.norm(centroids[a] - centroids[b]) > 20, (sky, a, b)
    # a nearest-centroid classifier on the lower-half mean colour gets most images right
    correct = sum(min(TERRAINS, key=lambda c: np.linalg.norm(x - centroids[c])) == t
                  for t, f in feats.items() for x in f)
    assert correct >= 0.85 * sum(len(f) for f in feats.values())


def test_night_keeps_colour_cues():
    def lower(terrain):
        return _means("night", terrain, slice(40, 64), lakes=(False,)).mean(0)
    hills, snow, dunes = lower("grassy hills"), lower("snowy mountains"), lower("desert dunes")
    assert hills[1] > hills[0] + 15                 # green-teal
    assert snow[2] > snow[0] + 15                    # bluish
    assert dunes[0] > dunes[2] + 10                  # orange-brown
    for m in (hills, snow, dunes):
        assert m.mean() > 25                         # not black


def test_lake_is_visible():
    # the lake band differs from the same scene without a lake
    for sky, terrain in itertools.product(SKIES, TERRAINS):
        a = render(Scene(sky, terrain, True, "still", 2), 64, 64)[0].astype(int)
        b = render(Scene(sky, terrain, False, "still", 2), 64, 64)[0].astype(int)
        assert np.abs(a[36:52] - b[36:52]).mean() > 10, (sky, terrain)
