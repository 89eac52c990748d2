"""Key names and shapes of the official checkpoints, written down from the public code (not from codec.*).

Sources read (with the `search` tools, 2026-11-25):
- omertov/encoder4editing models/encoders/psp_encoders.py (Encoder4Editing, GradualStyleBlock),
  models/encoders/helpers.py (get_blocks, bottleneck_IR_SE, SEModule), models/psp.py and
  training/coach.py (the checkpoint: {'state_dict': pSp.state_dict() with 'encoder.'/'decoder.' prefixes,
  'opts': vars(argparse options), 'latent_avg': decoder mean w repeated to [18, 512]}),
  models/encoders/model_irse.py (Backbone) and criteria/id_loss.py (Backbone(112, 50, 'ir_se'), affine BN1d).
- RameenAbdal/StyleFlow module/flow.py (build_model: [MovingBatchNorm1d, CNF, MovingBatchNorm1d]),
  module/cnf.py (sqrt_end_time), module/odefunc.py (ODEnet / ODEfunc with buffer _num_evals),
  module/diffeq_layers.py (ConcatSquashLinear), module/normalization.py (MovingBatchNormNd buffers), and the
  loaders: `prior = cnf(512, '512-512-512-512-512', 17, 1); prior.load_state_dict(torch.load(...))`.
- zllrunning/face-parsing.PyTorch model.py (BiSeNet, ContextPath, AttentionRefinementModule,
  FeatureFusionModule, BiSeNetOutput, ConvBNReLU; the SpatialPath class exists but BiSeNet does not build it)
  and resnet.py (Resnet18, BasicBlock, create_layer_basic; read in the clibdev/face-parsing.PyTorch fork, whose
  inference.py loads 79999_iter.pth strict with weights_only=True).

The layouts are built by small loops that restate the official naming rules; they deliberately share no
code with codec.models, so a renamed or reshaped parameter there makes the loader tests fail.
"""

from __future__ import annotations

import math

import torch

Layout = list[tuple[str, tuple[int, ...]]]


def _batchnorm(prefix: str, n: int) -> Layout:
    # torch BatchNorm1d/2d state: affine weight/bias, running stats, and the 0-d batch counter
    return [
        (f"{prefix}.weight", (n,)),
        (f"{prefix}.bias", (n,)),
        (f"{prefix}.running_mean", (n,)),
        (f"{prefix}.running_var", (n,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def irse_trunk_layout(units=(3, 4, 14, 3), depths=(64, 128, 256, 512)) -> Layout:
    """input_layer = Sequential(Conv2d(3, 64, 3, bias=False), BatchNorm2d(64), PReLU(64)); body = the units."""
    layout: Layout = [("input_layer.0.weight", (64, 3, 3, 3))]
    layout += _batchnorm("input_layer.1", 64)
    layout += [("input_layer.2.weight", (64,))]
    # get_block(in_channel, depth, num_units): first unit in_channel -> depth, then depth -> depth
    index = 0
    in_channel = 64
    for depth, count in zip(depths, units):
        for unit in range(count):
            cin = in_channel if unit == 0 else depth
            p = f"body.{index}"
            if cin != depth:  # otherwise the shortcut is MaxPool2d(1, stride): no state
                layout += [(f"{p}.shortcut_layer.0.weight", (depth, cin, 1, 1))]
                layout += _batchnorm(f"{p}.shortcut_layer.1", depth)
            layout += _batchnorm(f"{p}.res_layer.0", cin)
            layout += [(f"{p}.res_layer.1.weight", (depth, cin, 3, 3))]
            layout += [(f"{p}.res_layer.2.weight", (depth,))]
            layout += [(f"{p}.res_layer.3.weight", (depth, depth, 3, 3))]
            layout += _batchnorm(f"{p}.res_layer.4", depth)
            layout += [(f"{p}.res_layer.5.fc1.weight", (depth // 16, depth, 1, 1))]
            layout += [(f"{p}.res_layer.5.fc2.weight", (depth, depth // 16, 1, 1))]
            index += 1
        in_channel = depth
    return layout


def e4e_encoder_layout() -> Layout:
    """Encoder4Editing(50, 'ir_se', opts) with stylegan_size 1024: 18 styles, keys without 'encoder.'."""
    layout = irse_trunk_layout()
    for i in range(18):
        spatial = 16 if i < 3 else (32 if i < 7 else 64)
        n_convs = int(math.log2(spatial))
        for j in range(n_convs):  # Sequential(conv, LeakyReLU, conv, LeakyReLU, ...): convs at even indices
            layout += [(f"styles.{i}.convs.{2 * j}.weight", (512, 512, 3, 3)), (f"styles.{i}.convs.{2 * j}.bias", (512,))]
        layout += [(f"styles.{i}.linear.weight", (512, 512)), (f"styles.{i}.linear.bias", (512,))]
    layout += [("latlayer1.weight", (512, 256, 1, 1)), ("latlayer1.bias", (512,))]
    layout += [("latlayer2.weight", (512, 128, 1, 1)), ("latlayer2.bias", (512,))]
    return layout


# A few keys of the rosinality Generator(1024, 512, 8) under 'decoder.': enough to check that the loader
# hands the decoder part over untouched (its full layout is the generator's own tests' business).
E4E_DECODER_SAMPLE: Layout = [
    ("style.1.weight", (512, 512)),
    ("style.1.bias", (512,)),
    ("input.input", (1, 512, 4, 4)),
    ("conv1.conv.weight", (1, 512, 512, 3, 3)),
    ("conv1.conv.modulation.weight", (512, 512)),
    ("noises.noise_0", (1, 1, 4, 4)),
]

# The options e4e's training script stores (argparse values only: str, int, float, bool, None, list).
E4E_OPTS_SAMPLE = {
    "exp_dir": "/tmp/e4e",
    "dataset_type": "ffhq_encode",
    "encoder_type": "Encoder4Editing",
    "start_from_latent_avg": True,
    "lpips_lambda": 0.8,
    "id_lambda": 0.5,
    "progressive_steps": [0, 20000, 22000, 24000],
    "stylegan_weights": "pretrained_models/stylegan2-ffhq-config-f.pt",
    "checkpoint_path": None,
    "max_steps": 300000,
}


def arcface_ir_se50_layout() -> Layout:
    """Backbone(input_size=112, num_layers=50, mode='ir_se'): model_ir_se50.pth."""
    layout = irse_trunk_layout()
    # output_layer = Sequential(BatchNorm2d(512), Dropout, Flatten, Linear(512*7*7, 512), BatchNorm1d(512))
    layout += _batchnorm("output_layer.0", 512)
    layout += [("output_layer.3.weight", (512, 512 * 7 * 7)), ("output_layer.3.bias", (512,))]
    layout += _batchnorm("output_layer.4", 512)
    return layout



def bisenet_face_parsing_layout(n_classes: int = 19) -> Layout:
    """BiSeNet(n_classes=19) of face-parsing.PyTorch: 79999_iter.pth (a bare state_dict, no 'sp.' keys)."""

    def conv_bn(prefix: str, cin: int, cout: int, k: int) -> Layout:  # ConvBNReLU: conv (no bias) + bn
        return [(f"{prefix}.conv.weight", (cout, cin, k, k))] + _batchnorm(f"{prefix}.bn", cout)

    # Resnet18: conv1 7x7 (no bias), bn1, layer1..4 of two BasicBlocks; block 0 of layers 2-4 has a
    # downsample = Sequential(Conv2d 1x1 no bias, BatchNorm2d); no fc
    layout: Layout = [("cp.resnet.conv1.weight", (64, 3, 7, 7))] + _batchnorm("cp.resnet.bn1", 64)
    cin = 64
    for layer, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"cp.resnet.layer{layer}.{block}"
            first_in = cin if block == 0 else cout
            layout += [(f"{p}.conv1.weight", (cout, first_in, 3, 3))] + _batchnorm(f"{p}.bn1", cout)
            layout += [(f"{p}.conv2.weight", (cout, cout, 3, 3))] + _batchnorm(f"{p}.bn2", cout)
            if block == 0 and cin != cout:
                layout += [(f"{p}.downsample.0.weight", (cout, cin, 1, 1))] + _batchnorm(f"{p}.downsample.1", cout)
        cin = cout
    # AttentionRefinementModule(in, 128): conv = ConvBNReLU 3x3, conv_atten 1x1 (no bias), bn_atten
    for name, arm_in in (("arm16", 256), ("arm32", 512)):
        layout += conv_bn(f"cp.{name}.conv", arm_in, 128, 3)
        layout += [(f"cp.{name}.conv_atten.weight", (128, 128, 1, 1))] + _batchnorm(f"cp.{name}.bn_atten", 128)
    layout += conv_bn("cp.conv_head32", 128, 128, 3) + conv_bn("cp.conv_head16", 128, 128, 3)
    layout += conv_bn("cp.conv_avg", 512, 128, 1)
    # FeatureFusionModule(256, 256): convblk = ConvBNReLU 1x1, then conv1 256->64 and conv2 64->256 (1x1, no bias)
    layout += conv_bn("ffm.convblk", 256, 256, 1)
    layout += [("ffm.conv1.weight", (64, 256, 1, 1)), ("ffm.conv2.weight", (256, 64, 1, 1))]
    # BiSeNetOutput(in, mid, n): conv = ConvBNReLU 3x3, conv_out 1x1 (no bias)
    for name, head_in, mid in (("conv_out", 256, 256), ("conv_out16", 128, 64), ("conv_out32", 128, 64)):
        layout += conv_bn(f"{name}.conv", head_in, mid, 3)
        layout += [(f"{name}.conv_out.weight", (n_classes, mid, 1, 1))]
    return layout


def styleflow_layout(dim=512, hidden=(512, 512, 512, 512, 512), condition=17) -> Layout:
    """cnf(512, '512-512-512-512-512', 17, 1): modellarge10k.pt."""

    def moving_bn(prefix: str) -> Layout:
        return [
            (f"{prefix}.weight", (dim,)),
            (f"{prefix}.bias", (dim,)),
            (f"{prefix}.step", (1,)),
            (f"{prefix}.running_mean", (dim,)),
            (f"{prefix}.running_var", (dim,)),
        ]

    layout = moving_bn("chain.0")
    layout += [("chain.1.sqrt_end_time", ()), ("chain.1.odefunc._num_evals", ())]
    widths = (dim, *hidden, dim)
    for i in range(len(widths) - 1):
        p = f"chain.1.odefunc.diffeq.layers.{i}"
        # context = [t, condition] -> 1 + 17 inputs to both hyper layers
        layout += [
            (f"{p}._layer.weight", (widths[i + 1], widths[i])),
            (f"{p}._layer.bias", (widths[i + 1],)),
            (f"{p}._hyper_bias.weight", (widths[i + 1], 1 + condition)),
            (f"{p}._hyper_gate.weight", (widths[i + 1], 1 + condition)),
            (f"{p}._hyper_gate.bias", (widths[i + 1],)),
        ]
    layout += moving_bn("chain.2")
    return layout


def synthetic_state(layout: Layout, seed: int, broadcast: bool = False) -> dict[str, torch.Tensor]:
    """Seeded tensors of the layout's shapes, with values a trained net could hold.

    Weights ~ U(-1, 1) / sqrt(fan_in); variances in [0.5, 2]; counters 0; the flow's end time 1.
    `broadcast=True` gives each tensor one random value expanded to its shape (stride 0): the layout is
    exact, but torch.save writes one number per tensor, so a full-size checkpoint round trip stays fast.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout:
        if key.endswith(("num_batches_tracked", "_num_evals")):
            state[key] = torch.zeros(shape, dtype=torch.long if key.endswith("tracked") else torch.float32)
            continue
        if key.endswith("sqrt_end_time"):
            state[key] = torch.ones(shape)
            continue
        if key.endswith("running_var"):
            low, high = 0.5, 2.0
        else:
            bound = 1.0 / math.sqrt(math.prod(shape[1:])) if len(shape) > 1 else 0.1
            low, high = -bound, bound
        if broadcast:
            value = low + (high - low) * torch.rand((), generator=generator)
            state[key] = value.expand(shape)
        else:
            state[key] = low + (high - low) * torch.rand(shape, generator=generator)
    return state
