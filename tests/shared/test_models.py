"""Model shapes for both STFT presets and both representations."""

import pytest
import torch

from shared.models.architectures import ARCHITECTURES, DistributedAutoencoder, ModelConfig
from shared.stft import from_channels, get_preset, istft, stft, to_channels


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("preset", ["stream", "paper"])
def test_shapes(arch, preset):
    """Encoders give [B, d_s] latents summing to latent_total; decoder mirrors the input."""
    cfg = ModelConfig(arch=arch, stft=preset, channels=16, frames=8, n_down=1, latent_total=32)
    m = DistributedAutoencoder(cfg)
    f = get_preset(preset).n_bins
    x = torch.randn(3, 4, 2, f, 8)
    lat = m.encode(x)
    assert len(lat) == ARCHITECTURES[arch].n_encoders
    assert sum(z.shape[1] for z in lat) == 32 and all(z.shape[0] == 3 for z in lat)
    assert m.decode(lat).shape == x.shape


def test_sources_see_only_their_microphones():
    """Source s's latent does not change when another source's microphones change."""
    cfg = ModelConfig(arch="ndpca-e2d1", channels=16, frames=8, n_down=1, latent_total=32)
    m = DistributedAutoencoder(cfg).eval()
    x = torch.randn(2, 4, 2, 256, 8)
    y = x.clone()
    y[:, 2:] = torch.randn_like(y[:, 2:])
    torch.testing.assert_close(m.encode(x)[0], m.encode(y)[0])
    assert not torch.allclose(m.encode(x)[1], m.encode(y)[1])


@pytest.mark.parametrize("rep", ["complex", "magphase"])
def test_representation_round_trip(rep):
    p = get_preset("stream")
    x = torch.randn(2, 16000) * 0.1
    back = istft(from_channels(to_channels(stft(x, p), rep), rep), p, 16000)
    torch.testing.assert_close(back, x, atol=1e-3, rtol=1e-3)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(arch="ndpca-e4d1", num_mics=6).validate_all()
    with pytest.raises(ValueError, match="unknown architecture"):
        ModelConfig(arch="e3d1").validate_all()
