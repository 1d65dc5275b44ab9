"""The codec interface: checkpoint round trip, edge/receiver halves, budgets, errors."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_codec

from shared.checkpoint import save_checkpoint
from shared.codec import Codec
from shared.errors import CheckpointError


def test_checkpoint_round_trip(tmp_path, codec_e4d1):
    """Saved and loaded codecs decode identically; header carries config, layout and hash."""
    path = tmp_path / "c.ckpt"
    digest = codec_e4d1.save(path)
    loaded = Codec.load(path, expect_arch="ndpca-e4d1")
    assert loaded.sha256 == digest and loaded.header["stft"] == "stream"
    assert loaded.cfg == codec_e4d1.cfg and loaded.frames_per_step == codec_e4d1.frames_per_step
    n_v = codec_e4d1.cfg.vectors_per_step
    coeffs = [torch.randn(2, n_v, k) for k in (3, 0, 5, 1)]
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


def test_old_layout_checkpoint_is_refused_with_the_command(tmp_path):
    """A codec checkpoint whose header lacks codec_layout is refused, naming the train command."""
    old = tmp_path / "ndpca-e2d1.ckpt"
    header = {"kind": "codec", "arch": "ndpca-e2d1", "stft": "stream", "sample_rate": 16000,
              "model_config": {"arch": "ndpca-e2d1", "channels": 64, "frames": 32, "latent_total": 256}}
    save_checkpoint(old, header, {"model.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match="old chunk-latent layout") as err:
        Codec.load(old)
    assert "ndpca train --config training/configs/ndpca-e2d1.toml" in str(err.value)
    assert str(old) in str(err.value)


@pytest.mark.parametrize("profile", ["water", "uniform"])
def test_edge_and_receiver_halves_match_offline(codec_e4d1, profile):
    """Edge payloads decoded by the receiver equal decoding the quantised coefficients."""
    c = codec_e4d1
    c.set_step_profile(profile)
    n_v = c.cfg.vectors_per_step
    audio = torch.randn(4, 4000) * 0.1
    chunks = c.chunk(c.spectra(audio))
    assert chunks.shape[-1] == c.frames_per_step == c.cfg.frames * n_v
    plan = c.plan_for_components(10)
    assert sum(plan.allocation) == 10 and plan.budget_coefficients == 10 * n_v
    payloads, coeffs = [], []
    for s, g in enumerate(c.mic_groups):
        full = c.source_coefficients(s, chunks[:1, g])[0]
        assert full.shape == (n_v, c.latent_sizes[s])
        enc = c.encode_payload(full, plan.allocation[s], None, source=s)
        assert enc.k == plan.allocation[s]
        payloads.append((enc.payload, enc.k, enc.k_allocated))
        coder = c.coder_for(s, enc.k_allocated)
        q = coder.dequantise(coder.quantise(full[:, : enc.k].numpy()))
        np.testing.assert_array_equal(c.decode_payload(enc.payload, enc.k, enc.crc, source=s), q)
        coeffs.append(torch.from_numpy(q)[None])
    torch.testing.assert_close(c.decode_payloads(payloads), c.decode_coefficients(coeffs)[0])


@pytest.mark.parametrize("profile", ["water", "uniform"])
def test_encode_payload_within_budget_drops_components_of_every_vector(codec_e4d1, profile):
    """A short bit budget sends fewer components, the same number for every vector, coded
    with the steps of the allocation (not re-stepped for the smaller count)."""
    c = codec_e4d1
    c.set_step_profile(profile)
    n_v = c.cfg.vectors_per_step
    full = c.source_coefficients(0, c.chunk(c.spectra(torch.randn(4, 4000) * 0.1))[:1, :1])[0]
    k = full.shape[1]
    whole = c.encode_payload(full, k, None)
    enc = c.encode_payload(full, k, whole.bits // 2)
    assert 0 < enc.k < k and enc.k_allocated == k and enc.bits <= whole.bits // 2
    coder = c.coder_for(0, k)
    got = c.decode_payload(enc.payload, enc.k, enc.crc, k_allocated=k)
    np.testing.assert_array_equal(got, coder.dequantise(coder.quantise(full[:, : enc.k].numpy())))
    assert got.shape == (n_v, enc.k)


def test_missing_source_uses_mean(codec_e4d1):
    """A missing source (None) decodes as its mean latent for every vector of the step."""
    c = codec_e4d1
    n_v = c.cfg.vectors_per_step
    a = c.decode_payloads([None, None, None, None])
    b = c.decode_coefficients([torch.zeros(1, n_v, 0)] * 4)[0]
    torch.testing.assert_close(a, b)
    means = [bs.mean.expand(1, n_v, -1) for bs in c.bases]
    torch.testing.assert_close(a, c.model.decode(means)[0])
    assert a.shape[-1] == c.frames_per_step


def test_full_budget_without_quantisation_is_lossless_in_latent():
    """All components, no quantisation: decoding equals the model's own reconstruction."""
    c = tiny_codec("ndpca-e2d1")
    audio = torch.randn(4, 4000) * 0.1
    dec, stats = c.code_signal(audio, sum(c.latent_sizes), quantise=False)
    spec = c.chunk(c.spectra(audio))
    ref = c.to_audio(c.unchunk(c.model(spec), c.spectra(audio).shape[-1]), 4000)
    torch.testing.assert_close(dec, ref, atol=1e-4, rtol=1e-3)
    assert stats["coefficients_per_chunk"] == sum(c.latent_sizes) * c.cfg.vectors_per_step


def test_budget_counts_components_times_vectors_per_step(codec_e4d1):
    """Eq. 3's L counts coefficients per step: sum_s k_s n_v <= L, floor(L / n_v) shared
    (the uniform profile: every coefficient at Eq. 3's flat cost)."""
    c = codec_e4d1
    c.set_step_profile("uniform")
    n_v = c.cfg.vectors_per_step
    assert n_v > 1
    r = c.rate
    per_coeff = r.eta * math.log2(r.sigma2 / r.distortion) / 2
    for L in (0, 1, 5, 9, 21, 40, 63):
        cap = L * per_coeff / r.chunk_seconds * (1 + 1e-9)
        plan = c.plan(cap)
        assert plan.budget_coefficients == L
        assert sum(plan.allocation) == L // n_v
        assert sum(plan.allocation) * n_v <= L
    full = c.plan(1e9)
    assert full.budget_coefficients == n_v * sum(c.latent_sizes)
    assert full.allocation == c.latent_sizes
    _, stats = c.code_signal(torch.randn(4, 4000) * 0.1, 6, quantise=False)
    assert stats["coefficients_per_chunk"] == 6 * n_v == stats["budget_coefficients"]


def test_bits_fit_budget_every_chunk():
    """code_signal never exceeds the step's bit budget."""
    c = tiny_codec("ndpca-e4d1")
    audio = torch.randn(4, 8000) * 0.1
    for L in (1, 4, 8, 16, 32):
        _, stats = c.code_signal(audio, L)
        assert stats["bits_per_chunk"] <= stats["budget_bits_per_chunk"]
        assert np.isfinite(stats["bitrate_bps"])


def test_source_weights_travel_in_the_checkpoint_and_steer_the_allocation(tmp_path):
    """A codec whose sources 1..3 are weighted down gives a tight budget to source 0 alone
    (``ndpca``), while ``ndpca-equal`` shares it; the weights survive save/load and the
    streaming planner (sources present) uses them too; bad weights are refused."""
    from shared.models.architectures import ModelConfig
    from shared.streaming import plan_for_active

    codec = tiny_codec("ndpca-e4d1", source_weights=(1.0, 0.01, 0.01, 0.01), step_profile="uniform")
    plan = codec.plan_for_components(6)
    assert plan.allocation == [6, 0, 0, 0]
    assert sum(codec.plan_for_components(6, "ndpca-equal").allocation[1:]) > 0
    path = tmp_path / "w.ckpt"
    codec.save(path)
    loaded = Codec.load(path, step_profile="uniform")
    assert loaded.source_weights == [1.0, 0.01, 0.01, 0.01]
    assert loaded.plan_for_components(6).allocation == [6, 0, 0, 0]
    capacity = 6 * codec.cfg.vectors_per_step * codec.rate.bits_per_coefficient / codec.chunk_seconds
    both = plan_for_active(loaded, capacity * 1.000001, [1, 2]).allocation
    assert both[0] == both[3] == 0 and sum(both) == 6  # equal weights among those present
    assert plan_for_active(loaded, capacity * 1.000001, [0, 3]).allocation == [6, 0, 0, 0]
    for bad in [(1.0, 1.0), (1.0, 0.0, 1.0, 1.0), (1.0, float("nan"), 1.0, 1.0)]:
        with pytest.raises(ValueError, match="source_weights"):
            ModelConfig(arch="ndpca-e4d1", source_weights=bad).validate_all()


def test_bases_stored_in_float16_load_as_the_saved_codec_codes(tmp_path):
    """A codec whose bases were rounded to float16 and saved so codes exactly like the loaded file."""
    codec = tiny_codec()
    codec.round_bases(torch.float16)
    small, big = tmp_path / "half.ckpt", tmp_path / "full.ckpt"
    codec.save(small, bases_dtype=torch.float16)
    tiny_codec().save(big)
    assert small.stat().st_size < big.stat().st_size
    loaded = Codec.load(small)
    assert loaded.header["bases_dtype"] == "float16"
    for a, b in zip(codec.bases, loaded.bases):
        assert torch.equal(a.basis, b.basis) and torch.equal(a.std, b.std)
    torch.manual_seed(0)
    audio = torch.randn(codec.cfg.num_mics, 4 * codec.chunk_samples) * 0.1
    out_a, _ = codec.code_signal(audio, 8)
    out_b, _ = loaded.code_signal(audio, 8)
    assert torch.equal(out_a, out_b)
