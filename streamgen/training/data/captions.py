"""Captions a person would write for the procedural landscapes, with a vocabulary split for the eval.

`landscapes.caption` names every attribute value with one or two fixed words in eight templates, so a
model trained on it learns keyword lookup: prompts written by other people ("at dusk", "a tracking shot
to the left", "sand dunes") miss. This module names each value of `landscapes.ATTRIBUTES` -- skies day,
sunset, night; terrains grassy hills, snowy mountains, desert dunes; the lake (when there is one); camera
motions pan left, pan right, still -- with a wide vocabulary (synonyms, descriptions, colours, times of
day, the film-maker's words for camera moves) in many sentence shapes, with optional extra words that
name nothing and partial captions. `describe` makes a caption, `vocabulary` lists the words and phrases
of a value, `mentions` reads back which value of each attribute a caption names.

The vocabulary split
    For every value, the phrases in `HELD_OUT_WORDS` (about a quarter, at least five, fixed by hand so
    they never change) are never produced by ``split="train"``; ``split="eval"`` draws attribute words
    only from them. So an eval in the "eval" split measures wordings the model has never seen, not new
    arrangements of words it has. Held-out phrases are whole word families where possible ("dusk" and
    "evening" for sunset, "noon" and "daylight" for day, "truck" and "crab" for the pans, "locked-off"
    and "tripod" for the still camera), so their key words never occur in training captions either.
    Templates and filler words are shared between the splits, except `_EVAL_TEMPLATES`: the shapes of
    the eval's own "unseen wordings" captions, which training never uses.

    Every phrase of `landscapes.caption` and `landscapes.partial_caption` is in the train split (the
    existing eval's "seen wordings" keep their meaning). Two of the eval's "unseen" sky wordings overlap
    them: "a bright daytime sky" is itself a `landscapes.caption` phrase, and "a dark sky at night"
    contains its "at night"; those stay in training, "a dark sky" is held out.

Phrases and matching
    A phrase matches a caption as a whole word sequence, case-insensitively, with punctuation and
    hyphens read as spaces ("locked-off" matches "locked off") and a leading "a", "an" or "the" of the
    phrase ignored ("the setting sun" matches "under a setting sun"). No phrase of one value contains a
    phrase of another value (of any attribute), and no train phrase of a value contains or is contained
    in one of its held-out phrases; templates and fillers contain no phrase. So every caption made here
    names exactly the values it means to, and `mentions` can read them back.

Conventions for borderline words (each word belongs to one value only)
    * Sunset is the warm low sun at either end of the day: "twilight", "dusk", "evening", "golden hour",
      "magic hour", "sundown", "sunrise", "dawn" and warm sky colours ("an orange sky", "a pink and
      orange sky") are sunset; the renderer draws one warm sky for all of them.
    * Night is dark with stars or a moon: "midnight", "after dark", "moonlit", "a dark sky" are night.
    * Day is the high sun: "morning", "afternoon", "noon", blue skies are day.
    * Words that sit on a boundary are left out: "nightfall", "blue hour", "late afternoon", "early
      morning", "golden" alone, "dark" alone.
    * Warm colours of the ground belong to the terrain ("golden dunes", "ochre sands" are desert
      dunes), so a model learns that they do not make the sky a sunset.
    * A camera that "pans left" turns towards smaller world x (the scene slides right in the frame), as
      in `landscapes`; "from right to left" is a pan left. Trucking, crabbing, tracking and dollying
      sideways are read as pans: the renderer draws all of them as one lateral move.
    * "still" alone, "left", "right", "pan" alone, "sky" and "sun" alone name nothing: they are
      ambiguous or too common ("still water", "to the left of the hills").
    * A caption without a lake phrase says nothing about the lake; captions never negate ("no lake").
"""
from __future__ import annotations

import random
import re

from streamgen.errors import bad
from streamgen.training.data.landscapes import ATTRIBUTES, Scene

__all__ = ["HELD_OUT_WORDS", "SPLITS", "PARTIALS", "describe", "find_phrases", "mentions", "vocabulary"]

SPLITS = ("train", "eval")
PARTIALS = (None, "sky", "terrain", "landscape")

# --------------------------------------------------------------------------------------------------
# vocabulary: per value, per grammatical role (the template slot it fills), every phrase of both splits

# sky roles: "np" a noun phrase ("under {sky}"), "when" an adverbial ("at dusk"), "mod" a word placed
# before a terrain ("moonlit dunes"); motion roles: "tag" a fragment after a comma, "clause" a clause
# with its subject, "shot" a noun phrase for the shot ("{shot} over hills"), "adv" a phrase that follows
# the scene ("hills as the camera pans left")
_VOCAB: dict[tuple[str, object], dict[str, tuple[str, ...]]] = {
    ("sky", "day"): {
        "np": ("a clear blue day sky", "a bright daytime sky", "a day sky", "a clear blue sky",
               "a bright blue sky", "a sunny sky", "the midday sky", "a cloudless blue sky",
               "a summer afternoon sky", "a morning sky", "the bright sun overhead",
               "an azure sky", "a cerulean sky", "the noonday sky", "a daylight sky"),
        "when": ("during the day", "on a sunny day", "in the daytime", "by day", "at midday",
                 "under the midday sun", "in the middle of the day", "in the afternoon",
                 "in the morning sunshine", "on a bright afternoon", "in full sunshine",
                 "at noon", "at high noon", "in broad daylight", "at lunchtime"),
        "mod": ("sunlit", "sunny", "daytime", "midday", "sun-drenched", "day", "noontime", "daylit"),
    },
    ("sky", "sunset"): {
        "np": ("a sunset sky", "a glowing orange sunset", "a fiery sunset", "a golden sunset",
               "the setting sun", "a sinking sun", "an orange sky", "a pink and orange sky",
               "a red sky", "a crimson sky", "a twilight sky", "the golden hour sky",
               "a sunrise", "the first light of dawn", "a blazing sunset",
               "an orange evening sky at dusk", "an evening sky", "an amber sky",
               "a peach-coloured sky"),
        "when": ("at sunset", "at twilight", "at golden hour", "as the sun sets", "as the sun goes down",
                 "at sunrise", "at dawn", "at daybreak", "at magic hour", "when the sun is low",
                 "at dusk", "in the evening", "at sundown", "as evening falls"),
        "mod": ("sunset", "twilight", "golden-hour", "dawn", "sunset-lit", "dusk-lit", "sundown"),
    },
    ("sky", "night"): {
        "np": ("a starry night sky", "a dark night sky with a moon", "a night sky", "a starry sky",
               "a sky full of stars", "a moonlit sky", "a full moon", "a crescent moon",
               "the milky way", "a star-filled sky", "the night", "a black sky with stars",
               "a dark sky", "a pitch-black sky", "the midnight sky"),
        "when": ("at night", "on a moonlit night", "by night", "at nighttime", "under the stars",
                 "under a full moon", "late at night", "in the middle of the night",
                 "after dark", "at midnight", "by moonlight", "by starlight"),
        "mod": ("moonlit", "night-time", "nighttime", "night", "starry", "midnight", "starlit",
                "nocturnal"),
    },
    ("terrain", "grassy hills"): {
        "np": ("grassy hills", "rolling grassy hills", "hills", "rolling hills", "green hills",
               "a green hillside", "grassy slopes", "meadows", "green meadows", "rolling meadows",
               "grassland", "pastures", "green pastures", "the countryside", "lush green hills",
               "hill country", "gentle hills", "a grassy ridge", "verdant hills", "farmland",
               "green fields on hills", "hillsides of grass", "a hilly meadow", "grassy mounds",
               "rolling downs", "downland", "grassy knolls", "green knolls", "hillocks",
               "turf-covered rises", "rolling prairie", "emerald slopes"),
    },
    ("terrain", "snowy mountains"): {
        "np": ("snowy mountains", "jagged snowy mountains", "mountains", "snow-capped mountains",
               "snow-capped peaks", "snowy peaks", "peaks", "a mountain range", "the alps",
               "alpine peaks", "high mountains", "rocky peaks covered in snow", "white-capped mountains",
               "icy peaks", "a glacier", "summits", "snowy summits", "the himalayas", "frosted peaks",
               "craggy mountains", "mountaintops", "a snowy range", "towering mountains",
               "a snowbound massif", "the rockies", "the andes", "a sierra", "white pinnacles",
               "ice-clad spires", "glacial crags", "frozen ridgelines"),
    },
    ("terrain", "desert dunes"): {
        "np": ("desert dunes", "sandy desert dunes", "dunes", "sand dunes", "the desert", "a sandy desert",
               "golden dunes", "orange sand dunes", "red sand dunes", "rippled sand", "a sea of sand",
               "rolling dunes", "the sahara", "an arid desert", "sand", "towering dunes", "dune fields",
               "a desert landscape", "windswept dunes", "a dry desert", "curving sand ridges",
               "tan dunes", "dunes of fine sand",
               "an erg", "barchans", "the namib", "the kalahari", "the empty quarter",
               "wind-sculpted sands", "ochre sands", "arid sands"),
    },
    ("lake", True): {
        "np": ("a lake", "a calm lake", "a small lake", "the lakeshore", "the lakeside", "a quiet lake",
               "a glassy lake", "a clear lake", "a shimmering lake", "calm water", "open water",
               "a stretch of water", "a body of water", "a placid lake", "the water's edge",
               "a lake in the foreground", "smooth water", "a sparkling lake", "a lake with reflections",
               "a lake shore", "a wide lake", "gentle water",
               "a pond", "a tarn", "a loch", "a reservoir", "a reflecting pool", "a lagoon",
               "a millpond"),
    },
    ("motion", "pan left"): {
        "tag": ("panning left", "pan left", "panning to the left", "slow pan left", "tracking left",
                "camera tracking left", "dolly left", "gliding left", "sweeping left", "moving left",
                "camera moves left", "leftward pan", "sideways move to the left",
                "trucking left", "truck left", "crabbing left", "crab left"),
        "clause": ("the camera pans left", "the camera pans to the left", "the camera tracks left",
                   "the camera glides to the left", "the camera sweeps left", "the camera moves to the left",
                   "the camera dollies left", "the view pans leftward",
                   "the camera trucks left", "the camera crabs to the left",
                   "the camera travels from right to left"),
        "shot": ("a slow pan to the left", "a pan to the left", "a leftward pan", "a tracking shot to the left",
                 "a dolly shot to the left", "a slow leftward glide",
                 "a trucking shot to the left", "a crab shot from right to left"),
        "adv": ("as the camera pans left", "with the camera panning left", "as the view sweeps left",
                "while the camera tracks to the left",
                "as the camera trucks left", "with the camera crabbing leftwards"),
    },
    ("motion", "pan right"): {
        "tag": ("panning right", "pan right", "panning to the right", "slow pan right", "tracking right",
                "camera tracking right", "dolly right", "gliding right", "sweeping right", "moving right",
                "camera moves right", "rightward pan", "sideways move to the right",
                "trucking right", "truck right", "crabbing right", "crab right"),
        "clause": ("the camera pans right", "the camera pans to the right", "the camera tracks right",
                   "the camera glides to the right", "the camera sweeps right", "the camera moves to the right",
                   "the camera dollies right", "the view pans rightward",
                   "the camera trucks right", "the camera crabs to the right",
                   "the camera travels from left to right"),
        "shot": ("a slow pan to the right", "a pan to the right", "a rightward pan",
                 "a tracking shot to the right", "a dolly shot to the right", "a slow rightward glide",
                 "a trucking shot to the right", "a crab shot from left to right"),
        "adv": ("as the camera pans right", "with the camera panning right", "as the view sweeps right",
                "while the camera tracks to the right",
                "as the camera trucks right", "with the camera crabbing rightwards"),
    },
    ("motion", "still"): {
        "tag": ("still camera", "static camera", "static shot", "fixed camera", "no camera movement",
                "stationary camera", "motionless camera", "unmoving camera", "fixed frame",
                "locked-off camera", "locked-off shot", "tripod shot", "on a tripod"),
        "clause": ("the camera is still", "the camera stays still", "the camera does not move",
                   "the camera holds still", "the camera is fixed in place", "the view stays fixed",
                   "the camera is locked off", "the camera sits on a tripod"),
        "shot": ("a still shot", "a fixed shot", "a stationary shot", "a static wide view",
                 "a motionless view", "a locked-down shot"),
        "adv": ("seen from a still camera", "seen from a fixed viewpoint", "with no camera movement",
                "from a static camera", "with the camera held still",
                "shot from a tripod", "with the camera locked down"),
    },
}

# the held-out half of the split (see the module docstring): fixed by hand, never produced for training
HELD_OUT_WORDS: dict[tuple[str, object], tuple[str, ...]] = {
    ("sky", "day"): ("an azure sky", "a cerulean sky", "the noonday sky", "a daylight sky", "at noon",
                     "at high noon", "in broad daylight", "at lunchtime", "noontime", "daylit"),
    ("sky", "sunset"): ("an orange evening sky at dusk", "an evening sky", "an amber sky",
                        "a peach-coloured sky", "at dusk", "in the evening", "at sundown", "as evening falls",
                        "dusk-lit", "sundown"),
    ("sky", "night"): ("a dark sky", "a pitch-black sky", "the midnight sky", "after dark", "at midnight",
                       "by moonlight", "by starlight", "midnight", "starlit", "nocturnal"),
    ("terrain", "grassy hills"): ("rolling downs", "downland", "grassy knolls", "green knolls", "hillocks",
                                  "turf-covered rises", "rolling prairie", "emerald slopes"),
    ("terrain", "snowy mountains"): ("a snowbound massif", "the rockies", "the andes", "a sierra",
                                     "white pinnacles", "ice-clad spires", "glacial crags",
                                     "frozen ridgelines"),
    ("terrain", "desert dunes"): ("an erg", "barchans", "the namib", "the kalahari", "the empty quarter",
                                  "wind-sculpted sands", "ochre sands", "arid sands"),
    ("lake", True): ("a pond", "a tarn", "a loch", "a reservoir", "a reflecting pool", "a lagoon",
                     "a millpond"),
    ("motion", "pan left"): ("trucking left", "truck left", "crabbing left", "crab left", "the camera trucks left",
                             "the camera crabs to the left", "the camera travels from right to left",
                             "a trucking shot to the left", "a crab shot from right to left",
                             "as the camera trucks left", "with the camera crabbing leftwards"),
    ("motion", "pan right"): ("trucking right", "truck right", "crabbing right", "crab right",
                              "the camera trucks right", "the camera crabs to the right",
                              "the camera travels from left to right", "a trucking shot to the right",
                              "a crab shot from left to right", "as the camera trucks right",
                              "with the camera crabbing rightwards"),
    ("motion", "still"): ("locked-off camera", "locked-off shot", "tripod shot", "on a tripod",
                          "the camera is locked off", "the camera sits on a tripod", "a locked-down shot",
                          "shot from a tripod", "with the camera locked down"),
}

_ROLES = {"sky": ("np", "when", "mod"), "terrain": ("np",), "lake": ("np",),
          "motion": ("tag", "clause", "shot", "adv")}
_ARTICLES = ("a", "an", "the")

# --------------------------------------------------------------------------------------------------
# templates: {slot} takes a phrase of the scene's value in a role (see `_SLOTS`); [...] is written only
# when the scene has a lake. Whole captions name the sky, the terrain, the lake and (videos) the motion.

_SLOTS = {"sky": ("sky", "np"), "sky_when": ("sky", "when"), "sky_mod": ("sky", "mod"),
          "terrain": ("terrain", "np"), "terrain_bare": ("terrain", "np"), "lake": ("lake", "np"),
          "m_tag": ("motion", "tag"), "m_clause": ("motion", "clause"), "m_shot": ("motion", "shot"),
          "m_adv": ("motion", "adv")}

_VIDEO_TEMPLATES = (
    "{sky} over {terrain}[ with {lake}], {m_clause}",
    "{terrain}[ and {lake}] under {sky}, {m_tag}",
    "{terrain}[ by {lake}] {sky_when}, {m_adv}",
    "{m_shot} across {terrain}[ beside {lake}] {sky_when}",
    "landscape {sky_when}: {terrain}[ and {lake}], {m_tag}",
    "{terrain}[ with {lake}] beneath {sky} {m_adv}",
    "a wide view of {terrain}[ and {lake}] {sky_when}, {m_clause}",
    "{sky} above {terrain}[ beside {lake}], {m_tag}",
    "{m_clause} over {terrain}[ and {lake}] {sky_when}",
    "{m_shot} over {sky_mod} {terrain_bare}[ with {lake}]",
    "{sky_when}, {m_clause} across {terrain}[ and {lake}]",
    "{m_tag}: {terrain}[ and {lake}] under {sky}",
    "{sky_mod} {terrain_bare}[ with {lake}], {m_tag}",
    "{terrain}, [{lake}, ]{sky}, {m_tag}",
    "{m_tag}, {sky}, {terrain}[, {lake}]",
    "{sky_when} over {terrain}[ and {lake}], {m_tag}",
    "{m_shot} showing {sky} over {terrain}[ and {lake}]",
    "{terrain}[ around {lake}] {sky_when} {m_adv}",
    "{sky}; {terrain}[; {lake}]; {m_tag}",
    "{m_clause}, showing {terrain}[ and {lake}] {sky_when}",
    "{terrain}[ beside {lake}] lit by {sky}, {m_tag}",
    "{sky} and {terrain}[ and {lake}], {m_clause}",
    "{m_tag} over {sky_mod} {terrain_bare}[ and {lake}]",
    "[{lake} among ]{terrain} {sky_when}, {m_tag}",
    "{sky_when} {m_clause}, taking in {terrain}[ and {lake}]",
    "{m_shot} over {terrain}[ and {lake}] {sky_when}",
    "{terrain}[ beside {lake}], {m_clause} {sky_when}",
)
_STILL_TEMPLATES = (
    "{sky} over {terrain}[ with {lake}]",
    "{terrain}[ and {lake}] under {sky}",
    "{terrain}[ by {lake}] {sky_when}",
    "{terrain}[ beside {lake}] {sky_when}",
    "landscape {sky_when}: {terrain}[ and {lake}]",
    "{terrain}[ with {lake}] beneath {sky}",
    "a wide view of {terrain}[ and {lake}] {sky_when}",
    "{sky} above {terrain}[ beside {lake}]",
    "{sky_mod} {terrain_bare}[ with {lake}]",
    "{sky_when}, {terrain}[ and {lake}]",
    "{terrain}, [{lake}, ]{sky}",
    "{sky}, {terrain}[, {lake}]",
    "{sky_when} over {terrain}[ and {lake}]",
    "{sky}; {terrain}[; {lake}]",
    "{terrain}[ beside {lake}] lit by {sky}",
    "{sky} and {terrain}[ and {lake}]",
    "[{lake} among ]{terrain} {sky_when}",
    "the view {sky_when}: {terrain}[ and {lake}]",
    "{terrain}[ around {lake}] under {sky}",
    "[{lake} in front of ]{terrain}, {sky_when}",
    "{sky} behind {terrain}[ and {lake}]",
    "{terrain}[ with {lake}] seen {sky_when}",
    "a view of {terrain}[ and {lake}] under {sky}",
)
# the shapes of the eval's "unseen wordings" captions (`streamgen.evaluation._UNSEEN_TEMPLATES`):
# drawn by the "eval" split only, so those captions stay unseen in shape as well as in words
_EVAL_TEMPLATES = {
    "video": ("{terrain}, pictured with {sky}[, with {lake}], {m_tag}",
              "scenery: {sky} and {terrain}[, with {lake}], {m_tag}",
              "{sky} stretching over {terrain}[, with {lake}], {m_clause}"),
    "still": ("{terrain}, pictured with {sky}[, with {lake}]",
              "scenery: {sky} and {terrain}[, with {lake}]",
              "{sky} stretching over {terrain}[, with {lake}]"),
}
# partial captions: only the sky (and the motion for videos), only the terrain and lake (and motion);
# "landscape" (sky, terrain and lake without the motion) uses the still templates
_PARTIAL_TEMPLATES = {
    ("sky", "video"): ("{sky}, {m_tag}", "a landscape {sky_when}, {m_tag}", "{sky}, {m_clause}",
                       "{m_shot} under {sky}", "{sky_when}, {m_clause}", "{m_tag} under {sky}",
                       "{sky} {m_adv}"),
    ("sky", "still"): ("{sky}", "a landscape {sky_when}", "the view {sky_when}", "{sky}, landscape",
                       "a {sky_mod} landscape"),
    ("terrain", "video"): ("{terrain}[ with {lake}], {m_clause}", "{m_shot} over {terrain}[ and {lake}]",
                           "{terrain}[ beside {lake}], {m_tag}", "{terrain}[ and {lake}] {m_adv}",
                           "{m_tag}: {terrain}[ and {lake}]", "{m_shot} across {terrain}[ and {lake}]"),
    ("terrain", "still"): ("{terrain}[ with {lake}]", "{terrain}[ beside {lake}]", "[{lake} among ]{terrain}",
                           "a view of {terrain}[ and {lake}]", "{terrain}[, {lake}]"),
}

# a shot is followed by "over", "across" or "under", never "of": "a pan to the left of the hills"
# would read as a place, not a move

# words that name nothing: a prefix (videos or stills), up to two suffixes, an adjective before a terrain
_PREFIX = {"video": ("a video of ", "footage of ", "a clip of ", "video: ", "cinematic footage of ",
                     "a short film of "),
           "still": ("a photo of ", "a picture of ", "an image of ", "a photograph of ", "a painting of ",
                     "wallpaper: ")}
_PREFIX_ANY = ("cinematic, ", "wide shot: ", "establishing shot: ", "beautiful view: ", "peaceful, ",
               "4k: ")
_SUFFIX = ("4k", "8k", "cinematic", "peaceful", "highly detailed", "wide shot", "beautiful", "serene",
           "photorealistic", "nature documentary", "ultra hd", "high resolution", "award-winning",
           "relaxing", "epic", "quiet mood", "sharp focus", "masterpiece")
_ADJECTIVES = ("beautiful", "vast", "distant", "peaceful", "quiet", "majestic", "remote", "endless",
               "lonely", "wild")


# --------------------------------------------------------------------------------------------------
# matching

def _tokens(text: str) -> list[re.Match]:
    return list(re.finditer(r"[a-z0-9]+", text.lower()))


def _key(phrase: str) -> tuple[str, ...]:
    """The word sequence a phrase matches: lower case, punctuation as spaces, no leading article."""
    words = [m.group() for m in _tokens(phrase)]
    return tuple(words[1:] if len(words) > 1 and words[0] in _ARTICLES else words)


def _check_value(attribute: str, value) -> tuple[str, object]:
    if attribute not in ATTRIBUTES:
        raise bad("attribute", f"must be one of {tuple(ATTRIBUTES)}", attribute)
    if value not in ATTRIBUTES[attribute] or (attribute == "lake" and not isinstance(value, bool)):
        raise bad("value", f"must be one of {ATTRIBUTES[attribute]} for {attribute!r}", value)
    return attribute, value


def _split_of(attribute: str, value, phrase: str) -> str:
    return "eval" if phrase in HELD_OUT_WORDS.get((attribute, value), ()) else "train"


def _phrases(attribute: str, value, role: str, split: str) -> tuple[str, ...]:
    roles = _VOCAB.get((attribute, value), {})
    return tuple(p for p in roles.get(role, ()) if _split_of(attribute, value, p) == split)


def vocabulary(attribute: str, value, split: str = "train") -> tuple[str, ...]:
    """The words and phrases naming ``value`` of ``attribute`` in ``split`` ("train", "eval" or "all"),
    one per matched word sequence, in a fixed order. The lake's False has none: captions say nothing
    about a missing lake."""
    _check_value(attribute, value)
    if split not in SPLITS + ("all",):
        raise bad("split", f"must be one of {SPLITS + ('all',)}", split)
    seen, out = set(), []
    for role in _ROLES[attribute]:
        for phrase in _VOCAB.get((attribute, value), {}).get(role, ()):
            if split != "all" and _split_of(attribute, value, phrase) != split:
                continue
            if _key(phrase) not in seen:
                seen.add(_key(phrase))
                out.append(phrase)
    return tuple(out)


def _index() -> dict[str, list[tuple[tuple[str, ...], str, object, str]]]:
    """First word -> (word sequence, attribute, value, phrase) of every phrase of both splits."""
    index: dict[str, list] = {}
    for (attribute, value) in _VOCAB:
        for phrase in vocabulary(attribute, value, "all"):
            key = _key(phrase)
            index.setdefault(key[0], []).append((key, attribute, value, phrase))
    return index


_INDEX = _index()


def find_phrases(text: str) -> list[tuple[str, object, str, int, int]]:
    """Every vocabulary phrase in ``text`` as (attribute, value, phrase, start, end): character offsets
    of the matched words; overlapping matches are all listed."""
    if not isinstance(text, str):
        raise bad("text", "must be a str", text)
    toks = _tokens(text)
    words = [m.group() for m in toks]
    found = []
    for i, word in enumerate(words):
        for key, attribute, value, phrase in _INDEX.get(word, ()):
            if tuple(words[i:i + len(key)]) == key:
                found.append((attribute, value, phrase, toks[i].start(), toks[i + len(key) - 1].end()))
    return found


def mentions(text: str) -> dict[str, object]:
    """Which value of each attribute ``text`` names: {"sky": "sunset" or None, "terrain": ...,
    "lake": True or None, "motion": ...}. None: the attribute is not named. A text naming two values
    of one attribute ("from day into night") is a `ConfigError`: a caption must not contradict itself."""
    named: dict[str, set] = {a: set() for a in ATTRIBUTES}
    for attribute, value, _, _, _ in find_phrases(text):
        named[attribute].add(value)
    out = {}
    for attribute, values in named.items():
        if len(values) > 1:
            raise bad("text", f"must name at most one {attribute}, names {sorted(map(str, values))}", text)
        out[attribute] = next(iter(values)) if values else None
    return out


# --------------------------------------------------------------------------------------------------
# captions

def _fill(template: str, scene: Scene, rng: random.Random, split: str) -> str:
    template = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1) if scene.lake else "", template)
    values = {"sky": scene.sky, "terrain": scene.terrain, "lake": True, "motion": scene.motion}

    def slot(m: re.Match) -> str:
        name = m.group(1)
        attribute, role = _SLOTS[name]
        phrase = rng.choice(_phrases(attribute, values[attribute], role, split))
        if name == "terrain_bare" or (name == "terrain" and rng.random() < 0.2):
            words = phrase.split(" ")
            bare = " ".join(words[1:]) if words[0] in _ARTICLES and len(words) > 1 else phrase
            # an adjective that names nothing, before a bare terrain ("distant hills", "vast sahara")
            phrase = bare if name == "terrain_bare" else f"{rng.choice(_ADJECTIVES)} {bare}"
        return phrase

    return re.sub(r"\{(\w+)\}", slot, template)


def _templates(split: str, video: bool, partial: str | None) -> tuple[str, ...]:
    kind = "video" if video and partial != "landscape" else "still"
    if partial in ("sky", "terrain"):
        return _PARTIAL_TEMPLATES[(partial, kind)]
    base = _VIDEO_TEMPLATES if kind == "video" else _STILL_TEMPLATES
    return base + _EVAL_TEMPLATES[kind] if split == "eval" else base


def describe(scene: Scene, rng: random.Random, *, split: str = "train", video: bool = True,
             partial: str | None = None) -> str:
    """A caption of ``scene`` as a person might write it, drawn with ``rng`` (the same rng state gives
    the same caption).

    ``split="train"`` names values only with train phrases, ``"eval"`` only with `HELD_OUT_WORDS`.
    ``video=False`` leaves the motion out. ``partial``: None names everything; "sky" only the sky,
    "terrain" only the terrain and the lake (both with the motion, for videos); "landscape" the sky,
    terrain and lake without the motion.
    """
    if not isinstance(scene, Scene):
        raise bad("scene", "must be a landscapes.Scene", scene)
    if not isinstance(rng, random.Random):
        raise bad("rng", "must be a random.Random", rng)
    if split not in SPLITS:
        raise bad("split", f"must be one of {SPLITS}", split)
    if not isinstance(video, bool):
        raise bad("video", "must be a bool", video)
    if partial not in PARTIALS:
        raise bad("partial", f"must be one of {PARTIALS}", partial)
    kind = "video" if video and partial != "landscape" else "still"
    text = _fill(rng.choice(_templates(split, video, partial)), scene, rng, split)
    # extra words that name nothing, as people add them to prompts
    if rng.random() < 0.3:
        text = rng.choice(_PREFIX[kind] + _PREFIX_ANY) + text
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2))):
        text += ", " + rng.choice(_SUFFIX)
    if rng.random() < 0.25:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.15:
        text += "."
    return text
