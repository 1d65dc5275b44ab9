"""Trace format detection from a file's content: magic numbers, then the first data line.

Extensions such as ``.csv``, ``.txt``, ``.dat`` and ``.pcap`` say little (a ``.csv`` may be
an SNR trace, a 5Gophers, G-NetTrack, ESP32 or PHY log; a ``.dat`` an Intel 5300 log or a
text trace), so :func:`sniff` looks inside first and uses the extension only as a last hint.
"""

from __future__ import annotations

from channel_traces._parse import guess_delimiter
from channel_traces.fivegophers import is_5gophers_header
from channel_traces.gnettrack import is_gnettrack_header
from channel_traces.native import CAPACITY_HEADER, SNR_HEADER
from channel_traces.nexmon import is_pcap
from channel_traces.phy_log import is_phy_log_header
from channel_traces.picoscenes import is_picoscenes

#: Bytes read to detect a format.
SNIFF_BYTES = 8192
#: Extensions used only when the content decides nothing (for example an empty ``.dat``).
EXTENSION_HINTS = {".dat": "intel5300", ".pcap": "nexmon", ".csi": "picoscenes"}
#: Record codes of the Intel 5300 CSI Tool's log_to_file (0xbb: beamforming report).
INTEL_CODES = (0xBB, 0xC1)


def is_intel5300(head: bytes) -> bool:
    """Whether bytes start like an Intel 5300 CSI Tool record (big-endian length, code)."""
    return len(head) >= 3 and int.from_bytes(head[:2], "big") > 0 and head[2] in INTEL_CODES


def first_data_line(head: bytes) -> str | None:
    """The first non-blank, non-``#`` line of text (``""`` if none), or None for binary
    (not UTF-8, or holding NUL bytes, which no text log has)."""
    head = head.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (spreadsheet exports)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not just a character cut at the end of the chunk
            return None
        text = head[:err.start].decode("utf-8")
    if "\x00" in text:
        return None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    return ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def sniff_text(line: str) -> str | None:
    """Format of a text log from its first data line (a header or a first row)."""
    delimiter = guess_delimiter(line)
    cells = line.split(delimiter) if delimiter else line.split()
    header = tuple(cell.strip().strip('"').lower() for cell in cells)
    tokens = line.split()
    if header == SNR_HEADER:
        return "snr_csv"
    if header == CAPACITY_HEADER:
        return "capacity_csv"
    if "csi_data" in header and "rssi" in header:
        return "esp32"
    if is_5gophers_header(header):
        return "5gophers"
    if is_gnettrack_header(header):
        return "gnettrack"
    if is_phy_log_header(header):
        return "phy_log"
    if len(tokens) == 1 and tokens[0].isdigit():
        return "mahimahi"
    if len(tokens) == 2 and all(_is_number(t) for t in tokens):
        return "cooked"
    return None


def sniff(head: bytes, suffix: str) -> tuple[str | None, str]:
    """Guess a format from the first bytes of a file and its extension.

    Returns:
        the format name (None if nothing matched) and the first data line ('' for binary),
        for the error message.
    """
    if head[:4] == b"PK\x03\x04":
        return "csi_npz", ""
    if is_pcap(head):
        return "nexmon", ""
    if is_picoscenes(head):
        return "picoscenes", ""
    line = first_data_line(head)
    if line is None:
        return ("intel5300" if is_intel5300(head) else EXTENSION_HINTS.get(suffix)), ""
    return sniff_text(line) or (EXTENSION_HINTS.get(suffix) if not line else None), line
