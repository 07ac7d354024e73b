"""Image transforms of the two protocols (VTAB-1K and few-shot).

VTAB-1K (Bi-LoRA, VPT, SSF and the paper): bicubic squash-resize to size x size, ToTensor,
no normalisation unless asked (FacT and NOAH normalise with ImageNet statistics).
Few-shot (NOAH): RandomResizedCrop + flip + ColorJitter + RandAugment
"rand-m9-mstd0.5-inc1" + ImageNet normalisation; test: resize to size*256/224, centre crop.
"""

from __future__ import annotations

from collections.abc import Callable

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
    color_jitter: float | None = 0.4,
    auto_augment: str | None = RAND_AUGMENT,
) -> Callable:
    """NOAH's few-shot training augmentation.

    Note: timm's own ``create_transform`` (which NOAH calls) silently drops ColorJitter when
    RandAugment is on; pass ``color_jitter=None`` to reproduce that exactly. The default
    keeps ColorJitter(0.4) as the written recipe says.
    """
    from timm.data.auto_augment import rand_augment_transform
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
    return T.Compose(steps)


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
