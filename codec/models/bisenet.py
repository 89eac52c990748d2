"""BiSeNet face parsing (`79999_iter.pth` of zllrunning/face-parsing.PyTorch): the network of eq. 9's L_FP.

Layout (the checkpoint is a bare state_dict; module names below are part of the file format):
- `cp` context path: `cp.resnet` a ResNet18 trunk (`conv1` 7x7/2, `bn1`, max-pool, `layer1..4` of two basic
  blocks, `downsample.{0,1}` in the first block of layers 2-4, no `fc`) giving features at 1/8, 1/16, 1/32;
  `arm16`/`arm32` attention refinement (ConvBNReLU `conv`, 1x1 `conv_atten`, `bn_atten`), `conv_avg` (global
  context), `conv_head32`/`conv_head16` (ConvBNReLU: `conv` + `bn`, no bias).
- No spatial path: the release builds none (its class exists in model.py, unused); the trunk's 1/8 feature
  takes its place in `ffm`, the feature fusion (`convblk`, squeeze `conv1`, excite `conv2`).
- Heads `conv_out` (on the fusion), `conv_out16`, `conv_out32` (auxiliary, training only): ConvBNReLU `conv`
  then a 1x1 `conv_out` to the 19 classes. The official forward upsamples the 1/8 logits bilinearly
  (align_corners=True) to the output size.

Input convention of the release: RGB resized to 512x512 (PIL bilinear), in [0, 1], normalised with ImageNet
mean/std. `parse` takes images in [-1, 1] of any size, does that, and returns softmax probabilities at the
input's size, differentiably. The official ResNet18 downloads torchvision's ImageNet weights when built;
this one is always built empty (every weight comes from the checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from codec.errors import ModelError
from codec.models.irse import fill_missing_batch_counters
from codec.models.safe_load import load_checkpoint, load_strict

NET_INPUT = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# CelebAMask-HQ labels as face-parsing.PyTorch numbers them (its mask preparation enumerates the attribute
# names from 1; 0 is background).
CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(branch + shortcut)


class ResNet18Trunk(nn.Module):
    """ResNet18 without pooling head or fc: features at strides 8, 16 and 32 (128, 256, 512 channels)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 64, 128, 256, 512)
        for i in range(1, 5):
            stride = 1 if i == 1 else 2
            layer = nn.Sequential(BasicBlock(widths[i - 1], widths[i], stride), BasicBlock(widths[i], widths[i], 1))
            setattr(self, f"layer{i}", layer)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    """conv, then channel gating by a sigmoid of the globally pooled result."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * gate


class ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = ResNet18Trunk()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3)
        self.conv_head16 = ConvBNReLU(128, 128, 3)
        self.conv_avg = ConvBNReLU(512, 128, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (trunk feature at 1/8, context at 1/8, context at 1/16); upsampling is nearest, as released."""
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))  # broadcasts as a nearest upsampling would
        up32 = self.conv_head32(F.interpolate(self.arm32(feat32) + context, size=feat16.shape[-2:], mode="nearest"))
        up16 = self.conv_head16(F.interpolate(self.arm16(feat16) + up32, size=feat8.shape[-2:], mode="nearest"))
        return feat8, up16, up32


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat + feat * gate


class OutputHead(nn.Module):
    def __init__(self, cin: int, mid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    def __init__(self, n_classes: int = len(CLASSES)):
        super().__init__()
        self.n_classes = n_classes
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256, n_classes)
        self.conv_out16 = OutputHead(128, 64, n_classes)
        self.conv_out32 = OutputHead(128, 64, n_classes)

    def forward(self, x: torch.Tensor, out_size: tuple[int, int] | None = None,
                aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised images [B, 3, H, W] -> class logits [B, n_classes, *out_size] (default (H, W)).

        `aux=True` also returns the two auxiliary heads' logits (training outputs, as the release's forward)."""
        size = tuple(out_size) if out_size is not None else tuple(x.shape[-2:])
        feat8, context8, context16 = self.cp(x)
        heads = [self.conv_out(self.ffm(feat8, context8))]
        if aux:
            heads += [self.conv_out16(context8), self.conv_out32(context16)]
        logits = [F.interpolate(h, size=size, mode="bilinear", align_corners=True) for h in heads]
        return tuple(logits) if aux else logits[0]


def load_bisenet(path_or_state: str | Path | Mapping[str, torch.Tensor]) -> BiSeNet:
    """Load `79999_iter.pth` (a bare state_dict) strict; frozen, in eval mode."""
    state = load_checkpoint(path_or_state, "BiSeNet face parsing")
    state = state.get("state_dict", state)
    try:
        n_classes = int(state["conv_out.conv_out.weight"].shape[0])
    except (KeyError, AttributeError, IndexError) as exc:
        raise ModelError(f"BiSeNet face parsing: layout not recognised (no conv_out.conv_out.weight: {exc})") from exc
    net = BiSeNet(n_classes)
    load_strict(net, fill_missing_batch_counters(net, state), "BiSeNet face parsing")
    return net.eval().requires_grad_(False)


def seeded_standin(seed: int = 0) -> BiSeNet:
    """The release's architecture with seeded random weights: for tests, not a real face parser.

    BatchNorm statistics come from one seeded batch of smooth random images (as arcface's stand-in does), so
    activations keep a sane range and the output depends on the input.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = BiSeNet()
        net.train()
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # cumulative average: one batch sets the statistics exactly
        coarse = torch.rand(8, 3, 8, 8, generator=generator) * 2 - 1
        with torch.no_grad():
            net(normalise(F.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)))
    return net.eval().requires_grad_(False)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> the release's input: [0, 1] minus ImageNet mean, over ImageNet std."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


def parse(net: BiSeNet, images: torch.Tensor, size: int | None = NET_INPUT) -> torch.Tensor:
    """Images [B, 3, H, W] in [-1, 1] -> per-pixel class probabilities [B, n_classes, H, W] (softmax).

    The images are resized to `size` x `size` (bilinear, antialiased when shrinking, as PIL's resize of the
    release's demo; None keeps the input size, e.g. for the tiny model's renders and the stand-in); the
    logits are upsampled straight from the net's 1/8 resolution to (H, W). Differentiable in the images.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
    x = images
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return net(normalise(x), out_size=images.shape[-2:]).softmax(dim=1)


def face_parsing_loss(net: BiSeNet, images: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                      size: int | None = NET_INPUT, targets_parsed: bool = False) -> torch.Tensor:
    """L_FP of eq. 9: per-sample [B] mean over pixels (over the mask's area with a mask [B or 1, 1, H, W]) of
    the L1 distance between the class probabilities of `images` and of `targets`.

    The targets are the fixed frames the encoder matches: they are parsed without gradient, and
    `targets_parsed=True` takes their probabilities from an earlier `parse` (parse once, optimise many steps).

    Why L1 of the probabilities rather than a cross-entropy against the target's: per pixel it is twice the
    total-variation distance of the two class distributions, so it is 0 exactly when they agree, symmetric
    and bounded by 2. A cross-entropy is not 0 for identical inputs (it equals the target's entropy), and it
    (like a KL) grows without bound where the render gives a class the target is sure of almost no
    probability, which is what a part boundary shifted by a pixel or two does: those few pixels would then
    outweigh the other, bounded, image terms of eq. 9.
    """
    probs = parse(net, images, size)
    if targets_parsed:
        target_probs = targets.detach()
    else:
        with torch.no_grad():
            target_probs = parse(net, targets, size)
    if target_probs.shape != probs.shape:
        raise ValueError(f"parsed targets {tuple(target_probs.shape)} do not match the images' {tuple(probs.shape)}")
    distance = (probs - target_probs).abs().sum(dim=1, keepdim=True)  # [B, 1, H, W], each pixel in [0, 2]
    if mask is None:
        return distance.flatten(1).mean(dim=1)
    mask = mask.expand(distance.shape[0], 1, *distance.shape[2:])
    return (distance * mask).flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1).clamp_min(1.0)
