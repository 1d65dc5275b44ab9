"""The benchmark's measurements and report on a tiny codec (the full run is `ndpca bench`)."""

import torch
from conftest import tiny_codec
from streaming_harness import one_torch_thread  # noqa: F401

from ndpca.bench import _batch_stats, decode_rtf, encoder_rtf, markdown


def test_rtf_measurements_and_markdown_table():
    """Encoder and decoder RTFs are positive per edge and per batch; the table has every target."""
    codec = tiny_codec()
    enc = encoder_rtf(codec, torch.randn(4, 6 * codec.chunk_samples) * 0.1)
    assert set(enc) == {"0", "1", "2", "3"} and all(v["mean"] > 0 for v in enc.values())
    dec = decode_rtf(codec, batches=(1, 4), steps=3)
    assert set(dec) == {"1", "4"} and all(v["p95"] >= v["p50"] > 0 for v in dec.values())
    result = {
        "machine": {"cpu": "x", "cores": 2, "torch": torch.__version__, "cuda": False,
                    "load_average_1min_at_start": 0.5},
        "model": {"arch": "ndpca-e4d1", "sha256": "ab" * 32, "random": True, "chunk_seconds": 0.064},
        "encoder_rtf": enc, "decode_rtf": dec,
        "loopback": {"steps": 3, "e2e_ms": {"p50": 70.0, "p95": 80.0}, "late_chunks": 0,
                     "missing_chunks": 0, "steps_payload_within_budget": 3,
                     "payload_over_budget": {"mean": 0.9, "max": 1.0},
                     "frames_over_budget": {"mean": 2.0, "max": 3.0}},
        "sessions": {"max_sessions_held": 1, "levels": [
            {"sessions": 1, "lost_chunks": 0, "chunks": 12, "e2e_p95_ms_worst": 80.0,
             "decode_p95_ms_worst": 3.0, "mean_decode_batch_so_far": 1.0, "held": True}]},
    }
    table = markdown(result)
    for target in ("<= 0.05", "<= 0.1", "p95 <=", ">= 8", "floor(C_t T)"):
        assert target in table
    metrics = "ndpca_decode_batch_size_sum 12.0\nndpca_decode_batch_size_count 8.0\n"
    assert _batch_stats(metrics) == (12.0, 8.0)
