"""Write the shipped enhancer's reference outputs (``enhancer_reference.npz``).

Run from the repository root: ``PYTHONPATH=. python tests/data/make_enhancer_reference.py``.
The file pins what ``checkpoints/score/enhancer-3d1cc699.ckpt`` computes on a small fixed input:
restructuring ``shared.enhancer`` must leave these outputs unchanged
(``tests/shared/test_enhancer_checkpoint.py``). Re-run it only when the shipped enhancer
itself changes, together with the checkpoint name in that test.

Arrays (float32 unless noted):

* ``y`` ``[1, 2, 256, 4]``: degraded spectra (``complex`` channels), seeded Gaussian;
* ``stored`` ``[1, 2, 256, 4]``: ``enhance(y)`` with the sampler stored in the checkpoint;
* ``realtime`` ``[1, 2, 256, 4]``: ``enhance(y)`` with the ``realtime`` preset;
* ``pc`` ``[1, 2, 256, 4]``: ``enhance(y)`` with 3 reverse-diffusion steps and one corrector step
  each, no final denoising (every noise injection of the sampler is used);
* ``one_step`` ``[1, 2, 256, 4]``: ``one_step(y, t=0.5)``;
* ``sha256`` (unicode): the checkpoint's content hash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shared.enhancer import SamplerConfig, ScoreEnhancer, sampler_from_name

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "checkpoints" / "score" / "enhancer-3d1cc699.ckpt"
OUT = Path(__file__).with_name("enhancer_reference.npz")
PC = SamplerConfig(steps=3, corrector_steps=1, denoise_final=False, seed=7)


def reference_input() -> torch.Tensor:
    """``[1, 2, 256, 4]``: the fixed degraded spectra the references are computed on."""
    rng = np.random.default_rng(20240917)
    return torch.from_numpy((0.3 * rng.standard_normal((1, 2, 256, 4))).astype(np.float32))


def outputs(enhancer: ScoreEnhancer, y: torch.Tensor) -> dict[str, np.ndarray]:
    """The outputs stored in the reference file, computed with ``enhancer``."""
    with torch.no_grad():
        return {
            "stored": enhancer.enhance(y).numpy(),
            "realtime": enhancer.enhance(y, sampler_from_name("realtime")).numpy(),
            "pc": enhancer.enhance(y, PC).numpy(),
            "one_step": enhancer.one_step(y, t=0.5).numpy(),
        }


def main() -> None:
    torch.set_num_threads(1)
    enhancer = ScoreEnhancer.load(CHECKPOINT)
    y = reference_input()
    np.savez(OUT, y=y.numpy(), sha256=np.array(enhancer.sha256), **outputs(enhancer, y))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
