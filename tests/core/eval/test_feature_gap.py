"""`rkdsc eval feature-gap`: how far a link's received feature lies from the teacher's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rkdsc_core.checkpoint import save_checkpoint
from rkdsc_core.cli import app
from rkdsc_core.data import load_dataset, to_tensor
from rkdsc_core.distill import FeatureProjector, build_teacher_cache, load_teacher_cache
from rkdsc_core.distill.losses import feature_loss
from rkdsc_core.eval.feature_gap import feature_gap
from rkdsc_core.link import SemanticPipeline, load_link, save_link
from rkdsc_core.models import create_model
from tests.core.data.conftest import write_tree


def _pipeline(seed: int = 0) -> SemanticPipeline:
    torch.manual_seed(seed)
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    return SemanticPipeline(student, codec, num_pilots=4).eval()  # type: ignore[arg-type]


def _own_features(
    pipeline: SemanticPipeline, projector: FeatureProjector, x: torch.Tensor
) -> torch.Tensor:
    with torch.no_grad():
        return projector(pipeline.student.pool(pipeline.student.forward_tokens(x)))


class TestFeatureGap:
    def test_zero_clean_against_its_own_feature_and_above_it_through_a_channel(self) -> None:
        link, projector, x = _pipeline(), FeatureProjector(16, 8).eval(), torch.rand(6, 3, 32, 32)
        target = _own_features(link, projector, x)  # the "teacher" is the student itself
        rows = feature_gap({"a": link}, projector, x, target, snr_db=(0.0,), batch_size=4)
        assert [(r.channel, r.snr_db) for r in rows] == [
            ("clean", None),
            ("awgn", 0.0),
            ("rayleigh", 0.0),
        ]
        assert rows[0].gap == pytest.approx(0.0, abs=1e-6)
        assert all(r.gap > 1e-3 for r in rows[1:])

    def test_the_gap_is_the_feature_loss_averaged_over_images(self) -> None:
        link, projector, x = _pipeline(), FeatureProjector(16, 8).eval(), torch.rand(5, 3, 32, 32)
        target = torch.randn(5, 8)
        (row,) = feature_gap({"a": link}, projector, x, target, channels=(), batch_size=2)
        want = feature_loss(_own_features(link, projector, x), target).item()
        assert row.gap == pytest.approx(want, rel=1e-5)

    def test_every_link_sees_the_same_noise(self) -> None:
        link, projector, x = _pipeline(), FeatureProjector(16, 8).eval(), torch.rand(4, 3, 32, 32)
        rows = feature_gap({"a": link, "b": link}, projector, x, torch.randn(4, 8), seed=3)
        half = len(rows) // 2
        assert [r.gap for r in rows[:half]] == [r.gap for r in rows[half:]]

    def test_a_points_noise_depends_on_neither_the_batch_nor_the_other_points(self) -> None:
        link, projector, x = _pipeline(), FeatureProjector(16, 8).eval(), torch.rand(5, 3, 32, 32)
        target = torch.randn(5, 8)
        both = feature_gap({"a": link}, projector, x, target, snr_db=(0.0,), seed=3, batch_size=5)
        alone = feature_gap(
            {"a": link}, projector, x, target, channels=("rayleigh",), snr_db=(0.0,), seed=3,
            batch_size=2,
        )  # fmt: skip
        assert alone[1].gap == pytest.approx(both[2].gap, rel=1e-5)  # Rayleigh at 0 dB

    def test_shows_its_progress_in_points(self, capsys: pytest.CaptureFixture[str]) -> None:
        link, projector, x = _pipeline(), FeatureProjector(16, 8).eval(), torch.rand(2, 3, 32, 32)
        feature_gap({"a": link, "b": link}, projector, x, torch.randn(2, 8), snr_db=(0.0,))
        err = capsys.readouterr().err
        assert "feature gap" in err and "/6 [" in err  # 2 links x (clean + 2 channels)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_on_cuda_the_gaps_of_the_cpu(self) -> None:
        link, projector, x = _pipeline(), FeatureProjector(16, 8).eval(), torch.rand(6, 3, 32, 32)
        target = torch.randn(6, 8)
        cpu = feature_gap({"a": link}, projector, x, target, snr_db=(0.0, 20.0), seed=3)
        gpu = feature_gap(
            {"a": _pipeline().cuda()}, projector, x, target, snr_db=(0.0, 20.0), seed=3
        )
        # Other noise moves these gaps by up to 1e-2 relative, TF32 rounding by about 1e-5.
        assert [g.gap for g in gpu] == pytest.approx([c.gap for c in cpu], rel=1e-4)

    def test_bad_input_is_refused(self) -> None:
        projector, x = FeatureProjector(16, 8), torch.rand(4, 3, 32, 32)
        with pytest.raises(ValueError, match="no links"):
            feature_gap({}, projector, x, torch.randn(4, 8))
        with pytest.raises(ValueError, match="as many teacher features as images"):
            feature_gap({"a": _pipeline()}, projector, x, torch.randn(3, 8))
        with pytest.raises(ValueError, match="batch_size"):
            feature_gap({"a": _pipeline()}, projector, x, torch.randn(4, 8), batch_size=0)
        with pytest.raises(ValueError, match="not 'rician'"):  # K = 0 would make it Rayleigh
            feature_gap({"a": _pipeline()}, projector, x, torch.randn(4, 8), channels=["rician"])


def test_the_command_measures_links_against_the_cached_teacher(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree").path  # 9 train images
    data = ["--data", str(tree), "--cache-dir", str(tmp_path / "dc")]
    train = load_dataset("cifar10", "train", source=tree, cache_dir=tmp_path / "dc")
    teacher = create_model("resnet18-cifar", width=4)
    save_checkpoint(tmp_path / "teacher", teacher, name="resnet18-cifar", command="test")
    build_teacher_cache(tmp_path / "teacher", train, tmp_path / "cache", views=1)
    projector = FeatureProjector(16, teacher.feature_dim)  # type: ignore[arg-type]
    save_checkpoint(tmp_path / "projector", projector, name="projector", config=projector.dims)
    classes = tuple(train.classes)
    for name, seed in (("a", 0), ("b", 1)):
        save_link(tmp_path / name, _pipeline(seed), student_name="darts-student", classes=classes)
    args = ["eval", "feature-gap", "--weights", f"a={tmp_path / 'a'}"]
    args += ["--weights", f"b={tmp_path / 'b'}", "--teacher-cache", str(tmp_path / "cache")]
    args += ["--snr-db", "5", "--limit", "7", *data]
    missing = CliRunner().invoke(app, [*args, "--projector", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "cannot load the projector" in missing.output
    args += ["--projector", str(tmp_path / "projector")]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["images"] == 7
    assert [(r["link"], r["channel"]) for r in doc["rows"]] == [
        (link, ch) for link in ("a", "b") for ch in ("clean", "awgn", "rayleigh")
    ]
    assert all(0.0 < r["gap"] <= 4.0 for r in doc["rows"])
    # A seeded sample of the split (sources are sorted by class), each image against its
    # own cached teacher feature.
    idx = train.sample_indices(7, seed=0)
    cache = load_teacher_cache(tmp_path / "cache")
    link, want = load_link(tmp_path / "a").pipeline, cache.features[0, torch.from_numpy(idx)]
    stick = projector.eval()
    (clean,) = feature_gap(
        {"a": link}, stick, to_tensor(train.images[idx]), want.float(), channels=()
    )
    assert doc["rows"][0]["gap"] == pytest.approx(clean.gap, rel=1e-5)
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0 and "7 training images (seed 0)" in text.output
