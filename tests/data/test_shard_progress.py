"""``advlora data shard --progress``: the images written as a bar on a terminal, a periodic log line with the ETA
otherwise, nothing with ``off`` (``advlora.progress.BatchProgress``, stage 0, so that data/ can report)."""
from __future__ import annotations

import advlora.progress
from advlora.cli import main


def _shard(ann, out, progress: str) -> int:
    return main(["data", "shard", str(ann), "--split", "test", "--out", str(out), "--per-shard", "4",
                 "--progress", progress])


def test_shard_progress_log_lines_on_stderr(image_text_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(advlora.progress, "LOG_INTERVAL", 0.0)       # a line after every image
    assert _shard(image_text_folder, tmp_path / "log", "log") == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0].startswith("writing 2 shards: image 1/6, ")
    assert "ETA" in lines[0] and lines[-1].startswith("writing 2 shards: image 6/6, ")
    assert len(lines) == 6                                           # six images, the last line once
    assert "6 images" in captured.out and "writing" not in captured.out


def test_shard_progress_off_prints_nothing(image_text_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(advlora.progress, "LOG_INTERVAL", 0.0)
    assert _shard(image_text_folder, tmp_path / "off", "off") == 0
    assert capsys.readouterr().err == ""
