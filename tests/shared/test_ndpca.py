"""NDPCA bases: exact reconstruction, mean fallback, allocation, training bottlenecks."""

import pytest
import torch

from shared import steps
from shared.ndpca import (
    allocate,
    batch_pca_bottleneck,
    batch_truncation_bottleneck,
    fit_basis,
    random_bottleneck_size,
)


def _latents(n=200, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.1, d)
    return torch.randn(n, d, generator=g) * scales + 2.0


def test_all_components_reconstruct_exactly():
    """Keeping every component gives back the latent (float error only)."""
    z = _latents()
    b = fit_basis(z)
    c = b.project(z, b.dim)
    torch.testing.assert_close(b.reconstruct(c), z, atol=1e-4, rtol=1e-4)


def test_zero_components_give_the_mean():
    """A source with no component is reconstructed as its training mean."""
    z = _latents()
    b = fit_basis(z)
    out = b.reconstruct(torch.zeros(5, 0), 0)
    torch.testing.assert_close(out, b.mean.expand(5, -1))


def test_project_and_reconstruct_keep_leading_dimensions():
    """Latents ``[B, n, d]`` (a step of vectors) project to ``[B, n, k]`` and back, vector by vector."""
    z = _latents()
    b = fit_basis(z)
    seq = z[:120].reshape(10, 12, -1)
    c = b.project(seq, 5)
    assert c.shape == (10, 12, 5)
    torch.testing.assert_close(c.reshape(120, 5), b.project(z[:120], 5))
    torch.testing.assert_close(b.reconstruct(c).reshape(120, -1), b.reconstruct(b.project(z[:120], 5)))
    assert b.reconstruct(seq[..., :0], 0).shape == seq.shape


def test_pca_basis_matches_svd():
    """The Gram-matrix eigenbasis gives the SVD's singular values and an orthonormal basis."""
    z = _latents()
    b = fit_basis(z)
    sv = torch.linalg.svdvals((z - z.mean(0)).double()).float()
    torch.testing.assert_close(b.singular_values, sv, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(b.basis.T @ b.basis, torch.eye(b.dim), atol=1e-5, rtol=0)


def test_coefficients_are_unit_variance_and_sorted():
    """Normalised coefficients have unit variance; singular values are in descending order."""
    z = _latents()
    b = fit_basis(z)
    c = b.project(z, b.dim)
    torch.testing.assert_close(c.std(0), torch.ones(b.dim), atol=1e-3, rtol=1e-3)
    assert torch.all(b.singular_values[:-1] >= b.singular_values[1:])


def test_pca_error_decreases_with_k():
    """Reconstruction error never grows with more components."""
    z = _latents()
    b = fit_basis(z)
    errs = [((b.reconstruct(b.project(z, k), k) - z) ** 2).mean().item() for k in range(b.dim + 1)]
    assert all(e1 >= e2 - 1e-6 for e1, e2 in zip(errs, errs[1:]))


def test_identity_basis_keeps_dimension_order():
    """The identity projection keeps the raw dimensions in order."""
    z = _latents()
    b = fit_basis(z, "identity")
    c = b.project(z, 3)
    torch.testing.assert_close(c * b.std[:3] + b.mean[:3], z[:, :3], atol=1e-4, rtol=1e-4)


def test_allocation_rules():
    """NDPCA favours the loudest source; uniform splits floor(L / S) each."""
    bases = [fit_basis(_latents(d=8, seed=s) * (s + 1)) for s in range(3)]
    k = allocate(bases, 10, "ndpca")
    assert sum(k) == 10 and k[2] >= k[0]  # the loudest source wins components
    assert allocate(bases, 10, "uniform") == [3, 3, 3]


def test_batch_bottlenecks_keep_gradients_and_rank():
    """Training bottlenecks keep the pooled rank and pass gradients."""
    z1 = torch.randn(32, 8, requires_grad=True)
    z2 = torch.randn(32, 8, requires_grad=True)
    out = batch_pca_bottleneck([z1, z2], 5)
    ranks = [torch.linalg.matrix_rank(o - o.mean(0)).item() for o in out]
    assert sum(ranks) == 5
    sum(o.sum() for o in out).backward()
    assert z1.grad is not None and z2.grad is not None
    t = batch_truncation_bottleneck([z1.detach(), z2.detach()], 6)
    torch.testing.assert_close(t[0][:, :3], z1.detach()[:, :3])
    assert torch.allclose(t[1][:, 3:], z2.detach()[:, 3:].mean(0).expand(32, -1))


def test_random_bottleneck_range():
    """Training bottleneck sizes are drawn from U[8, D/2]."""
    g = torch.Generator().manual_seed(0)
    ks = {random_bottleneck_size(256, g) for _ in range(500)}
    assert min(ks) >= 8 and max(ks) <= 128 and len(ks) > 50


def test_task_weights_send_a_tight_budget_to_the_weighted_source():
    """Weighted NDPCA pools w_s times each source's singular values: with the other sources
    weighted down, a small budget all goes to source 0; ``ndpca-equal`` ignores the weights;
    a large budget still reaches every source; weights of the wrong length are refused."""
    bases = [fit_basis(_latents(d=8, seed=s)) for s in range(3)]
    w = [1.0, 0.05, 0.05]
    assert allocate(bases, 6, "ndpca", w) == [6, 0, 0]
    assert allocate(bases, 6, "ndpca-equal", w) == allocate(bases, 6, "ndpca")
    assert sum(allocate(bases, 6, "ndpca-equal", w)[1:]) > 0
    big = allocate(bases, 20, "ndpca", w)
    assert big[0] == 8 and sum(big) == 20 and min(big) > 0
    try:
        allocate(bases, 6, "ndpca", [1.0, 1.0])
    except ValueError as exc:
        assert "3 sources" in str(exc)
    else:
        raise AssertionError("wrong number of weights accepted")


def test_training_bottleneck_allocates_like_the_receiver_with_weights():
    """The batch PCA bottleneck uses the same task weights: source 0 keeps everything of a
    tight budget, the others are replaced by their batch mean."""
    z = [_latents(n=64, d=8, seed=s) for s in range(3)]
    out = batch_pca_bottleneck(z, 5, weights=[1.0, 0.05, 0.05])
    ranks = [torch.linalg.matrix_rank(o - o.mean(0), atol=1e-4).item() for o in out]
    assert ranks == [5, 0, 0]


def test_quantisation_noise_has_the_quantisers_error_variance():
    """Training noise: uniform error of variance Delta^2 / 12 times each coefficient's batch
    standard deviation, on kept coefficients only, in both bottlenecks."""
    torch.manual_seed(0)
    step = (12 * 0.01) ** 0.5  # D = 0.01
    z = torch.randn(20000, 4) * torch.tensor([4.0, 2.0, 1.0, 0.5])
    full = batch_pca_bottleneck([z], 4, quant_step=step)[0]
    err = (full - z).var(0)
    torch.testing.assert_close(err, 0.01 * z.var(0), rtol=0.08, atol=0)
    naive = batch_truncation_bottleneck([z], 2, quant_step=step)[0]
    torch.testing.assert_close((naive - z)[:, :2].var(0), 0.01 * z[:, :2].var(0), rtol=0.08, atol=0)
    assert torch.allclose(naive[:, 2:], z[:, 2:].mean(0).expand(len(z), -1))


def test_water_training_rounds_like_the_wire_with_a_straight_through_gradient():
    """profile="water": each kept coefficient lands on a multiple of its water step (times its
    batch standard deviation), the step coarsest for the last component kept, and the
    gradient of the decoder's input reaches the encoder's latents unchanged."""
    torch.manual_seed(0)
    step = (12 * 0.01) ** 0.5
    z = (torch.randn(4096, 6) * torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.25])).requires_grad_(True)
    out = batch_pca_bottleneck([z], 4, quant_step=step, profile="water")[0]
    zc = (z - z.mean(0)).detach().double()
    evals, evecs = torch.linalg.eigh(zc.T @ zc)
    v = evecs.flip(1)[:, :4]
    sd = evals.flip(0)[:4].clamp_min(0).sqrt() / (len(z) - 1) ** 0.5
    delta = torch.from_numpy(steps.water_grid(sd.numpy(), 4, step) / steps.GRID)
    assert delta[-1] == pytest.approx(steps.WATER_LEVEL, abs=1 / steps.GRID)
    assert torch.all(delta[:-1] < delta[-1])
    c = (out.detach().double() - z.detach().double().mean(0)) @ v  # the kept coefficients
    units = c / (sd * delta)
    assert float((units - units.round()).abs().max()) < 1e-3
    w = torch.randn_like(z)
    (out * w).sum().backward()
    z_plain = z.detach().clone().requires_grad_(True)
    (batch_pca_bottleneck([z_plain], 4)[0] * w).sum().backward()
    torch.testing.assert_close(z.grad, z_plain.grad)


def test_training_bottleneck_refuses_an_unknown_profile():
    with pytest.raises(ValueError, match="unknown quantiser profile"):
        batch_pca_bottleneck([_latents(n=32, d=4)], 2, quant_step=0.3, profile="exact")
