"""Codecs between frames and visual tokens, imported as ``streamgen.codecs``."""
from .neural import NeuralCodec
from .palette import PaletteCodec
from .vqgan import CodecConfig, PixelGuidedDecoder, VQGAN

__all__ = ["CodecConfig", "NeuralCodec", "PaletteCodec", "PixelGuidedDecoder", "VQGAN"]
