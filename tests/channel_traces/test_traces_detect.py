"""Tests of format detection by content where the extension is ambiguous."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from channel_traces.detect import first_data_line, sniff
from channel_traces.registry import detect_format
from shared.errors import TraceError

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
PICOSCENES_HEAD = struct.pack("<IIHB", 40, 0x20150315, 1, 2) + bytes(29)
INTEL_HEAD = b"\x00\xd6\xbb" + bytes(40)


@pytest.mark.parametrize(
    ("name", "content", "fmt"),
    [
        ("ucc.csv", b"Timestamp,Longitude,NetworkMode,SNR,DL_bitrate,UL_bitrate,State\n",
         "gnettrack"),
        ("ul.txt", b"td\t5G_TBS\t4G_TBS\t5G_MCS\n0\t1\t2\t3\n", "phy_log"),
        ("ul.csv", b"# uplink log\ntd,5G_TBS,4G_TBS\n", "phy_log"),
        ("runs.csv", b"protocol,carrier,run_num,seq_num,throughput_mbps\n", "5gophers"),
        ("trace.dat", b"0.0 1.5\n1.0 2.0\n", "cooked"),
        ("capture.dat", PCAP_HEADER, "nexmon"),
        ("capture.pcap", PICOSCENES_HEAD, "picoscenes"),
        ("rx.bin", PICOSCENES_HEAD, "picoscenes"),
        ("csi.pcap", INTEL_HEAD, "intel5300"),
        ("empty.pcap", b"", "nexmon"),
        ("empty.csi", b"", "picoscenes"),
    ],
)
def test_content_decides_before_the_extension(tmp_path: Path, name: str, content: bytes,
                                              fmt: str) -> None:
    """Magic numbers and header lines pick the reader; an extension only breaks ties."""
    path = tmp_path / name
    path.write_bytes(content)
    assert detect_format(path) == fmt


def test_unknown_binary_names_the_formats(tmp_path: Path) -> None:
    """Binary content no reader knows is a TraceError listing the formats."""
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(200, 256)) * 3)
    with pytest.raises(TraceError, match=r"blob\.bin:line 1: cannot tell.*first bytes \(binary\)"
                       r".*nexmon, picoscenes"):
        detect_format(path)


def test_text_cut_inside_a_character_is_still_text() -> None:
    """A UTF-8 character split at the end of the sniffed chunk does not make text binary."""
    head = "time_s,snr_db\n0,1\n# é".encode()[:-1]
    assert first_data_line(head) == "time_s,snr_db"
    assert sniff(head, ".csv") == ("snr_csv", "time_s,snr_db")
