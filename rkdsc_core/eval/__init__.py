"""Evaluation: accuracy of links (and digital baselines) against channel, SNR and length."""

from rkdsc_core.eval.digital import (
    PcaCode,
    dequantize_tokens,
    ideal_code_correct,
    outage_gain,
    payload_bits,
    pca_ideal_correct,
    pca_qpsk_correct,
    qpsk_channel_uses,
    quantize_tokens,
    uncoded_qpsk_correct,
)
from rkdsc_core.eval.sweep import (
    SWEEP_COLUMNS,
    SweepRow,
    accuracy_grid,
    check_sweep,
    format_sweep,
    measure_sweep,
    plot_sweep,
    read_sweep,
    student_tokens,
    write_sweep,
)
from rkdsc_core.eval.table import DEFAULT_SNRS, measure_eval_table
from rkdsc_core.eval.targets import TargetCheck, check_targets, format_targets

__all__ = [
    "DEFAULT_SNRS",
    "SWEEP_COLUMNS",
    "PcaCode",
    "SweepRow",
    "TargetCheck",
    "accuracy_grid",
    "check_sweep",
    "check_targets",
    "dequantize_tokens",
    "format_sweep",
    "format_targets",
    "ideal_code_correct",
    "measure_eval_table",
    "measure_sweep",
    "outage_gain",
    "payload_bits",
    "pca_ideal_correct",
    "pca_qpsk_correct",
    "plot_sweep",
    "qpsk_channel_uses",
    "quantize_tokens",
    "read_sweep",
    "student_tokens",
    "uncoded_qpsk_correct",
    "write_sweep",
]
