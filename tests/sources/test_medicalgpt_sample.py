"""The real MedicalGPT pretraining sample: one document per non-blank line."""

from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared/data/medicalgpt"


def test_fever_txt_has_one_document_per_non_blank_line(read):
    path = SAMPLE / "pretrain" / "fever.txt"
    if not path.is_file():
        pytest.skip(f"MedicalGPT sample not found at {SAMPLE}")
    raw_lines = path.read_bytes().decode("utf-8").split("\n")
    if raw_lines[-1] == "":
        raw_lines.pop()
    non_blank = [line for line in raw_lines if line.strip()]
    result = read(path)
    assert len(result.texts) == len(non_blank)
    assert [text.rstrip("\n") for text in result.texts] == [line.rstrip("\r") for line in non_blank]
    assert result.report.skipped["empty_document"] == len(raw_lines) - len(non_blank)
    assert result.report.files[str(path)]["bytes"] == path.stat().st_size


def test_crlf_sample_reads_without_carriage_returns(read):
    path = SAMPLE / "pretrain" / "tianlongbabu.txt"
    if not path.is_file():
        pytest.skip(f"MedicalGPT sample not found at {SAMPLE}")
    result = read(path)
    assert result.texts and not any("\r" in text for text in result.texts)
