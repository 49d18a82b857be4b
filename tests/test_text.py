"""The text encoders: MiniLM's token states, and the sentence embeddings of a prompt's word windows."""
import pytest
import torch

from streamgen.bundle import load
from streamgen.config import ModelConfig, parse
from streamgen.errors import ConfigError
from streamgen.plugins import manager
from streamgen.text import MiniLMEncoder, MiniLMPhraseEncoder
from streamgen.testing import tiny_folder


@pytest.fixture(scope="module")
def phrases():
    torch.set_num_threads(1)
    return MiniLMPhraseEncoder(window=3)


def test_a_prompt_is_cut_into_overlapping_windows_of_words():
    assert MiniLMPhraseEncoder.windows("Night over the Desert dunes", 3) == [
        "night over the", "over the desert", "the desert dunes"]
    assert MiniLMPhraseEncoder.windows("a red sky", 3) == ["a red sky"]
    assert MiniLMPhraseEncoder.windows("dunes", 2) == ["dunes"]


def test_each_window_is_its_sentence_embedding_whatever_else_is_in_the_batch(phrases):
    long, short = "a full moon over verdant hills", "night"
    states, mask = phrases.encode([long, short])
    assert states.shape == (2, 4, 384) and mask.tolist() == [[True] * 4, [True, False, False, False]]
    alone = phrases.sentence(["moon over verdant"])[0]
    torch.testing.assert_close(states[0, 2], alone, rtol=0, atol=0)
    torch.testing.assert_close(phrases.encode([long])[0][0], states[0], rtol=0, atol=0)
    assert torch.all(states[1, 1:] == 0)
    # paraphrases land closer together than different skies
    night, moon, noon = (phrases.sentence([p])[0] for p in ("night sky", "moonlit sky", "noon sky"))
    assert night @ moon > night @ noon


def test_the_window_cache_is_bounded():
    enc = MiniLMPhraseEncoder(window=1, cache=3)
    enc.encode(["one two three four five"])
    assert list(enc._cache) == ["three", "four", "five"]


def test_a_model_folder_loads_the_text_encoder_its_config_names(tmp_path):
    assert {"minilm", "minilm-phrases"} <= set(manager().text_encoders.names())
    assert ModelConfig().text_encoder == "minilm"  # the models made before the field
    with pytest.raises(ConfigError, match="text_encoder"):
        parse(ModelConfig, {"text_encoder": ""})
    tiny_folder(tmp_path, text_dim=384, text_encoder="minilm-phrases")
    engine = load(tmp_path)
    assert type(engine.text_encoder) is MiniLMPhraseEncoder and engine.text_encoder.window == 2
    assert type(load(tmp_path, text_encoder="minilm").text_encoder) is MiniLMEncoder
    frames = engine.run("t2i", prompt="a red sky over snowy peaks", width=32, height=32, seed=1)
    assert len(list(frames)) == 1
