"""Perceptual loss of the paper (section 4.3): EnCodec's multi-scale STFT discriminator.

Each scale sees the complex STFT of the waveform (Hann window ``n_fft``, hop ``n_fft // 4``,
``torch.stft(center=True, normalized=True)``) as two channels (real, imaginary) laid out
``[B, 2, T, F]`` (time, frequency), and maps it through weight-normalised 2-D convolutions:

* ``Conv2d(2 -> C, (3, 9))``, "same" padding;
* one ``Conv2d(C -> C, (3, 9), stride (1, 2), dilation (d, 1))`` per time dilation
  ``d`` in ``(1, 2, 4)``, padded so the time length is kept and frequency is halved;
* ``Conv2d(C -> C, (3, 3))``, "same" padding;
* output ``Conv2d(C -> 1, (3, 3))``, "same" padding, giving one logit per time-frequency cell.

LeakyReLU (slope 0.3) follows every convolution but the output one; the activations after
each LeakyReLU are the features used for feature matching.

Losses (``K`` scales, ``L`` feature layers per scale):

* discriminator hinge: ``1/K sum_k mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(x^)))``;
* generator hinge: ``1/K sum_k mean(relu(1 - D_k(x^)))``, the form of the EnCodec paper. Unlike
  the unbounded ``-mean D_k(x^)`` it stops pushing once the discriminator scores the output
  as confidently real (logit >= 1), so a weak discriminator cannot drive the generator into
  exaggerating whatever it happens to reward;
* feature matching: ``1/(KL) sum_{k,l} mean|f_kl(x) - f_kl(x^)| / (mean|f_kl(x)| + eps)``
  with the real features detached.

:class:`PerceptualLoss` owns the discriminator and its Adam optimiser and offers the two
halves of an adversarial training step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

EPS = 1e-8


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Architecture of the multi-scale STFT discriminator.

    Attributes:
        n_ffts: one sub-discriminator per STFT size; hop ``n_fft // 4``, window ``n_fft``.
        filters: channels of every hidden convolution.
        kernel: ``(time, frequency)`` kernel of the first and the strided convolutions.
        dilations: time dilations of the strided convolutions (one convolution each).
        negative_slope: LeakyReLU slope.
        normalized: whether the STFT is normalised (``torch.stft(normalized=True)``).
    """

    n_ffts: tuple[int, ...] = (1024, 2048, 512, 256, 128)
    filters: int = 32
    kernel: tuple[int, int] = (3, 9)
    dilations: tuple[int, ...] = (1, 2, 4)
    negative_slope: float = 0.3
    normalized: bool = True


def _same_padding(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """Padding that keeps the length of each axis at stride 1 (odd kernels)."""
    return tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation))


def _flatten_wave(wave: torch.Tensor) -> torch.Tensor:
    """``[..., N]`` -> ``[B, N]``: every leading dimension (batch, a singleton channel,
    microphones) becomes a batch entry."""
    if wave.dim() < 1:
        raise ValueError("waveform must have a time axis")
    return wave.reshape(-1, wave.shape[-1])


class STFTDiscriminator(nn.Module):
    """One scale of the discriminator (see the module docstring for the layers).

    ``forward(wave [B, N])`` returns ``(logits [B, 1, T', F'], features)`` where ``T' = N //
    hop + 1`` frames are kept, ``F' = F / 2^len(dilations)`` (rounded up per halving) of the
    ``F = n_fft // 2 + 1`` bins, and ``features`` lists the activation after every hidden
    convolution (``len(dilations) + 2`` tensors).
    """

    def __init__(
        self,
        n_fft: int,
        filters: int = 32,
        kernel: tuple[int, int] = (3, 9),
        dilations: Sequence[int] = (1, 2, 4),
        negative_slope: float = 0.3,
        normalized: bool = True,
    ):
        super().__init__()
        self.n_fft = int(n_fft)
        self.hop = self.n_fft // 4
        self.normalized = normalized
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)
        kernel = tuple(kernel)
        convs = [nn.Conv2d(2, filters, kernel, padding=_same_padding(kernel))]
        for d in dilations:
            convs.append(nn.Conv2d(filters, filters, kernel, stride=(1, 2), dilation=(d, 1),
                                   padding=_same_padding(kernel, (d, 1))))
        square = (kernel[0], kernel[0])
        convs.append(nn.Conv2d(filters, filters, square, padding=_same_padding(square)))
        self.convs = nn.ModuleList(weight_norm(c) for c in convs)
        self.conv_post = weight_norm(nn.Conv2d(filters, 1, square, padding=_same_padding(square)))
        self.act = nn.LeakyReLU(negative_slope)

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` waveform -> ``[B, 2, T, F]`` (real, imaginary) STFT."""
        spec = torch.stft(
            wave,
            self.n_fft,
            hop_length=self.hop,
            win_length=self.n_fft,
            window=self.window.to(wave.dtype),
            center=True,
            normalized=self.normalized,
            return_complex=True,
        )  # [B, F, T]
        return torch.view_as_real(spec).permute(0, 3, 2, 1)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.spectrogram(_flatten_wave(wave))
        features = []
        for conv in self.convs:
            z = self.act(conv(z))
            features.append(z)
        return self.conv_post(z), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """One :class:`STFTDiscriminator` per STFT size of the config.

    ``forward(wave)`` takes ``[B, N]`` or ``[B, 1, N]`` (any leading dimensions are flattened
    into the batch) and returns ``(logits, features)``: a list of ``[B, 1, T'_k, F'_k]`` logits
    and a list of feature lists, one entry per scale.
    """

    def __init__(self, cfg: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.cfg = cfg
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n, cfg.filters, cfg.kernel, cfg.dilations, cfg.negative_slope,
                              cfg.normalized)
            for n in cfg.n_ffts
        )

    def forward(self, wave: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        wave = _flatten_wave(wave)
        logits, features = [], []
        for disc in self.discriminators:
            lg, ft = disc(wave)
            logits.append(lg)
            features.append(ft)
        return logits, features


def discriminator_hinge_loss(
    real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]
) -> torch.Tensor:
    """``1/K sum_k mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(x^)))``."""
    if len(real_logits) != len(fake_logits) or not real_logits:
        raise ValueError("need the same, non-zero number of real and fake scales")
    terms = [torch.relu(1 - r).mean() + torch.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits)]
    return torch.stack(terms).mean()


def generator_hinge_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1/K sum_k mean(relu(1 - D_k(x^)))`` (EnCodec's generator hinge; see the module
    docstring for why it is preferred to ``-mean D_k(x^)``)."""
    if not fake_logits:
        raise ValueError("need at least one scale")
    return torch.stack([torch.relu(1 - f).mean() for f in fake_logits]).mean()


def feature_matching_loss(
    real_feats: Sequence[Sequence[torch.Tensor]], fake_feats: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Relative L1 feature matching, averaged over scales and layers.

    Each layer contributes ``mean|f_real - f_fake| / (mean|f_real| + eps)``, so layers of
    different magnitude weigh alike. The real features are detached.
    """
    terms = []
    if len(real_feats) != len(fake_feats):
        raise ValueError("real and fake features have different numbers of scales")
    for real_scale, fake_scale in zip(real_feats, fake_feats):
        if len(real_scale) != len(fake_scale):
            raise ValueError("real and fake features have different numbers of layers")
        for r, f in zip(real_scale, fake_scale):
            r = r.detach()
            terms.append((r - f).abs().mean() / (r.abs().mean() + EPS))
    if not terms:
        raise ValueError("no features to match")
    return torch.stack(terms).mean()


class PerceptualLoss:
    """Adversarial perceptual loss: a :class:`MultiScaleSTFTDiscriminator` and its optimiser.

    A training step calls :meth:`discriminator_step` (one Adam step of the discriminator on
    the hinge loss, the generated audio detached) and adds :meth:`generator_loss` (or the
    terms of :meth:`generator_terms`) to the generator's objective. Waveforms are ``[B, N]``
    or ``[B, 1, N]`` (leading dimensions are flattened into the batch) and are moved to
    ``device``.

    Args:
        cfg: discriminator architecture.
        lr, betas: Adam settings of the discriminator.
        device: where the discriminator lives.
    """

    def __init__(
        self,
        cfg: DiscriminatorConfig = DiscriminatorConfig(),
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        device: str | torch.device = "cpu",
    ):
        self.cfg = cfg
        self.device = torch.device(device)
        self.discriminator = MultiScaleSTFTDiscriminator(cfg).to(self.device)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=tuple(betas))

    def _prepare(self, wave: torch.Tensor) -> torch.Tensor:
        return _flatten_wave(wave).to(self.device)

    def discriminator_step(self, real_wave: torch.Tensor, fake_wave: torch.Tensor) -> dict[str, float]:
        """One optimiser step of the discriminator on the hinge loss.

        Real and (detached) generated audio go through the discriminator as one batch.

        Returns:
            ``{"disc_loss", "real_logit", "fake_logit"}``: the hinge loss before the step and
            the mean logits of real and generated audio (averaged over scales).
        """
        real = self._prepare(real_wave).detach()
        fake = self._prepare(fake_wave).detach()
        if real.shape != fake.shape:
            raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
        b = real.shape[0]
        self.discriminator.train()
        logits, _ = self.discriminator(torch.cat((real, fake.to(real.dtype)), dim=0))
        real_logits = [lg[:b] for lg in logits]
        fake_logits = [lg[b:] for lg in logits]
        loss = discriminator_hinge_loss(real_logits, fake_logits)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            real_mean = torch.stack([lg.mean() for lg in real_logits]).mean()
            fake_mean = torch.stack([lg.mean() for lg in fake_logits]).mean()
        return {"disc_loss": float(loss.detach()), "real_logit": float(real_mean),
                "fake_logit": float(fake_mean)}

    def generator_terms(self, real_wave: torch.Tensor, fake_wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generator-side terms ``{"adv": hinge, "feat": feature matching}``.

        Gradient flows into ``fake_wave`` only: the real audio is scored without a graph and
        the discriminator's parameters are frozen for the call (their ``.grad`` is left as it
        was; their ``requires_grad`` flags are restored afterwards).
        """
        real = self._prepare(real_wave)
        fake = self._prepare(fake_wave)
        if real.shape != fake.shape:
            raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
        params = list(self.discriminator.parameters())
        flags = [p.requires_grad for p in params]
        try:
            for p in params:
                p.requires_grad_(False)
            with torch.no_grad():
                _, real_feats = self.discriminator(real.detach())
            fake_logits, fake_feats = self.discriminator(fake)
            adv = generator_hinge_loss(fake_logits)
            feat = feature_matching_loss(real_feats, fake_feats)
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
        return {"adv": adv, "feat": feat}

    def generator_loss(
        self, real_wave: torch.Tensor, fake_wave: torch.Tensor, feat_weight: float = 1.0,
        adv_weight: float = 1.0,
    ) -> torch.Tensor:
        """``adv_weight * adv + feat_weight * feat`` of :meth:`generator_terms`."""
        terms = self.generator_terms(real_wave, fake_wave)
        return adv_weight * terms["adv"] + feat_weight * terms["feat"]

    def state_dict(self) -> dict:
        """Discriminator weights, optimiser state and the architecture config."""
        return {
            "config": asdict(self.cfg),
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the architecture must match this instance's."""
        saved = state.get("config")
        if saved is not None:
            saved = DiscriminatorConfig(**{k: tuple(v) if isinstance(v, list) else v
                                           for k, v in saved.items()})
            if saved != self.cfg:
                raise ValueError(f"discriminator config mismatch: saved {saved}, this {self.cfg}")
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
