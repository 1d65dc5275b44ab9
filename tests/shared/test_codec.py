"""The codec interface: checkpoint round trip, edge/receiver halves, errors."""

import numpy as np
import pytest
import torch
from conftest import tiny_codec

from shared.codec import Codec
from shared.errors import CheckpointError


def test_checkpoint_round_trip(tmp_path, codec_e4d1):
    """Saved and loaded codecs decode identically; header carries config and hash."""
    path = tmp_path / "c.ckpt"
    digest = codec_e4d1.save(path)
    loaded = Codec.load(path, expect_arch="ndpca-e4d1")
    assert loaded.sha256 == digest and loaded.header["stft"] == "stream"
    coeffs = [torch.randn(2, k) for k in (3, 0, 5, 1)]
    torch.testing.assert_close(loaded.decode_coefficients(coeffs), codec_e4d1.decode_coefficients(coeffs))


def test_checkpoint_errors(tmp_path, codec_e4d1):
    """Missing, corrupt, foreign and wrong-architecture files each get a clear error."""
    with pytest.raises(CheckpointError, match="not found"):
        Codec.load(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="not an ndpca checkpoint"):
        Codec.load(junk)
    path = tmp_path / "c.ckpt"
    codec_e4d1.save(path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        Codec.load(bad)
    with pytest.raises(CheckpointError, match="expected 'jae'"):
        Codec.load(path, expect_arch="jae")
    renamed = tmp_path / "ndpca-e4d1-00000000.ckpt"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="file name"):
        Codec.load(renamed)


def test_edge_and_receiver_halves_match_offline(codec_e4d1):
    """Edge payloads decoded by the receiver equal decoding the quantised coefficients."""
    c = codec_e4d1
    audio = torch.randn(4, 4000) * 0.1
    chunks = c.chunk(c.spectra(audio))
    plan = c.plan_for_coefficients(10)
    assert sum(plan.allocation) == 10
    payloads, coeffs = [], []
    for s, g in enumerate(c.mic_groups):
        full = c.source_coefficients(s, chunks[:1, g])[0]
        enc = c.encode_payload(full, plan.allocation[s], None)
        assert enc.k == plan.allocation[s]
        payloads.append((enc.payload, enc.k))
        coeffs.append(torch.from_numpy(c.coder.dequantise(c.coder.quantise(full[: enc.k].numpy())))[None])
    torch.testing.assert_close(c.decode_payloads(payloads), c.decode_coefficients(coeffs)[0])


def test_missing_source_uses_mean(codec_e4d1):
    c = codec_e4d1
    a = c.decode_payloads([None, None, None, None])
    b = c.decode_coefficients([torch.zeros(1, 0)] * 4)[0]
    torch.testing.assert_close(a, b)


def test_full_budget_without_quantisation_is_lossless_in_latent():
    """All components, no quantisation: decoding equals the model's own reconstruction."""
    c = tiny_codec("ndpca-e2d1")
    audio = torch.randn(4, 4000) * 0.1
    dec, stats = c.code_signal(audio, sum(c.latent_sizes), quantise=False)
    spec = c.chunk(c.spectra(audio))
    ref = c.to_audio(c.unchunk(c.model(spec), c.spectra(audio).shape[-1]), 4000)
    torch.testing.assert_close(dec, ref, atol=1e-4, rtol=1e-3)
    assert stats["coefficients_per_chunk"] == sum(c.latent_sizes)


def test_bits_fit_budget_every_chunk():
    """code_signal never exceeds the step's bit budget."""
    c = tiny_codec("ndpca-e4d1")
    audio = torch.randn(4, 8000) * 0.1
    for L in (1, 4, 8, 16, 32):
        _, stats = c.code_signal(audio, L)
        assert stats["bits_per_chunk"] <= stats["budget_bits_per_chunk"]
        assert np.isfinite(stats["bitrate_bps"])
