"""Score-based speech enhancement (SGMSE) in the compressed complex STFT domain.

The enhancer maps a degraded spectrogram ``y`` ``[B, 2, F, T]`` (channels of
:func:`shared.stft.to_channels`, normally ``complex``: ``beta |X|^alpha e^{i angle X}``) to a
clean estimate ``x`` of the same shape (DESIGN.md section 3, "Enhancer"; docs/enhancer.md).
One concept per module:

* :mod:`~shared.enhancer.sde`: :class:`SDEConfig` and :class:`OUVESDE`, the
  Ornstein-Uhlenbeck variance-exploding SDE ``dx = theta (y - x) dt + g(t) dw``;
* :mod:`~shared.enhancer.score_net`: :class:`ScoreNetConfig`, the presets
  :data:`SCORE_NET_PRESETS` and :class:`ScoreNet`, a small NCSN++-style U-Net estimating the
  scaled score from ``(x, y, t)``;
* :mod:`~shared.enhancer.samplers`: :class:`SamplerConfig`, the presets
  :data:`SAMPLER_PRESETS` (``quality``, ``fast``, ``realtime``, ``predictive``), :func:`sampler_from_name`
  and the predictor-corrector loop :func:`reverse_sample`;
* :mod:`~shared.enhancer.enhancer`: :class:`ScoreEnhancer`, the model the receiver and the
  training code use (score, denoising score matching, sampling, one-step estimate) and its
  checkpoint files of kind ``enhancer``.

Every public name is re-exported here: ``from shared.enhancer import ScoreEnhancer``.
"""

from shared.enhancer.enhancer import CHECKPOINT_KIND, ScoreEnhancer
from shared.enhancer.samplers import (
    PREDICTORS,
    SAMPLER_MODES,
    SAMPLER_PRESETS,
    SamplerConfig,
    ScoreFn,
    reverse_sample,
    sampler_from_name,
)
from shared.enhancer.score_net import (
    SCORE_NET_PRESETS,
    AttentionBlock,
    GaussianFourierEmbedding,
    ResBlock,
    ScoreNet,
    ScoreNetConfig,
)
from shared.enhancer.sde import OUVESDE, SDEConfig

__all__ = [
    "CHECKPOINT_KIND",
    "OUVESDE",
    "PREDICTORS",
    "SAMPLER_MODES",
    "SAMPLER_PRESETS",
    "SCORE_NET_PRESETS",
    "AttentionBlock",
    "GaussianFourierEmbedding",
    "ResBlock",
    "SDEConfig",
    "SamplerConfig",
    "ScoreEnhancer",
    "ScoreFn",
    "ScoreNet",
    "ScoreNetConfig",
    "reverse_sample",
    "sampler_from_name",
]
