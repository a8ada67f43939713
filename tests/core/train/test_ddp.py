"""Tests of the DDP plumbing, including a real 2-process gloo run under torchrun.

Run as a script (``python test_ddp.py OUT``) this file is the torchrun worker: it trains
a tiny teacher and a tiny link through ``train_teacher`` / ``train_link``, distils the
teacher's cache into a student and a codec through ``train_student`` / ``train_codec``,
searches a tiny supernet through ``search`` and runs the lambda table's protocol -- the code
the ``rkdsc train`` and ``rkdsc nas`` commands run -- and each rank writes its final weights
to ``OUT``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from rkdsc_core.checkpoint import load_model
from rkdsc_core.data import ImageDataset
from rkdsc_core.distill import build_teacher_cache, load_teacher_cache
from rkdsc_core.link import SemanticPipeline
from rkdsc_core.models import create_model
from rkdsc_core.models.genotypes import DARTS_V2
from rkdsc_core.nas import (
    SearchConfig,
    StudentEvalConfig,
    TeacherOutputs,
    build_search_modules,
    search,
)
from rkdsc_core.nas import train_student_plain as protocol
from rkdsc_core.train import (
    CodecRKDConfig,
    DistInfo,
    LinkTrainConfig,
    StudentKDConfig,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    build_pipeline,
    build_student,
    build_teacher,
    cleanup_distributed,
    init_distributed,
    shard_batch_size,
    teacher_config,
    train_codec,
    train_link,
    train_student,
    train_teacher,
    unwrap,
    wrap_ddp,
)

# The default teacher (FastNet): its data-initialised stem must come out alike on both ranks,
# and so must the weight average, whose BatchNorm statistics each rank averages on its own.
_TEACHER = teacher_config(
    model_overrides={"widths": (4, 8, 8)},
    epochs=1,
    batch_size=8,
    eval_images=8,
    eval_batch_size=8,
    cutout=8,
    ema_decay=0.5,
)
_LINK = LinkTrainConfig(
    student_overrides={"C": 4, "layers": 3, "token_dim": 16},
    codec_overrides={"d_model": 32, "heads": 2},
    num_pilots=4,
    epochs=1,
    batch_size=8,
    eval_images=8,
)
_STUDENT = StudentKDConfig(
    C=4, layers=3, student_overrides={"token_dim": 16}, epochs=1, batch_size=8, eval_images=8
)
_CODEC = CodecRKDConfig(
    codec_overrides={"d_model": 32, "heads": 2}, num_pilots=4, epochs=1, batch_size=8,
    eval_images=8,
)  # fmt: skip
_SEARCH = SearchConfig(
    C=4, layers=3, input_size=16, epochs=1, batch_size=8, subset=32, use_kd=True, lam=1.0
)
"""KDL-DARTS: 16 + 16 images, global batch 8 -> 2 steps per epoch, a batch of 4 per rank."""
_PROTOCOL = StudentEvalConfig(C=4, layers=2, token_dim=8, epochs=1, batch_size=8, eval_images=16)
_ALPHAS = ("alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce")
_STEPS = 3
_LAUNCH_TIMEOUT_S = 270


def _dataset() -> ImageDataset:
    rng = np.random.default_rng(0)
    return ImageDataset(
        name="cifar10",
        split="train",
        classes=tuple(f"c{i}" for i in range(10)),
        images=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
        labels=(np.arange(32) % 10).astype(np.int64),
        source_sha256="0" * 64,
    )


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _worker(out: Path) -> None:
    """One torchrun rank: the command path (init_distributed(os.environ) -> train_*)."""
    torch.set_num_threads(1)
    info = init_distributed(os.environ, device="cpu", timeout_s=120)
    try:
        data = _dataset()
        torch.manual_seed(_TEACHER.seed)
        initial = build_teacher(_TEACHER, 10)
        teacher, summary = train_teacher(
            _TEACHER, data, data, out / "teacher-run", dist=info, max_steps=_STEPS
        )
        save_file(_state(teacher), str(out / f"teacher-rank{info.rank}.safetensors"))
        torch.manual_seed(_LINK.seed)
        initial_link = build_pipeline(_LINK)
        link, _ = train_link(_LINK, data, data, out / "link-run", dist=info, max_steps=_STEPS)
        save_file(_state(link), str(out / f"link-rank{info.rank}.safetensors"))
        # Stages 1 and 2 from the teacher's cache (computed by rank 0 only).
        build_teacher_cache(
            out / "teacher-run" / "teacher", data, out / "cache", views=2, is_main=info.is_main
        )
        barrier(info)
        cache = load_teacher_cache(out / "cache", dataset=data)
        torch.manual_seed(_STUDENT.seed)
        initial_student = build_student(_STUDENT, 10)
        student, _ = train_student(
            _STUDENT, cache, data, data, out / "student-run", dist=info, max_steps=_STEPS
        )
        save_file(_state(student), str(out / f"student-rank{info.rank}.safetensors"))
        stage1 = out / "student-run" / "student"
        torch.manual_seed(_CODEC.seed)  # train_codec's initialisation, replayed
        codec_args = {"token_dim": 16, "num_tokens": student.num_tokens, "d_model": 32, "heads": 2}
        initial_codec = SemanticPipeline(
            load_model(stage1), create_model("cat-codec", **codec_args), num_pilots=4
        )
        codec, _ = train_codec(
            _CODEC, stage1, cache, data, data, out / "codec-run", dist=info, max_steps=_STEPS
        )
        save_file(_state(codec), str(out / f"codec-rank{info.rank}.safetensors"))
        g = torch.Generator().manual_seed(0)
        teacher_out = TeacherOutputs(
            torch.randn(32, 10, generator=g), torch.randn(32, 6, generator=g)
        )
        found = search(_SEARCH, data, teacher_out, out / "search-run", dist=info)
        save_file(found.alphas, str(out / f"search-rank{info.rank}.safetensors"))
        scored = protocol(DARTS_V2, data, data, _PROTOCOL, dist=info, max_steps=2)
        (out / f"protocol-rank{info.rank}.json").write_text(json.dumps(scored) + "\n")
        if info.is_main:
            save_file(_state(initial), str(out / "teacher-initial.safetensors"))
            save_file(_state(initial_link), str(out / "link-initial.safetensors"))
            save_file(_state(initial_student), str(out / "student-initial.safetensors"))
            save_file(_state(initial_codec), str(out / "codec-initial.safetensors"))
            net = build_search_modules(_SEARCH, 10, 6).network
            alphas = dict(zip(_ALPHAS, (a.detach() for a in net.arch_parameters()), strict=True))
            save_file(alphas, str(out / "search-initial.safetensors"))
            (out / "world_size").write_text(f"{summary['world_size']}\n")
        barrier(info)
    finally:
        cleanup_distributed()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def torchrun_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Launch 2 CPU ranks (gloo on 127.0.0.1) running :func:`_worker`; their output folder."""
    out = tmp_path_factory.mktemp("ddp")
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if Path("/sys/class/net/lo").exists():
        env |= {"GLOO_SOCKET_IFNAME": "lo"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "--max_restarts",
        "0",
        __file__,
        str(out),
    ]
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=_LAUNCH_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in {_LAUNCH_TIMEOUT_S} s: {e.stderr!r}"[-4000:])
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return out


class TestSingleProcess:
    def test_no_torchrun_variables_mean_one_process(self) -> None:
        info = init_distributed({}, device="cpu")
        assert info == DistInfo.single("cpu") and info.is_main and not info.distributed
        assert not torch.distributed.is_initialized()

    def test_incomplete_torchrun_variables_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="MASTER_ADDR"):
            init_distributed({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})

    def test_helpers_are_identities(self) -> None:
        info = DistInfo.single()
        model = torch.nn.Linear(2, 2)
        assert wrap_ddp(model, info) is model and unwrap(model) is model
        assert all_reduce_sum(3.0, info) == 3.0 and all_reduce_mean(2.5, info) == 2.5
        t = torch.tensor([1.0, 2.0])
        assert torch.equal(all_reduce_sum(t, info), t)
        barrier(info)

    def test_compile_wraps_the_same_parameters(self) -> None:
        info = dataclasses.replace(DistInfo.single(), compile=True)
        model = torch.nn.Linear(2, 2)
        wrapped = wrap_ddp(model, info)  # torch.compile is lazy: nothing compiles here
        assert wrapped is not model and unwrap(wrapped) is model
        assert all(a is b for a, b in zip(wrapped.parameters(), model.parameters(), strict=True))

    def test_global_batch_is_split_evenly(self) -> None:
        two = DistInfo(
            rank=1, world_size=2, local_rank=1, device=torch.device("cpu"), is_main=False
        )
        assert shard_batch_size(128, two) == 64
        with pytest.raises(ValueError, match="multiple of the world size"):
            shard_batch_size(7, two)


@pytest.mark.slow
class TestTorchrunTwoRanks:
    @pytest.mark.parametrize("run", ["teacher", "link", "student", "codec", "search"])
    def test_ranks_end_with_identical_trained_weights(self, torchrun_out: Path, run: str) -> None:
        rank0 = load_file(str(torchrun_out / f"{run}-rank0.safetensors"))
        rank1 = load_file(str(torchrun_out / f"{run}-rank1.safetensors"))
        initial = load_file(str(torchrun_out / f"{run}-initial.safetensors"))
        assert rank0.keys() == rank1.keys() == initial.keys()
        for k in rank0:
            assert torch.equal(rank0[k], rank1[k]), k
        assert any(not torch.equal(rank0[k], initial[k]) for k in rank0)

    def test_only_rank_0_writes_and_the_run_was_distributed(self, torchrun_out: Path) -> None:
        assert (torchrun_out / "world_size").read_text().strip() == "2"
        runs = sorted(p.name for p in (torchrun_out / "teacher-run").iterdir())
        assert runs == ["state.json", "state.safetensors", "teacher.json", "teacher.safetensors"]
        search_files = sorted(p.name for p in (torchrun_out / "search-run").iterdir())
        assert search_files == [
            "arch-0001.json",
            "arch-0001.safetensors",
            "state.json",
            "state.safetensors",
        ]

    def test_the_search_history_covers_both_ranks_batches(self, torchrun_out: Path) -> None:
        progress = json.loads((torchrun_out / "search-run" / "state.json").read_text())
        (epoch,) = progress["progress"]["history"]
        assert epoch["step"] == 2 and 0.0 <= epoch["val_accuracy"] <= 1.0

    def test_the_protocol_reports_the_same_on_both_ranks(self, torchrun_out: Path) -> None:
        rank0 = json.loads((torchrun_out / "protocol-rank0.json").read_text())
        rank1 = json.loads((torchrun_out / "protocol-rank1.json").read_text())
        for doc in (rank0, rank1):  # each rank's own clock
            assert doc.pop("wall_seconds") > 0
            assert all(row.pop("seconds") > 0 for row in doc["history"])
        assert rank0 == rank1 and rank0["eval_images"] == 16


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
