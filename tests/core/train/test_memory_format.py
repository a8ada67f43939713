"""Training's memory format: channels-last, except where a CPU kernel gets it wrong."""

from __future__ import annotations

import pytest
import torch

from rkdsc_core.models import create_model
from rkdsc_core.train.memory_format import training_memory_format


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        ("resnet18-cifar", {"width": 4}, torch.contiguous_format),  # 4-channel 1x1/2 shortcut
        ("resnet18-cifar", {"width": 16}, torch.channels_last),
        ("darts-student", {"C": 4, "layers": 3, "token_dim": 16}, torch.channels_last),  # 16 in
        ("fastnet-cifar", {"widths": (4, 8, 8)}, torch.channels_last),  # no 1x1 strided conv
    ],
)
def test_cpu_training_avoids_channels_last_for_narrow_strided_1x1_convs(
    name: str, overrides: dict[str, object], expected: torch.memory_format
) -> None:
    assert training_memory_format(create_model(name, **overrides), "cpu") is expected


def test_other_devices_always_use_channels_last() -> None:
    model = create_model("resnet18-cifar", width=4)
    assert training_memory_format(model, "cuda") is torch.channels_last


@pytest.mark.parametrize("width", [4, 16])  # NCHW kept / channels-last chosen
def test_the_chosen_format_gives_the_nchw_gradients(width: int) -> None:
    torch.manual_seed(0)
    model = create_model("resnet18-cifar", width=width)
    x = torch.rand(4, 3, 32, 32)
    fmt = training_memory_format(model, "cpu")
    grads = []
    for memory_format in (torch.contiguous_format, fmt):
        m = create_model("resnet18-cifar", width=width)
        m.load_state_dict(model.state_dict())
        m.to(memory_format=memory_format)  # type: ignore[call-overload]
        m(x.contiguous(memory_format=memory_format)).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))  # type: ignore[union-attr]
    # Summation order differs between kernels; the bug this guards against is off by ~100%.
    assert float((grads[0] - grads[1]).abs().max()) < 1e-3 * float(grads[0].abs().max())
