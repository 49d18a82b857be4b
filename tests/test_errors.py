import pytest

from streamgen import ConfigError, ModelConfig, StreamgenError

# (request overrides, parameter named in the message, value shown in the message)
BAD = [
    (dict(height=20), "height", "20"),                   # not a multiple of 2 px x 4 tokens
    (dict(width=12), "width", "12"),
    (dict(height=0), "height", "0"),
    (dict(width=-8), "width", "-8"),
    (dict(frames=0), "frames", "0"),
    (dict(frames=-3), "frames", "-3"),
    (dict(order="spiral"), "order", "'spiral'"),
    (dict(extent=dict(w=-1, h=1, f=1)), "extent.w", "-1"),
    (dict(extent=dict(w=1, h=2, f=1)), "extent.h", "2"),  # larger than the model's window
    (dict(extent=dict(w=1, h=1, f=9)), "extent.f", "9"),
    (dict(seed=-1), "seed", "-1"),
    (dict(sampling=dict(temperature=float("nan"))), "sampling.temperature", "nan"),
    (dict(sampling=dict(top_p=0.0)), "sampling.top_p", "0.0"),
    (dict(colour="red"), "colour", "'red'"),
]


@pytest.mark.parametrize("over,param,value", BAD)
def test_bad_requests_raise_before_any_work(engine, over, param, value):
    request = dict(height=16, width=16, frames=2, seed=0)
    request.update(over)
    with pytest.raises(ConfigError) as info:
        engine.stream(**request)
    msg = str(info.value)
    assert f"`{param}`" in msg and value in msg
    assert engine.stats.patches == 0
    assert isinstance(info.value, StreamgenError)


def test_size_message_says_the_rule():
    from streamgen.testing import tiny_engine

    with pytest.raises(ConfigError, match=r"`height` must be a positive multiple of 8 \(codec factor 2 "
                                          r"x patch height 4 tokens\), but got 20"):
        tiny_engine().stream(height=20, width=16)


def test_model_config_rules():
    from streamgen.config import parse

    with pytest.raises(ConfigError, match=r"`heads` must divide `width` \(30\), but got 4"):
        parse(ModelConfig, dict(width=30, heads=4))
    with pytest.raises(ConfigError, match=r"`extent.f`: .*greater than or equal to 0 \(got -1\)"):
        parse(ModelConfig, dict(extent=dict(f=-1)))
