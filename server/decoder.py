"""Batched decoding across sessions: one worker, one model, many rooms.

Sessions submit closed steps (:class:`DecodeJob`); the worker takes everything queued (up to
``max_batch``), zero-pads each source's coefficients to the largest ``k`` in the batch (a zero
coefficient adds nothing to ``mu_s + V_s[:, :k] c``, so padding does not change the result),
decodes the batch in one call, runs the enhancement stage, and hands each session its spectra
for its streaming inverse STFT. Jobs of one session are processed in submission order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from server.enhance import BEAMFORM_MIN_SHARE, Enhancer, beamforming_mask
from server.metrics import ReceiverMetrics
from shared.codec import Codec

log = logging.getLogger(__name__)


@dataclass
class DecodeJob:
    """One step of one session.

    Attributes:
        coeffs: per source the dequantised coefficients ``[n_v, k_s]`` (None: missing -> mean).
        valid_frames: frames of this step that belong to the signal (the last step may be
            shorter); 0 = nothing to decode.
        finish_length: a finishing job (no decode): flush the session's inverse STFT to
            this many samples (None: flush what the frames cover).
        done: called on the event loop with ``(job, audio [M, n], done_time)``.
        error: set when this job failed (its audio is then empty); other jobs of its batch
            are unaffected.
    """

    key: Any
    step: int
    coeffs: list[np.ndarray | None]
    valid_frames: int
    postprocess: Callable[[torch.Tensor], torch.Tensor] | None
    finish: Callable[[], torch.Tensor] | None
    done: Callable[[DecodeJob, torch.Tensor, float], None]
    closed_at: float = field(default_factory=time.time)
    audio: torch.Tensor | None = None
    started_at: float = 0.0
    compute_s: float = 0.0
    batch: int = 0
    error: str | None = None


class BatchDecoder:
    """The decode worker shared by all sessions of a receiver."""

    def __init__(self, codec: Codec, enhancer: Enhancer, metrics: ReceiverMetrics,
                 max_batch: int = 64, threads: int | None = None,
                 beamform_min_share: float = BEAMFORM_MIN_SHARE) -> None:
        self.codec = codec
        self.beamform_min_share = beamform_min_share
        self.enhancer = enhancer
        self.out_channels = enhancer.out_channels(codec.cfg.num_mics) if hasattr(enhancer, "out_channels") \
            else codec.cfg.num_mics
        self.metrics = metrics
        self.max_batch = max_batch
        self.threads = threads
        self.queue: asyncio.Queue[DecodeJob] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        # one long-lived thread: its torch/OpenMP state is set up once and stays warm
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="decoder", initializer=self._init_thread)
        self.batches = 0
        self.jobs = 0

    def _init_thread(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    async def start(self) -> None:
        """Warm the decoder up (first calls allocate and initialise) and start the worker."""
        loop = asyncio.get_running_loop()
        n_v = self.codec.cfg.vectors_per_step
        rows = [[np.zeros((n_v, d), dtype=np.float32) for d in self.codec.latent_sizes]] * 2
        for _ in range(3):
            await loop.run_in_executor(self._pool, self.decode_batch, rows)
        self._task = asyncio.create_task(self._run(), name="batch-decoder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, job: DecodeJob) -> None:
        self.queue.put_nowait(job)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every submitted job is done (tests, shutdown)."""
        await asyncio.wait_for(self.queue.join(), timeout)

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            started = time.time()
            for job in batch:
                job.started_at, job.batch = started, len(batch)
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._pool, self._process, batch)
            except Exception:  # a decode failure must not kill the receiver, nor other jobs
                log.exception("decoding a batch of %d steps failed; retrying them one by one", len(batch))
                for job in batch:
                    if job.audio is not None:
                        continue  # done before the failure (its inverse STFT has run)
                    try:
                        await loop.run_in_executor(self._pool, self._process, [job])
                    except Exception as exc:
                        log.exception("step %s of %s failed", job.step, job.key)
                        job.error = f"{type(exc).__name__}: {exc}"[:200]
                        job.audio = torch.zeros(self.out_channels, 0)
            done = time.time()
            for job in batch:
                try:
                    job.done(job, job.audio if job.audio is not None else torch.zeros(0, 0), done)
                except Exception:
                    log.exception("session callback failed for step %d", job.step)
                self.queue.task_done()
            self.batches += 1
            self.jobs += len(batch)

    def _process(self, batch: list[DecodeJob]) -> None:
        t0 = time.perf_counter()
        decode = [j for j in batch if j.finish is None and j.valid_frames > 0]
        if decode:
            self.metrics.batch_size.observe(len(decode))
            decoded = self.decode_batch([j.coeffs for j in decode])
            if getattr(self.enhancer, "stateful", False):
                spectra = self.enhancer(decoded, keys=[j.key for j in decode],
                                        active=self.active_mics([j.coeffs for j in decode]))
            else:
                spectra = self.enhancer(decoded)
            for j, spec in zip(decode, spectra):
                assert j.postprocess is not None
                j.audio = j.postprocess(spec[..., : j.valid_frames].cpu())
        for j in batch:
            if j.finish is not None:
                j.audio = j.finish()
                if hasattr(self.enhancer, "release"):
                    self.enhancer.release(j.key)
            elif j.audio is None:
                j.audio = torch.zeros(self.out_channels, 0)
        elapsed = time.perf_counter() - t0
        for j in batch:
            j.compute_s = elapsed

    def active_mics(self, rows: list[list[np.ndarray | None]]) -> torch.Tensor:
        """Per job, the microphones the classical stage may beamform with ``[B, M]`` (bool):
        those of the sources that sent at least ``beamform_min_share`` of their components
        (:func:`server.enhance.beamforming_mask`); a source left out, or sent as a few
        components, decodes to little more than its mean, which is no signal to beamform with."""
        return torch.stack([
            beamforming_mask(self.codec, [0 if c is None else int(np.shape(c)[-1]) for c in r],
                             self.beamform_min_share)
            for r in rows
        ]) if rows else torch.zeros(0, self.codec.cfg.num_mics, dtype=torch.bool)

    @torch.no_grad()
    def decode_batch(self, rows: list[list[np.ndarray | None]]) -> torch.Tensor:
        """Per job, per source coefficients ``[n_v, k_s]`` (None: missing) -> spectra
        ``[B, M, 2, F, frames_per_step]``."""
        n_v = self.codec.cfg.vectors_per_step
        per_source = []
        kept = torch.zeros(len(rows), self.codec.n_sources, dtype=torch.long)
        for s in range(self.codec.n_sources):
            ks = [0 if r[s] is None else np.shape(r[s])[-1] for r in rows]
            kept[:, s] = torch.tensor(ks)
            x = torch.zeros(len(rows), n_v, max(ks), dtype=torch.float32)
            for b, r in enumerate(rows):
                if ks[b]:
                    x[b, :, : ks[b]] = torch.from_numpy(np.asarray(r[s], dtype=np.float32).reshape(n_v, -1))
            per_source.append(x)
        return self.codec.decode_coefficients(per_source, kept)
