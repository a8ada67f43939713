"""The benchmark suite (``rkdsc bench``): stack, channel, student vs teachers, bytes on air,
load."""

from services.bench._common import Figure, LatencyStats
from services.bench._images import BenchImages, load_images, synthetic_images
from services.bench.air import AirBenchConfig, AirBenchResult, run_air_bench
from services.bench.channel import ChannelBenchConfig, ChannelBenchResult, run_channel_bench
from services.bench.load import LoadBenchConfig, LoadBenchResult, run_load_bench
from services.bench.models import ModelsBenchConfig, ModelsBenchResult, run_models_bench
from services.bench.runner import BENCHMARKS, BenchConfig, BenchReport, format_table, run_bench
from services.bench.stack import StackBenchConfig, StackBenchResult, run_stack_bench

__all__ = [
    "BENCHMARKS",
    "AirBenchConfig",
    "AirBenchResult",
    "BenchConfig",
    "BenchImages",
    "BenchReport",
    "ChannelBenchConfig",
    "ChannelBenchResult",
    "Figure",
    "LatencyStats",
    "LoadBenchConfig",
    "LoadBenchResult",
    "ModelsBenchConfig",
    "ModelsBenchResult",
    "StackBenchConfig",
    "StackBenchResult",
    "format_table",
    "load_images",
    "run_air_bench",
    "run_bench",
    "run_channel_bench",
    "run_load_bench",
    "run_models_bench",
    "run_stack_bench",
    "synthetic_images",
]
