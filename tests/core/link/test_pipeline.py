import pytest
import torch

from rkdsc_core.channel import Channel, ChannelConfig, frame_generator, frame_generators
from rkdsc_core.link import SemanticPipeline
from rkdsc_core.models import create_model


@pytest.fixture
def pipeline() -> SemanticPipeline:
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    return SemanticPipeline(student, codec, num_pilots=4).eval()  # type: ignore[arg-type]


class TestSemanticPipeline:
    def test_frame_layout(self, pipeline: SemanticPipeline) -> None:
        tx = pipeline.transmit(torch.rand(3, 3, 32, 32), 10.0, torch.tensor([8, 16, 64]))
        assert tx.frame.shape == (3, 4 + 64) and tx.frame.dtype == torch.complex64
        assert torch.equal(tx.lengths, torch.tensor([8, 16, 64]))
        assert torch.equal(tx.frame[:, :4], pipeline.pilots.expand(3, 4))
        data_energy = (tx.frame[:, 4:].abs().square() * tx.mask[:, 4:]).sum(1) / tx.lengths
        assert torch.allclose(data_energy, torch.ones(3), atol=1e-4)
        assert torch.all(tx.frame[0, 4 + 8 :] == 0)

    @pytest.mark.parametrize("knowledge", ["perfect", "pilot", "none"])
    def test_forward_shapes(self, pipeline: SemanticPipeline, knowledge: str) -> None:
        out = pipeline(
            torch.rand(2, 3, 32, 32),
            Channel(ChannelConfig(model="rayleigh")),
            5.0,
            length=16,
            knowledge=knowledge,
        )
        assert out.logits.shape == (2, 10) and out.tokens.shape == (2, 16, 16)
        assert out.csi.h.shape == (2, 64)

    def test_same_generators_give_the_same_logits(self, pipeline: SemanticPipeline) -> None:
        x = torch.rand(2, 3, 32, 32)
        ch = Channel(ChannelConfig(model="rician", k_factor=2.0, erasure_prob=0.1))
        with torch.no_grad():
            a = pipeline(x, ch, 0.0, generator=frame_generators(1, "l", [5, 6])).logits
            b = pipeline(x, ch, 0.0, generator=frame_generators(1, "l", [5, 6])).logits
            c = pipeline(x[1:], ch, 0.0, generator=[frame_generator(1, "l", 6)]).logits
        assert torch.equal(a, b)
        assert torch.allclose(a[1:], c, atol=1e-5)

    def test_end_to_end_gradients(self, pipeline: SemanticPipeline) -> None:
        pipeline.train()
        out = pipeline(torch.rand(2, 3, 32, 32), Channel(), 10.0, length=32)
        torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 2])).backward()
        assert pipeline.student.stem[0].weight.grad is not None  # type: ignore[index,union-attr]
        enc = next(pipeline.codec.encoder.parameters())
        assert enc.grad is not None and torch.isfinite(enc.grad).all()

    def test_mismatched_codec_is_rejected(self) -> None:
        student = create_model("darts-student", C=4, layers=3, token_dim=16)
        codec = create_model("cat-codec", token_dim=32)
        with pytest.raises(ValueError, match="codec expects tokens"):
            SemanticPipeline(student, codec)  # type: ignore[arg-type]
