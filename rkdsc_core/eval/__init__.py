"""Evaluation: accuracy of links against channel, SNR and length."""

from rkdsc_core.eval.table import DEFAULT_SNRS, measure_eval_table

__all__ = ["DEFAULT_SNRS", "measure_eval_table"]
