"""`ndpca demo --rooms 2 --fast`: two rooms on one cell, every cell step fits, per-room outputs and quality."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_two_rooms_on_one_cell(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "ndpca", "demo", "--out", str(out), "--seconds", "2", "--fast", "--rooms", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    cell = json.loads((out / "cell.json").read_text())
    assert cell["all_fit"] and cell["rule"] == "pooled" and cell["steps"]
    assert all(st["fits"] for st in cell["steps"])
    for i in range(2):
        room = out / f"room-{i}"
        assert (room / "decoded.wav").is_file() and (room / "allocation.png").is_file()
        stats = json.loads((room / "stats.json").read_text())
        assert stats["summary"]["state"] == "finished" and stats["summary"]["steps"] > 0
        assert stats["demo"]["quality"]["room_kbps"] > 0
        assert f"room-{i}: {stats['summary']['steps']} steps" in text
    # enhanced (the default when an enhancer is shipped) or decoded microphone 0
    assert len(re.findall(r"(enhanced|decoded) microphone 0 vs clean reference: PESQ-WB", text)) == 2
    assert text.count("room rate") == 2
    assert "steps fit C_t T across the cell (all_fit true)" in text
