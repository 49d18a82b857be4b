"""The vision decoder: its training forward over a planned sequence of patches, and the cached path
(workspace, context, prefill, one token at a time) that the engine drives during generation."""
from streamgen.model.decoder import TextMemory, VisionDecoder, Workspace, xformers_attention

__all__ = ["TextMemory", "VisionDecoder", "Workspace", "xformers_attention"]
