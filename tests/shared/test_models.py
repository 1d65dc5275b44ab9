"""Model shapes for both STFT presets, source isolation, the linear starting point, configs."""

import pytest
import torch
from conftest import tiny_model_config

from shared.models.architectures import ARCHITECTURES, DistributedAutoencoder, ModelConfig
from shared.stft import from_channels, get_preset, istft, stft, to_channels

# the default frame-rate layout on the stream preset; the paper's layout (one vector per
# 32-frame chunk) on the paper preset (n_fft 2048)
LAYOUTS = {"stream": dict(frames=4, vectors_per_step=2), "paper": dict(frames=32, vectors_per_step=1)}


def _randomise_residuals(model: DistributedAutoencoder) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 and not p.abs().sum():
                p.normal_(0, 0.05)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("preset", ["stream", "paper"])
def test_shapes(arch, preset):
    """Encoders give [B, T/G, d_s] latents summing to latent_total; decoder mirrors the input."""
    cfg = tiny_model_config(arch, preset, **LAYOUTS[preset])
    m = DistributedAutoencoder(cfg)
    f = get_preset(preset).n_bins
    t = cfg.frames_per_step
    x = torch.randn(3, 4, 2, f, t)
    lat = m.encode(x)
    assert len(lat) == ARCHITECTURES[arch].n_encoders == m.n_sources
    assert sum(z.shape[-1] for z in lat) == 32
    assert all(z.shape[:2] == (3, cfg.vectors_per_step) for z in lat)
    assert m.decode(lat).shape == x.shape
    with pytest.raises(ValueError, match="multiple"):
        m.encode(torch.randn(1, 4, 2, f, cfg.frames + 1))


def test_sources_see_only_their_microphones():
    """Source s's latent does not change when another source's microphones change."""
    m = DistributedAutoencoder(tiny_model_config("ndpca-e2d1")).eval()
    _randomise_residuals(m)
    x = torch.randn(2, 4, 2, 256, 8)
    y = x.clone()
    y[:, 2:] = torch.randn_like(y[:, 2:])
    torch.testing.assert_close(m.encode(x)[0], m.encode(y)[0])
    assert not torch.allclose(m.encode(x)[1], m.encode(y)[1])


def test_latent_vectors_see_only_their_frames():
    """A latent vector depends on its own G frames only (bounded context for streaming)."""
    m = DistributedAutoencoder(tiny_model_config("ndpca-e4d1")).eval()
    _randomise_residuals(m)
    x = torch.randn(1, 4, 2, 256, 8)
    y = x.clone()
    y[..., 4:] = torch.randn_like(y[..., 4:])
    for zx, zy in zip(m.encode(x), m.encode(y)):
        torch.testing.assert_close(zx[:, 0], zy[:, 0])
        assert not torch.allclose(zx[:, 1], zy[:, 1])


def _pca_projection(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and the projector onto the top-k principal subspace of ``rows [N, D]`` (SVD)."""
    rows = rows.double()
    mean = rows.mean(0)
    _, _, vh = torch.linalg.svd(rows - mean, full_matrices=False)
    v = vh[:k].T
    return mean, v @ v.T


def _structured_spectra(n: int, mics: int, bins: int, frames: int, seed: int = 0) -> torch.Tensor:
    """Random spectra with a decaying spectrum (distinct principal directions)."""
    g = torch.Generator().manual_seed(seed)
    rank = 48
    scales = torch.logspace(0, -2, rank)
    mix = torch.randn(rank, 2 * bins, generator=g) / (2 * bins) ** 0.5
    frames_ = (torch.randn(n * mics * frames, rank, generator=g) * scales) @ mix
    frames_ = frames_ + 0.001 * torch.randn(frames_.shape, generator=g) + 0.1
    # [n, M, T, 2F] -> [n, M, 2, F, T]
    return frames_.reshape(n, mics, frames, 2, bins).permute(0, 1, 3, 4, 2).contiguous()


def test_untrained_model_is_the_linear_transform_coder():
    """With its residuals at zero, a learnt model decodes exactly the two-stage PCA reconstruction."""
    cfg = tiny_model_config("ndpca-e4d1")
    assert cfg.learnt
    m = DistributedAutoencoder(cfg).eval()
    f, g, p = m.bins, cfg.frames, cfg.frame_dim
    x = _structured_spectra(64, 4, f, 8)
    m.init_linear(x)
    out = m.decode(m.encode(x))

    # reference, independent of the model's weights: PCA of all frames (top p), then per
    # source PCA (top d_s) of the G stacked projected frames of its microphones
    frames = x.permute(0, 1, 4, 2, 3).reshape(-1, 2 * f)
    mu_f, proj_f = _pca_projection(frames, p)
    ref = []
    for s, mics in enumerate(cfg.mic_groups):
        xs = x[:, mics].double()
        b, ms, _, _, t = xs.shape
        w = (xs.permute(0, 1, 4, 2, 3).reshape(b, ms, t, 2 * f) - mu_f) @ proj_f
        w = w.reshape(b, ms, t // g, g, 2 * f).permute(0, 2, 1, 3, 4).reshape(b * t // g, -1)
        mu_w, proj_w = _pca_projection(w, cfg.latent_sizes[s])
        w_hat = (w - mu_w) @ proj_w + mu_w
        fr = w_hat.reshape(b, t // g, ms, g, 2, f) + mu_f.reshape(2, f)
        ref.append(fr.permute(0, 2, 4, 5, 1, 3).reshape(b, ms, 2, f, t))
    ref = torch.cat(ref, dim=1).float()
    err = (out - x).pow(2).mean() / x.var()
    assert 0 < err < 0.9  # lossy, but better than the mean
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=1e-3)
    # the linear baseline of the same layout (no residual networks) decodes the same
    d = DistributedAutoencoder(tiny_model_config("dpca-e4d1")).eval()
    d.init_linear(x)
    assert not d.cfg.learnt
    torch.testing.assert_close(d.decode(d.encode(x)), out, atol=1e-5, rtol=1e-4)


def test_decoder_sees_the_allocation():
    """With decoder_rate_input the joint decoder is told each source's share of components:
    the same latents decode differently for another allocation, per batch row; without it
    the allocation changes nothing. Full width is the default."""
    cfg = tiny_model_config("ndpca-e4d1", decoder_rate_input=True)
    m = DistributedAutoencoder(cfg).eval()
    _randomise_residuals(m)
    torch.manual_seed(0)
    lat = [torch.randn(2, 2, d) for d in cfg.latent_sizes]
    full = m.decode(lat)
    torch.testing.assert_close(m.decode(lat, cfg.latent_sizes), full)
    part = m.decode(lat, [8, 0, 2, 8])
    assert (part - full).abs().max() > 1e-4
    rows = m.decode(lat, torch.tensor([cfg.latent_sizes, [8, 0, 2, 8]]))
    torch.testing.assert_close(rows[:1], full[:1])
    torch.testing.assert_close(rows[1:], part[1:])
    plain = DistributedAutoencoder(tiny_model_config("ndpca-e4d1")).eval()
    _randomise_residuals(plain)
    torch.testing.assert_close(plain.decode(lat, [8, 0, 2, 8]), plain.decode(lat))


def test_band_weighting_moves_components_and_error_below_the_split():
    """A high-band weight below 1 is the weighted PCA: the frame transform is orthonormal in the
    weighted domain (lossless at full width), its components favour the low band, and the
    low band's reconstruction error falls while the high band's rises."""
    from shared.models.frame import band_weights

    w = band_weights(256, 16000, 4000.0, 0.5)
    assert w[0] == 1 and w[-1] == pytest.approx(0.5) and bool((w[:-1] >= w[1:]).all())
    assert w[int(3500 / 8000 * 255)] == pytest.approx(1.0, abs=1e-3)
    torch.manual_seed(0)
    x = torch.randn(48, 4, 2, 256, 8) * torch.linspace(1.0, 0.6, 256)[:, None]  # a gently falling spectrum
    errs = {}
    for high in (1.0, 0.5):
        cfg = tiny_model_config("dpca-e4d1", frame_dim=512, frames=1, latent_total=4 * 512,
                                high_band_weight=high)
        full = DistributedAutoencoder(cfg).eval()
        full.init_linear(x)
        torch.testing.assert_close(full.decode(full.encode(x)), x, atol=1e-3, rtol=1e-3)
        m = DistributedAutoencoder(tiny_model_config("dpca-e4d1", high_band_weight=high)).eval()
        m.init_linear(x)
        e = (m.decode(m.encode(x)) - x).pow(2)
        errs[high] = (e[..., :128, :].mean().item(), e[..., 160:, :].mean().item())
    assert errs[0.5][0] < errs[1.0][0] and errs[0.5][1] > errs[1.0][1], errs
    with pytest.raises(ValueError):
        ModelConfig(high_band_weight=0.0)


@pytest.mark.parametrize("rep", ["complex", "magphase"])
def test_representation_round_trip(rep):
    """Both channel representations of the STFT invert back to the waveform."""
    p = get_preset("stream")
    x = torch.randn(2, 16000) * 0.1
    back = istft(from_channels(to_channels(stft(x, p), rep), rep), p, 16000)
    torch.testing.assert_close(back, x, atol=1e-3, rtol=1e-3)


def test_bad_config_is_rejected():
    """Indivisible groups, unknown architectures and impossible sizes are refused."""
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(arch="ndpca-e4d1", num_mics=6).validate_all()
    with pytest.raises(ValueError, match="unknown architecture"):
        ModelConfig(arch="e3d1").validate_all()
    with pytest.raises(ValueError, match="complex"):
        ModelConfig(representation="magphase").validate_all()
    with pytest.raises(ValueError, match="frame_dim"):
        ModelConfig(frame_dim=1000).validate_all()
    with pytest.raises(ValueError, match="exceeds its input"):
        tiny_model_config("ndpca-e4d1", frame_dim=2, frames=1, latent_total=32).validate_all()
    with pytest.raises(ValueError):
        ModelConfig(channels=16)  # the convolutional codec's fields are gone
