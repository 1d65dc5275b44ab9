"""The payload format is integers only: docs, test vectors and two implementations agree."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from docs_coder import DocsCoder, table_from_docs
from scipy.special import ndtr

from shared import entropy
from shared.coding import CoefficientCoder, component_major, indices_crc
from shared.protocol import PROTOCOL_VERSION

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "payload_vectors.json").read_text())
DEFAULT_STEP = math.sqrt(12 * 0.01)


def test_vectors_are_of_this_protocol_version():
    """The committed vectors belong to the protocol version the code speaks."""
    assert VECTORS["protocol_version"] == PROTOCOL_VERSION
    assert len(VECTORS["vectors"]) >= 10


@pytest.mark.parametrize("vec", VECTORS["vectors"], ids=lambda v: v["what"])
def test_project_coder_reproduces_vectors(vec):
    """Coefficients -> indices, payload bytes, bit count and CRC exactly as committed; the
    payload decodes back to the indices with its CRC checked."""
    coder = CoefficientCoder(vec["quant_step"])
    x = np.asarray(vec["coefficients"], dtype=np.float64).reshape(vec["n_v"], vec["k"])
    q = coder.quantise(x)
    assert (entropy.step_units(coder.step), coder.radius) == (vec["U"], vec["R"])
    assert q.tolist() == vec["indices"]
    payload, bits = coder.encode_indices(component_major(q))
    assert (payload.hex(), bits, indices_crc(q)) == (vec["payload"], vec["bits"], vec["crc"])
    assert coder.encode(x) == payload and coder.checksum(x) == vec["crc"]
    back = coder.decode_indices(bytes.fromhex(vec["payload"]), vec["k"], vec["n_v"], vec["crc"])
    assert back.tolist() == vec["indices"]


@pytest.mark.parametrize("vec", VECTORS["vectors"], ids=lambda v: v["what"])
def test_docs_implementation_reproduces_vectors(vec):
    """The implementation written from docs/protocol.md alone writes the same bytes."""
    coder = DocsCoder(vec["quant_step"], table_from_docs())
    payload, bits, crc = coder.encode(vec["coefficients"])
    assert (coder.U, coder.R, payload.hex(), bits, crc) == (
        vec["U"], vec["R"], vec["payload"], vec["bits"], vec["crc"])
    assert coder.unpack(payload, vec["k"] * vec["n_v"]) == coder.stream(vec["indices"])


def _table(half_cdf) -> list[int]:
    return [round(2**32 * half_cdf(j / 32)) for j in range(257)]


def test_table_in_docs_is_the_codes_table_and_any_erf_reproduces_it():
    """docs/protocol.md's table T is the code's, and computing it with math.erf or with
    scipy's ndtr (the two CDFs that built different codes before) gives the same integers."""
    committed = list(entropy.HALF_CDF_Q31)
    assert table_from_docs() == committed
    assert _table(lambda x: math.erf(x / math.sqrt(2)) / 2) == committed
    assert _table(lambda x: float(ndtr(x)) - 0.5) == committed
    assert committed[0] == 0 and committed[-1] == 2**31
    laplace = list(entropy.HALF_CDF_LAPLACE_Q31)
    assert table_from_docs("L") == laplace
    assert laplace == [round(2**31 * -math.expm1(-math.sqrt(2) * j / 32)) for j in range(257)]


def test_code_is_a_function_of_integers_only():
    """For 300 random steps, a client that builds its tables from the documented integer
    rule with a math.erf table gets the project's code, and the project decodes its payloads
    exactly (the float-built code of version 1 decoded most such payloads to wrong values)."""
    rng = random.Random(7)
    erf_table = _table(lambda x: math.erf(x / math.sqrt(2)) / 2)
    data = np.random.default_rng(7)
    steps = [DEFAULT_STEP, entropy.MIN_STEP, entropy.MAX_STEP] + [
        math.exp(rng.uniform(math.log(0.01), math.log(entropy.MAX_STEP))) for _ in range(297)
    ]
    for step in steps:
        ours = CoefficientCoder(step)
        theirs = DocsCoder(step, erf_table)
        assert theirs.lengths == ours.code.lengths.tolist(), step
        assert theirs.codewords == ours.code.codes.tolist(), step
        x = data.standard_normal((2, 32)) * rng.choice([0.5, 1.0, 3.0])
        payload, _, crc = theirs.encode(x.tolist())
        np.testing.assert_array_equal(ours.decode_indices(payload, 32, 2, crc), ours.quantise(x))


def test_code_depends_on_the_step_only_through_U():
    """Steps with the same U = floor(step * 2**24) share one code; the frequencies are
    symmetric, positive and sum to about 2**32."""
    a = DEFAULT_STEP
    b = math.nextafter(a, 0.0)
    assert entropy.step_units(a) == entropy.step_units(b)
    assert entropy.code_for_step(a).lengths.tolist() == entropy.code_for_step(b).lengths.tolist()
    f = entropy.frequencies(a)
    assert f.sum() == pytest.approx(2**32, rel=1e-6) and f.min() >= 1
    assert np.array_equal(f, f[::-1])  # symmetric about index 0


@pytest.mark.parametrize("step", [DEFAULT_STEP, 0.1, 1.0])
def test_integer_model_tracks_the_gaussian(step):
    """The integer model's entropy is within 0.1 % of the quantised unit Gaussian's, and the
    code spends less than 0.12 bit per coefficient more on unit-Gaussian data (Huffman's
    loss: 0.02 bit at the default step)."""
    r = entropy.radius(step)
    edges = (np.arange(-r, r + 2) - 0.5) * step
    p = np.diff(ndtr(edges))
    p[0] += ndtr(edges[0])
    p[-1] += 1 - ndtr(edges[-1])
    p = p[p > 0]
    exact = float(-(p * np.log2(p)).sum())
    coder = CoefficientCoder(step)
    assert coder.entropy_bits() == pytest.approx(exact, rel=1e-3)
    x = np.random.default_rng(3).standard_normal(50_000)
    _, bits = coder.encode_indices(coder.quantise(x))
    assert exact <= bits / x.size <= exact + 0.12
    if step == DEFAULT_STEP:
        assert bits / x.size <= exact + 0.025


@pytest.mark.parametrize("bad", [0.0, entropy.MIN_STEP / 2, entropy.MAX_STEP * 1.01, math.nan, math.inf])
def test_steps_outside_the_format_are_refused(bad):
    """A step outside [2**-10, 16] (or not finite) is refused with the allowed range named."""
    with pytest.raises(ValueError, match="quantiser step"):
        CoefficientCoder(bad)
