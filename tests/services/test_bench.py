"""The benchmark suite on tiny sizes: structure and arithmetic of the results, never speed."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from rkdsc_core.link import LinkBundle
from rkdsc_core.models import count_macs, count_parameters, create_model
from services.bench import (
    BENCHMARKS,
    AirBenchConfig,
    BenchConfig,
    ChannelBenchConfig,
    Figure,
    LatencyStats,
    LoadBenchConfig,
    LoadBenchResult,
    ModelsBenchConfig,
    StackBenchConfig,
    format_table,
    load_images,
    run_air_bench,
    run_bench,
    run_channel_bench,
    run_load_bench,
    run_models_bench,
    run_stack_bench,
    synthetic_images,
)
from services.bench import models as models_bench
from services.bench._common import process_rss_bytes
from services.bench.air import file_sizes
from services.bench.load import (
    MONITORED,
    RssSampler,
    RssStats,
    RunTally,
    StreamTally,
    adds_up,
    load_env,
    write_image_folder,
)
from services.bench.models import STUDENT_INPUT_SIZE, encoder_parameters
from services.bench.runner import format_report, service_environment
from services.bench.stack import run_in_process, stack_env
from services.cli import register
from services.pb import frame_pb2, services_pb2

TINY_CHANNEL = ChannelBenchConfig(
    frame_symbols=12, seconds=0.02, sweep=(4, 12, 48), sweep_seconds=0.01
)
TINY_MODELS = dict(teachers=("clip-vit-tiny",), batches=(1, 3), seconds=0.01, rounds=2)
TINY_TEACHERS = {"tiny-32": {}, "tiny-48": {"image_size": 48}}
"""Stand-ins for the real teachers: ``clip-vit-tiny`` at its 32 px and at 48 px."""


def strict_json(doc: Any) -> Any:
    """``doc`` through JSON with NaN/inf refused: what ``--json`` and ``--out`` write."""
    return json.loads(json.dumps(doc, allow_nan=False))


def check_figures(figures: list[Figure]) -> None:
    for f in figures:
        expected = (
            f.system / f.baseline if f.ratio_of == "system/baseline" else f.baseline / f.system
        )
        assert f.ratio == pytest.approx(expected)
        assert f.system > 0 and f.baseline > 0 and f.ratio > 0
        if f.target is not None:
            assert f.met == (f.ratio >= f.target)
        else:
            assert f.met is f.goal_met and bool(f.goal) == (f.goal_met is not None)
        strict_json(f.to_json())


@pytest.fixture(scope="module")
def images() -> Any:
    return synthetic_images(6, seed=1)


class TestFigure:
    def test_ratio_of_system_over_baseline(self) -> None:
        f = Figure("x", "images/s", 40.0, 50.0, target=0.8)
        assert f.ratio == pytest.approx(0.8) and f.met is True

    def test_ratio_of_baseline_over_system(self) -> None:
        f = Figure("x", "bytes", 512, 2048, ratio_of="baseline/system")
        assert f.ratio == pytest.approx(4.0) and f.met is None

    def test_missed_target(self) -> None:
        assert Figure("x", "u", 1.0, 4.0, target=0.5).met is False

    def test_json_carries_ratio_and_met(self) -> None:
        doc = strict_json(Figure("x", "u", 3.0, 1.0, target=2.0).to_json())
        assert doc["ratio"] == pytest.approx(3.0) and doc["met"] is True

    @pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
    def test_non_positive_or_non_finite_value_is_refused(self, bad: float) -> None:
        with pytest.raises(ValueError, match="system"):
            Figure("x", "u", bad, 1.0)

    def test_unknown_ratio_of_is_refused(self) -> None:
        with pytest.raises(ValueError, match="ratio_of"):
            Figure("x", "u", 1.0, 1.0, ratio_of="system*baseline")

    def test_goal_decides_met_without_a_ratio_target(self) -> None:
        assert Figure("x", "MiB", 5.0, 4.0, goal="growth < 100 MiB", goal_met=True).met is True
        assert Figure("x", "MiB", 5.0, 4.0, goal="growth < 100 MiB", goal_met=False).met is False

    def test_goal_without_goal_met_is_refused(self) -> None:
        with pytest.raises(ValueError, match="goal"):
            Figure("x", "u", 1.0, 1.0, goal="adds up")

    def test_goal_and_target_together_are_refused(self) -> None:
        with pytest.raises(ValueError, match="not both"):
            Figure("x", "u", 1.0, 1.0, target=1.0, goal="adds up", goal_met=True)

    def test_table_shows_the_goal_and_its_verdict(self) -> None:
        figs = [
            ("load", Figure("a", "u", 1.0, 1.0, goal="one fate per image", goal_met=True)),
            ("load", Figure("b", "u", 1.0, 1.0, goal="growth < 100 MiB", goal_met=False)),
        ]
        table = format_table(figs)
        assert "one fate per image: met" in table
        assert "growth < 100 MiB: **missed**" in table


class TestLatencyStats:
    def test_percentiles_in_milliseconds(self) -> None:
        stats = LatencyStats.from_seconds([i / 1000 for i in range(1, 101)])
        assert stats.count == 100
        assert stats.p50_ms == pytest.approx(50.5)
        assert stats.p90_ms == pytest.approx(90.1)
        assert stats.p99_ms == pytest.approx(99.01)
        assert stats.max_ms == pytest.approx(100.0)

    def test_empty_is_refused(self) -> None:
        with pytest.raises(ValueError):
            LatencyStats.from_seconds([])


class TestImages:
    def test_synthetic_images_are_labelled_as_such(self) -> None:
        ims = synthetic_images(4)
        assert ims.pixels.shape == (4, 32, 32, 3) and ims.pixels.dtype == np.uint8
        assert ims.labels.shape == (4,) and ims.synthetic and "SYNTHETIC" in ims.source

    def test_no_source_gives_synthetic_images(self) -> None:
        assert load_images(3, source=None, cache_dir=None).synthetic

    def test_unreadable_source_falls_back_to_synthetic(self, tmp_path: Path) -> None:
        ims = load_images(3, source=tmp_path / "missing.tar.gz", cache_dir=tmp_path / "cache")
        assert ims.synthetic and len(ims) == 3


class TestChannelBench:
    def test_ratio_is_channel_over_raw_numpy(self) -> None:
        r = run_channel_bench(TINY_CHANNEL)
        assert r.frame_symbols == 12
        assert r.ratio == pytest.approx(r.channel_symbols_per_s / r.numpy_raw_symbols_per_s)
        rates = (
            r.channel_symbols_per_s,
            r.numpy_raw_symbols_per_s,
            r.numpy_frame_symbols_per_s,
            r.emulator_symbols_per_s,
        )
        assert all(v > 0 for v in rates)
        head = r.figures()[0]
        assert head.target == 0.5 and head.ratio == pytest.approx(r.ratio)
        check_figures(r.figures())

    def test_sweep_points_are_consistent(self) -> None:
        r = run_channel_bench(TINY_CHANNEL)
        assert [p.symbols for p in r.sweep] == [4, 12, 48]
        for p in r.sweep:
            assert p.us_per_frame == pytest.approx(1e6 * p.symbols / p.symbols_per_s)
        assert math.isfinite(r.overhead_us_per_frame) and math.isfinite(r.ns_per_symbol)

    def test_frame_size_defaults_to_the_links_p_plus_l_max(
        self, tiny_weights: Path, tiny_link: LinkBundle
    ) -> None:
        config = ChannelBenchConfig(
            weights_dir=tiny_weights, seconds=0.01, sweep=(4, 8), sweep_seconds=0.01
        )
        p = tiny_link.pipeline
        assert run_channel_bench(config).frame_symbols == p.num_pilots + max(p.lengths)

    def test_json_round_trip(self) -> None:
        doc = strict_json(run_channel_bench(TINY_CHANNEL).to_json())
        assert doc["ratio"] == pytest.approx(
            doc["channel_symbols_per_s"] / doc["numpy_raw_symbols_per_s"]
        )

    def test_bad_sweep_is_refused(self) -> None:
        with pytest.raises(ValueError, match="sweep"):
            ChannelBenchConfig(sweep=(72,))


class TestModelsBench:
    @pytest.fixture
    def fed(self, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[int, ...]]]:
        """Teachers ``tiny-32`` and ``tiny-48`` in place of the registry's; records the input
        shapes each was called with."""
        shapes: dict[str, list[tuple[int, ...]]] = {name: [] for name in TINY_TEACHERS}

        def teacher(name: str) -> torch.nn.Module:
            model = create_model("clip-vit-tiny", **TINY_TEACHERS[name]).eval()
            model.register_forward_pre_hook(
                lambda _m, args: shapes[name].append(tuple(args[0].shape))
            )
            return model

        monkeypatch.setattr(models_bench, "_teacher", teacher)
        return shapes

    def test_counts_and_speed_ratios(self, tiny_weights: Path, tiny_link: LinkBundle) -> None:
        r = run_models_bench(ModelsBenchConfig(weights_dir=tiny_weights, **TINY_MODELS))  # type: ignore[arg-type]
        p = tiny_link.pipeline
        assert r.student_params == encoder_parameters(p)
        assert r.student_params < r.link_params == count_parameters(p)
        assert r.student_input_size == STUDENT_INPUT_SIZE and r.student_macs > 0
        [t] = r.teachers
        assert t.name == "clip-vit-tiny" and t.input_size == 32
        assert t.params > 0 and t.macs > 0
        assert [s.batch for s in t.speed] == [1, 3]
        for s in t.speed:
            assert s.speedup == pytest.approx(s.student_images_per_s / s.teacher_images_per_s)
        figs = {f.name: f for f in r.figures()}
        assert figs["parameters vs clip-vit-tiny"].ratio == pytest.approx(
            t.params / r.student_params
        )
        assert figs["MACs per image vs clip-vit-tiny"].ratio == pytest.approx(
            t.macs / r.student_macs
        )
        assert figs["encode speed vs clip-vit-tiny, batch 3"].target == 10.0
        check_figures(r.figures())
        doc = strict_json(r.to_json())
        assert doc["teachers"][0]["speed"][0]["speedup"] == pytest.approx(t.speed[0].speedup)

    def test_each_teacher_is_fed_its_own_input_size(
        self, tiny_weights: Path, fed: dict[str, list[tuple[int, ...]]]
    ) -> None:
        config = ModelsBenchConfig(
            teachers=tuple(TINY_TEACHERS), batches=(1, 3), seconds=0.01, weights_dir=tiny_weights
        )
        r = run_models_bench(config)
        assert [t.name for t in r.teachers] == ["tiny-32", "tiny-48"]
        assert [t.input_size for t in r.teachers] == [32, 48]
        for t in r.teachers:
            size = t.input_size
            assert fed[t.name] and {s[1:] for s in fed[t.name]} == {(3, size, size)}
            assert {s[0] for s in fed[t.name]} == {1, 3}
            model = create_model("clip-vit-tiny", **TINY_TEACHERS[t.name])
            assert t.macs == count_macs(model, torch.rand(1, 3, size, size))
            assert t.params == count_parameters(model)
        # 36 patches at 48 px against 16 at 32 px: more MACs per image.
        assert r.teacher("tiny-48").macs > r.teacher("tiny-32").macs

    def test_figures_per_teacher(
        self, tiny_weights: Path, fed: dict[str, list[tuple[int, ...]]]
    ) -> None:
        config = ModelsBenchConfig(
            teachers=tuple(TINY_TEACHERS), batches=(1, 3), seconds=0.01, weights_dir=tiny_weights
        )
        r = run_models_bench(config)
        figs = {f.name: f for f in r.figures()}
        assert list(figs) == [
            name
            for t in ("tiny-32", "tiny-48")
            for name in (
                f"parameters vs {t}",
                f"MACs per image vs {t}",
                f"encode speed vs {t}, batch 1",
                f"encode speed vs {t}, batch 3",
            )
        ]
        for t in r.teachers:
            assert figs[f"parameters vs {t.name}"].ratio == pytest.approx(
                t.params / r.student_params
            )
            macs = figs[f"MACs per image vs {t.name}"]
            assert macs.ratio == pytest.approx(t.macs / r.student_macs)
            assert f"{t.input_size}x{t.input_size}" in macs.baseline_label
            for s in t.speed:
                speed = figs[f"encode speed vs {t.name}, batch {s.batch}"]
                assert speed.system == s.student_images_per_s
                assert speed.baseline == s.teacher_images_per_s
                assert speed.ratio == pytest.approx(s.speedup) and speed.target == 10.0
                assert t.name in speed.baseline_label
        # The student is timed once per batch size and compared with every teacher.
        a, b = r.teachers
        for sa, sb in zip(a.speed, b.speed, strict=True):
            assert sa.student_images_per_s == sb.student_images_per_s
        check_figures(r.figures())
        doc = strict_json(r.to_json())
        assert [t["name"] for t in doc["teachers"]] == ["tiny-32", "tiny-48"]
        assert doc["config"]["teachers"] == ["tiny-32", "tiny-48"]
        for t, t_doc in zip(r.teachers, doc["teachers"], strict=True):
            assert t_doc["input_size"] == t.input_size
            for s, s_doc in zip(t.speed, t_doc["speed"], strict=True):
                assert s_doc["speedup"] == pytest.approx(s.speedup)
        with pytest.raises(KeyError, match="tiny-32, tiny-48"):
            r.teacher("clip-vit-b32")

    def test_a_teacher_without_an_input_size_is_refused(
        self, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(models_bench, "_teacher", lambda _name: torch.nn.Identity())
        config = ModelsBenchConfig(teachers=("identity",), seconds=0.01, weights_dir=tiny_weights)
        with pytest.raises(TypeError, match="'identity' does not declare its input size"):
            run_models_bench(config)

    def test_default_teachers_are_the_two_cpu_ones_and_clip(self) -> None:
        teachers = ("resnet18-cifar-w32", "fastnet-cifar", "clip-vit-b32")
        assert ModelsBenchConfig().teachers == teachers

    @pytest.mark.parametrize("teachers", [(), ("clip-vit-tiny", "clip-vit-tiny")])
    def test_no_or_repeated_teachers_are_refused(self, teachers: tuple[str, ...]) -> None:
        with pytest.raises(ValueError, match="teachers"):
            ModelsBenchConfig(teachers=teachers)

    def test_a_single_name_string_is_refused(self) -> None:
        with pytest.raises(TypeError, match=r"\('clip-vit-b32',\)"):
            ModelsBenchConfig(teachers="clip-vit-b32")  # type: ignore[arg-type]

    def test_encoder_parameters_leave_out_the_head(self, tiny_link: LinkBundle) -> None:
        p = tiny_link.pipeline
        head = count_parameters(p.student.head)  # type: ignore[arg-type]
        expected = count_parameters(p.student) - head + count_parameters(p.codec.encoder)
        assert encoder_parameters(p) == expected


class TestAirBench:
    def test_bytes_per_length_and_ratios(
        self, tiny_weights: Path, tiny_link: LinkBundle, images: Any
    ) -> None:
        r = run_air_bench(AirBenchConfig(images=4, weights_dir=tiny_weights), images)
        p = tiny_link.pipeline
        assert r.images == 4 and r.synthetic and r.raw_bytes == 32 * 32 * 3
        assert [row.length for row in r.lengths] == sorted(p.lengths)
        for row in r.lengths:
            assert row.channel_uses == row.length
            assert row.float32_bytes == 8 * row.length
            assert row.channel_uses_with_pilots == row.length + p.num_pilots
            assert row.float32_bytes_with_pilots == 8 * (row.length + p.num_pilots)
        sizes = [file_sizes(images.pixels[i]) for i in range(4)]
        assert r.png_bytes == pytest.approx(np.mean([s["png"] for s in sizes]))
        assert r.jpeg_bytes[75] == pytest.approx(np.mean([s["jpeg75"] for s in sizes]))
        first = r.figures()[0]
        assert first.ratio == pytest.approx(r.png_bytes / (8 * max(p.lengths)))
        check_figures(r.figures())
        strict_json(r.to_json())

    def test_file_sizes_are_those_of_real_files(self, images: Any) -> None:
        sizes = file_sizes(images.pixels[0])
        assert set(sizes) == {"png", "jpeg75", "jpeg90"} and all(v > 0 for v in sizes.values())


class TestStackBench:
    def test_in_process_loop_counts_every_image(self, tiny_link: LinkBundle, images: Any) -> None:
        for workers in (1, 2):
            run = run_in_process(
                tiny_link.pipeline, images, 7, length=8, snr_db=20.0, workers=workers
            )
            side = run.side()
            assert side.images == 7 and side.latency.count == 7
            assert side.images_per_s == pytest.approx(7 / side.seconds)
            assert 0.0 <= side.accuracy <= 1.0 and side.cpu_seconds is not None

    def test_stack_env_pins_threads_channel_and_policy(self) -> None:
        env = stack_env(StackBenchConfig(threads=1, snr_db=7.0), 16)
        assert env["RKDSC_TRANSMITTER_POLICY__FIXED_LENGTH"] == "16"
        assert env["RKDSC_CHANNEL_SNR_DB"] == "7.0"
        assert env["RKDSC_RECEIVER_TORCH_THREADS"] == "1"
        assert "OMP_NUM_THREADS" not in stack_env(StackBenchConfig(threads=None), 16)

    def test_bad_config_is_refused(self) -> None:
        with pytest.raises(ValueError, match="streams"):
            StackBenchConfig(streams=0)

    @pytest.mark.slow
    def test_small_stack_against_in_process(
        self, tiny_weights: Path, images: Any, tmp_path: Path
    ) -> None:
        config = StackBenchConfig(
            images=6,
            rounds=2,
            warmup=2,
            streams=2,
            window=2,
            workers=2,
            single_images=3,
            length=16,
            weights_dir=tiny_weights,
            ready_timeout=60,
            call_timeout=60,
        )
        r = run_stack_bench(config, images, run_dir=tmp_path / "run")
        assert r.length == 16
        assert r.in_process.images == r.stack.images == 12 and r.stack_single.images == 3
        assert r.in_process_parallel is not None and r.in_process_parallel.images == 12
        assert r.fates == {"predicted": 15}
        assert r.baseline_images_per_s == max(
            r.in_process.images_per_s, r.in_process_parallel.images_per_s
        )
        assert r.throughput_ratio == pytest.approx(r.stack.images_per_s / r.baseline_images_per_s)
        assert set(r.stage_ms) == {"encode", "channel", "decode", "transmitter_end_to_end"}
        assert {"client", "transmitter", "channel", "receiver"} <= set(r.cpu_ms_by_process)
        if r.stack.cpu_ms_per_image is not None:
            assert sum(r.cpu_ms_by_process.values()) == pytest.approx(r.stack.cpu_ms_per_image)
        figs = r.figures()
        assert figs[0].name == "stack throughput" and figs[0].target == 0.8
        assert figs[0].ratio == pytest.approx(r.throughput_ratio)
        check_figures(figs)
        strict_json(r.to_json())


def _status(**counts: Any) -> services_pb2.RunStatus:
    fields: dict[str, Any] = dict(
        run_id="r", state="done", total=10, sent=10, predicted=7, lost=2, errors=1
    )
    fields |= {"errors_by_code": {"UNAVAILABLE": 1}} | counts
    return services_pb2.RunStatus(**fields)


def _result(
    image_id: str, fate: Any = frame_pb2.FRAME_FATE_PREDICTED, error: str = ""
) -> frame_pb2.FrameResult:
    return frame_pb2.FrameResult(image_id=image_id, fate=fate, error=error)


def _tally(
    name: str, n: int, extra: tuple[str, ...] = (), drop: tuple[str, ...] = ()
) -> StreamTally:
    ids = [f"{name}-{i}" for i in range(n)]
    results = [_result(i) for i in ids if i not in drop] + [_result(i) for i in extra]
    return StreamTally.from_results(name, ids, results)


def _load_result(
    *, runs: list[RunTally], streams: list[StreamTally], rss_peak: float = 210.0
) -> LoadBenchResult:
    lat = LatencyStats.from_seconds([0.010, 0.012, 0.030])
    idle = LatencyStats.from_seconds([0.005, 0.006, 0.008])
    return LoadBenchResult(
        config=LoadBenchConfig(links=len(runs), streams=len(streams)),
        weights="w",
        dataset="d",
        seconds=2.0,
        runs=runs,
        streams=streams,
        latency=lat,
        client_latency=lat,
        baseline_images=10,
        baseline_seconds=0.5,
        baseline_latency=idle,
        baseline_client_latency=idle,
        rss={name: RssStats(1, 5, 200.0, rss_peak, 201.0) for name in MONITORED},
    )


class TestLoadBench:
    def test_run_whose_fates_sum_to_total_adds_up(self) -> None:
        tally = RunTally.from_status("load-0", _status())
        assert tally.accounted == 10 and tally.adds_up
        assert tally.errors_by_code == {"UNAVAILABLE": 1}

    @pytest.mark.parametrize(
        "counts",
        [
            {"predicted": 6},  # one image without a fate
            {"predicted": 8},  # one image with two
            {"state": "failed"},
            {"errors_by_code": {"UNAVAILABLE": 2}},  # codes do not sum to errors
        ],
    )
    def test_run_that_does_not_add_up(self, counts: dict[str, Any]) -> None:
        assert not RunTally.from_status("load-0", _status(**counts)).adds_up

    def test_stream_with_one_result_per_id_adds_up(self) -> None:
        tally = _tally("s", 5)
        assert (tally.images, tally.results, tally.missing, tally.duplicates) == (5, 5, 0, 0)
        assert tally.adds_up and tally.fates == {"predicted": 5}

    def test_a_duplicate_result_turns_adds_up_false(self) -> None:
        good, dup = _tally("a", 4), _tally("b", 4, extra=("b-2",))
        assert dup.duplicates == 1 and dup.results == 5 and dup.missing == 0
        assert not dup.adds_up
        run = RunTally.from_status("load-0", _status())
        assert adds_up([run], [good]) and not adds_up([run], [good, dup])

    def test_a_missing_result_and_a_stranger_are_counted(self) -> None:
        tally = _tally("s", 4, extra=("other-1",), drop=("s-3",))
        assert tally.missing == 1 and tally.unexpected == 1 and tally.results == 4
        assert not tally.adds_up

    def test_a_stream_that_failed_does_not_add_up(self) -> None:
        ids = ["s-0"]
        assert not StreamTally.from_results("s", ids, [_result("s-0")], "UNAVAILABLE: x").adds_up

    def test_stream_fates_and_error_codes(self) -> None:
        results = [
            _result("s-0"),
            _result("s-1", frame_pb2.FRAME_FATE_LOST),
            _result("s-2", frame_pb2.FRAME_FATE_ERROR, "DEADLINE_EXCEEDED: late"),
            _result("s-3", frame_pb2.FRAME_FATE_ERROR, ""),
        ]
        tally = StreamTally.from_results("s", [f"s-{i}" for i in range(4)], results)
        assert tally.fates == {"predicted": 1, "lost": 1, "error": 2}
        assert tally.errors_by_code == {"DEADLINE_EXCEEDED": 1, "UNKNOWN": 1}
        assert tally.adds_up

    def test_repeated_ids_sent_are_refused(self) -> None:
        with pytest.raises(ValueError, match="distinct"):
            StreamTally.from_results("s", ["s-0", "s-0"], [])

    def test_result_totals_and_figures(self) -> None:
        runs = [RunTally.from_status(f"load-{k}", _status()) for k in range(2)]
        r = _load_result(runs=runs, streams=[_tally("s", 5), _tally("t", 5)])
        assert r.images == 30 and r.accounted == 30 and r.adds_up
        assert r.images_per_s == pytest.approx(15.0) and r.baseline_images_per_s == 20.0
        assert r.fates == {"predicted": 24, "lost": 4, "error": 2}
        assert r.errors_by_code == {"UNAVAILABLE": 2}
        assert r.memory_bounded is True
        figs = {f.name: f for f in r.figures()}
        assert figs["load throughput"].ratio == pytest.approx(0.75)
        assert figs["results under load"].met is True
        assert figs["results under load"].ratio == pytest.approx(1.0)
        # Out of the frames with a channel fate: the 2 errors never got one.
        assert figs["frames lost under load"].ratio == pytest.approx(4 / 28)
        p99 = figs["end-to-end latency p99, under load"]
        assert p99.ratio == pytest.approx(r.baseline_latency.p99_ms / r.latency.p99_ms)  # type: ignore[union-attr]
        rss = figs["transmitter RSS"]
        assert rss.ratio == pytest.approx(210 / 200) and rss.met is True
        check_figures(r.figures())

    def test_figures_report_a_duplicate_and_memory_growth_as_missed(self) -> None:
        runs = [RunTally.from_status("load-0", _status())]
        r = _load_result(runs=runs, streams=[_tally("s", 3, extra=("s-0",))], rss_peak=350.0)
        assert not r.adds_up and r.memory_bounded is False
        figs = {f.name: f for f in r.figures()}
        assert figs["results under load"].met is False
        assert all(figs[f"{name} RSS"].met is False for name in MONITORED)
        assert "one fate per image: **missed**" in format_table(
            [("load", f) for f in figs.values()]
        )

    def test_json_is_strict_and_carries_the_verdicts(self) -> None:
        runs = [RunTally.from_status("load-0", _status())]
        r = _load_result(runs=runs, streams=[_tally("s", 3, extra=("s-1",))])
        doc = strict_json(r.to_json())
        assert doc["adds_up"] is False and doc["memory_bounded"] is True
        assert doc["streams"][0]["duplicates"] == 1 and doc["runs"][0]["adds_up"] is True
        assert doc["latency"]["p90_ms"] == pytest.approx(r.latency.p90_ms)  # type: ignore[union-attr]
        assert doc["rss"]["receiver"]["growth_mib"] == pytest.approx(10.0)

    def test_rss_sampler_samples_start_peak_and_end(self) -> None:
        pid = os.getpid()
        with RssSampler({"me": pid}, interval=0.01) as sampler:
            time.sleep(0.05)
        stats = sampler.stats()["me"]
        assert stats.samples >= 3 and stats.pid == pid
        assert stats.start_mib <= stats.peak_mib and stats.end_mib <= stats.peak_mib
        assert stats.start_mib > 0 and stats.growth_mib >= 0

    def test_rss_of_a_missing_process_is_none(self) -> None:
        assert process_rss_bytes(2**22 + 12345) is None
        with RssSampler({"gone": 2**22 + 12345}, interval=0.01) as sampler:
            pass
        assert sampler.stats() == {}

    def test_load_env_makes_room_for_the_runs_and_the_default_link(self) -> None:
        env = load_env(LoadBenchConfig(links=8, threads=1), Path("/tmp/c"))
        assert env["RKDSC_TRANSMITTER_MAX_ACTIVE_RUNS"] == "8"
        assert env["RKDSC_TRANSMITTER_MAX_LINKS"] == "9"
        assert env["RKDSC_TRANSMITTER_CACHE_DIR"] == "/tmp/c"
        assert env["RKDSC_RECEIVER_TORCH_THREADS"] == "1"
        assert "OMP_NUM_THREADS" not in load_env(LoadBenchConfig(threads=None))

    def test_image_folder_has_every_class(self, images: Any, tmp_path: Path) -> None:
        classes = [f"c{i}" for i in range(4)]
        root = write_image_folder(tmp_path / "data", images, classes)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
        assert len(files) == len(images) == 6
        assert {f.split("/")[1] for f in files} == set(classes)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("links", 0),
            ("links", 256),
            ("stream_images", 0),
            ("invalid_every", -1),
            ("frame_loss_prob", 1.0),
        ],
    )
    def test_bad_config_is_refused(self, field: str, value: float) -> None:
        with pytest.raises(ValueError, match=field):
            LoadBenchConfig(**{field: value})  # type: ignore[arg-type]

    @pytest.mark.slow
    def test_small_stack_under_load(self, tiny_weights: Path, images: Any, tmp_path: Path) -> None:
        config = LoadBenchConfig(
            links=2,
            run_images=12,
            streams=2,
            stream_images=6,
            window=2,
            invalid_every=3,
            warmup=2,
            baseline_images=6,
            frame_loss_prob=0.3,
            weights_dir=tiny_weights,
            ready_timeout=60,
            call_timeout=60,
        )
        r = run_load_bench(config, images, run_dir=tmp_path / "run")
        assert r.dataset.startswith("SYNTHETIC") and r.weights == str(tiny_weights)
        assert [t.link_id for t in r.runs] == ["load-0", "load-1"]
        assert r.images == 2 * 12 + 2 * 6 == sum(r.fates.values())
        assert r.adds_up, (r.runs, r.streams)
        assert r.fates["lost"] > 0 and r.fates["predicted"] > 0
        assert r.fates["error"] == 4 and r.errors_by_code == {"INVALID_ARGUMENT": 4}
        assert r.channel["frame_loss_prob"] == 0.3 and r.channel["erasure_prob"] == 0.05
        assert set(r.rss) == set(MONITORED)
        assert all(s.samples >= 2 and s.peak_mib >= s.start_mib for s in r.rss.values())
        names = [f.name for f in r.figures()]
        assert names[:2] == ["load throughput", "results under load"]
        check_figures(r.figures())
        doc = strict_json(r.to_json())
        assert doc["adds_up"] is True and len(doc["streams"]) == 2


class TestRunner:
    def test_report_of_selected_benchmarks(self, tiny_weights: Path, images: Any) -> None:
        config = BenchConfig(
            channel=TINY_CHANNEL,
            air=AirBenchConfig(images=3, weights_dir=tiny_weights),
            only=("channel", "air"),
            images=3,
        )
        report = run_bench(config, images=images)
        assert report.stack is None and report.models is None and not report.errors
        names = [b for b, _ in report.figures()]
        assert names == sorted(names, key=BENCHMARKS.index) and set(names) == {"channel", "air"}
        doc = strict_json(report.to_json())
        assert doc["images"]["synthetic"] is True
        assert set(doc["results"]) == {"channel", "air"}
        assert len(doc["figures"]) == len(report.figures())
        table = format_table(report.figures())
        assert table.count("\n") == len(report.figures()) + 1
        assert "channel impairment rate" in format_report(report)
        # A report saved as JSON prints as the report itself did.
        assert format_report(json.loads(json.dumps(doc))) == format_report(report)
        assert format_table(report.figures()) in format_report(report)

    def test_records_the_services_settings_but_no_secrets(self) -> None:
        env = {"RKDSC_TRANSMITTER_ENCODE_WORKERS": "2", "RKDSC_CONTROL_TOKEN": "s3cret",
               "RKDSC_X__TLS__KEY_FILE": "/k", "HOME": "/root",
               "RKDSC_CHANNEL_MODEL": "rayleigh"}  # fmt: skip
        # Not the channel model either: the benchmarks set their own for their stacks.
        got = service_environment(env, BenchConfig())
        assert got == {"RKDSC_TRANSMITTER_ENCODE_WORKERS": "2"}

    def test_a_failing_benchmark_is_recorded_and_the_others_run(
        self, tiny_weights: Path, images: Any
    ) -> None:
        config = BenchConfig(
            models=ModelsBenchConfig(teachers=("no-such-model",), weights_dir=tiny_weights),
            air=AirBenchConfig(images=2, weights_dir=tiny_weights),
            only=("models", "air"),
        )
        report = run_bench(config, images=images)
        assert set(report.errors) == {"models"} and report.air is not None
        assert "FAILED models" in format_report(report)

    def test_unknown_benchmark_is_refused(self) -> None:
        with pytest.raises(ValueError, match="only"):
            BenchConfig(only=("stack", "gpu"))

    def test_quick_preset_is_smaller_than_the_full_one(self) -> None:
        quick, full = BenchConfig.preset(quick=True), BenchConfig.preset()
        assert quick.quick and not full.quick
        assert quick.stack.images < full.stack.images
        assert quick.channel.seconds < full.channel.seconds
        assert quick.models.seconds < full.models.seconds
        assert max(quick.models.batches) < max(full.models.batches)
        assert quick.models.teachers == full.models.teachers == ModelsBenchConfig().teachers
        assert quick.load.links < full.load.links and quick.load.streams < full.load.streams
        assert quick.load.run_images < full.load.run_images
        assert "load" in full.only and full.load.threads == full.stack.threads


class TestCli:
    def test_bench_json_and_out_file(self, tiny_weights: Path, tmp_path: Path) -> None:
        app = typer.Typer()
        register(app)
        out = tmp_path / "results" / "bench.json"
        result = CliRunner().invoke(
            app,
            [
                "bench",
                "--quick",
                "--json",
                "--only",
                "air",
                "--weights",
                str(tiny_weights),
                "--data",
                str(tmp_path / "no-dataset"),
                "--out",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc == json.loads(out.read_text())
        assert doc["quick"] is True and set(doc["results"]) == {"air"}
        assert doc["images"]["synthetic"] is True
        # The table again from the file, measuring nothing; a file that is no report fails.
        result = CliRunner().invoke(app, ["bench", "--show", str(out)])
        assert result.exit_code == 0 and "| bytes/image vs PNG, L=64 [bytes] |" in result.output
        result = CliRunner().invoke(app, ["bench", "--show", str(tmp_path)])
        assert result.exit_code == 2 and "not a saved bench report" in result.output
        broken = tmp_path / "broken.json"
        broken.write_text(json.dumps({**doc, "machine": []}))
        result = CliRunner().invoke(app, ["bench", "--show", str(broken)])
        assert result.exit_code == 2 and "not a saved bench report" in result.output
        result = CliRunner().invoke(app, ["bench", "--show", str(out), "--quick"])
        assert result.exit_code == 2 and "give it alone" in result.output

    def test_bench_rejects_an_unknown_benchmark(self) -> None:
        app = typer.Typer()
        register(app)
        result = CliRunner().invoke(app, ["bench", "--only", "gpu"])
        assert result.exit_code == 2
