"""Write the payload test vectors (docs/protocol.md, "Test vectors") with the project's coder.

Run from the repository root: ``PYTHONPATH=. python tests/data/make_payload_vectors.py``.
The vectors are part of the format: they change only together with the protocol version.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from shared import entropy
from shared.coding import CoefficientCoder, component_major, indices_crc
from shared.protocol import PROTOCOL_VERSION

OUT = Path(__file__).with_name("payload_vectors.json")
DEFAULT_STEP = math.sqrt(12 * 0.01)


def cases() -> list[tuple[str, float, np.ndarray]]:
    """(what it covers, step, ``[n_v, k]`` coefficients)."""
    rng = np.random.default_rng(20240611)
    return [
        ("default step, one vector", DEFAULT_STEP, rng.standard_normal((1, 12))),
        ("default step, two vectors", DEFAULT_STEP, rng.standard_normal((2, 7))),
        ("default step, four vectors", DEFAULT_STEP, rng.standard_normal((4, 3))),
        ("default step, float32 coefficients widened", DEFAULT_STEP,
         rng.standard_normal((1, 16)).astype(np.float32).astype(np.float64)),
        ("ties to even: quotients 0.5, 1.5, -0.5, -2.5, 2.5, 3.5, and zeros", 0.5,
         np.array([[0.25, 0.75, -0.25, -1.25, 1.25, 1.75, 0.0, -0.0]])),
        ("clipping to +-R and the rarest symbols", DEFAULT_STEP,
         np.array([[100.0, -100.0, 6.2, -6.3, 5.9, -5.5, 4.4, 0.0]])),
        ("no components (k = 0)", DEFAULT_STEP, np.zeros((2, 0))),
        ("smallest step", entropy.MIN_STEP, rng.standard_normal((1, 6))),
        ("largest step: R = 1", entropy.MAX_STEP, np.array([[9.0, -30.0, 7.99, 8.0], [-8.0, 0.1, 24.0, -7.0]])),
        ("step 0.3, wide spread", 0.3, 2.5 * rng.standard_normal((1, 24))),
        ("step 1, one vector", 1.0, rng.standard_normal((1, 20))),
    ]


def vector(what: str, step: float, coeffs: np.ndarray) -> dict:
    coder = CoefficientCoder(step)
    q = coder.quantise(coeffs)
    payload, bits = coder.encode_indices(component_major(q))
    n_v, k = coeffs.shape
    return {
        "what": what, "quant_step": step, "n_v": n_v, "k": k,
        "coefficients": coeffs.tolist(),
        "U": entropy.step_units(step), "R": coder.radius,
        "indices": q.tolist(), "bits": bits, "payload": payload.hex(), "crc": indices_crc(q),
    }


def main() -> None:
    data = {"protocol_version": PROTOCOL_VERSION,
            "vectors": [vector(*case) for case in cases()]}
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {len(data['vectors'])} vectors to {OUT}")


if __name__ == "__main__":
    main()
