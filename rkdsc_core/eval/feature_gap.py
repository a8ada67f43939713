"""How far a link's received feature lies from the teacher's clean one, per channel and SNR.

Stage 2 of RKD trains the decoded feature towards the teacher's clean feature; this
measures whether it got there, with one fixed projector (stage 1's) as the measuring stick
for every link, so links trained with and without the teacher's targets compare fairly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from rkdsc_core.channel import frame_generators
from rkdsc_core.distill.losses import FeatureProjector, feature_loss
from rkdsc_core.eval.digital import eval_channel
from rkdsc_core.link import SemanticPipeline

__all__ = ["GapRow", "feature_gap"]


@dataclass(frozen=True)
class GapRow:
    """One link at one channel point; ``channel`` is ``"clean"`` for the student alone.

    ``gap`` is :func:`~rkdsc_core.distill.losses.feature_loss` (MSE of L2-normalised
    features, ``2 - 2 cos``, in [0, 4]) averaged over the images.
    """

    link: str
    channel: str
    snr_db: float | None
    gap: float


@torch.no_grad()
def feature_gap(
    links: Mapping[str, SemanticPipeline],
    projector: FeatureProjector,
    images: Tensor,
    teacher_features: Tensor,
    *,
    channels: Sequence[str] = ("awgn", "rayleigh"),
    snr_db: Sequence[float] = (-5.0, 0.0, 5.0, 20.0),
    length: int = 64,
    knowledge: str = "pilot",
    seed: int = 0,
    batch_size: int = 500,
) -> list[GapRow]:
    """Feature gap of each link, clean and through each channel at each SNR.

    Image ``i`` is impaired with ``frame_generator(seed, "eval", i)`` at every point, for
    every link, as in :func:`rkdsc_core.eval.accuracy_grid`: the same noise and fades
    whatever the batch size or the other points asked for. Each link runs on its own
    device, the projector with it; the images and features are moved there batch by
    batch. The projector and the links are left in eval mode.

    Args:
        links: name -> pipeline.
        projector: maps the student's pooled feature to the teacher's feature space.
        images: ``[N, 3, H, W]`` float32 in [0, 1].
        teacher_features: ``[N, D]``, the teacher's pooled features of those very images.
        channels: ``"awgn"`` and/or ``"rayleigh"``.
        snr_db: Es/N0 [dB] of each point.
        length: symbols L per image.
        knowledge: ``"perfect"`` or ``"pilot"`` CSI.
        seed: seed of the channel draws.
        batch_size: images per forward, >= 1.

    Raises:
        ValueError: no links, ``images`` and ``teacher_features`` of different lengths,
            ``batch_size`` < 1, or a channel the evaluation does not measure.
    """
    if not links:
        raise ValueError("no links to measure")
    for channel in channels:
        eval_channel(channel)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(images) != len(teacher_features) or len(images) == 0:
        raise ValueError(
            f"need as many teacher features as images (> 0), got {len(teacher_features)} "
            f"and {len(images)}"
        )
    projector = projector.eval()
    points: list[tuple[str, float | None]] = [("clean", None)]
    points += [(c, float(s)) for c in channels for s in snr_db]
    rows = []
    bar = tqdm(total=len(links) * len(points), desc="feature gap", unit="point", leave=False)
    for name, pipeline in links.items():
        pipeline = pipeline.eval()
        student, device = pipeline.student, pipeline.pilots.device
        stick = projector.to(device)
        for channel, snr in points:
            model = None if snr is None else eval_channel(channel)
            total = 0.0
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].to(device)
                if model is None:
                    tokens = student.forward_tokens(x)
                else:
                    gen = frame_generators(seed, "eval", range(start, start + len(x)))
                    out = pipeline(x, model, snr, length=length, knowledge=knowledge, generator=gen)
                    tokens = out.tokens
                feat = stick(student.pool(tokens))
                target = teacher_features[start : start + len(x)].to(device)
                total += float(feature_loss(feat, target)) * len(x)
            rows.append(GapRow(name, channel, snr, total / len(images)))
            bar.update()
    bar.close()
    return rows
