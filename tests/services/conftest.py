"""Fixtures shared by the service tests: a tiny link on disk, an event-loop runner, servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import torch

from rkdsc_core.data.specs import CIFAR10_CLASSES
from rkdsc_core.link import LinkBundle, SemanticPipeline, load_link, save_link
from rkdsc_core.models import create_model
from services._grpc import server_options

T = TypeVar("T")

Runner = Callable[..., Any]
"""``run(coro, timeout=30.0)``: the coroutine's result, run in a fresh event loop."""
ServerFactory = Callable[[Callable[[grpc.aio.Server], None]], AbstractAsyncContextManager[int]]
"""``async with grpc_server(register) as port``: a started server on 127.0.0.1:port."""


def tiny_pipeline(seed: int = 0) -> SemanticPipeline:
    """The tiny random-init link: darts-student C=4 x 3 layers, CAT d_model 32, P = 4."""
    torch.manual_seed(seed)
    student = create_model("darts-student", C=4, layers=3, token_dim=16)
    codec = create_model("cat-codec", token_dim=16, d_model=32, heads=2)
    return SemanticPipeline(student, codec, num_pilots=4).eval()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder (``save_link``) with the tiny untrained link and CIFAR-10 classes.

    Session-scoped and read-only: tests that need to change weights make their own.
    """
    folder = tmp_path_factory.mktemp("tiny-weights")
    save_link(
        folder,
        tiny_pipeline(),
        student_name="darts-student",
        classes=CIFAR10_CLASSES,
        meta={"dataset": "cifar10"},
    )
    return folder


@pytest.fixture(scope="session")
def tiny_link(tiny_weights: Path) -> LinkBundle:
    """``load_link(tiny_weights)``: the in-process reference of what the services load."""
    return load_link(tiny_weights)


def _run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def run_async() -> Runner:
    """Run a coroutine to completion in a fresh event loop, bounded by ``timeout`` [s]."""
    return _run


@asynccontextmanager
async def _grpc_server(register: Callable[[grpc.aio.Server], None]) -> AsyncIterator[int]:
    server = grpc.aio.server(options=server_options())
    register(server)
    port = int(server.add_insecure_port("127.0.0.1:0"))
    await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


@pytest.fixture
def grpc_server() -> ServerFactory:
    """Start a ``grpc.aio`` server on 127.0.0.1:0 in the running loop (e.g. for fakes).

    ``register(server)`` adds the servicers; the context yields the bound port and stops the
    server (no grace) on exit. Use it inside a coroutine run by :func:`run_async`.
    """
    return _grpc_server
