import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rkdsc_core.cli import app
from rkdsc_core.data import ImageDataset
from rkdsc_core.link import load_link
from rkdsc_core.models.genotypes import genotype_to_dict, get_genotype
from rkdsc_core.train import LinkTrainConfig, lr_at, train_link
from rkdsc_core.train.link import build_pipeline, evaluate_clean_channel
from rkdsc_core.train.teacher import evaluate_teacher
from tests.core.data.conftest import write_tree

_TINY = LinkTrainConfig(
    student_overrides={"C": 4, "layers": 3, "token_dim": 16},
    codec_overrides={"d_model": 32, "heads": 2},
    num_pilots=4,
    epochs=2,
    batch_size=8,
    eval_images=16,
)


class TestSchedule:
    def test_warmup_then_cosine_to_zero(self) -> None:
        cfg = dataclasses.replace(_TINY, lr=1.0, warmup_fraction=0.1)
        lrs = [lr_at(s, 100, cfg) for s in range(101)]
        assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
        assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
        assert lrs[100] == pytest.approx(0.0, abs=1e-9)


def test_evaluations_build_no_autograd_graph(tiny_dataset: ImageDataset) -> None:
    """The per-epoch evaluations run under no_grad (a graph per batch would only cost)."""
    pipeline = build_pipeline(_TINY)
    modes: list[bool] = []
    for module in pipeline.modules():
        module.register_forward_hook(lambda *_: modes.append(torch.is_grad_enabled()))
    evaluate_clean_channel(pipeline, tiny_dataset, limit=8)
    evaluate_teacher(pipeline.student, tiny_dataset, limit=8)
    assert modes and not any(modes)


class TestTrainLink:
    def test_loss_falls_and_state_is_checkpointed(
        self, tiny_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        cfg = dataclasses.replace(_TINY, epochs=4, lr=3e-3, snr_db_range=(15.0, 20.0))
        _, summary = train_link(cfg, tiny_dataset, tiny_dataset, tmp_path)
        losses = [h["loss"] for h in summary["history"]]
        assert len(losses) == 4 and losses[-1] < losses[0]
        assert (tmp_path / "state.json").is_file() and (tmp_path / "state.safetensors").is_file()

    def test_resume_equals_uninterrupted(self, tiny_dataset: ImageDataset, tmp_path: Path) -> None:
        full, _ = train_link(_TINY, tiny_dataset, tiny_dataset, tmp_path / "a")
        one = dataclasses.replace(_TINY)
        # Interrupted after epoch 1 (its checkpoint), then resumed to the end.
        train_link(
            one, tiny_dataset, tiny_dataset, tmp_path / "b", max_steps=len(tiny_dataset) // 8
        )
        resumed, summary = train_link(one, tiny_dataset, tiny_dataset, tmp_path / "b")
        assert [h["epoch"] for h in summary["history"]] == [1, 2]
        for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
            assert torch.equal(a, b), k

    def test_resume_with_another_config_is_refused(
        self, tiny_dataset: ImageDataset, tmp_path: Path
    ) -> None:
        train_link(_TINY, tiny_dataset, tiny_dataset, tmp_path, max_steps=1)
        with pytest.raises(ValueError, match="another config"):
            train_link(dataclasses.replace(_TINY, lr=1.0), tiny_dataset, tiny_dataset, tmp_path)


def test_cli_trains_the_given_student(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--genotype, --c and --layers shape the student as `rkdsc train student`'s do."""
    for var in ("RKDSC_DATA_DIR", "RKDSC_DATA__DIR", "RKDSC_DATA__CACHE_DIR", "RKDSC_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    tree = write_tree(tmp_path / "tree").path
    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps({"genotype": genotype_to_dict(get_genotype("darts_v1"))}))
    args = ["train", "link", "--out", str(tmp_path / "run"), "--genotype", str(genotype)]
    args += ["--c", "4", "--layers", "3", "--epochs", "1", "--batch-size", "4", "--eval-limit", "4"]
    args += ["--data", str(tree), "--cache-dir", str(tmp_path / "dc")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    bundle = load_link(tmp_path / "run" / "weights")
    trained = bundle.meta["training"]["config"]["student_overrides"]
    assert trained["genotype"] == genotype_to_dict(get_genotype("darts_v1"))
    assert (trained["C"], trained["layers"]) == (4, 3)
    stem = bundle.pipeline.student.state_dict()["stem.0.weight"]  # [3 * C, 3, 3, 3]
    assert stem.shape[0] == 3 * 4
