import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from dynamo_media import (
    DecodeError,
    EncodedMedia,
    ImageLimits,
    InvalidOptions,
    LimitExceeded,
    MediaDecoder,
    MediaFetcher,
    decode_image,
    probe_image,
)
from dynamo_media.transforms import CheckImageLimits, DecodeImage
from tests.conftest import DEVICES
from tests.images import picture, pillow_bytes, png_bad_crc, png_bomb
from tests.media import ffmpeg
from tests.media_server import MediaServer
from tests.memory import peak_delta


def base() -> Image.Image:
    return Image.open(picture("base.png")).convert("RGB")


def hwc(out: torch.Tensor) -> np.ndarray:
    return out.permute(1, 2, 0).cpu().numpy()


def pillow_reference(data: bytes, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """What a Pillow user gets: orientation applied, transparency on ``background``, RGB."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode == "I;16":  # Pillow clips 16-bit gray in convert(); compare with the scaled value
        gray = np.round(np.asarray(img).astype(np.float64) * 255 / 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (*background, 255)), img)
    return np.asarray(img.convert("RGB"))


def semi_transparent() -> Image.Image:
    img = base().convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, img.width).astype(np.uint8), (img.height, 1))
    img.putalpha(Image.fromarray(alpha))
    return img


# Every format users send, made by FFmpeg or Pillow from the same picture.
LOSSLESS = {
    "png": lambda: picture("l.png").read_bytes(),
    "png-palette": lambda: pillow_bytes(base().convert("P"), "PNG"),
    "png-palette-trns": lambda: pillow_bytes(base().convert("P"), "PNG", transparency=0),
    "png-gray": lambda: pillow_bytes(base().convert("L"), "PNG"),
    "png-gray-alpha": lambda: pillow_bytes(base().convert("LA"), "PNG"),
    "png-rgba": lambda: pillow_bytes(semi_transparent(), "PNG"),
    "png-rgb16": lambda: picture("l16.png", "-pix_fmt", "rgb48be").read_bytes(),
    "webp-lossless": lambda: pillow_bytes(base(), "WEBP", lossless=True),
    "webp-rgba": lambda: pillow_bytes(semi_transparent(), "WEBP", lossless=True),
    "gif": lambda: picture("l.gif").read_bytes(),
    "bmp": lambda: picture("l.bmp").read_bytes(),
    "tiff": lambda: picture("l.tiff").read_bytes(),
}
LOSSY = {
    "jpeg": lambda: picture("y.jpg").read_bytes(),
    "jpeg-gray": lambda: pillow_bytes(base().convert("L"), "JPEG"),
    "jpeg-cmyk": lambda: pillow_bytes(base().convert("CMYK"), "JPEG", quality=95),
    "jpeg-progressive": lambda: pillow_bytes(base(), "JPEG", progressive=True),
    "webp": lambda: picture("y.webp").read_bytes(),
}


class TestDecodeImage:
    @pytest.mark.parametrize("name", sorted(LOSSLESS))
    def test_lossless_formats_match_pillow_exactly(self, name: str) -> None:
        data = LOSSLESS[name]()
        out = decode_image(data)
        assert out.tensor.dtype == torch.uint8
        assert out.tensor.shape == (3, 240, 320)
        np.testing.assert_array_equal(hwc(out.tensor), pillow_reference(data))

    @pytest.mark.parametrize("name", sorted(LOSSY))
    def test_lossy_formats_match_pillow(self, name: str) -> None:
        # Measured: max |diff| 0 and mean 0.0 on every input here (Pillow and torchcodec link
        # the same libjpeg-turbo and libwebp); the bound allows for a different IDCT build.
        data = LOSSY[name]()
        diff = np.abs(hwc(decode_image(data).tensor).astype(int) - pillow_reference(data))
        assert diff.max() <= 2 and diff.mean() < 0.1

    def test_gray16_is_scaled_not_clipped(self) -> None:
        data = picture("g16.png", "-pix_fmt", "gray16be").read_bytes()
        diff = np.abs(hwc(decode_image(data).tensor).astype(int) - pillow_reference(data))
        assert diff.max() <= 1

    @pytest.mark.parametrize("orientation", range(1, 9))
    @pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
    def test_exif_orientation(self, orientation: int, fmt: str) -> None:
        img = base().crop((0, 0, 320, 200))  # not square, so rotations show
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra = {"quality": 100} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
        data = pillow_bytes(img, fmt, exif=exif.tobytes(), **extra)
        out = decode_image(data)
        ref = pillow_reference(data)
        assert probe_image(data).orientation == orientation
        assert out.metadata["orientation"] == orientation
        assert hwc(out.tensor).shape == ref.shape
        assert np.abs(hwc(out.tensor).astype(int) - ref).max() <= 2

    def test_background_colour(self) -> None:
        data = pillow_bytes(semi_transparent(), "PNG")
        out = decode_image(data, background=(0, 64, 255))
        np.testing.assert_array_equal(hwc(out.tensor), pillow_reference(data, (0, 64, 255)))

    def test_rgba_mode_keeps_alpha(self) -> None:
        img = semi_transparent()
        out = decode_image(pillow_bytes(img, "PNG"), mode="RGBA")
        assert out.tensor.shape == (4, 240, 320)
        np.testing.assert_array_equal(hwc(out.tensor), np.asarray(img))

    def test_animated_gif_gives_first_frame(self) -> None:
        data = ffmpeg(
            "anim.gif", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=5:duration=1"
        ).read_bytes()
        out = decode_image(data)
        first = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert out.tensor.shape == (3, 120, 160)
        np.testing.assert_array_equal(hwc(out.tensor), first)

    def test_hwc_layout_and_metadata(self) -> None:
        data = LOSSY["jpeg"]()
        chw, hwc_out = decode_image(data), decode_image(data, layout="HWC")
        assert hwc_out.tensor.shape == (240, 320, 3)
        assert torch.equal(hwc_out.tensor, chw.tensor.permute(1, 2, 0))
        assert hwc_out.metadata == {
            "format": "jpeg",
            "width": 320,
            "height": 240,
            "mode": "RGB",
            "layout": "HWC",
            "original_size": [320, 240],
            "original_mode": "RGB",
            "orientation": 1,
        }

    def test_sources(self, tmp_path: Path, server: MediaServer, fetcher: MediaFetcher) -> None:
        data = LOSSY["jpeg"]()
        path = tmp_path / "a.jpg"
        path.write_bytes(data)
        want = decode_image(data).tensor
        enc = fetcher.fetch(server.url(server.add("a.jpg", data, "image/jpeg")))
        for source in (str(path), path, io.BytesIO(data), bytearray(data), enc):
            assert torch.equal(decode_image(source).tensor, want)
        assert decode_image(enc).content_hash is not None

    @pytest.mark.parametrize("device", DEVICES)
    def test_devices(self, device: str) -> None:
        data = LOSSY["jpeg"]()
        out = decode_image(data, device=device)
        assert out.tensor.device.type == device
        cpu = decode_image(data).tensor
        assert (out.tensor.cpu().int() - cpu.int()).abs().max() <= 3  # nvJPEG's IDCT differs
        png = decode_image(LOSSLESS["png"](), device=device)  # decoded on the CPU, then moved
        assert png.tensor.device.type == device

    def test_bad_arguments(self) -> None:
        with pytest.raises(InvalidOptions, match=r"Invalid ImageOptions.layout \('CWH'\)"):
            decode_image(b"", layout="CWH")  # type: ignore[arg-type]


class TestLimits:
    def test_width_height_and_alloc(self) -> None:
        data = LOSSY["jpeg"]()
        with pytest.raises(LimitExceeded, match=r"320x240, wider than limits.max_image_width"):
            decode_image(data, limits=ImageLimits(max_image_width=319))
        with pytest.raises(LimitExceeded, match=r"taller than limits.max_image_height \(200\)"):
            decode_image(data, limits=ImageLimits(max_image_height=200))
        with pytest.raises(LimitExceeded, match=r"320x240 RGB needs 225.0 KiB, over limits"):
            decode_image(data, limits=ImageLimits(max_alloc=320 * 240 * 3 - 1))
        assert decode_image(data, limits=ImageLimits(max_alloc=320 * 240 * 3)).tensor.numel()
        with pytest.raises(LimitExceeded, match="RGBA needs 300.0 KiB"):
            decode_image(data, mode="RGBA", limits=ImageLimits(max_alloc=320 * 240 * 3))

    def test_bomb_refused_fast(self) -> None:
        bomb = png_bomb()
        assert len(bomb) < 4096
        start = time.perf_counter()
        with pytest.raises(LimitExceeded, match="50000x50000, wider than"):
            decode_image(bomb)
        assert time.perf_counter() - start < 0.5  # generous; measured ~20 us

    def test_bomb_memory_stays_flat(self) -> None:
        result = peak_delta(
            setup="""
                from dynamo_media import decode_image
                from tests.images import png_bomb
                bomb = png_bomb()
                decode_image(png_bomb(64, 4))  # warm up the decoders on a whole 64x4 image
            """,
            body="decode_image(bomb)",
        )
        assert result["error"].startswith("LimitExceeded")
        assert result["peak_delta_mib"] < 5

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"", "empty image data"),
            (b"hello, this is text sent as image/png", "not an image Pillow recognises"),
            (LOSSY["jpeg"]()[:200], "JPEG"),
            (LOSSY["jpeg"]()[:3000], "corrupt or truncated jpeg"),
            (LOSSLESS["png"]()[:20], "truncated or corrupt PNG"),
            (LOSSLESS["png"]()[:2000], "corrupt or truncated png"),
            (png_bad_crc(), "corrupt or truncated png image: .*CRC error"),
            (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP header"),
        ],
    )
    def test_hostile_files(self, data: bytes, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            decode_image(data)

    def test_video_sent_as_image(self) -> None:
        clip = ffmpeg("tiny.mp4", "-f", "lavfi", "-i", "testsrc2=duration=0.2:size=64x64")
        with pytest.raises(DecodeError, match="looks like mp4, not an image"):
            decode_image(EncodedMedia.from_bytes(clip.read_bytes(), mime="image/png"))


class TestTransforms:
    def test_check_then_decode(self) -> None:
        enc = EncodedMedia.from_bytes(LOSSY["jpeg"](), mime="image/jpeg")
        limits = ImageLimits(max_image_width=320)
        checked = CheckImageLimits(limits)(enc)
        assert checked.probe.width == 320 and checked.media is enc
        out = DecodeImage(layout="HWC", limits=limits)(checked)
        assert out.tensor.shape == (240, 320, 3)
        with pytest.raises(LimitExceeded):
            CheckImageLimits(ImageLimits(max_image_width=100))(enc)
        with pytest.raises(InvalidOptions, match="limits=ImageLimits"):
            DecodeImage()(checked)  # checked under other limits than these

    def test_options_fail_at_construction(self) -> None:
        with pytest.raises(InvalidOptions, match=r"Invalid ImageOptions.layout \('CWH'\)"):
            DecodeImage(layout="CWH")  # type: ignore[arg-type]

    def test_pipeline_end_to_end(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        decoder = MediaDecoder()
        decoder.enable_image({"layout": "HWC", "limits": {"max_alloc": 1 << 20}})
        pipe = decoder.pipeline("image", fetcher=fetcher)
        assert repr(pipe) == (
            "Compose(\n"
            "    FetchURL(timeout_ms=5000, max_bytes='256.0 MiB', allow_private_ips=True)\n"
            " -> CheckImageLimits(max_image_width=16384, max_image_height=16384, "
            "max_alloc='1.0 MiB')\n"
            " -> DecodeImage(layout='HWC')\n"
            ")"
        )
        out = pipe(server.url(server.add("p.jpg", LOSSY["jpeg"](), "image/jpeg")))
        assert out.tensor.shape == (240, 320, 3)
        assert "data" not in repr(out) and "tensor(" not in repr(out)
