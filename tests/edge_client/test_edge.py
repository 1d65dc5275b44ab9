"""Edge side: live framing and encoding equal offline; audio input errors; refusal handling."""


import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_codec
from streaming_harness import Receiver, one_torch_thread  # noqa: F401

from edge_client.audio import read_source_audio
from edge_client.client import EdgeClient, EdgeConfig, EdgeRefused
from edge_client.encoder import LiveEncoder, PrecomputedEncoder
from ndpca.cli import main
from server.settings import ReceiverSettings
from shared.errors import AudioError


@pytest.mark.parametrize("extra", [0, 300, 1023])
def test_live_encoder_equals_offline_coefficients(extra):
    """Chunk by chunk (also when skipping chunks) the edge computes the offline coefficients."""
    codec = tiny_codec()
    audio = torch.randn(4, 9 * codec.chunk_samples + extra) * 0.1
    chunks = codec.chunk(codec.spectra(audio))
    for s, group in enumerate(codec.mic_groups):
        ref = codec.source_coefficients(s, chunks[:, group])
        assert ref.shape[1:] == (codec.cfg.vectors_per_step, codec.latent_sizes[s])
        live = LiveEncoder(codec, s, audio[group])
        pre = PrecomputedEncoder(codec, s, audio[group])
        assert live.n_chunks == pre.n_chunks == ref.shape[0]
        order = [0, 1, 4, 5, 8] + list(range(9, ref.shape[0]))
        for i in order:
            torch.testing.assert_close(live.coefficients(i), ref[i], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(pre.coefficients(i), ref[i])
        assert live.coefficients(ref.shape[0]) is None and live.is_last(ref.shape[0] - 1)


def test_read_source_audio(tmp_path):
    """One channel of a multi-channel file, or a mono file; wrong rate or channel is refused."""
    data = np.random.default_rng(0).standard_normal((1000, 4)).astype(np.float32) * 0.1
    sf.write(tmp_path / "m.wav", data, 16000, subtype="FLOAT")
    sf.write(tmp_path / "mono.wav", data[:, 2], 16000, subtype="FLOAT")
    sf.write(tmp_path / "8k.wav", data, 8000, subtype="FLOAT")
    np.testing.assert_allclose(read_source_audio(tmp_path / "m.wav", [2], 16000).numpy()[0], data[:, 2])
    np.testing.assert_allclose(read_source_audio(tmp_path / "mono.wav", [3], 16000).numpy()[0], data[:, 2])
    with pytest.raises(AudioError, match="8000 Hz"):
        read_source_audio(tmp_path / "8k.wav", [0], 16000)
    with pytest.raises(AudioError, match="channel"):
        read_source_audio(tmp_path / "m.wav", [5], 16000)
    with pytest.raises(AudioError, match="cannot read"):
        read_source_audio(tmp_path / "missing.wav", [0], 16000)
    with pytest.raises(AudioError, match="holds 1000 samples; the codec needs at least 2048"):
        read_source_audio(tmp_path / "m.wav", [0], 16000, min_samples=2048)
    data[600, 1] = np.nan  # one bad sample would stop the encoder mid-stream: refused up front
    sf.write(tmp_path / "nan.wav", data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="channel 1 sample 600 .* is nan"):
        read_source_audio(tmp_path / "nan.wav", [1], 16000)


def test_wrong_token_is_fatal_not_retried(tmp_path):
    """A refused edge (wrong token) stops at once with a clear error instead of retrying."""
    codec = tiny_codec()
    audio = torch.randn(1, 4 * codec.chunk_samples) * 0.1
    settings = ReceiverSettings(session="room", token="right", capacity_bps=500.0)
    with Receiver(settings, codec) as rx:
        client = EdgeClient(EdgeConfig(rx.url, "room", 0, "wrong", retry_for_s=30), codec,
                            LiveEncoder(codec, 0, audio))
        import asyncio
        import time

        t0 = time.time()
        with pytest.raises(EdgeRefused, match="unauthorized"):
            asyncio.run(client.run())
        assert time.time() - t0 < 5


def test_unreachable_receiver_gives_up(tmp_path):
    """With no receiver, the edge retries with backoff and gives up after --retry-for."""
    codec = tiny_codec()
    client = EdgeClient(EdgeConfig("ws://127.0.0.1:9/ws", "room", 0, "t", retry_for_s=0.5), codec,
                        LiveEncoder(codec, 0, torch.zeros(1, 5000)))
    import asyncio

    with pytest.raises(EdgeRefused, match="unreachable"):
        asyncio.run(client.run())


def test_wrong_endpoint_is_fatal_not_retried():
    """An HTTP address that is not the edge endpoint (the receiver without /ws) is refused at
    once, naming the endpoint, instead of being retried as if the receiver were down."""
    codec = tiny_codec()
    audio = torch.randn(1, 4 * codec.chunk_samples) * 0.1
    with Receiver(ReceiverSettings(session="room", token="t", capacity_bps=500.0), codec) as rx:
        url = rx.url.rsplit("/ws", 1)[0] + "/nowhere"
        client = EdgeClient(EdgeConfig(url, "room", 0, "t", retry_for_s=30), codec, LiveEncoder(codec, 0, audio))
        import asyncio
        import time

        t0 = time.time()
        with pytest.raises(EdgeRefused, match=r"answered HTTP 4\d\d .*ws://HOST:PORT/ws"):
            asyncio.run(client.run())
        assert time.time() - t0 < 5


def test_edge_cli_user_errors(tmp_path, capsys):
    """`ndpca edge` reports a missing checkpoint or session in one line, exit status 2."""
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros((2000, 4), np.float32), 16000)
    assert main(["edge", "--source", "0", "--input", str(wav), "--session", "s",
                 "--checkpoint-dir", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    codec = tiny_codec()
    codec.save(tmp_path / "c.ckpt")
    assert main(["edge", "--source", "9", "--input", str(wav), "--session", "s",
                 "--checkpoint", str(tmp_path / "c.ckpt")]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["edge", "--source", "0", "--input", str(wav), "--session", "s", "--url", "http://x:1/ws",
                 "--checkpoint", str(tmp_path / "c.ckpt")]) == 2
    assert "not a websocket URL" in capsys.readouterr().err
