from pathlib import Path

import pytest
from PIL import Image

from dynamo_media.cli import main
from tests.media import numbered_video
from tests.test_audio import FORMATS, tone
from tests.test_image import LOSSY


def test_decode_video_draws_a_contact_sheet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sheet = tmp_path / "sheet.png"
    assert (
        main(["decode", str(numbered_video("h264.mp4")), "--num-frames", "6", "--out", str(sheet)])
        == 0
    )
    out = capsys.readouterr().out
    assert "frames_indices           [0, 10, 20, 29, 39, 49]" in out
    assert "shape                    (6, 3, 240, 320) torch.uint8" in out
    with Image.open(sheet) as img:  # 4 columns of 240 px, 2 rows of thumbnails with labels
        assert img.size == (4 * 240, 2 * (180 + 16))


def test_decode_audio_draws_a_waveform(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tone.mp3"
    path.write_bytes(tone(*FORMATS["mp3"]))
    wave = tmp_path / "wave.png"
    assert main(["decode", str(path), "--sample-rate", "16000", "--out", str(wave)]) == 0
    assert "sample_rate              16000" in capsys.readouterr().out
    with Image.open(wave) as img:
        assert img.size == (960, 2 * 240)  # stereo: one band per channel


def test_decode_image_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "a.jpg", tmp_path / "b.jpg"
    good.write_bytes(LOSSY["jpeg"]())
    bad.write_bytes(LOSSY["jpeg"]()[:300])
    assert main(["decode", str(good)]) == 0
    assert "original_size            [320, 240]" in capsys.readouterr().out
    assert main(["decode", str(bad)]) == 1
    assert "error (400 DecodeError)" in capsys.readouterr().err


def test_decode_audio_only_mp4_falls_back_to_audio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tone.m4a"  # sniffed as mp4: the video decoder answers NoMediaStream
    path.write_bytes(tone(*FORMATS["aac-m4a"]))
    assert main(["decode", str(path)]) == 0
    out = capsys.readouterr().out
    assert "modality                 audio" in out
    assert "sample_rate              44100" in out


def test_decode_broken_video_is_not_tried_as_audio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(numbered_video("h264.mp4").read_bytes()[:2000])
    assert main(["decode", str(path)]) == 1
    assert "error (400 DecodeError)" in capsys.readouterr().err


def test_serve_refuses_a_negative_drain(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--drain-seconds", "-1"])
    assert "--drain-seconds must be >= 0, got -1" in capsys.readouterr().err
