"""Tests of the channel-aware transformer codec (``cat-codec``)."""

from __future__ import annotations

import pytest
import torch

from rkdsc_core.channel.mapping import normalize_power
from rkdsc_core.models.cat import CATCodec, CATConfig, CATDecoder, CATEncoder, prefix_mask
from rkdsc_core.registry import create_model, list_models

CFG = CATConfig(
    token_dim=12,
    num_tokens=4,
    d_model=16,
    enc_depth=1,
    dec_depth=1,
    heads=2,
    l_min=4,
    l_max=16,
    lengths=(4, 6, 8, 16),
    symbols_per_slot=2,
)
B = 3


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randn(B, CFG.num_tokens, CFG.token_dim)


@pytest.fixture
def encoder() -> CATEncoder:
    return CATEncoder(CFG).eval()


@pytest.fixture
def decoder() -> CATDecoder:
    return CATDecoder(CFG).eval()


def _mean_energy(symbols: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (symbols.abs().square() * mask).sum(1) / mask.sum(1)


class TestCATConfig:
    @pytest.mark.parametrize(
        ("kw", "match"),
        [
            ({"heads": 3}, "heads"),
            ({"l_max": 62}, "symbols_per_slot"),
            ({"lengths": (8, 16, 32)}, "lengths"),
            ({"lengths": (4, 64, 32, 64)}, "lengths"),
            ({"lengths": (4, 64)}, "lengths"),
            ({"dropout": 1.0}, "dropout"),
        ],
    )
    def test_invalid_raises(self, kw: dict[str, object], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            CATConfig(**kw)  # type: ignore[arg-type]

    def test_lengths_list_becomes_tuple(self) -> None:
        assert CATConfig(lengths=[8, 16, 32, 64]).lengths == (8, 16, 32, 64)  # type: ignore[arg-type]


class TestCATEncoder:
    def test_output_dtype_and_shape(self, encoder: CATEncoder, tokens: torch.Tensor) -> None:
        symbols, mask = encoder.encode(tokens, 10.0, 8)
        assert symbols.dtype == torch.complex64 and symbols.shape == (B, CFG.l_max)
        assert mask.dtype == torch.bool and mask.shape == (B, CFG.l_max)
        assert encoder(tokens, 10.0).shape == (B, CFG.l_max)

    @pytest.mark.parametrize("length", [4, 6, 8, 16])
    def test_unit_power_over_sent_symbols(
        self, encoder: CATEncoder, tokens: torch.Tensor, length: int
    ) -> None:
        symbols, mask = encoder.encode(tokens, 5.0, length)
        assert torch.equal(mask.sum(1), torch.full((B,), length))
        torch.testing.assert_close(_mean_energy(symbols, mask), torch.ones(B), atol=1e-4, rtol=0)

    @pytest.mark.parametrize("length", [4, 6, 8])
    def test_zero_outside_prefix(
        self, encoder: CATEncoder, tokens: torch.Tensor, length: int
    ) -> None:
        symbols, mask = encoder.encode(tokens, 5.0, length)
        assert torch.equal(mask, prefix_mask(torch.full((B,), length), CFG.l_max))
        assert not symbols[:, length:].any()

    def test_per_sample_lengths(self, encoder: CATEncoder, tokens: torch.Tensor) -> None:
        lengths = torch.tensor([4, 16, 6])
        symbols, mask = encoder.encode(tokens, torch.tensor([0.0, 10.0, 20.0]), lengths)
        assert torch.equal(mask.sum(1), lengths)
        torch.testing.assert_close(_mean_energy(symbols, mask), torch.ones(B), atol=1e-4, rtol=0)
        assert not symbols[0, 4:].any() and not symbols[2, 6:].any()

    def test_default_length_is_l_max(self, encoder: CATEncoder, tokens: torch.Tensor) -> None:
        _, mask = encoder.encode(tokens, 10.0)
        assert mask.all()

    def test_prefix_without_length_conditioning(self, tokens: torch.Tensor) -> None:
        enc = CATEncoder(CATConfig(**{**CFG.to_dict(), "length_conditioning": False})).eval()
        full, _ = enc.encode(tokens, 10.0, 16)
        short, mask = enc.encode(tokens, 10.0, 6)
        torch.testing.assert_close(short, normalize_power(full, mask))

    def test_attention_does_not_mix_images(self, encoder: CATEncoder, tokens: torch.Tensor) -> None:
        other = tokens.clone()
        other[1] += torch.randn_like(other[1])
        with torch.no_grad():
            a, b = encoder(tokens, 10.0, 8), encoder(other, 10.0, 8)
        torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)
        assert not torch.allclose(a[1], b[1])

    def test_snr_changes_output(self, encoder: CATEncoder, tokens: torch.Tensor) -> None:
        with torch.no_grad():
            assert not torch.allclose(encoder(tokens, 0.0), encoder(tokens, 20.0))

    @pytest.mark.parametrize(
        ("bad", "error", "match"),
        [
            (torch.randn(B, 5, 12), ValueError, "shape"),
            (torch.randn(B, 4, 12).double().to(torch.complex64), TypeError, "real"),
            (torch.zeros(B, 4, 12, dtype=torch.long), TypeError, "real"),
            (torch.full((B, 4, 12), float("nan")), ValueError, "NaN"),
            (torch.full((B, 4, 12), float("inf")), ValueError, "NaN or inf"),
        ],
    )
    def test_invalid_tokens_raise(
        self, encoder: CATEncoder, bad: torch.Tensor, error: type[Exception], match: str
    ) -> None:
        with pytest.raises(error, match=match):
            encoder(bad, 10.0)

    @pytest.mark.parametrize("snr", [-31.0, 61.0, float("nan")])
    def test_invalid_snr_raises(
        self, encoder: CATEncoder, tokens: torch.Tensor, snr: float
    ) -> None:
        with pytest.raises(ValueError, match="snr_db"):
            encoder(tokens, snr)

    def test_snr_wrong_batch_raises(self, encoder: CATEncoder, tokens: torch.Tensor) -> None:
        with pytest.raises(ValueError, match="snr_db"):
            encoder(tokens, torch.zeros(B + 1))

    @pytest.mark.parametrize("length", [2, 5, 32, torch.tensor([4, 5, 4])])
    def test_invalid_length_raises(
        self, encoder: CATEncoder, tokens: torch.Tensor, length: int | torch.Tensor
    ) -> None:
        with pytest.raises(ValueError, match=r"length must be one of \[4, 6, 8, 16\]"):
            encoder(tokens, 10.0, length)

    @pytest.mark.parametrize("length", [8.0, True, torch.tensor([8.0, 8.0, 8.0])])
    def test_non_integer_length_raises(
        self, encoder: CATEncoder, tokens: torch.Tensor, length: object
    ) -> None:
        with pytest.raises(TypeError, match="length"):
            encoder(tokens, 10.0, length)


class TestCATDecoder:
    def test_output_dtype_and_shape(self, decoder: CATDecoder) -> None:
        received = torch.randn(B, CFG.l_max, dtype=torch.complex64)
        out = decoder(received, torch.ones(B, CFG.l_max, dtype=torch.bool), 10.0)
        assert out.dtype == torch.float32 and out.shape == (B, CFG.num_tokens, CFG.token_dim)

    def test_prefix_of_l_received(self, decoder: CATDecoder) -> None:
        received = torch.randn(B, CFG.l_max, dtype=torch.complex64)
        mask = prefix_mask(torch.tensor([4, 6, 16]), CFG.l_max)
        with torch.no_grad():
            out = decoder(received, mask, torch.tensor([0.0, 5.0, 10.0]))
            garbage = received.clone()
            garbage[~mask] = 100.0
            again = decoder(garbage, mask, torch.tensor([0.0, 5.0, 10.0]))
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, again)

    def test_nothing_received_still_decodes(self, decoder: CATDecoder) -> None:
        received = torch.zeros(B, CFG.l_max, dtype=torch.complex64)
        out = decoder(received, torch.zeros(B, CFG.l_max, dtype=torch.bool), 10.0)
        assert torch.isfinite(out).all()

    def test_attention_does_not_mix_images(self, decoder: CATDecoder) -> None:
        received = torch.randn(B, CFG.l_max, dtype=torch.complex64)
        mask = prefix_mask(torch.tensor([8, 8, 8]), CFG.l_max)
        other = received.clone()
        other[1] += 1.0
        with torch.no_grad():
            a, b = decoder(received, mask, 10.0), decoder(other, mask, 10.0)
        torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)
        assert not torch.allclose(a[1], b[1])

    @pytest.mark.parametrize(
        ("received", "error", "match"),
        [
            (torch.randn(B, 16), TypeError, "complex"),
            (torch.randn(B, 16, dtype=torch.complex128), TypeError, "complex64"),
            (torch.randn(B, 8, dtype=torch.complex64), ValueError, "l_max=16"),
            (torch.full((B, 16), float("nan"), dtype=torch.complex64), ValueError, "NaN"),
        ],
    )
    def test_invalid_received_raises(
        self, decoder: CATDecoder, received: torch.Tensor, error: type[Exception], match: str
    ) -> None:
        mask = torch.ones(received.shape, dtype=torch.bool)
        with pytest.raises(error, match=match):
            decoder(received, mask, 10.0)

    @pytest.mark.parametrize(
        ("mask", "error"),
        [
            (torch.ones(B, 16), TypeError),
            (torch.ones(B, 8, dtype=torch.bool), ValueError),
        ],
    )
    def test_invalid_mask_raises(
        self, decoder: CATDecoder, mask: torch.Tensor, error: type[Exception]
    ) -> None:
        received = torch.randn(B, 16, dtype=torch.complex64)
        with pytest.raises(error, match="mask"):
            decoder(received, mask, 10.0)

    def test_invalid_snr_raises(self, decoder: CATDecoder) -> None:
        received = torch.randn(B, 16, dtype=torch.complex64)
        with pytest.raises(ValueError, match="snr_db"):
            decoder(received, torch.ones(B, 16, dtype=torch.bool), 100.0)


class TestCATCodec:
    def test_registered(self) -> None:
        assert "cat-codec" in list_models()
        codec = create_model("cat-codec", **CFG.to_dict())
        assert isinstance(codec, CATCodec) and codec.config == CFG

    def test_example_inputs_forward(self) -> None:
        codec = CATCodec(CFG).eval()
        tokens, snr_db = codec.example_inputs(2)
        assert tokens.shape == (2, CFG.num_tokens, CFG.token_dim) and snr_db.shape == (2,)
        assert codec(tokens, snr_db).shape == tokens.shape

    def test_gradients_flow_through_noisy_channel(self, tokens: torch.Tensor) -> None:
        codec = CATCodec(CFG).train()
        tokens = tokens.requires_grad_(True)
        snr_db = torch.tensor([0.0, 10.0, 20.0])
        lengths = torch.tensor([4, 6, 16])
        symbols, mask = codec.encoder.encode(tokens, snr_db, lengths)
        n0 = torch.pow(10.0, -snr_db / 10.0).unsqueeze(1)
        noise = torch.randn(B, CFG.l_max, dtype=torch.complex64) * torch.sqrt(n0)
        out = codec.decoder(symbols + noise, mask, snr_db)
        out.square().mean().backward()
        assert tokens.grad is not None and tokens.grad.abs().sum() > 0
        for name, p in codec.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name

    def test_default_param_counts(self) -> None:
        codec = CATCodec()
        enc = sum(p.numel() for p in codec.encoder.parameters())
        dec = sum(p.numel() for p in codec.decoder.parameters())
        print(f"cat-codec default params: encoder {enc}, decoder {dec}")
        assert enc < 200_000 and dec < 200_000


def test_the_codec_runs_in_half_precision_close_to_float32() -> None:
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2).eval()
    tokens = torch.randn(2, codec.config.num_tokens, 16)
    with torch.no_grad():
        full = codec(tokens, 10.0)
        half = codec.half()(tokens, 10.0)
    assert half.dtype == torch.float32  # the decoder hands back float32 features
    assert torch.allclose(half, full, atol=0.05)
