"""Wireless channel models with one set of conventions for training and the emulator."""

from rkdsc_core.channel.mapping import (
    complex_to_real,
    normalize_power,
    real_to_complex,
    snr_db_to_n0,
)

__all__ = ["complex_to_real", "normalize_power", "real_to_complex", "snr_db_to_n0"]
