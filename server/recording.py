"""Decoded audio on disk: one growing WAV per session, written off the event loop.

A receiver's :class:`RecordingStore` owns a directory (``--record-dir``; without one a
temporary directory removed at shutdown) and one writer thread. Each session appends its
decoded blocks ``[C, n]`` to its :class:`Recording`; the blocks are buffered on the event loop
and handed to the writer thread about once a second (``flush_seconds``), which appends them to

- ``<id>.wav``: 32-bit float WAV, one channel per output channel (microphone, or enhanced
  speech); the header's sizes are rewritten after every flush, so the file is a valid WAV of
  everything flushed, also after a crash;
- ``<id>.json``: what the recording holds (format version, sample rate, channels, model hash,
  ``offset_samples``: the stream index of its first sample, ``samples``) and the session's
  counters at that flush (clock epoch, next step, steps, late and missing chunks, ...), so that
  a restarted receiver can append to the same recording (see :class:`server.session.Session`).

Nothing here keeps more than one flush of audio in memory: ``GET /sessions/{id}/audio``
streams the file in pieces (:meth:`Recording.wav_chunks`), read in a worker thread and paced
by the store's :class:`DownloadPacer` (``--download-rate``, MiB/s shared by every download),
so that bulk downloads cannot take the CPU the real-time sessions' decoding needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

log = logging.getLogger(__name__)

#: version of the ``<id>.json`` side file
FORMAT_VERSION = 1
#: bytes of the WAV header written here (RIFF, a 16-byte ``fmt `` chunk, ``data``)
HEADER_BYTES = 44
#: the most audio bytes a WAV's 32-bit size fields can describe
MAX_DATA_BYTES = 2**32 - 1 - (HEADER_BYTES - 8)
#: bytes read from disk per piece of a download
READ_CHUNK_BYTES = 1 << 20
#: samples per channel written at once when filling a gap with silence
ZERO_CHUNK = 1 << 16


def wav_header(frames: int, channels: int, sample_rate: int) -> bytes:
    """The 44-byte header of a 32-bit IEEE-float WAV holding ``frames`` samples per channel."""
    data = frames * channels * 4
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 3, channels,
                       sample_rate, sample_rate * channels * 4, channels * 4, 32, b"data", data)


def max_frames(channels: int) -> int:
    """The most samples per channel one recording (a plain WAV) can hold."""
    return MAX_DATA_BYTES // (4 * channels)


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """A writer-thread operation: an I/O error stops that recording, logged, never the receiver."""

    def run(self: Recording, *args: Any) -> None:
        if self.failed is not None:
            return
        try:
            fn(self, *args)
        except OSError as exc:
            self.failed = str(exc)
            log.error("recording of session %s stopped: %s (free space in %s or pass another "
                      "--record-dir)", self.id, exc, self.store.directory)
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None

    return run


class DownloadPacer:
    """A byte-rate limit shared by every download of one receiver (virtual-time pacing).

    Each piece of ``n`` bytes is scheduled ``n / rate`` seconds after the previous one (of any
    download); a download waits until its piece's slot. ``rate <= 0``: no limit.
    """

    def __init__(self, bytes_per_s: float) -> None:
        self.rate = float(bytes_per_s)
        self._next = 0.0  # monotonic time at which the next piece may go

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + n / self.rate
        if start > now:
            await asyncio.sleep(start - now)


class RecordingStore:
    """The directory of a receiver's recordings and the thread that writes them.

    Args:
        directory: where ``<id>.wav`` and ``<id>.json`` live (None: a temporary directory,
            removed by :meth:`close`; recordings then do not survive a restart).
        flush_seconds: audio buffered per session before it is handed to the writer.
        download_bytes_per_s: the rate all audio downloads share (0: unlimited).
    """

    def __init__(self, directory: str | Path | None, flush_seconds: float = 1.0,
                 download_bytes_per_s: float = 0.0) -> None:
        self.temporary = directory is None
        self.pacer = DownloadPacer(download_bytes_per_s)
        self.directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="ndpca-recordings-"))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from shared.errors import ConfigError

            raise ConfigError(f"record directory {self.directory} cannot be created ({exc}); "
                              "pass a writable --record-dir") from None
        self.flush_seconds = flush_seconds
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="recorder")
        self._closed = False

    def open(self, session_id: str, sample_rate: int, channels: int, model_sha256: str) -> Recording:
        """The recording of session ``session_id`` (reads what an earlier run left, if anything)."""
        return Recording(self, session_id, sample_rate, channels, model_sha256)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future | None:
        """Run ``fn(*args)`` on the writer thread, after everything submitted before (None once
        the store is closed)."""
        if self._closed:
            return None
        return self._pool.submit(fn, *args)

    async def sync(self) -> None:
        """Wait until everything submitted so far is written."""
        done = self.submit(lambda: None)
        if done is not None:
            await asyncio.wrap_future(done)

    async def close(self, timeout: float = 30.0) -> None:
        """Finish every pending write, stop the thread; remove a temporary directory."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sync(), timeout)
        self._closed = True
        self._pool.shutdown(wait=False)
        if self.temporary:
            await asyncio.to_thread(shutil.rmtree, self.directory, True)


class Recording:
    """One session's decoded audio on disk. Loop side: :meth:`append`, :meth:`pad`,
    :meth:`sync`, :meth:`close`; every file operation runs on the store's writer thread.

    Attributes:
        previous: the side file an earlier run left (None when there is none, or it does not
            match this codec and output); the session decides whether to resume it.
        offset: stream index of the recording's first sample.
        samples: samples per channel handed to the recording so far.
        written: samples per channel on disk with header and side file updated.
        meta: called on the loop at every flush for the session's counters (a dict).
    """

    def __init__(self, store: RecordingStore, session_id: str, sample_rate: int, channels: int,
                 model_sha256: str) -> None:
        self.store = store
        self.id = session_id
        self.sample_rate = sample_rate
        self.channels = channels
        self.model_sha256 = model_sha256
        self.path = store.directory / f"{session_id}.wav"
        self.meta_path = store.directory / f"{session_id}.json"
        self.previous = self._read_previous()
        self.offset = 0
        self.samples = 0
        self.written = 0
        self.started = self.closed = False
        self.failed: str | None = None
        self.meta: Callable[[], dict[str, Any]] = dict
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._flush_samples = max(1, int(store.flush_seconds * sample_rate))
        self._file: BinaryIO | None = None

    # ------------------------------------------------------------------ loop side
    def start(self, offset: int, resume: bool = False) -> None:
        """Begin: ``resume`` appends to :attr:`previous`; otherwise a new file whose first sample
        is stream sample ``offset`` (an earlier recording of the same id is moved aside)."""
        if resume:
            assert self.previous is not None
            self.offset, self.samples = int(self.previous["offset_samples"]), int(self.previous["samples"])
            self.written = self.samples
            self.store.submit(self._open_append, self.samples)
        else:
            self.offset, self.samples, self.written = offset, 0, 0
            self.store.submit(self._open_new)
        self.started = True

    def append(self, block: np.ndarray) -> None:
        """Record a block ``[C, n]`` (kept by reference until the next flush)."""
        if not self.started or self.closed or not block.shape[-1]:
            return
        self._pending.append(block)
        self._pending_samples += block.shape[-1]
        self.samples += block.shape[-1]
        if self._pending_samples >= self._flush_samples:
            self.flush()

    def pad(self, n: int) -> None:
        """Record ``n`` samples of silence (a gap in the stream: the receiver was down)."""
        if not self.started or self.closed or n <= 0:
            return
        self.flush()
        self.samples += n
        self.store.submit(self._write_zeros, n, self._snapshot())

    def flush(self) -> None:
        """Hand the buffered blocks and the session's counters to the writer."""
        if not self.started or self.closed:
            return
        blocks, self._pending, self._pending_samples = self._pending, [], 0
        self.store.submit(self._write, blocks, self._snapshot())

    async def sync(self) -> int:
        """Flush and wait until it is on disk; returns the samples per channel on disk."""
        self.flush()
        await self.store.sync()
        return self.written

    def close(self, state: str) -> Future | None:
        """Flush, record the session's final ``state`` and close the file."""
        if not self.started or self.closed:
            return None
        self.flush()
        self.closed = True
        return self.store.submit(self._close, self._snapshot(state))

    def _snapshot(self, state: str | None = None) -> dict[str, Any]:
        meta = self.meta()
        if state is not None:
            meta["state"] = state
        return meta

    # ------------------------------------------------------------------ reading
    def wav_bytes(self, frames: int) -> int:
        return HEADER_BYTES + frames * self.channels * 4

    async def wav_chunks(self, frames: int) -> AsyncIterator[bytes]:
        """A WAV of the first ``frames`` samples on disk: the header, then the data read in
        pieces of ``READ_CHUNK_BYTES`` in a worker thread."""
        yield wav_header(frames, self.channels, self.sample_rate)
        left = frames * self.channels * 4
        if not left:
            return
        f = await asyncio.to_thread(open, self.path, "rb")
        try:
            await asyncio.to_thread(f.seek, HEADER_BYTES)
            while left > 0:
                piece = min(READ_CHUNK_BYTES, left)
                await self.store.pacer.take(piece)
                data = await asyncio.to_thread(f.read, piece)
                if not data:
                    raise OSError(f"recording {self.path} is shorter than its {frames} samples")
                left -= len(data)
                yield data
        finally:
            await asyncio.to_thread(f.close)

    async def read_tail(self, frames: int) -> np.ndarray:
        """The newest ``frames`` samples on disk ``[C, n]`` (n <= frames)."""
        written = await self.sync()
        n = min(frames, written)
        return await asyncio.to_thread(self._read, written - n, n)

    def _read(self, start: int, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros((self.channels, 0), dtype=np.float32)
        with open(self.path, "rb") as f:
            f.seek(HEADER_BYTES + start * self.channels * 4)
            data = np.frombuffer(f.read(n * self.channels * 4), dtype="<f4")
        return data.reshape(-1, self.channels).T.copy()

    # ------------------------------------------------------------------ writer thread
    def _read_previous(self) -> dict[str, Any] | None:
        try:
            meta = json.loads(self.meta_path.read_text())
            size = self.path.stat().st_size
        except (OSError, ValueError):
            return None
        ok = (isinstance(meta, dict) and meta.get("version") == FORMAT_VERSION
              and meta.get("sample_rate") == self.sample_rate and meta.get("channels") == self.channels
              and meta.get("model_sha256") == self.model_sha256
              and isinstance(meta.get("samples"), int) and isinstance(meta.get("offset_samples"), int)
              and size >= HEADER_BYTES + meta["samples"] * self.channels * 4)
        if not ok:
            log.warning("recording %s does not match this receiver (codec, output channels or "
                        "format) or is damaged; a new run of session %s starts a new file and "
                        "moves it aside", self.path, self.id)
            return None
        return meta

    @_guarded
    def _open_new(self) -> None:
        if self.path.exists() or self.meta_path.exists():
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(
                self.path.stat().st_mtime if self.path.exists() else time.time()))
            aside, i = f"{self.id}.{stamp}", 1
            while (self.store.directory / f"{aside}.wav").exists():
                aside, i = f"{self.id}.{stamp}-{i}", i + 1
            for p, ext in ((self.path, "wav"), (self.meta_path, "json")):
                if p.exists():
                    os.replace(p, self.store.directory / f"{aside}.{ext}")
            log.info("session %s: the earlier recording moved to %s.wav", self.id, aside)
        self._file = open(self.path, "w+b")  # noqa: SIM115 (kept open while recording)
        self._file.write(wav_header(0, self.channels, self.sample_rate))
        self._file.flush()
        self.written = 0
        self._write_meta({"state": "running"})

    @_guarded
    def _open_append(self, frames: int) -> None:
        self._file = open(self.path, "r+b")  # noqa: SIM115 (kept open while recording)
        self._file.truncate(HEADER_BYTES + frames * self.channels * 4)  # past the side file: a crash's rest
        self._file.seek(0, os.SEEK_END)
        self.written = frames
        self._commit(frames, {"state": "running"})

    @_guarded
    def _write(self, blocks: list[np.ndarray], meta: dict[str, Any]) -> None:
        if self._file is None:
            return
        n = 0
        for block in blocks:
            self._file.write(np.ascontiguousarray(block.T, dtype="<f4").data)
            n += block.shape[-1]
        self._commit(self.written + n, meta)

    @_guarded
    def _write_zeros(self, frames: int, meta: dict[str, Any]) -> None:
        if self._file is None:
            return
        zeros = np.zeros(min(frames, ZERO_CHUNK) * self.channels, dtype="<f4")
        left = frames
        while left > 0:
            k = min(left, ZERO_CHUNK)
            self._file.write(zeros[: k * self.channels].data)
            left -= k
        self._commit(self.written + frames, meta)

    @_guarded
    def _close(self, meta: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._commit(self.written, meta)
        self._file.close()
        self._file = None

    def _commit(self, frames: int, meta: dict[str, Any]) -> None:
        """Data written: rewrite the header's sizes, then the side file (the side file never
        claims samples that are not on disk)."""
        assert self._file is not None
        self._file.flush()
        self._file.seek(0)
        self._file.write(wav_header(frames, self.channels, self.sample_rate))
        self._file.seek(0, os.SEEK_END)
        self._file.flush()
        self.written = frames
        self._write_meta(meta)

    def _write_meta(self, meta: dict[str, Any]) -> None:
        body = {**meta, "version": FORMAT_VERSION, "session": self.id, "sample_rate": self.sample_rate,
                "channels": self.channels, "model_sha256": self.model_sha256,
                "offset_samples": self.offset, "samples": self.written}
        tmp = self.meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.meta_path)
