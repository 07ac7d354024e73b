"""BitFit (Ben Zaken et al. 2021): train every bias term of the backbone, nothing else.

"Every bias" is every backbone parameter whose name ends in ``.bias``: the Linear biases
(qkv, proj, fc1, fc2), the LayerNorm biases (norm1, norm2, final norm) and the
patch-embedding convolution's bias, as in the BitFit baselines of VPT/NOAH (which train
all of ``*.bias``). LayerNorm *weights*, cls token and position embedding stay frozen.

Size on ViT-B/16: 12 blocks x (2,304 + 768 + 3,072 + 768 + 768 + 768) + 768 (patch
embedding) + 768 (final norm) = 102,912 fp32 values = 411,648 bytes = 0.393 MiB; Table 1
lists BitFit at 0.39 MB. (Without the LayerNorm biases it would be 83,712 = 0.32 MiB, so
the Size column includes them.)

The biases are the backbone's own tensors: they are stored under their names in the timm
model and copied back on load; ``merge`` is a no-op (nothing to fold).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from heartbench.adapters.base import MethodConfig, register
from heartbench.adapters.full import BackboneTensors


@dataclass
class BitFitConfig(MethodConfig):
    """BitFit has no hyper-parameters of its own."""


@register("bitfit")
class BitFit(BackboneTensors):
    """All ``*.bias`` parameters of the backbone are trainable and stored."""

    config_cls = BitFitConfig

    def selects(self, name: str, param: nn.Parameter) -> bool:
        return name.rsplit(".", 1)[-1] == "bias"
