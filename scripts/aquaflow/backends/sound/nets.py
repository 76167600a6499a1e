"""The networks of the sound backends: a class head and a CORAL distance head on any features."""

from __future__ import annotations

import timm
import torch
from coral_pytorch.layers import CoralLayer
from torch import nn


class TwoHeads(nn.Module):
    """Features -> (class logits (n, classes), CORAL logits (n, bins-1))."""

    def __init__(self, features: int, classes: int, bins: int, hidden: int = 0):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.ReLU()) if hidden else nn.Identity()
        width = hidden or features
        self.classes = nn.Linear(width, classes)
        self.distance = CoralLayer(width, bins)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.classes(h), self.distance(h)


class MelCNN(nn.Module):
    """A timm CNN (1 input channel) on standardised log-mel spectrograms, with TwoHeads."""

    def __init__(self, arch: str, classes: int, bins: int, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.backbone = timm.create_model(arch, pretrained=False, in_chans=1, num_classes=0)
        self.heads = TwoHeads(self.backbone.num_features, classes, bins)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = ((mel - self.mean) / self.std).unsqueeze(1)
        return self.heads(self.backbone(x))


class EmbeddingHead(nn.Module):
    """A trainable head on (cached) embeddings: standardisation, one hidden layer, TwoHeads."""

    def __init__(self, dim: int, classes: int, bins: int, hidden: int = 64):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.heads = TwoHeads(dim, classes, bins, hidden)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads((emb - self.mean) / self.std)
