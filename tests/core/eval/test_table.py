import torch

from rkdsc_core.data import ImageDataset
from rkdsc_core.eval import measure_eval_table
from rkdsc_core.link import SemanticPipeline
from rkdsc_core.models import create_model


def _pipeline() -> SemanticPipeline:
    torch.manual_seed(0)
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    return SemanticPipeline(student, codec, num_pilots=4).eval()  # type: ignore[arg-type]


class TestMeasureEvalTable:
    def test_shape_and_reproducibility(self, tiny_dataset: ImageDataset) -> None:
        p = _pipeline()
        kw = {"snr_db": (0.0, 10.0), "lengths": (8, 64), "limit": 20}
        a = measure_eval_table(p, tiny_dataset, **kw)  # type: ignore[arg-type]
        b = measure_eval_table(p, tiny_dataset, **kw)  # type: ignore[arg-type]
        assert a.accuracy == b.accuracy
        assert set(a.accuracy) == {"awgn", "rayleigh"} and set(a.accuracy["awgn"]) == {8, 64}
        assert a.meta["images"] == 20

    def test_matches_the_pipeline_frame_by_frame(self, tiny_dataset: ImageDataset) -> None:
        from rkdsc_core.channel import Channel, frame_generators
        from rkdsc_core.data import BatchLoader

        p = _pipeline()
        table = measure_eval_table(
            p, tiny_dataset, channels=("awgn",), snr_db=(5.0,), lengths=(16,), limit=40
        )
        subset = tiny_dataset.sample(40, seed=0)
        ((x, y),) = list(BatchLoader(subset, 40))
        with torch.no_grad():
            out = p(x, Channel(), 5.0, length=16, generator=frame_generators(0, "eval", range(40)))
        expected = int((out.logits.argmax(1) == y).sum()) / 40
        assert table.accuracy["awgn"][16][0] == expected
