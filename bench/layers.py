"""The benchmark's layer suite, as data.

Each layer is the argument set of one `tf.nn.conv2d` call (NHWC input, HWIO filters). Batch sizes put most
layers near 2 GFLOP (about 10 ms for TensorFlow on 2 cores: long enough to time steadily), so that the default
run (every layer, TF + PyTorch + JAX + gpuconv-numpy + the seed approaches, 5 repeats) takes about 2 minutes
on an idle 2-core machine and at most about 3 on a busy one; `quick_batch` is the batch of `--quick`.
"""
from __future__ import annotations

import dataclasses
from typing import Union

Padding = Union[str, tuple]


@dataclasses.dataclass(frozen=True)
class Layer:
    name: str
    why: str                      # why the layer is in the suite (shown in the JSON)
    N: int
    H: int
    W: int
    C: int
    KH: int
    KW: int
    K: int                        # output channels
    groups: int = 1
    stride: int = 1
    dilation: int = 1
    padding: Padding = "SAME"
    quick_batch: int = 1

    @property
    def input_shape(self) -> tuple:
        return (self.N, self.H, self.W, self.C)

    @property
    def filter_shape(self) -> tuple:
        return (self.KH, self.KW, self.C // self.groups, self.K)

    def with_batch(self, n: int) -> "Layer":
        return dataclasses.replace(self, N=n)


LAYERS: tuple[Layer, ...] = (
    # The seed articles' own example: 100 CIFAR-sized RGB images, 16 3x3 filters, VALID. Tiny (8 MFLOP) and
    # with 3 input channels, so it measures per-call overhead and a very short GEMM reduction (R = 27).
    Layer("seed_32x32x3_k16", "the seed articles' case: 100x32x32x3, 16 3x3 filters, VALID",
          N=100, H=32, W=32, C=3, KH=3, KW=3, K=16, padding="VALID", quick_batch=8),
    # ResNet-50's first layer: large 7x7 filters, stride 2, asymmetric SAME padding (2 before, 3 after),
    # again only 3 input channels: im2col-friendly, Winograd does not apply.
    Layer("resnet_stem_7x7s2", "ResNet-50 stem: 224x224x3 -> 64, 7x7 stride 2, SAME (asymmetric pads)",
          N=8, H=224, W=224, C=3, KH=7, KW=7, K=64, stride=2),
    # The 3x3 stride-1 layers of ResNet's four stages: the most common convolution there is, and the one
    # Winograd targets. Same FLOPs per image at every stage, but the shape of the work moves from many
    # pixels and few channels (56) to few pixels and many channels (7).
    Layer("resnet_3x3_56", "ResNet stage 1 3x3: 56x56x64 -> 64, SAME", N=8, H=56, W=56, C=64, KH=3, KW=3, K=64),
    Layer("resnet_3x3_28", "ResNet stage 2 3x3: 28x28x128 -> 128, SAME", N=8, H=28, W=28, C=128, KH=3, KW=3, K=128),
    Layer("resnet_3x3_14", "ResNet stage 3 3x3: 14x14x256 -> 256, SAME", N=8, H=14, W=14, C=256, KH=3, KW=3, K=256),
    Layer("resnet_3x3_7", "ResNet stage 4 3x3: 7x7x512 -> 512, SAME; tiny images, a weight-dominated GEMM",
          N=8, H=7, W=7, C=512, KH=3, KW=3, K=512),
    # Bottleneck 1x1 layers: a plain GEMM on the input (no im2col at all), where the BLAS alone decides.
    Layer("resnet_1x1_reduce", "ResNet bottleneck 1x1 reduce: 56x56x256 -> 64",
          N=16, H=56, W=56, C=256, KH=1, KW=1, K=64),
    Layer("resnet_1x1_expand", "ResNet bottleneck 1x1 expand: 56x56x64 -> 256",
          N=16, H=56, W=56, C=64, KH=1, KW=1, K=256),
    # A downsampling 3x3 (ResNet-50 v1.5 puts the stride here): strided, so Winograd cannot be used and
    # im2col gathers every other pixel.
    Layer("resnet_3x3s2_56", "ResNet v1.5 downsampling 3x3 stride 2: 56x56x128 -> 128, SAME",
          N=8, H=56, W=56, C=128, KH=3, KW=3, K=128, stride=2),
    # Atrous convolution as in DeepLab: dilation 2 spreads the taps, so no Winograd and strided gathers.
    Layer("dilated_3x3_d2", "DeepLab-style atrous 3x3, dilation 2: 28x28x128 -> 128, SAME",
          N=8, H=28, W=28, C=128, KH=3, KW=3, K=128, dilation=2),
    # MobileNet's depthwise 3x3 (groups = channels): 9 multiply-adds per output, memory-bound; a GEMM per
    # channel would be all overhead. Only 0.1 GFLOP: the seed shift-and-matmul loop (one GEMM per tap and
    # channel) is what limits the batch here.
    Layer("mobilenet_dw_3x3", "MobileNet depthwise 3x3: 56x56x128, one filter per channel, SAME",
          N=16, H=56, W=56, C=128, KH=3, KW=3, K=128, groups=128, quick_batch=2),
    # ResNeXt-50 (32x4d) grouped 3x3: 32 groups of 4 channels; many small GEMMs with a reduction of 36.
    Layer("resnext_g32_3x3", "ResNeXt-50 32x4d grouped 3x3: 56x56x128 -> 128, G=32, SAME",
          N=8, H=56, W=56, C=128, KH=3, KW=3, K=128, groups=32),
    # VGG's second layer: full-resolution 224x224 with 64 channels, 3.7 GFLOP per image; the largest
    # activations of the suite (12.8 MB in, 12.8 MB out per image at float32), where memory traffic shows.
    Layer("vgg_3x3_224", "VGG-16 conv1_2 3x3: 224x224x64 -> 64, SAME", N=2, H=224, W=224, C=64, KH=3, KW=3, K=64),
)

# The layers of `--quick`: one of each kind the code distinguishes (general GEMM, 1x1, depthwise, grouped),
# all small.
QUICK_LAYERS = ("seed_32x32x3_k16", "resnet_3x3_14", "resnet_1x1_reduce", "mobilenet_dw_3x3", "resnext_g32_3x3")

BY_NAME = {layer.name: layer for layer in LAYERS}
assert len(BY_NAME) == len(LAYERS), "layer names must be unique"
