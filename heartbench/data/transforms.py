"""Image transforms of the two protocols (VTAB-1K and few-shot).

VTAB-1K (Bi-LoRA, VPT, SSF and the paper): bicubic squash-resize to size x size, ToTensor,
no normalisation unless asked (FacT and NOAH normalise with ImageNet statistics).
Few-shot (NOAH's ``supernet_train_prompt.py`` with its argparse defaults, protocol.md):
RandomResizedCrop + flip + RandAugment "rand-m9-mstd0.5-inc1" + ImageNet normalisation +
RandomErasing(0.25, "pixel"); no ColorJitter (timm's ``create_transform``, which NOAH calls,
drops it when an auto-augment policy is given); on each batch Mixup 0.8 / CutMix 1.0 (timm
``Mixup``, prob 1, switch prob 0.5, "batch" mode) with label smoothing 0.1 in its soft
targets, and SoftTargetCrossEntropy (:func:`batch_recipe`). Test: resize to size*256/224,
centre crop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RAND_AUGMENT = "rand-m9-mstd0.5-inc1"


class ToRGB:
    """Convert any PIL image (greyscale, palette, RGBA) to RGB.

    A class rather than a lambda so that DataLoader workers can pickle the transform.
    """

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def vtab_transform(size: int = 224, normalize: bool = False) -> Callable:
    """Bicubic squash-resize to (size, size) then ToTensor; optional ImageNet normalisation."""
    from torchvision import transforms as T

    steps: list = [
        ToRGB(),
        T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
    ]
    if normalize:
        steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return T.Compose(steps)


def fewshot_train_transform(
    size: int = 224,
    color_jitter: float | None = None,
    auto_augment: str | None = RAND_AUGMENT,
    reprob: float = 0.25,
) -> Callable:
    """NOAH's few-shot training augmentation.

    ``color_jitter`` stays off by default: timm's ``create_transform`` (which NOAH calls)
    ignores its color-jitter 0.4 when RandAugment is on. ``reprob``: timm's RandomErasing
    (per-pixel normal noise, one box) on the normalised tensor, as NOAH's ``--reprob 0.25``.
    """
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms as T

    steps: list = [
        ToRGB(),
        T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
    ]
    if auto_augment:
        # The same hyper-parameters timm's transforms_imagenet_train passes.
        hparams = {
            "translate_const": int(size * 0.45),
            "img_mean": tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN),
            "interpolation": Image.BICUBIC,
        }
        steps.append(_pillow_safe(rand_augment_transform(auto_augment, hparams)))
    if color_jitter:
        steps.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if reprob > 0:
        steps.append(RandomErasing(reprob, mode="pixel", max_count=1, device="cpu"))
    return T.Compose(steps)


class BatchMixer:
    """timm's Mixup/CutMix on a batch; an odd batch loses its last sample first (timm's
    "batch" mode needs an even batch, NOAH's loaders drop the last incomplete batch)."""

    def __init__(self, mixup: Any) -> None:
        self.mixup = mixup

    def __call__(self, images: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(labels) % 2:
            images, labels = images[:-1], labels[:-1]
        return self.mixup(images, labels)


def batch_recipe(train: dict[str, Any], num_classes: int
                 ) -> tuple[BatchMixer | None, torch.nn.Module]:
    """(batch mixer or None, loss) from the train keys, as NOAH's main script builds them:
    Mixup/CutMix active -> SoftTargetCrossEntropy on the mixed, smoothed targets; else label
    smoothing alone -> LabelSmoothingCrossEntropy; else plain cross-entropy (VTAB)."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    mixup, cutmix = train.get("mixup", 0.0), train.get("cutmix", 0.0)
    smoothing = train.get("label_smoothing", 0.0)
    if mixup > 0 or cutmix > 0:
        mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5,
                      mode="batch", label_smoothing=smoothing, num_classes=num_classes)
        return BatchMixer(mixer), SoftTargetCrossEntropy()
    if smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing)
    return None, torch.nn.CrossEntropyLoss()


def posterize_bits(img: Image.Image, bits_to_keep: int, **_: object) -> Image.Image:
    """Keep the top ``bits_to_keep`` bits of every channel; 0 bits gives a black image.

    timm's "inc" RandAugment with magnitude noise asks for 0 bits at the top level; Pillow
    12+ refuses 0 (older Pillow returned the black image), which crashed few-shot runs at
    random. Same mask arithmetic as ``ImageOps.posterize``, so 1-7 bits are unchanged.
    """
    if bits_to_keep >= 8:
        return img
    mask = ~(2 ** (8 - max(0, int(bits_to_keep))) - 1) & 0xFF
    return img.point([i & mask for i in range(256)] * len(img.getbands()))


def _pillow_safe(rand_augment: Callable) -> Callable:
    """Route the RandAugment posterize ops through :func:`posterize_bits`."""
    for op in getattr(rand_augment, "ops", []):
        if op.name.startswith("Posterize"):
            op.aug_fn = posterize_bits
    return rand_augment


def fewshot_test_size(size: int) -> int:
    """The resize before the centre crop: 256 for 224, in proportion otherwise."""
    return int(size * 256 / 224)


def fewshot_test_transform(size: int = 224) -> Callable:
    """Squash-resize to size*256/224 squared, centre crop size, normalise."""
    from torchvision import transforms as T

    resize = fewshot_test_size(size)
    return T.Compose(
        [
            ToRGB(),
            T.Resize((resize, resize), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
