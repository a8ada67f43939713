"""Wireless channel models with one set of conventions for training and the emulator."""

from rkdsc_core.channel.awgn import AWGN, complex_noise
from rkdsc_core.channel.ber import (
    MODULATIONS,
    BERPoint,
    Modulation,
    ber_theory,
    demodulate,
    modulate,
    simulate_ber,
)
from rkdsc_core.channel.csi import (
    ChannelKnowledge,
    CSIEstimate,
    equalize,
    estimate_ls,
    insert_pilots,
    pilot_sequence,
    receiver_csi,
    split_pilots,
)
from rkdsc_core.channel.fading import FadingKind, rayleigh_gains, rician_gains
from rkdsc_core.channel.mapping import (
    complex_to_real,
    normalize_power,
    real_to_complex,
    snr_db_to_n0,
)
from rkdsc_core.channel.model import (
    CHANNEL_MODELS,
    Channel,
    ChannelConfig,
    ChannelModel,
    ChannelOutput,
)
from rkdsc_core.channel.rng import GeneratorLike, draw, frame_generator, frame_generators

__all__ = [
    "AWGN",
    "CHANNEL_MODELS",
    "MODULATIONS",
    "BERPoint",
    "CSIEstimate",
    "Channel",
    "ChannelConfig",
    "ChannelKnowledge",
    "ChannelModel",
    "ChannelOutput",
    "FadingKind",
    "GeneratorLike",
    "Modulation",
    "ber_theory",
    "complex_noise",
    "complex_to_real",
    "demodulate",
    "draw",
    "equalize",
    "estimate_ls",
    "frame_generator",
    "frame_generators",
    "insert_pilots",
    "modulate",
    "normalize_power",
    "pilot_sequence",
    "rayleigh_gains",
    "real_to_complex",
    "receiver_csi",
    "rician_gains",
    "simulate_ber",
    "snr_db_to_n0",
    "split_pilots",
]
