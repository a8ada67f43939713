"""The length policy: fixed and adaptive L, GetPolicy/SetPolicy validation and versions."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from rkdsc_core.link import EvalTable
from services.pb import frame_pb2, services_pb2
from services.transmitter.policy import PolicyError, PolicyStore

from ._support import EVAL_TABLE, FakeChannel, raw_request, run, running_stack

FIXED = services_pb2.LengthPolicy.MODE_FIXED
ADAPTIVE = services_pb2.LengthPolicy.MODE_ADAPTIVE
LENGTHS = (8, 16, 32, 64)


class TestPolicyStore:
    def test_default_is_fixed_at_l_max_version_1(self) -> None:
        store = PolicyStore(LENGTHS, None, channel_model="awgn")
        assert (store.current.mode, store.current.fixed_length, store.current.version) == (
            "fixed",
            64,
            1,
        )
        assert store.choose(-30.0) == 64

    def test_adaptive_picks_the_smallest_length_reaching_the_target(self) -> None:
        store = PolicyStore(LENGTHS, EVAL_TABLE, channel_model="awgn", mode="adaptive")
        assert store.choose(30.0) == 8
        assert store.choose(20.0) == 16
        assert store.choose(10.0) == 64
        assert store.choose(-10.0) == 64  # none reaches 0.9: the best there

    def test_adaptive_keeps_a_confidence_margin(self) -> None:
        # At 0 dB L=32 measures 0.50 on 1,000 images: over a target of 0.49 as measured, but
        # its 95% lower bound is 0.474, so the margin sends L=64 (0.60, bound 0.574).
        margin = PolicyStore(LENGTHS, EVAL_TABLE, channel_model="awgn", mode="adaptive")
        point = PolicyStore(
            LENGTHS, EVAL_TABLE, channel_model="awgn", mode="adaptive", confidence=0.5
        )
        for store in (margin, point):
            store.set("adaptive", None, 0.49)
        assert (margin.choose(0.0), point.choose(0.0)) == (64, 32)

    def test_a_table_measured_at_a_length_the_codec_does_not_send_is_refused(self) -> None:
        rows = {"awgn": {12: EVAL_TABLE.accuracy["awgn"][16]}}
        with pytest.raises(ValueError, match=r"awgn lengths \[12\] are not all"):
            PolicyStore(LENGTHS, EvalTable(EVAL_TABLE.snr_db, rows), channel_model="awgn")

    def test_confidence_is_part_of_the_policy(self) -> None:
        store = PolicyStore(LENGTHS, EVAL_TABLE, channel_model="awgn", confidence=0.99)
        assert store.current.confidence == 0.99
        assert PolicyStore(LENGTHS, None, channel_model="awgn").current.confidence == 0.95

    def test_set_confidence_changes_the_chosen_length(self) -> None:
        # test_adaptive_keeps_a_confidence_margin's case, switched live: 0.95 sends L=64 at
        # 0 dB, 0.5 sends L=32.
        store = PolicyStore(LENGTHS, EVAL_TABLE, channel_model="awgn", mode="adaptive")
        store.set("adaptive", None, 0.49)
        assert store.choose(0.0) == 64
        policy = store.set("adaptive", None, 0.49, 0.5)
        assert (policy.confidence, policy.version, store.choose(0.0)) == (0.5, 3, 32)

    def test_set_without_confidence_keeps_the_current_one(self) -> None:
        store = PolicyStore(LENGTHS, EVAL_TABLE, channel_model="awgn", confidence=0.8)
        assert store.set("adaptive", None, 0.7).confidence == 0.8
        assert store.set("fixed", 16, 0.7, 0.6).confidence == 0.6
        assert store.set("fixed", 16, 0.7).confidence == 0.6

    @pytest.mark.parametrize("confidence", [0.4, 1.0, float("nan"), float("inf")])
    def test_invalid_initial_confidence_is_refused(self, confidence: float) -> None:
        with pytest.raises(PolicyError) as err:
            PolicyStore(LENGTHS, EVAL_TABLE, channel_model="awgn", confidence=confidence)
        assert err.value.field == "confidence" and err.value.code == "INVALID_ARGUMENT"

    def test_margin_needs_the_table_image_count(self) -> None:
        bare = EvalTable(EVAL_TABLE.snr_db, EVAL_TABLE.accuracy)
        with pytest.raises(PolicyError, match=r"CONFIDENCE=0\.5") as err:
            PolicyStore(LENGTHS, bare, channel_model="awgn", mode="adaptive")
        assert err.value.code == "FAILED_PRECONDITION"
        store = PolicyStore(LENGTHS, bare, channel_model="awgn", mode="adaptive", confidence=0.5)
        assert store.choose(30.0) == 8

    def test_margin_set_live_needs_the_table_image_count(self) -> None:
        bare = EvalTable(EVAL_TABLE.snr_db, EVAL_TABLE.accuracy)
        store = PolicyStore(LENGTHS, bare, channel_model="awgn", confidence=0.5)
        with pytest.raises(PolicyError, match=r"set confidence 0\.5") as err:
            store.set("adaptive", None, 0.9, 0.9)
        assert err.value.code == "FAILED_PRECONDITION"
        assert store.set("adaptive", None, 0.9).mode == "adaptive"  # keeps 0.5: no margin

    def test_set_bumps_the_version(self) -> None:
        store = PolicyStore(LENGTHS, EVAL_TABLE, channel_model="awgn")
        assert store.set("fixed", 16, 0.5).version == 2
        assert store.set("adaptive", None, 0.8).version == 3
        assert store.current.fixed_length == 64

    @pytest.mark.parametrize(
        ("mode", "length", "target", "confidence", "field"),
        [
            (None, None, 0.9, None, "mode"),
            ("fixed", 12, 0.9, None, "fixed_length"),
            ("fixed", None, 1.5, None, "target_accuracy"),
            ("adaptive", None, float("nan"), None, "target_accuracy"),
            ("fixed", None, 0.9, 0.3, "confidence"),
            ("adaptive", None, 0.9, 1.0, "confidence"),
            ("adaptive", None, 0.9, float("nan"), "confidence"),
        ],
    )
    def test_invalid_policy_changes_nothing(
        self,
        mode: str | None,
        length: int | None,
        target: float,
        confidence: float | None,
        field: str,
    ) -> None:
        store = PolicyStore(LENGTHS, EVAL_TABLE, channel_model="awgn")
        before = store.current
        with pytest.raises(PolicyError) as err:
            store.set(mode, length, target, confidence)  # type: ignore[arg-type]
        assert err.value.field == field and err.value.code == "INVALID_ARGUMENT"
        assert store.current is before

    def test_adaptive_needs_an_eval_table(self) -> None:
        with pytest.raises(PolicyError, match="eval table") as err:
            PolicyStore(LENGTHS, None, channel_model="awgn", mode="adaptive")
        assert err.value.code == "FAILED_PRECONDITION"

    def test_adaptive_needs_the_hinted_channel_model(self) -> None:
        with pytest.raises(PolicyError, match="rician"):
            PolicyStore(LENGTHS, EVAL_TABLE, channel_model="rician", mode="adaptive")


class TestPolicyRPCs:
    def test_get_policy_returns_the_initial_policy(self, tx_weights: Path) -> None:
        async def scenario() -> services_pb2.LengthPolicy:
            async with running_stack(tx_weights) as stack:
                return await stack.stub.GetPolicy(services_pb2.GetPolicyRequest(), timeout=5)

        policy = run(scenario())
        assert (policy.mode, policy.fixed_length, policy.version) == (FIXED, 64, 1)
        assert policy.target_accuracy == pytest.approx(0.9)
        assert policy.confidence == pytest.approx(0.95)

    def test_set_confidence_is_used_and_unset_keeps_it(self, tx_weights: Path) -> None:
        """At 0 dB a target of 0.49 needs L=64 with the 0.95 margin, L=32 with none."""

        async def scenario() -> tuple[list[services_pb2.LengthPolicy], list[int]]:
            fake = FakeChannel(estimated_snr_db=0.0)
            async with running_stack(tx_weights, fake, assumed_snr_db=0.0) as stack:
                set_, get = stack.stub.SetPolicy, stack.stub.GetPolicy
                policies, lengths = [], []
                for request in (
                    services_pb2.LengthPolicy(mode=ADAPTIVE, target_accuracy=0.49),
                    services_pb2.LengthPolicy(mode=ADAPTIVE, target_accuracy=0.49, confidence=0.5),
                ):
                    policies.append(await set_(request, timeout=5))
                    (result,) = await stack.classify([raw_request(f"v{len(policies)}")])
                    lengths.append(result.num_symbols)
                assert stack.sample("rkdsc_transmitter_policy_confidence") == 0.5
                kept = services_pb2.LengthPolicy(mode=ADAPTIVE, target_accuracy=0.6)
                policies.append(await set_(kept, timeout=5))
                policies.append(await get(services_pb2.GetPolicyRequest(), timeout=5))
                return policies, lengths

        policies, lengths = run(scenario())
        assert [p.confidence for p in policies] == pytest.approx([0.95, 0.5, 0.5, 0.5])
        assert [p.version for p in policies] == [2, 3, 4, 4]
        assert lengths == [64, 32]

    def test_set_fixed_length_is_used_and_bumps_the_version(self, tx_weights: Path) -> None:
        async def scenario() -> tuple[services_pb2.LengthPolicy, list[frame_pb2.FrameResult]]:
            async with running_stack(tx_weights) as stack:
                new = await stack.stub.SetPolicy(
                    services_pb2.LengthPolicy(mode=FIXED, fixed_length=16, target_accuracy=0.5),
                    timeout=5,
                )
                results = await stack.classify([raw_request("a")])
                assert stack.sample("rkdsc_transmitter_config_version") == 2
                assert stack.sample("rkdsc_transmitter_fixed_length_symbols") == 16
                return new, results

        new, results = run(scenario())
        assert (new.mode, new.fixed_length, new.version) == (FIXED, 16, 2)
        assert results[0].num_symbols == 16 and results[0].tx_config_version == 2

    @pytest.mark.parametrize(
        ("policy", "field"),
        [
            (
                services_pb2.LengthPolicy(mode=FIXED, fixed_length=12, target_accuracy=0.9),
                "fixed_length",
            ),
            (services_pb2.LengthPolicy(mode=ADAPTIVE, target_accuracy=1.2), "target_accuracy"),
            (services_pb2.LengthPolicy(fixed_length=8, target_accuracy=0.9), "mode"),
            (
                services_pb2.LengthPolicy(mode=FIXED, target_accuracy=0.9, confidence=0.3),
                "confidence",
            ),
            (
                services_pb2.LengthPolicy(mode=ADAPTIVE, target_accuracy=0.9, confidence=1.0),
                "confidence",
            ),
        ],
    )
    def test_invalid_policy_is_rejected_and_unchanged(
        self, tx_weights: Path, policy: services_pb2.LengthPolicy, field: str
    ) -> None:
        async def scenario() -> tuple[grpc.aio.AioRpcError, services_pb2.LengthPolicy]:
            async with running_stack(tx_weights) as stack:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stack.stub.SetPolicy(policy, timeout=5)
                after = await stack.stub.GetPolicy(services_pb2.GetPolicyRequest(), timeout=5)
                return err.value, after

        err, after = run(scenario())
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith(f"{field}:")
        assert (after.mode, after.fixed_length, after.version) == (FIXED, 64, 1)
        assert after.confidence == pytest.approx(0.95)

    def test_adaptive_without_eval_table_is_failed_precondition(
        self, tx_weights_no_table: Path
    ) -> None:
        async def scenario() -> grpc.aio.AioRpcError:
            async with running_stack(tx_weights_no_table) as stack:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stack.stub.SetPolicy(
                        services_pb2.LengthPolicy(mode=ADAPTIVE, target_accuracy=0.9), timeout=5
                    )
                return err.value

        err = run(scenario())
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "eval table" in err.details()

    def test_adaptive_reads_the_row_of_the_channel_the_results_name(self, tx_weights: Path) -> None:
        """At 20 dB AWGN's row asks for L=16; once a result says Rayleigh, its row: L=64."""

        async def scenario() -> list[frame_pb2.FrameResult]:
            fake = FakeChannel(estimated_snr_db=20.0, channel_model="rayleigh")
            async with running_stack(
                tx_weights, fake, assumed_snr_db=20.0, snr_smoothing=1.0, max_in_flight=1
            ) as stack:
                await stack.stub.SetPolicy(
                    services_pb2.LengthPolicy(mode=ADAPTIVE, target_accuracy=0.9), timeout=5
                )
                return await stack.classify([raw_request("first"), raw_request("then")])

        by_id = {r.image_id: r for r in run(scenario())}
        assert (by_id["first"].num_symbols, by_id["then"].num_symbols) == (16, 64)
        assert by_id["then"].channel_model == "rayleigh"

    def test_adaptive_sends_fewer_symbols_at_high_snr_than_at_low(self, tx_weights: Path) -> None:
        """Belief starts at 30 dB (L=8 < l_max); feedback of -10 dB then asks for L=64."""

        async def scenario() -> list[frame_pb2.FrameResult]:
            fake = FakeChannel(estimated_snr_db=-10.0)
            async with running_stack(
                tx_weights, fake, assumed_snr_db=30.0, snr_smoothing=1.0, max_in_flight=1
            ) as stack:
                await stack.stub.SetPolicy(
                    services_pb2.LengthPolicy(mode=ADAPTIVE, target_accuracy=0.9), timeout=5
                )
                results = await stack.classify([raw_request("high"), raw_request("low")])
                assert stack.sample(
                    "rkdsc_transmitter_snr_estimate_db", {"link": "default"}
                ) == pytest.approx(-10.0)
                assert stack.sample("rkdsc_transmitter_policy_mode", {"mode": "adaptive"}) == 1
                return results

        by_id = {r.image_id: r for r in run(scenario())}
        assert (by_id["high"].tx_snr_db, by_id["high"].num_symbols) == (30.0, 8)
        assert (by_id["low"].tx_snr_db, by_id["low"].num_symbols) == (-10.0, 64)
