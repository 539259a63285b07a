"""The design space: every combination builds and trains; counts pinned to the paper
(docs/paper.md §3, §5)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torchvision

from resnet import ModelSpec, SpecError, build, response_modules
from resnet.complexity import complexity
from resnet.model import Projection, ShortcutA

SHORTCUTS = ["none", "A", "B", "C"]
# (skip_length, bottleneck, depth): two depths each, the smallest valid and one more.
CIFAR_UNITS = [
    (1, False, 5),
    (1, False, 11),
    (2, False, 8),
    (2, False, 20),
    (3, False, 11),
    (3, False, 20),
    (3, True, 11),
    (3, True, 20),
]


@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("preact", [False, True])
@pytest.mark.parametrize(("k", "bottleneck", "depth"), CIFAR_UNITS)
def test_every_cifar_combination_trains(shortcut, preact, k, bottleneck, depth):
    spec = ModelSpec(
        depth=depth,
        shortcut=shortcut,
        skip_length=k,
        bottleneck=bottleneck,
        preactivation=preact,
        num_classes=7,
    )
    _forward_backward(build(spec), torch.randn(4, 3, 32, 32), 7)
    weight_layers = len(response_modules(build(spec))) + 1  # + the linear layer
    assert weight_layers == depth, "depth counts weight layers"


@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("depth", [18, 50])
def test_imagenet_nets_train(shortcut, depth):
    spec = ModelSpec(depth=depth, stem="imagenet", shortcut=shortcut, num_classes=5)
    _forward_backward(build(spec), torch.randn(2, 3, 64, 64), 5)


def _forward_backward(model, x, classes):
    out = model(x)
    assert out.shape == (x.shape[0], classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_in_channels_and_width():
    model = build(ModelSpec(depth=8, in_channels=1, width=8, num_classes=3))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


PAPER_PARAMS = {
    20: 269_722,
    32: 464_154,
    44: 658_586,
    56: 853_018,
    110: 1_727_962,
    1202: 19_421_274,
}


@pytest.mark.parametrize(("depth", "params"), PAPER_PARAMS.items())
def test_cifar_option_a_params_match_paper(depth, params):
    assert complexity(ModelSpec(depth=depth))["params"] == params
    assert complexity(ModelSpec(depth=depth, shortcut="none"))["params"] == params


@pytest.mark.parametrize(("depth", "params"), [(164, 1_703_258), (1001, 10_327_706)])
def test_preactivation_bottleneck_params_match_the_authors_code(depth, params):
    """2016 paper, Table 4 rounds these to 1.7M and 10.2M; the authors' released code for
    the same nets (pre-activated projections, no BN after them) counts exactly these."""
    spec = ModelSpec(depth=depth, bottleneck=True, preactivation=True, shortcut="B")
    assert complexity(spec)["params"] == params


@pytest.mark.parametrize(
    ("depth", "macs"),
    [(20, 40.55e6), (32, 68.86e6), (44, 97.17e6), (56, 125.49e6), (110, 252.89e6)],
)
def test_cifar_macs_match_paper(depth, macs):
    assert complexity(ModelSpec(depth=depth))["macs"] == pytest.approx(macs, rel=0.01)


IMAGENET = {
    18: (torchvision.models.resnet18, 1.8e9),
    34: (torchvision.models.resnet34, 3.6e9),
    50: (torchvision.models.resnet50, 3.8e9),
    101: (torchvision.models.resnet101, 7.6e9),
    152: (torchvision.models.resnet152, 11.3e9),
}


@pytest.mark.parametrize("depth", IMAGENET)
def test_imagenet_option_b_matches_torchvision_and_paper(depth):
    factory, macs = IMAGENET[depth]
    ours = complexity(ModelSpec(depth=depth, stem="imagenet", shortcut="B", num_classes=1000))
    with torch.device("meta"):
        theirs = sum(p.numel() for p in factory().parameters())
    assert ours["params"] == theirs
    assert ours["macs"] == pytest.approx(macs, rel=0.05)


def test_shortcut_options_differ_as_defined():
    """A adds nothing; B projects only where shapes change (2 stage transitions); C on
    every unit. Each projection is a 1x1 conv (cin*cout) plus BN (2*cout)."""
    a, b, c = (build(ModelSpec(depth=20, shortcut=s)) for s in "ABC")
    assert not any(isinstance(m, Projection) for m in a.modules())
    assert sum(isinstance(m, ShortcutA) for m in a.modules()) == 2
    proj_b = [m for m in b.modules() if isinstance(m, Projection)]
    assert [(p.conv.in_channels, p.conv.out_channels) for p in proj_b] == [(16, 32), (32, 64)]
    assert sum(isinstance(m, Projection) for m in c.modules()) == 9
    count = {s: complexity(ModelSpec(depth=20, shortcut=s))["params"] for s in "ABC"}
    extra_b = 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    assert count["B"] - count["A"] == extra_b
    extra_c = 3 * (16 * 16 + 32) + 32 * 32 * 2 + 16 * 32 + 3 * 64 + 64 * 64 * 2 + 32 * 64 + 3 * 128
    assert count["C"] - count["A"] == extra_c


def test_option_a_zero_pads_and_subsamples():
    sc = ShortcutA(2, 4, 2)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    y = sc(x)
    assert y.shape == (1, 4, 2, 2)
    assert torch.equal(y[:, :2], x[:, :, ::2, ::2])
    assert torch.equal(y[:, 2:], torch.zeros(1, 2, 2, 2))


def test_plain_twin_has_no_shortcut_and_same_layers():
    plain, res = build(ModelSpec(depth=20, shortcut="none")), build(ModelSpec(depth=20))
    assert all(u.shortcut is None for s in plain.stages for u in s)
    assert [n for n, _ in response_modules(plain)] == [n for n, _ in response_modules(res)]


def test_he_init_fan_in():
    model = build(ModelSpec(depth=56))
    conv = model.stages[2][0].layers[1].conv
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    bn = model.stages[0][0].layers[0].bn
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))


@pytest.mark.parametrize("bottleneck", [False, True])
def test_preactivation_first_unit_shares_the_stem_activation(bottleneck):
    """2016 paper, Appendix: the first unit's BN-ReLU is the one right after the stem conv,
    applied once before the split; later units normalise their own input."""
    spec = ModelSpec(
        depth=164 if bottleneck else 20,
        bottleneck=bottleneck,
        preactivation=True,
        shortcut="B" if bottleneck else "A",
    )
    model = build(spec).train()
    seen = {}
    for name, mod in [
        ("stem", model.stem),
        ("first", model.stages[0][0].layers[0].conv),
        ("second", model.stages[0][1].layers[0].conv),
        ("second_unit", model.stages[0][1]),
    ]:
        mod.register_forward_pre_hook(lambda _m, a, n=name: seen.__setitem__(n, a[0]))
    model.stem.register_forward_hook(lambda _m, _a, o: seen.__setitem__("stem_out", o))
    model(torch.randn(4, 3, 32, 32))
    # The first conv sees the stem's activated output itself, not a BN-ReLU of it.
    assert torch.equal(seen["first"], seen["stem_out"])
    # A later unit still normalises its input (BN-ReLU of the previous unit's sum).
    assert not torch.equal(seen["second"], seen["second_unit"])
    assert torch.equal(seen["second"], torch.relu(seen["second"]))

    def bns(unit):  # the unit's own normalisations, the shortcut's aside
        own = [unit.layers, unit.pre or torch.nn.Identity()]
        return sum(isinstance(m, torch.nn.BatchNorm2d) for part in own for m in part.modules())

    # A projection shortcut is pre-activated: one BN-ReLU before the split feeds both the
    # unit's first conv and the projection conv (2016 paper, Appendix).
    if bottleneck:  # option A for the basic net: identity paths stay un-normalised
        unit = model.stages[1][0]
        for name, mod in [("unit", unit), ("conv", unit.layers[0].conv), ("proj", unit.shortcut)]:
            mod.register_forward_pre_hook(lambda _m, a, n=name: seen.__setitem__(n, a[0]))
        model(torch.randn(4, 3, 32, 32))
        shared = unit.pre(seen["unit"])
        assert torch.equal(seen["conv"], shared) and torch.equal(seen["proj"], shared)
        assert isinstance(unit.shortcut.bn, torch.nn.Identity)
    k = len(model.stages[0][1].layers)
    assert (bns(model.stages[0][0]), bns(model.stages[0][1]), bns(model.stages[1][0])) == (
        k - 1,
        k,
        k,
    )


def test_layer_responses_reachable_by_name_with_hooks():
    model = build(ModelSpec(depth=20)).eval()
    names = [n for n, _ in response_modules(model)]
    assert names[0] == "stem.0.bn" and names[1] == "stages.0.0.layers.0.bn" and len(names) == 19
    seen = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, o))
        for n, m in response_modules(model)
    ]
    model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert list(seen) == names
    assert seen["stages.2.2.layers.1.bn"].shape == (2, 64, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"depth": 33}, "depth", "try depth 26, 32 or 38"),
        ({"depth": 32, "skip_length": 3}, "depth", "depth 32 has 10 layers per stage"),
        ({"bottleneck": True, "skip_length": 2}, "skip_length", "bottleneck units"),
        ({"shortcut": "X"}, "shortcut", "none, A, B, C"),
        ({"skip_length": 4}, "skip_length", "4 is not one of 1, 2, 3"),
        ({"depth": 20, "stem": "imagenet"}, "depth", "18, 34, 50, 101, 152"),
        ({"depth": 50, "stem": "imagenet", "bottleneck": False}, "bottleneck", "bottleneck"),
        ({"stem": "mnist"}, "stem", "cifar, imagenet"),
        ({"depth": 0}, "depth", "positive"),
        ({"width": 6}, "width", "multiple of 4"),
        ({"depth": 1001, "bottleneck": False}, "depth", "or bottleneck units (depth = 9n + 2)"),
    ],
)
def test_invalid_specs_name_the_problem(kwargs, field, fragment):
    with pytest.raises(SpecError) as err:
        ModelSpec(**kwargs)
    assert err.value.field == field
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "bottleneck", "skip_length"),
    [
        ({"depth": 164}, True, 3),  # the 2016 paper's bottleneck depths
        ({"depth": 1001}, True, 3),
        ({"depth": 164, "skip_length": 2}, False, 2),  # a basic unit asked for
        ({"depth": 110}, False, 2),
        ({"depth": 50, "stem": "imagenet"}, True, 3),
    ],
)
def test_bottleneck_defaults_to_the_papers_choice_for_the_depth(kwargs, bottleneck, skip_length):
    spec = ModelSpec(**kwargs)
    assert (spec.bottleneck, spec.skip_length) == (bottleneck, skip_length)


def test_cli_model_json_and_bad_spec():
    run = [sys.executable, "-c", "import sys; from ablations.cli import main; sys.exit(main())"]
    ok = subprocess.run(
        [*run, "model", "--depth", "56", "--shortcut", "B", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(ok.stdout)
    assert out["params"] == 855_770 and isinstance(out["macs"], int)
    assert out["spec"]["shortcut"] == "B" and out["spec"]["skip_length"] == 2
    bad = subprocess.run([*run, "model", "--depth", "33"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "depth" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(depth=20, shortcut="B"),
        ModelSpec(depth=29, bottleneck=True, shortcut="C"),
        ModelSpec(depth=20, skip_length=3, preactivation=True),
        ModelSpec(depth=47, bottleneck=True, preactivation=True, shortcut="C"),
        ModelSpec(depth=50, stem="imagenet", num_classes=1000),
    ],
    ids=["cifar-B", "cifar-bottleneck-C", "cifar-k3-preact", "cifar-preact-C", "imagenet-50"],
)
def test_mac_count_agrees_with_torchs_flop_counter(spec):
    from torch.utils.flop_counter import FlopCounterMode

    counted = complexity(spec)["macs"]
    with torch.device("meta"):
        model = build(spec).eval()
        x = torch.empty(
            1, 3, 32 if spec.stem == "cifar" else 224, 32 if spec.stem == "cifar" else 224
        )
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert counted == counter.get_total_flops() // 2
