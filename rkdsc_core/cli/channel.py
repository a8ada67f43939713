"""`rkdsc channel ...` commands: Monte-Carlo checks of the channel models against theory."""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated

import typer

from rkdsc_core.channel import CHANNEL_MODELS, MODULATIONS, simulate_ber
from rkdsc_core.cli._common import JsonOpt, echo_json, fail

__all__ = ["app"]

app = typer.Typer(help="Channel models: simulate and check against theory.", no_args_is_help=True)

_DEFAULT_SNRS = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


@app.command("simulate")
def simulate_cmd(
    channel: Annotated[str, typer.Option(help=f"One of {', '.join(CHANNEL_MODELS)}.")] = "awgn",
    modulation: Annotated[str, typer.Option(help=f"One of {', '.join(MODULATIONS)}.")] = "bpsk",
    snr_db: Annotated[
        list[float] | None,
        typer.Option("--snr-db", help="Es/N0 [dB]; repeat for several. Default 0..10 step 2."),
    ] = None,
    fading: Annotated[str, typer.Option(help="block or fast (fading channels).")] = "fast",
    k_factor: Annotated[float, typer.Option(help="Rician K (linear).")] = 3.0,
    min_errors: Annotated[
        int, typer.Option(min=1, help="Stop a point after this many bit errors.")
    ] = 1000,
    max_bits: Annotated[int, typer.Option(min=1, help="...or after this many bits.")] = 4_000_000,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Uncoded BER over a channel, simulated beside its closed form."""
    if channel not in CHANNEL_MODELS:
        fail(f"--channel must be one of {', '.join(CHANNEL_MODELS)}, got {channel!r}")
    if modulation not in MODULATIONS:
        fail(f"--modulation must be one of {', '.join(MODULATIONS)}, got {modulation!r}")
    points = []
    try:
        for snr in snr_db or _DEFAULT_SNRS:
            points.append(
                simulate_ber(
                    snr,
                    modulation,  # type: ignore[arg-type]
                    channel,  # type: ignore[arg-type]
                    fading=fading,  # type: ignore[arg-type]
                    k_factor=k_factor,
                    min_errors=min_errors,
                    max_bits=max_bits,
                    seed=seed,
                )
            )
    except ValueError as e:
        fail(str(e))
    if as_json:
        echo_json([dataclasses.asdict(p) for p in points])
        return
    k = f", K={k_factor:g}" if channel == "rician" else ""
    fad = "" if channel == "awgn" else f" ({fading} fading)"
    if fad and fading == "block":
        fad = " (block fading, one gain per 64 symbols)"
    typer.echo(f"{modulation.upper()} over {channel}{k}{fad}, coherent detection, perfect CSI")
    typer.echo(
        f"{'snr_db':>7} {'ber':>11} {'ber_theory':>11} {'ratio':>6} {'errors':>7} {'bits':>9}"
    )
    for p in points:
        ratio = p.ber / p.ber_theory if p.ber_theory > 0 else math.nan
        typer.echo(
            f"{p.snr_db:7.1f} {p.ber:11.3e} {p.ber_theory:11.3e} {ratio:6.3f} "
            f"{p.errors:7d} {p.bits:9d}"
        )
