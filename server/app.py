"""The receiver application: ``create_app(settings)`` -> FastAPI, the model loaded in lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server import api, gcwatch, live, ws
from server.decoder import BatchDecoder
from server.enhance import Enhancer, build_enhancer
from server.limits import ConnectionLimits
from server.manager import SessionManager
from server.metrics import ReceiverMetrics
from server.model import load_codec
from server.settings import ReceiverSettings
from shared.codec import Codec

log = logging.getLogger(__name__)


def build_stage(settings: ReceiverSettings, codec: Codec) -> Enhancer:
    """The enhancement stage the settings ask for, on ``codec``'s output."""
    return build_enhancer(settings.enhancer, codec, {
        "checkpoint": settings.enhancer_checkpoint, "checkpoint_dir": settings.checkpoint_dir,
        "sampler": settings.enhance_sampler, "steps": settings.enhance_steps, "mics": settings.enhance_mics,
        "context": settings.enhance_context})


def create_app(settings: ReceiverSettings | None = None, codec: Codec | None = None,
               enhancer: Enhancer | None = None) -> FastAPI:
    """Build the receiver. ``codec`` skips loading from a checkpoint and ``enhancer`` building
    the enhancement stage (tests; ``ndpca serve``, which checks both before it starts)."""
    settings = settings or ReceiverSettings()
    sessions = settings.session_configs()  # fail fast on bad configuration

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = False
        metrics = app.state.metrics
        model = codec or await asyncio.to_thread(
            load_codec, settings.checkpoint, settings.arch, settings.checkpoint_dir, settings.device
        )
        if settings.step_profile and settings.step_profile != model.step_profile:
            model.set_step_profile(settings.step_profile)
        # on CPU one intra-op thread by default: decoding a step takes milliseconds, and
        # spinning OpenMP workers on a busy 2-core machine cost more than they save
        threads = settings.threads or (1 if model.device.type == "cpu" else None)
        stage = enhancer or await asyncio.to_thread(build_stage, settings, model)
        decoder = BatchDecoder(model, stage, metrics, settings.max_batch, threads,
                               settings.beamform_min_share)
        await decoder.start()
        manager = SessionManager(model, decoder, metrics, settings.record_seconds, settings.record_dir,
                                 settings.download_rate_mib_s * 2**20)
        for cfg in sessions:
            manager.create(cfg)
        app.state.codec, app.state.enhancer = model, stage
        app.state.decoder, app.state.manager = decoder, manager
        watch = gcwatch.install(metrics.gc_pause)
        app.state.ready = True
        log.info("receiver ready: %s on %s, %d session(s)", model.cfg.arch, model.device, len(sessions))
        try:
            yield
        finally:
            app.state.ready = False
            await manager.shutdown()
            await decoder.stop()
            gcwatch.uninstall(watch)

    app = FastAPI(
        title="NDPCA receiver",
        version="0.1.0",
        description="Receives NDPCA components from edge devices over websockets, replays a "
        "channel trace, feeds allocations back and decodes speech in real time.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = ReceiverMetrics()
    app.state.limits = ConnectionLimits(settings.max_connections, settings.max_connections_per_ip)
    app.state.ready = False
    app.include_router(api.health)
    app.include_router(api.sessions)
    app.include_router(api.metrics)
    app.include_router(api.cells)
    app.include_router(ws.router)
    app.include_router(live.router)  # the live view: /ui, /ui/live, /ui/sessions
    return app
