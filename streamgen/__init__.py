"""streamgen: endless image and video generation, patch by patch (NUWA-Infinity).

    import streamgen
    engine = streamgen.load()                      # the shipped model, its text encoder and preset
    for frame in engine.run("t2v", prompt="a sunset sky over desert dunes", frames=8):
        ...                                        # uint8 (128, 128, 3), one frame at a time
"""
from streamgen.bundle import load
from streamgen.config import PRESETS, Extent, ModelConfig, SamplingConfig
from streamgen.engine import Engine, StreamRequest
from streamgen.engine.adc import ORDERS, Plan, split, split_video
from streamgen.engine.ncp import NearbyContextPool
from streamgen.errors import ConfigError, StreamgenError
from streamgen.model import VisionDecoder
from streamgen.plugins.hookspecs import hookimpl

__all__ = [
    "load", "Engine", "StreamRequest", "ModelConfig", "SamplingConfig", "Extent", "PRESETS", "ORDERS", "Plan",
    "split", "split_video", "NearbyContextPool", "VisionDecoder", "hookimpl", "ConfigError", "StreamgenError",
]
__version__ = "0.2.0"
