"""streamgen: endless image and video generation, patch by patch (NUWA-Infinity)."""
from .adc import ORDERS, Plan, split, split_video
from .config import Extent, ModelConfig, SamplingConfig, PRESETS
from .engine import Engine, StreamRequest
from .errors import ConfigError, StreamgenError
from .hookspecs import hookimpl
from .model import VisionDecoder
from .ncp import NearbyContextPool

__all__ = [
    "ORDERS", "Plan", "split", "split_video", "Extent", "ModelConfig", "SamplingConfig", "PRESETS",
    "Engine", "StreamRequest", "hookimpl", "ConfigError", "StreamgenError", "VisionDecoder", "NearbyContextPool",
]
__version__ = "0.1.0"
