"""A small CNN that grades images, for the VAE's optional auxiliary grade loss.

It learns to grade the REAL training images; the decoder is then asked to make
reconstructions this probe grades as their true grade (the probe's weights frozen for that
term, so the two cannot agree on a private code). Because the generator learnt from a
grader, it must be judged by another, independently trained one (the audit's judge).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.func import functional_call


class GradeProbe(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, num_classes) logits: four stride-2 conv stages, pooled."""

    def __init__(self, num_classes: int, width: int = 16, channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(4):
            c_out = width * 2**i
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                nn.GroupNorm(4, c_out),
                nn.SiLU(),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def frozen(self, x: Tensor) -> Tensor:
        """Logits with the probe's weights held fixed: gradients reach x only."""
        params = {name: p.detach() for name, p in self.named_parameters()}
        return functional_call(self, params, (x,))
