import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from rkdsc_core.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    load_model,
    load_training_state,
    resume_training,
    save_checkpoint,
    save_epoch,
    save_training_state,
    write_tensors,
)
from rkdsc_core.models import create_model


def _model() -> torch.nn.Module:
    return create_model("resnet18-cifar", width=4).eval()


class TestSaveLoad:
    def test_round_trip_rebuilds_the_same_model(self, tmp_path: Path) -> None:
        model = _model()
        save_checkpoint(
            tmp_path / "teacher",
            model,
            name="resnet18-cifar",
            dataset={"name": "cifar10", "sha256": "abc"},
            metrics={"test_accuracy": 0.5},
            command="rkdsc train teacher",
        )
        loaded = load_model(tmp_path / "teacher")
        x = torch.rand(2, 3, 32, 32)
        assert torch.equal(model(x), loaded(x))

    def test_manifest_records_provenance(self, tmp_path: Path) -> None:
        manifest = save_checkpoint(
            tmp_path / "m", _model(), name="resnet18-cifar", genotype={"normal": []}
        )
        doc = json.loads(manifest.read_text())
        assert doc["model"] == "resnet18-cifar"
        assert doc["config"]["width"] == 4
        assert doc["genotype"] == {"normal": []}
        assert doc["parameters"] == sum(p.numel() for p in _model().parameters())
        assert {"git_commit", "command", "created", "weights_sha256"} <= doc.keys()
        machine = doc["machine"]  # where it was made: CPU model, cores, GPU, versions
        assert machine["cpu"] != "" and machine["logical_cpus"] >= 1
        assert machine["torch"] == torch.__version__
        assert machine["cuda"] is None or isinstance(machine["cuda"], str)

    def test_fp16_halves_the_file_and_loads_back_as_float32(self, tmp_path: Path) -> None:
        model = _model()
        save_checkpoint(tmp_path / "a", model, name="resnet18-cifar")
        save_checkpoint(tmp_path / "b", model, name="resnet18-cifar", fp16=True)
        size_a = checkpoint_paths(tmp_path / "a")[0].stat().st_size
        size_b = checkpoint_paths(tmp_path / "b")[0].stat().st_size
        assert size_b < 0.6 * size_a
        loaded = load_model(tmp_path / "b")
        assert next(loaded.parameters()).dtype == torch.float32
        x = torch.rand(2, 3, 32, 32)
        assert torch.allclose(model(x), loaded(x), atol=1e-2, rtol=1e-2)

    def test_fp16_refuses_values_float16_cannot_hold(self, tmp_path: Path) -> None:
        model = _model()
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.running_var.fill_(1e5)  # > 65504: would load back as inf
        with pytest.raises(ValueError, match=r"running_var: values up to 1e\+05 overflow"):
            save_checkpoint(tmp_path / "a", model, name="resnet18-cifar", fp16=True)
        save_checkpoint(tmp_path / "b", model, name="resnet18-cifar")  # float32 is fine

    def test_suffix_is_optional(self, tmp_path: Path) -> None:
        save_checkpoint(tmp_path / "c", _model(), name="resnet18-cifar")
        state, _ = load_checkpoint(tmp_path / "c.safetensors")
        assert set(state) == set(_model().state_dict())

    def test_same_tensors_same_bytes(self, tmp_path: Path) -> None:
        # safetensors writes metadata in hash order, different on each call; a re-saved
        # finished stage must keep its sha256, or the next stage refuses to resume.
        tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(5, dtype=torch.float16)}
        metadata = {key: key * 2 for key in "pqrstuvw"}
        blobs = set()
        for i in range(8):
            write_tensors(tensors, tmp_path / f"{i}.safetensors", metadata)
            blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
        assert len(blobs) == 1
        with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:
            assert f.metadata() == metadata
            assert all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items())
        model = _model()
        for name in ("a", "b"):
            save_checkpoint(tmp_path / name, model, name="resnet18-cifar")
        sha = [json.loads((tmp_path / f"{n}.json").read_text())["weights_sha256"] for n in "ab"]
        assert sha[0] == sha[1]

    @pytest.mark.parametrize("umask", [0o022, 0o077])
    def test_files_get_the_umask_mode_not_owner_only(self, tmp_path: Path, umask: int) -> None:
        # safetensors alone creates 0600 files: a service running as another user could not
        # read weights trained by this one.
        old = os.umask(umask)
        try:
            save_checkpoint(tmp_path / "m", _model(), name="resnet18-cifar")
        finally:
            os.umask(old)
        weights, manifest = checkpoint_paths(tmp_path / "m")
        assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~umask
        assert stat.S_IMODE(weights.stat().st_mode) == stat.S_IMODE(manifest.stat().st_mode)


class TestErrors:
    def test_missing_checkpoint(self, tmp_path: Path) -> None:
        with pytest.raises(CheckpointError, match="expected both"):
            load_checkpoint(tmp_path / "nothing")

    def test_half_written_checkpoint_is_not_loaded(self, tmp_path: Path) -> None:
        save_checkpoint(tmp_path / "c", _model(), name="resnet18-cifar")
        checkpoint_paths(tmp_path / "c")[1].unlink()  # the manifest is written last
        with pytest.raises(CheckpointError, match="expected both"):
            load_checkpoint(tmp_path / "c")

    def test_corrupt_weights_are_detected(self, tmp_path: Path) -> None:
        save_checkpoint(tmp_path / "c", _model(), name="resnet18-cifar")
        weights = checkpoint_paths(tmp_path / "c")[0]
        data = bytearray(weights.read_bytes())
        data[-10] ^= 0xFF
        weights.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match="corrupt"):
            load_checkpoint(tmp_path / "c")

    def test_weights_that_do_not_fit_the_model(self, tmp_path: Path) -> None:
        save_checkpoint(tmp_path / "c", _model(), name="resnet18-cifar")
        _, manifest = checkpoint_paths(tmp_path / "c")
        doc = json.loads(manifest.read_text())
        doc["config"]["width"] = 8
        manifest.write_text(json.dumps(doc))
        with pytest.raises(CheckpointError, match="does not fit"):
            load_model(tmp_path / "c")

    def test_no_pickle_in_weights(self, tmp_path: Path) -> None:
        save_checkpoint(tmp_path / "c", _model(), name="resnet18-cifar")
        head = checkpoint_paths(tmp_path / "c")[0].read_bytes()[:2]
        assert head != b"\x80\x02" and head != b"PK"  # neither a pickle nor a torch zip


class TestTrainingState:
    def test_round_trip_with_an_extra_module(self, tmp_path: Path) -> None:
        model, average = _model(), _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.rand(2, 3, 32, 32)).sum().backward()
        opt.step()
        save_training_state(
            tmp_path / "s",
            model=model,
            optimizer=opt,
            progress={"epoch": 1},
            extra={"ema": average},
        )
        model2, average2 = _model(), _model()
        opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
        progress = load_training_state(
            tmp_path / "s", model=model2, optimizer=opt2, extra={"ema": average2}
        )
        assert progress == {"epoch": 1}
        for a, b in ((model, model2), (average, average2)):
            for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
                assert torch.equal(x, y), k
        assert opt2.state_dict()["state"][0]["momentum_buffer"].abs().sum() > 0
        with pytest.raises(ValueError, match=r"must not contain '\.'"):
            save_training_state(
                tmp_path / "t", model=model, optimizer=opt, progress={}, extra={"a.b": average}
            )
        with pytest.raises(CheckpointError, match="no 'swa'"):
            load_training_state(
                tmp_path / "s", model=model2, optimizer=opt2, extra={"swa": _model()}
            )

    def test_a_save_interrupted_midway_leaves_the_previous_state_loadable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import rkdsc_core.checkpoint as checkpoint

        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        save_training_state(tmp_path / "s", model=model, optimizer=opt, progress={"epoch": 1})

        def killed() -> str:  # the process dies while the manifest is being prepared
            raise KeyboardInterrupt

        monkeypatch.setattr(checkpoint, "git_commit", killed)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)  # epoch 2's weights differ
        with pytest.raises(KeyboardInterrupt):
            save_training_state(tmp_path / "s", model=model, optimizer=opt, progress={"epoch": 2})
        progress = load_training_state(tmp_path / "s", model=_model(), optimizer=opt)
        assert progress == {"epoch": 1}

    def test_a_save_killed_between_its_two_renames_resumes_from_the_previous_epoch(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        config = {"lr": 0.1}
        kw: dict[str, Any] = {"history": [], "wall_seconds": 1.0, "config": config}
        save_epoch(tmp_path / "s", model=model, optimizer=opt, epoch=1, step=10, **kw)
        epoch1 = [p.detach().clone() for p in model.parameters()]
        real_replace = os.replace

        def replace(src: Any, dst: Any) -> None:  # dies after the weights, before the manifest
            if str(dst).endswith("s.json"):
                raise KeyboardInterrupt
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)  # epoch 2's weights differ
        with pytest.raises(KeyboardInterrupt):
            save_epoch(tmp_path / "s", model=model, optimizer=opt, epoch=2, step=20, **kw)
        monkeypatch.setattr(os, "replace", real_replace)
        with pytest.raises(CheckpointError, match="corrupt or was replaced"):
            load_checkpoint(tmp_path / "s")  # new weights beside the old manifest
        fresh = _model()
        opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1)
        with caplog.at_level("WARNING", logger="rkdsc_core.checkpoint"):
            resumed = resume_training(tmp_path / "s", model=fresh, optimizer=opt2, config=config)
        assert resumed.epoch == 1 and "previous state" in caplog.text
        assert all(torch.equal(a, b) for a, b in zip(epoch1, fresh.parameters(), strict=True))
        # The next save is whole again and leaves no previous state behind.
        save_epoch(tmp_path / "s", model=fresh, optimizer=opt2, epoch=2, step=20, **kw)
        assert load_checkpoint(tmp_path / "s")[1]["progress"]["epoch"] == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.safetensors"]

    def test_save_epoch_is_what_resume_training_reads(self, tmp_path: Path) -> None:
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        history = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}]
        save_epoch(
            tmp_path / "s", model=model, optimizer=opt, epoch=2, step=40, history=history,
            wall_seconds=12.5, config={"lr": 0.1}, world_size=2,
        )  # fmt: skip
        fresh = _model()
        opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1)
        resumed = resume_training(tmp_path / "s", model=fresh, optimizer=opt2, config={"lr": 0.1})
        assert resumed[:4] == (2, 40, history, 12.5)
        assert resumed.progress["world_size"] == 2
        assert torch.equal(fresh.state_dict()["head.weight"], model.state_dict()["head.weight"])
        with pytest.raises(ValueError, match="another config"):
            resume_training(tmp_path / "s", model=fresh, optimizer=opt2, config={"lr": 0.2})

    def test_a_config_with_tuples_resumes_as_it_was_saved(self, tmp_path: Path) -> None:
        config = {"widths": (4, 8), "pairs": [(1, 2)], "by_len": {8: 0.5}}
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        save_epoch(
            tmp_path / "s", model=model, optimizer=opt, epoch=1, step=1, history=[],
            wall_seconds=1.0, config=config, world_size=1,
        )  # fmt: skip
        resumed = resume_training(tmp_path / "s", model=_model(), optimizer=opt, config=config)
        assert resumed[0] == 1
