"""The image encoder of the captioners: a small convolutional network trained here (no
pretrained weights) that maps an image to a grid of region features.

``ConvEncoder(in_channels, *, channels, feature_size, image_size, grid)``: with
``image_size / grid = 2^k m`` (``m`` odd), ``k`` blocks of ``conv3x3 -> ReLU -> maxpool2x2`` (the
first with two convolutions) halve the image (one block without the pool when ``k = 0``), an
``m x m`` average pool brings it to ``grid x grid`` (exactly the cells of
``rnnlab.tasks.captions.box_mask(box, image_size, grid)``: ``image_size`` must be a multiple of
``grid``), and a ``1x1`` convolution gives ``feature_size`` features per cell:

    a_r = W_1x1 pool_r(CNN([x; u; v])) + b,    r = i * grid + j  (row i, column j)

the ``L = grid^2`` annotation vectors of Xu et al. (2015, "Show, attend and tell", Sec. 3.1.1:
"a_i, one per location", taken from a convolutional layer so that the decoder can attend to
parts of the image). The receptive field of a region is its cell and about one cell on every
side (24 pixels for 8-pixel cells), so a region's feature is local.
With ``coords=True`` two channels ``u, v`` in ``[-1, 1]`` (the pixel's
column and row) are appended to the input, as in CoordConv (Liu et al. 2018, "An intriguing
failing of convolutional neural networks and the CoordConv solution"), so that a region's
feature says where it is: relations such as "left of" need it once the features are pooled.
``pooled(regions)`` is the mean region ``(1 / L) sum_r a_r``, the image vector Xu et al.
initialise their LSTM from (Sec. 3.1.2).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from rnnlab._random import make_generator
from rnnlab._validation import check_bool, check_positive_int, check_tensor
from rnnlab.cells.base import uniform_init_

__all__ = ["ConvEncoder"]


def _init_conv(conv: nn.Conv2d, generator: torch.Generator) -> None:
    """He-uniform weights for a ReLU network (He et al. 2015, bound ``sqrt(6 / fan_in)``) and
    torch's default bias bound ``1 / sqrt(fan_in)``, drawn from ``generator``."""
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    with torch.no_grad():
        uniform_init_(conv.weight, math.sqrt(6.0 / fan_in), generator)
        if conv.bias is not None:
            uniform_init_(conv.bias, 1.0 / math.sqrt(fan_in), generator)


class ConvEncoder(nn.Module):
    """Images ``(B, C, H, W)`` float in ``[0, 1]`` -> region features ``(B, grid^2, feature_size)``.

    Region ``r`` is the cell of grid row ``r // grid`` and column ``r % grid``: the cells of
    ``box_mask(box, image_size, grid).flatten()``. See the module docstring for the network.

    Example::

        >>> enc = ConvEncoder(3, channels=16, feature_size=32, image_size=64, grid=8, seed=0)
        >>> enc(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 64, 32])
    """

    def __init__(self, in_channels: int = 3, *, channels: int = 16, feature_size: int = 64,
                 image_size: int = 64, grid: int = 8, coords: bool = True,
                 seed: int | None = None, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.channels = check_positive_int("channels", channels)
        self.feature_size = check_positive_int("feature_size", feature_size)
        self.image_size = check_positive_int("image_size", image_size)
        self.grid = check_positive_int("grid", grid)
        self.coords = check_bool("coords", coords)
        if self.grid > self.image_size or self.image_size % self.grid:
            raise ValueError(f"image_size ({image_size}) must be a multiple of grid ({grid}): "
                             "the regions are equal cells of the image")
        ratio = self.image_size // self.grid
        # halve while the cell side in pixels stays even, then average the rest exactly
        self.blocks = (ratio & -ratio).bit_length() - 1
        self.cell_pool = ratio >> self.blocks
        g = make_generator(seed, generator)
        kw = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        c_in = self.in_channels + (2 if self.coords else 0)
        convs = []
        for k in range(max(self.blocks, 1)):
            c_out = self.channels * (2 ** min(k, 2))
            block = [nn.Conv2d(c_in, c_out, 3, padding=1, **kw)]
            if k == 0:  # two convolutions at full resolution, one per coarser scale
                block.append(nn.Conv2d(c_out, c_out, 3, padding=1, **kw))
            for conv in block:
                convs.append(conv)
                layers += [conv, nn.ReLU()]
            if k < self.blocks:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.project = nn.Conv2d(c_in, self.feature_size, 1, **kw)
        for conv in [*convs, self.project]:
            _init_conv(conv, g)

    @property
    def num_regions(self) -> int:
        """``grid^2``."""
        return self.grid * self.grid

    def check_images(self, images: object) -> torch.Tensor:
        """``(B, in_channels, image_size, image_size)`` floating images (checked, not scanned
        for values beyond NaN/inf by the usual switch)."""
        if isinstance(images, torch.Tensor) and images.dim() == 3:
            raise ValueError(f"images must be a batch (B, C, H, W); got one image of shape "
                             f"{tuple(images.shape)}: add a batch axis (images[None])")
        x = check_tensor("images", images, ndim=4, layout="(batch, channels, height, width)")
        if not x.dtype.is_floating_point:
            raise TypeError(f"images must be floating point in [0, 1], got dtype {x.dtype}: "
                            "divide uint8 images by 255")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"images have {x.shape[1]} channels but the encoder takes "
                             f"{self.in_channels}")
        if tuple(x.shape[2:]) != (self.image_size, self.image_size):
            raise ValueError(f"images are {x.shape[2]}x{x.shape[3]} but the encoder takes "
                             f"{self.image_size}x{self.image_size}")
        if x.shape[0] == 0:
            raise ValueError("images is an empty batch")
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.check_images(images)
        w = self.project.weight
        x = x.to(w.dtype)
        if self.coords:
            B, _, H, W = x.shape
            v = torch.linspace(-1.0, 1.0, H, dtype=x.dtype, device=x.device)
            u = torch.linspace(-1.0, 1.0, W, dtype=x.dtype, device=x.device)
            x = torch.cat([x, u[None, None, None, :].expand(B, 1, H, W),
                           v[None, None, :, None].expand(B, 1, H, W)], dim=1)
        h = self.features(x)
        if self.cell_pool > 1:  # equal cells: the remaining odd factor of the cell side
            h = F.avg_pool2d(h, self.cell_pool)
        a = self.project(h)  # (B, F, grid, grid)
        return a.flatten(2).transpose(1, 2)  # region r = row * grid + column

    @staticmethod
    def pooled(regions: torch.Tensor) -> torch.Tensor:
        """The mean region feature ``(B, feature_size)`` of ``regions`` ``(B, R, F)``."""
        if not isinstance(regions, torch.Tensor) or regions.dim() != 3:
            raise ValueError("regions must be a (batch, regions, features) tensor")
        return regions.mean(dim=1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, channels={self.channels}, feature_size="
                f"{self.feature_size}, image_size={self.image_size}, grid={self.grid}, "
                f"coords={self.coords}")
