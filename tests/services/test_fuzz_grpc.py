"""Bad input at every gRPC entry point: a clear error, never INTERNAL/UNKNOWN, never a hang.

One real stack per module (receiver <- channel emulator <- transmitter, tiny weights, all on
127.0.0.1:0) runs on a background event loop; the tests are plain sync gRPC clients with
bounded timeouts. Each property is fuzzed with hypothesis, then a valid request proves the
server kept serving.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from prometheus_client import CollectorRegistry

from services._grpc import MAX_MESSAGE_BYTES
from services.channel.server import ChannelServer
from services.channel.server import build_server as build_channel
from services.channel.settings import Settings as ChannelSettings
from services.pb import frame_pb2, services_pb2, services_pb2_grpc
from services.receiver.server import ReceiverServer
from services.receiver.server import build_server as build_receiver
from services.receiver.settings import Settings as ReceiverSettings
from services.transmitter.server import TransmitterServer
from services.transmitter.server import build_server as build_transmitter
from services.transmitter.settings import Settings as TransmitterSettings

T = TypeVar("T")

PREDICTED, LOST, ERROR = (
    frame_pb2.FRAME_FATE_PREDICTED,
    frame_pb2.FRAME_FATE_LOST,
    frame_pb2.FRAME_FATE_ERROR,
)
LENGTHS = (8, 16, 32, 64)
"""``L`` the tiny link sends."""
PILOTS = 4
"""``P`` of the tiny link."""
NUM_CLASSES = 10
RPC_TIMEOUT = 30.0
"""Every call's deadline [s]: a hang fails the test instead of stalling it."""

_UNCLEAR = {"OK", "INTERNAL", "UNKNOWN"}
CLEAR_CODES = frozenset(c.name for c in grpc.StatusCode) - _UNCLEAR
"""Status names a bad input may be answered with."""
_PREFIX = re.compile(r"^([A-Z_]+): \S")

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Modest, reproducible fuzzing: the CPU is shared and the whole file must stay fast.

To hunt for new bugs, run locally with ``max_examples`` in the thousands and
``derandomize=False`` (that is how the float32 overflow below was found).
"""


# ------------------------------------------------------------------------------- the stack


class _LoopThread:
    """An event loop on a daemon thread: the servers live there for the whole module."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-servers")
        self.thread.daemon = True
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10.0)
        self.loop.close()


@dataclass
class Stack:
    """The started servers and sync stubs on plain channels (no client-side size limit)."""

    transmitter: services_pb2_grpc.TransmitterStub
    channel: services_pb2_grpc.ChannelEmulatorStub
    receivers: dict[str, services_pb2_grpc.ReceiverStub]
    baseline_channel: services_pb2.ChannelSettings


_CLIENT_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 2 * MAX_MESSAGE_BYTES),
]


@pytest.fixture(scope="module")
def stack(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Receivers (pilot and perfect CSI), the channel emulator and the transmitter, started once.

    The transmitter's dataset folder is missing, so a run ``StartRun`` accepts never streams
    anything: it fails as it loads.
    """
    data = tmp_path_factory.mktemp("fuzz-data")
    threads = torch.get_num_threads()
    loop = _LoopThread()
    servers: list[Any] = []
    chans: dict[str, grpc.Channel] = {}

    async def start() -> dict[str, int]:
        ports: dict[str, int] = {}
        for knowledge in ("pilot", "perfect"):
            rx: ReceiverServer = build_receiver(
                ReceiverSettings(
                    port=0, weights_dir=tiny_weights, knowledge=knowledge, grace_seconds=1.0
                ),
                CollectorRegistry(),
            )
            await rx.start()
            servers.append(rx)
            ports[knowledge] = rx.port
        ch: ChannelServer = build_channel(
            ChannelSettings(
                port=0,
                receiver_target=f"127.0.0.1:{ports['pilot']}",
                grace_seconds=1.0,
                deadline_seconds=20.0,
            ),
            CollectorRegistry(),
        )
        await ch.start()
        servers.append(ch)
        tx: TransmitterServer = build_transmitter(
            TransmitterSettings(
                port=0,
                channel_target=f"127.0.0.1:{ch.port}",
                weights_dir=tiny_weights,
                torch_threads=1,
                grace_seconds=1.0,
                deadline_seconds=20.0,
                data_dir=data / "no-such-dataset",
                cache_dir=data / "cache",
            ),
            CollectorRegistry(),
        )
        await tx.start()
        servers.append(tx)
        ports["channel"], ports["transmitter"] = ch.port, tx.port
        return ports

    async def stop() -> None:
        for server in reversed(servers):
            await server.stop()

    try:
        for name, port in loop.run(start()).items():
            chans[name] = grpc.insecure_channel(f"127.0.0.1:{port}", options=_CLIENT_OPTIONS)
        channel = services_pb2_grpc.ChannelEmulatorStub(chans["channel"])  # type: ignore[no-untyped-call]
        yield Stack(
            transmitter=services_pb2_grpc.TransmitterStub(chans["transmitter"]),  # type: ignore[no-untyped-call]
            channel=channel,
            receivers={
                k: services_pb2_grpc.ReceiverStub(chans[k])  # type: ignore[no-untyped-call]
                for k in ("pilot", "perfect")
            },
            baseline_channel=channel.GetSettings(
                services_pb2.GetChannelRequest(), timeout=RPC_TIMEOUT
            ),
        )
    finally:
        for chan in chans.values():
            chan.close()
        loop.run(stop())
        loop.close()
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ assertions


def assert_clear_result(result: frame_pb2.FrameResult) -> None:
    """PREDICTED with finite probabilities, LOST, or ERROR naming a clear status."""
    assert result.fate in (PREDICTED, LOST, ERROR), result
    if result.fate == ERROR:
        match = _PREFIX.match(result.error)
        assert match is not None, f"error without a status name: {result.error!r}"
        assert match.group(1) in CLEAR_CODES, f"unclear error: {result.error!r}"
    elif result.fate == PREDICTED:
        pred = result.prediction
        probs = np.array(pred.probabilities, dtype=np.float64)
        assert probs.shape == (NUM_CLASSES,), result
        assert np.isfinite(probs).all(), f"non-finite probabilities: {result}"
        assert abs(probs.sum() - 1.0) < 1e-3, result
        assert 0 <= pred.class_index < NUM_CLASSES
        assert math.isfinite(pred.estimated_snr_db), f"non-finite SNR estimate: {result}"
    else:
        assert not result.error


def assert_clear_rpc_error(err: grpc.RpcError, allowed: set[grpc.StatusCode]) -> None:
    """A status the caller can act on, with a message saying why."""
    code = err.code()
    details = err.details()
    assert code in allowed, f"{code}: {details}"
    assert details, f"{code} without a message"


def assert_error_code(result: frame_pb2.FrameResult, code: str) -> None:
    assert result.fate == ERROR, result
    assert result.error.startswith(f"{code}: "), result.error


def call_unary(fn: Callable[..., T], request: Any) -> T | grpc.RpcError:
    try:
        return fn(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as err:
        return err


def wait_run_finished(stack: Stack, run_id: str, timeout: float = 10.0) -> Any:
    """The run's status once it is no longer ``loading`` or ``running``."""
    deadline = time.monotonic() + timeout
    while True:
        status = stack.transmitter.GetRun(
            services_pb2.GetRunRequest(run_id=run_id), timeout=RPC_TIMEOUT
        )
        if status.state not in ("loading", "running"):
            return status
        assert time.monotonic() < deadline, f"run {run_id} unfinished after {timeout} s: {status}"
        time.sleep(0.01)


def call_stream(fn: Callable[..., Any], requests: Sequence[Any]) -> list[Any]:
    return list(fn(iter(list(requests)), timeout=RPC_TIMEOUT))


def identities(items: Sequence[Any]) -> Counter[tuple[str, int, str]]:
    return Counter((x.link_id, x.sequence, x.image_id) for x in items)


# ------------------------------------------------------------------------------ strategies

int32s = st.integers(-(2**31), 2**31 - 1)
uint32s = st.one_of(st.integers(0, 70), st.integers(0, 2**32 - 1))
uint64s = st.one_of(st.integers(0, 100), st.integers(0, 2**64 - 1))
floats32 = st.floats(width=32)
texts = st.text(max_size=80)


def png_bytes(width: int = 2, height: int = 2) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (width, height), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header (with a correct CRC) claims ``width`` x ``height``."""
    data = bytearray(png_bytes(1, 1))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff\xe0"

encoded_images = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=512).map(lambda b: _PNG_MAGIC + b),
    st.binary(max_size=512).map(lambda b: _JPEG_MAGIC + b),
    st.binary(min_size=1, max_size=64).map(lambda b: png_bytes()[: -len(b)] + b),
    st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)).map(
        lambda wh: png_claiming(*wh)
    ),
)

_dims = st.one_of(
    st.integers(0, 8),
    st.sampled_from([4096, 4097, 65536, 2**31, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)


@st.composite
def raw_images(draw: st.DrawFn) -> services_pb2.RawImage:
    """Headers and data lengths that agree, nearly agree, or have nothing to do with each other."""
    if draw(st.booleans()):
        h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        c = draw(st.sampled_from([0, 1, 2, 3, 4]))
        n = max(0, h * w * c + draw(st.sampled_from([0, 0, 0, -1, 1, 9])))
        data = draw(st.binary(min_size=n, max_size=n))
    else:
        h, w, c = draw(_dims), draw(_dims), draw(_dims)
        data = draw(st.binary(max_size=256))
    return services_pb2.RawImage(height=h, width=w, channels=c, data=data)


@st.composite
def classify_requests(draw: st.DrawFn) -> services_pb2.ClassifyRequest:
    req = services_pb2.ClassifyRequest(
        image_id=draw(st.one_of(st.sampled_from(["dup", "dup", "other"]), texts))
    )
    which = draw(st.sampled_from(["encoded", "raw", "raw", "missing", "empty"]))
    if which == "encoded":
        req.image.encoded = draw(encoded_images)
    elif which == "raw":
        req.image.raw.CopyFrom(draw(raw_images()))
    elif which == "empty":
        req.image.SetInParent()  # an Image with neither field set
    if draw(st.booleans()):
        req.label = draw(int32s)
    return req


def complex_payload(count: int) -> st.SearchStrategy[bytes]:
    """``count`` complex64 symbols with any float32 values: NaN, inf, huge, tiny, zero."""
    values = st.one_of(
        st.floats(-4.0, 4.0, width=32),
        st.floats(-(2.0**20), 2.0**20, width=32),
        floats32,
        st.sampled_from([0.0, 1e6, -1e6, 3e38, -3e38, 1e-45, math.nan, math.inf]),
    )
    return st.lists(values, min_size=2 * count, max_size=2 * count).map(
        lambda xs: np.asarray(xs, dtype="<f4").tobytes()
    )


@st.composite
def symbol_frames(draw: st.DrawFn) -> frame_pb2.SymbolFrame:
    """Random headers and bytes, or the link's shapes with arbitrary values (or a few bytes off)."""
    frame = frame_pb2.SymbolFrame(
        link_id=draw(st.one_of(st.just("fuzz"), texts)),
        sequence=draw(uint64s),
        image_id=draw(texts),
        config_version=draw(uint64s),
        sent_unix_ns=draw(st.integers(-(2**63), 2**63 - 1)),
        expires_unix_ns=draw(st.one_of(st.just(0), st.integers(-(2**63), 2**63 - 1))),
        tx_snr_db=draw(floats32),
        encode_seconds=draw(st.floats()),
    )
    if draw(st.booleans()):
        frame.num_symbols = draw(uint32s)
        frame.symbols = draw(st.binary(max_size=600))
        frame.pilots = draw(st.binary(max_size=64))
    else:
        length = draw(st.sampled_from(LENGTHS))
        frame.num_symbols = length
        frame.symbols = draw(complex_payload(length))
        frame.pilots = draw(complex_payload(PILOTS))
        cut = draw(st.sampled_from([0, 0, 0, 0, 1, 7, 8]))
        if cut:
            frame.symbols = frame.symbols[:-cut]
    if draw(st.booleans()):
        frame.label = draw(int32s)
    return frame


@st.composite
def channel_frames(draw: st.DrawFn) -> frame_pb2.ChannelFrame:
    """A frame as the receiver gets it, with random or inconsistent channel state (or none)."""
    frame = draw(symbol_frames())
    cf = frame_pb2.ChannelFrame(frame=frame)
    if draw(st.integers(0, 5)) == 0:
        return cf  # no channel state at all
    n = PILOTS + frame.num_symbols
    state = cf.channel
    state.model = draw(st.one_of(st.just("rayleigh"), texts))
    state.snr_db = draw(floats32)
    state.n0 = draw(st.one_of(floats32, st.floats(2.0**-20, 10.0, width=32)))
    state.frame_lost = draw(st.integers(0, 9)) == 0
    state.config_version = draw(uint64s)
    state.channel_seconds = draw(st.floats())
    if n <= 200 and draw(st.booleans()):
        state.gains = draw(complex_payload(n))
        state.received = draw(
            st.one_of(
                st.binary(min_size=n, max_size=n),
                st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n).map(bytes),
            )
        )
    else:
        state.gains = draw(st.binary(max_size=600))
        state.received = draw(st.binary(max_size=80))
    return cf


@st.composite
def channel_settings(draw: st.DrawFn) -> services_pb2.ChannelSettings:
    return services_pb2.ChannelSettings(
        model=draw(st.one_of(st.sampled_from(["awgn", "rayleigh", "rician"]), texts)),
        snr_db=draw(st.one_of(st.floats(-40, 70, width=32), floats32)),
        fading=draw(st.one_of(st.sampled_from(["block", "fast"]), texts)),
        k_factor=draw(st.one_of(st.floats(-1, 10, width=32), floats32)),
        erasure_prob=draw(st.one_of(st.floats(-0.5, 1.5, width=32), floats32)),
        frame_loss_prob=draw(st.one_of(st.floats(-0.5, 1.5, width=32), floats32)),
        seed=draw(uint64s),
        delay_seconds=draw(st.one_of(st.floats(-1, 0.0625, width=32), floats32)),
        version=draw(uint64s),
    )


# ----------------------------------------------------------------------- valid requests


def good_image(image_id: str = "ok") -> services_pb2.ClassifyRequest:
    arr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    raw = services_pb2.RawImage(height=32, width=32, channels=3, data=arr.tobytes())
    return services_pb2.ClassifyRequest(image_id=image_id, image=services_pb2.Image(raw=raw))


def good_frame(sequence: int = 0, length: int = 16) -> frame_pb2.SymbolFrame:
    """Unit-power QPSK-like symbols of the link's shape."""
    rng = np.random.default_rng(sequence)
    sym = ((rng.integers(0, 2, 2 * (PILOTS + length)) * 2 - 1) / math.sqrt(2)).astype("<f4")
    return frame_pb2.SymbolFrame(
        link_id="fuzz-ok",
        sequence=sequence,
        image_id=f"ok-{sequence}",
        num_symbols=length,
        pilots=sym[: 2 * PILOTS].tobytes(),
        symbols=sym[2 * PILOTS :].tobytes(),
    )


def good_channel_frame(sequence: int = 0, length: int = 16) -> frame_pb2.ChannelFrame:
    frame = good_frame(sequence, length)
    n = PILOTS + length
    gains = np.tile(np.array([1.0, 0.0], dtype="<f4"), n).tobytes()
    state = frame_pb2.ChannelState(
        model="awgn", snr_db=20.0, n0=0.01, gains=gains, received=bytes([1]) * n
    )
    return frame_pb2.ChannelFrame(frame=frame, channel=state)


def assert_transmitter_serves(stack: Stack) -> None:
    (result,) = call_stream(stack.transmitter.Classify, [good_image()])
    assert result.fate == PREDICTED, result
    assert_clear_result(result)
    policy = stack.transmitter.GetPolicy(services_pb2.GetPolicyRequest(), timeout=RPC_TIMEOUT)
    assert policy.version >= 1


def assert_channel_serves(stack: Stack) -> None:
    (result,) = call_stream(stack.channel.Transmit, [good_frame(7)])
    assert result.fate == PREDICTED, result
    assert_clear_result(result)


def assert_receiver_serves(stack: Stack, knowledge: str = "pilot") -> None:
    (result,) = call_stream(stack.receivers[knowledge].Decode, [good_channel_frame(3)])
    assert result.fate == PREDICTED, result
    assert_clear_result(result)


# ------------------------------------------------------------------------------ the tests


class TestTransmitterFuzz:
    def test_classify_bad_images_get_one_clear_result_each(self, stack: Stack) -> None:
        @FUZZ
        @given(requests=st.lists(classify_requests(), min_size=1, max_size=5))
        def prop(requests: list[services_pb2.ClassifyRequest]) -> None:
            results = call_stream(stack.transmitter.Classify, requests)
            assert Counter(r.image_id for r in results) == Counter(q.image_id for q in requests)
            for result in results:
                assert_clear_result(result)

        prop()
        assert_transmitter_serves(stack)

    @pytest.mark.parametrize(
        ("request_", "code"),
        [
            (services_pb2.ClassifyRequest(image_id="missing"), "INVALID_ARGUMENT"),
            (
                services_pb2.ClassifyRequest(
                    image_id="huge",
                    image=services_pb2.Image(
                        raw=services_pb2.RawImage(height=2**32 - 1, width=2**32 - 1, channels=3)
                    ),
                ),
                "INVALID_ARGUMENT",
            ),
            (
                services_pb2.ClassifyRequest(
                    image_id="bomb", image=services_pb2.Image(encoded=png_claiming(2**20, 2**20))
                ),
                "INVALID_ARGUMENT",
            ),
            (
                services_pb2.ClassifyRequest(
                    image_id="short",
                    image=services_pb2.Image(
                        raw=services_pb2.RawImage(height=4, width=4, channels=3, data=b"\0" * 47)
                    ),
                ),
                "INVALID_ARGUMENT",
            ),
        ],
        ids=["missing", "huge-dims", "png-bomb", "short-data"],
    )
    def test_classify_known_bad_images_are_invalid_argument(
        self, stack: Stack, request_: services_pb2.ClassifyRequest, code: str
    ) -> None:
        (result,) = call_stream(stack.transmitter.Classify, [request_])
        assert_error_code(result, code)

    def test_set_policy_random_values(self, stack: Stack) -> None:
        allowed = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}

        @FUZZ
        @given(
            mode=st.integers(-3, 5),
            fixed_length=st.one_of(st.sampled_from((0, *LENGTHS)), st.integers(0, 2**32 - 1)),
            target_accuracy=st.one_of(st.floats(-0.5, 1.5, width=32), floats32),
            confidence=st.one_of(st.none(), st.floats(0.0, 1.5, width=32), floats32),
        )
        def prop(
            mode: int, fixed_length: int, target_accuracy: float, confidence: float | None
        ) -> None:
            request = services_pb2.LengthPolicy(
                mode=mode,  # type: ignore[arg-type]  # unknown enum values on purpose
                fixed_length=fixed_length,
                target_accuracy=target_accuracy,
                version=12345,
                confidence=confidence,
            )
            got = call_unary(stack.transmitter.SetPolicy, request)
            if isinstance(got, grpc.RpcError):
                assert_clear_rpc_error(got, allowed)
                return
            assert got.mode == services_pb2.LengthPolicy.MODE_FIXED  # no eval table
            assert got.fixed_length in LENGTHS
            assert 0.0 <= got.target_accuracy <= 1.0
            assert 0.5 <= got.confidence < 1.0

        try:
            prop()
        finally:
            stack.transmitter.SetPolicy(
                services_pb2.LengthPolicy(
                    mode=services_pb2.LengthPolicy.MODE_FIXED, target_accuracy=0.9, confidence=0.95
                ),
                timeout=RPC_TIMEOUT,
            )
        assert_transmitter_serves(stack)

    def test_start_run_random_values(self, stack: Stack) -> None:
        allowed = {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }

        @FUZZ
        @given(
            split=st.one_of(st.sampled_from(["train", "test"]), texts),
            num_images=uint32s,
            rate=st.one_of(st.floats(-1, 100, width=32), floats32),
            link_id=st.one_of(st.sampled_from(["", "default", "other-link"]), texts),
        )
        def prop(split: str, num_images: int, rate: float, link_id: str) -> None:
            request = services_pb2.RunRequest(
                split=split, num_images=num_images, rate=rate, link_id=link_id
            )
            got = call_unary(stack.transmitter.StartRun, request)
            if isinstance(got, grpc.RpcError):
                assert_clear_rpc_error(got, allowed)
                return
            # Accepted: the split loads in the run, and the dataset folder is missing.
            assert got.state == "loading", got
            final = wait_run_finished(stack, got.run_id)
            assert final.state == "failed" and final.sent == 0, final
            assert final.error.startswith("FAILED_PRECONDITION: "), final.error

        prop()
        assert_transmitter_serves(stack)

    def test_get_run_random_ids_are_not_found(self, stack: Stack) -> None:
        @FUZZ
        @given(run_id=st.one_of(texts, st.text(min_size=200, max_size=2000)))
        def prop(run_id: str) -> None:
            got = call_unary(stack.transmitter.GetRun, services_pb2.GetRunRequest(run_id=run_id))
            assert isinstance(got, grpc.RpcError), got
            assert_clear_rpc_error(got, {grpc.StatusCode.NOT_FOUND})

        prop()
        assert_transmitter_serves(stack)


class TestChannelFuzz:
    def test_transmit_bad_frames_get_one_clear_result_each(self, stack: Stack) -> None:
        @FUZZ
        @given(frames=st.lists(symbol_frames(), min_size=1, max_size=4))
        def prop(frames: list[frame_pb2.SymbolFrame]) -> None:
            results = call_stream(stack.channel.Transmit, frames)
            assert identities(results) == identities(frames)
            for result in results:
                assert_clear_result(result)

        prop()
        assert_channel_serves(stack)

    @pytest.mark.parametrize(
        "frame",
        [
            frame_pb2.SymbolFrame(link_id="x", num_symbols=16, symbols=b"\0" * 127),
            frame_pb2.SymbolFrame(link_id="x", num_symbols=0),
            frame_pb2.SymbolFrame(link_id="x", num_symbols=2**32 - 1, symbols=b"\0" * 8),
            frame_pb2.SymbolFrame(
                link_id="x",
                num_symbols=1,
                symbols=np.array([math.nan, 0.0], "<f4").tobytes(),
            ),
            frame_pb2.SymbolFrame(link_id="x", num_symbols=1, symbols=b"\0" * 8, pilots=b"\0" * 5),
            frame_pb2.SymbolFrame(
                link_id="x", sequence=2**64 - 1, num_symbols=1, symbols=b"\0" * 8
            ),
            frame_pb2.SymbolFrame(
                link_id="x",
                num_symbols=1,
                symbols=np.array([3e38, -3e38], "<f4").tobytes(),
            ),
        ],
        ids=["short", "empty", "huge-count", "nan", "ragged-pilots", "huge-sequence", "huge-value"],
    )
    def test_known_bad_frames_are_invalid_argument(
        self, stack: Stack, frame: frame_pb2.SymbolFrame
    ) -> None:
        (result,) = call_stream(stack.channel.Transmit, [frame])
        assert_error_code(result, "INVALID_ARGUMENT")

    def test_set_settings_random_values(self, stack: Stack) -> None:
        @FUZZ
        @given(request=channel_settings())
        def prop(request: services_pb2.ChannelSettings) -> None:
            got = call_unary(stack.channel.SetSettings, request)
            if isinstance(got, grpc.RpcError):
                assert_clear_rpc_error(got, {grpc.StatusCode.INVALID_ARGUMENT})
                return
            try:
                assert got.model in ("awgn", "rayleigh", "rician")
                assert got.fading in ("block", "fast")
                assert -30.0 <= got.snr_db <= 60.0
                assert 0.0 <= got.erasure_prob < 1.0 and 0.0 <= got.frame_loss_prob < 1.0
                assert got.k_factor >= 0.0 and math.isfinite(got.k_factor)
                assert 0.0 <= got.delay_seconds <= 60.0
                assert got.seed < 2**63
            finally:  # an accepted config is put back, or later frames would see it
                stack.channel.SetSettings(stack.baseline_channel, timeout=RPC_TIMEOUT)

        prop()
        assert_channel_serves(stack)


class TestReceiverFuzz:
    @pytest.mark.parametrize("knowledge", ["pilot", "perfect"])
    def test_decode_bad_frames_get_one_clear_result_each(
        self, stack: Stack, knowledge: str
    ) -> None:
        @FUZZ
        @given(frames=st.lists(channel_frames(), min_size=1, max_size=4))
        def prop(frames: list[frame_pb2.ChannelFrame]) -> None:
            results = call_stream(stack.receivers[knowledge].Decode, frames)
            assert identities(results) == identities([cf.frame for cf in frames])
            for result in results:
                assert_clear_result(result)

        prop()
        assert_receiver_serves(stack, knowledge)

    def test_missing_channel_state_is_invalid_argument(self, stack: Stack) -> None:
        frame = good_channel_frame(1)
        frame.ClearField("channel")
        (result,) = call_stream(stack.receivers["pilot"].Decode, [frame])
        assert_error_code(result, "INVALID_ARGUMENT")
        assert "channel" in result.error

    @pytest.mark.parametrize("knowledge", ["pilot", "perfect"])
    def test_huge_finite_values_are_invalid_argument_not_nan(
        self, stack: Stack, knowledge: str
    ) -> None:
        # Finite float32 values near 3e38 used to overflow the equaliser to NaN (INTERNAL).
        frame = good_channel_frame(4)
        huge = np.full(2 * PILOTS, 3e38, dtype="<f4").tobytes()
        frame.frame.pilots = huge
        (result,) = call_stream(stack.receivers[knowledge].Decode, [frame])
        assert_error_code(result, "INVALID_ARGUMENT")
        assert "pilots" in result.error and "exceeds" in result.error

    def test_inconsistent_gains_are_invalid_argument(self, stack: Stack) -> None:
        frame = good_channel_frame(2)
        frame.channel.gains = frame.channel.gains[:-8]
        (result,) = call_stream(stack.receivers["perfect"].Decode, [frame])
        assert_error_code(result, "INVALID_ARGUMENT")
        assert "channel.gains" in result.error


class TestOversizedMessages:
    """Above MAX_MESSAGE_BYTES: the call ends RESOURCE_EXHAUSTED, and the server goes on."""

    BIG = b"\0" * (MAX_MESSAGE_BYTES + 1024)

    def _assert_refused(self, fn: Callable[[], Any]) -> None:
        with pytest.raises(grpc.RpcError) as info:
            fn()
        assert_clear_rpc_error(info.value, {grpc.StatusCode.RESOURCE_EXHAUSTED})

    def test_transmitter_classify(self, stack: Stack) -> None:
        big = services_pb2.ClassifyRequest(
            image_id="big", image=services_pb2.Image(encoded=self.BIG)
        )
        self._assert_refused(lambda: call_stream(stack.transmitter.Classify, [big]))
        assert_transmitter_serves(stack)

    def test_transmitter_image_over_its_own_limit(self, stack: Stack) -> None:
        # Under the gRPC limit, over max_image_bytes (4 MiB): an ERROR result, not a crash.
        req = services_pb2.ClassifyRequest(
            image_id="4mib", image=services_pb2.Image(encoded=b"\0" * (5 * 1024 * 1024))
        )
        (result,) = call_stream(stack.transmitter.Classify, [req])
        assert_error_code(result, "INVALID_ARGUMENT")
        assert "more than" in result.error

    def test_channel_transmit(self, stack: Stack) -> None:
        big = frame_pb2.SymbolFrame(link_id="big", num_symbols=1, symbols=self.BIG)
        self._assert_refused(lambda: call_stream(stack.channel.Transmit, [big]))
        assert_channel_serves(stack)

    def test_channel_set_settings(self, stack: Stack) -> None:
        big = services_pb2.ChannelSettings(model="a" * (MAX_MESSAGE_BYTES + 1024))
        self._assert_refused(lambda: stack.channel.SetSettings(big, timeout=RPC_TIMEOUT))
        assert_channel_serves(stack)

    def test_receiver_decode(self, stack: Stack) -> None:
        big = good_channel_frame(5)
        big.channel.gains = self.BIG
        self._assert_refused(lambda: call_stream(stack.receivers["pilot"].Decode, [big]))
        assert_receiver_serves(stack)
