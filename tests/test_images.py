"""Image loading: real files of every awkward kind become RGB images or an ImageError that says what is wrong."""

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import pytest
from PIL import Image, ImageFile

from mbm.data.images import (
    IMAGE_SUFFIXES,
    ImageError,
    caption_from_filename,
    load_image,
    read_embedded_caption,
    read_sidecar_caption,
    save_thumbnail,
    thumbnail,
)

RED, GREEN, BLUE, WHITE = (220, 30, 30), (30, 200, 30), (30, 30, 220), (255, 255, 255)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@cache
def _blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of any size, streamed row by row so a 30000 x 30000 bomb costs ~100 KB and well under 1 s."""
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _close(pixel, colour, tol: int = 40) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, colour))


BAD_FILES = [  # (file name, its bytes, words the message must contain)
    ("empty.jpg", lambda: b"", "the file is empty (0 bytes)"),
    ("cut.jpg", lambda: _encoded(_noise(256, 256), "JPEG")[:20000], "truncated or corrupt"),
    ("cut.png", lambda: _encoded(_noise(256, 256), "PNG")[:50000], "truncated or corrupt"),
    ("cut.gif", lambda: _encoded(_noise(256, 256).convert("P"), "GIF")[:20000], "truncated or corrupt"),
    ("headless.jpg", lambda: _encoded(_noise(64, 64), "JPEG")[:300], "truncated or corrupt"),
    ("notes.jpg", lambda: b"shopping list: eggs, milk\n" * 20, "not an image Pillow can read"),
    ("drawing.svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>', "SVG"),
    ("paper.pdf", lambda: b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "PDF"),
    ("phone.heic", lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "HEIC"),
    ("garbage.png", lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "image"),
    ("bomb.png", lambda: _blank_png(30000, 30000), "900,000,000 pixels is over the 89,478,485-pixel limit"),
    ("big.png", lambda: _blank_png(10000, 10000), "10000 x 10000 pixels is over the 89,478,485-pixel limit"),
]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
@pytest.mark.parametrize("file_name, make, problem", BAD_FILES, ids=[row[0] for row in BAD_FILES])
def test_bad_files_raise_image_error_naming_file_and_problem(tmp_path, file_name, make, problem, as_bytes):
    path = tmp_path / file_name
    path.write_bytes(make())
    with pytest.raises(ImageError) as info:
        load_image(path.read_bytes() if as_bytes else path, name=file_name if as_bytes else None)
    message = str(info.value)
    assert message.startswith(f"{file_name}: ") and problem in message
    assert str(tmp_path) not in message


def test_missing_file_and_folder_and_wrong_type(tmp_path):
    with pytest.raises(ImageError, match=r"^nope\.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="int"):
        load_image(42)
    with pytest.raises(ValueError, match="draft"):
        load_image(Image.new("RGB", (4, 4)), draft=0)


def test_pillow_safety_settings_are_left_alone(tmp_path):
    limit = Image.MAX_IMAGE_PIXELS
    (tmp_path / "bomb.png").write_bytes(_blank_png(30000, 30000))
    with pytest.raises(ImageError):
        load_image(tmp_path / "bomb.png")
    assert Image.MAX_IMAGE_PIXELS == limit and ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("scale", [1, 16], ids=["12-bit", "16-bit"])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, scale):
    ramp = (np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1)) * scale).astype(np.uint16)  # (8, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    out = np.asarray(load_image(tmp_path / "deep.png")).astype(int)  # (8, 64, 3)
    assert out.shape == (8, 64, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    row = out[0, :, 0]
    assert (np.diff(row) >= 0).all() and row[0] < 10 and row[-1] > 245


def test_float_image_is_scaled():
    out = load_image(Image.fromarray(np.linspace(0.0, 1.0, 50, dtype=np.float32).reshape(5, 10)))
    assert out.getpixel((0, 0))[0] == 0 and out.getpixel((9, 4))[0] == 255


def test_cmyk_jpeg_red_comes_out_red(tmp_path):
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "print.jpg", quality=95)
    out = load_image(tmp_path / "print.jpg")
    assert out.mode == "RGB" and _close(out.getpixel((16, 16)), (255, 0, 0))


def test_palette_transparency_becomes_white(tmp_path):
    im = Image.new("P", (20, 10), 0)
    im.putpalette([0, 0, 0, *RED] + [0] * 762)
    im.paste(1, (10, 0, 20, 10))
    im.save(tmp_path / "logo.png", transparency=0)
    out = load_image(tmp_path / "logo.png")
    assert out.getpixel((2, 5)) == WHITE and out.getpixel((15, 5)) == RED


@pytest.mark.parametrize("mode, clear, solid, expected", [
    ("RGBA", (0, 0, 0, 0), (*BLUE, 255), BLUE),
    ("RGBA", (0, 0, 0, 0), (0, 0, 0, 128), (127, 127, 127)),
    ("LA", (0, 0), (60, 255), (60, 60, 60)),
])
def test_alpha_is_composited_on_white(tmp_path, mode, clear, solid, expected):
    im = Image.new(mode, (20, 10), clear)
    im.paste(Image.new(mode, (10, 10), solid), (10, 0))
    im.save(tmp_path / "cutout.png")
    out = load_image(tmp_path / "cutout.png")
    assert out.getpixel((2, 5)) == WHITE and _close(out.getpixel((15, 5)), expected, tol=1)


@pytest.mark.parametrize("suffix, extra", [(".gif", {}), (".png", {}), (".webp", {"lossless": True})])
def test_animation_gives_its_first_frame(tmp_path, suffix, extra):
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, BLUE)]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)
    assert Image.open(path).n_frames == 3
    assert _close(load_image(path).getpixel((8, 8)), RED, tol=8)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (80, 40), BLUE)
    im.paste(RED, (0, 0, 20, 20))  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "phone.jpg")
    assert out.size == (40, 80)
    assert _close(out.getpixel((30, 10)), RED) and _close(out.getpixel((10, 10)), BLUE)


@pytest.mark.parametrize("image", [
    Image.new("RGB", (1, 1), GREEN),
    Image.new("L", (1, 1), 77),
    Image.new("1", (3, 3), 1),
    Image.new("I", (2, 2), 70000),
], ids=["1px", "grey", "bilevel", "int32-flat"])
def test_small_and_simple_modes(tmp_path, image):
    image.save(tmp_path / "small.png")
    out = load_image(tmp_path / "small.png")
    assert out.mode == "RGB" and out.size == image.size
    expected = {"RGB": GREEN, "L": (77,) * 3, "1": WHITE, "I": (255,) * 3}[image.mode]
    assert out.getpixel((0, 0)) == expected


def test_bytes_file_object_and_pil_inputs_agree(tmp_path):
    data = _encoded(Image.new("RGB", (30, 20), GREEN), "JPEG")
    (tmp_path / "leaf.jpg").write_bytes(data)
    with open(tmp_path / "leaf.jpg", "rb") as f:
        from_file = load_image(f)
    from_path, from_bytes = load_image(tmp_path / "leaf.jpg"), load_image(data)
    assert from_path.tobytes() == from_bytes.tobytes() == from_file.tobytes()
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    out = load_image(rgba)
    assert out is not rgba and rgba.mode == "RGBA" and out.getpixel((0, 0)) == WHITE


def test_error_names_an_uploaded_file_object():
    buf = io.BytesIO(b"not an image")
    buf.name = "uploads/abc123/upload.png"  # the name a web framework gives an upload
    with pytest.raises(ImageError, match=r"^upload\.png: not an image"):
        load_image(buf)
    with pytest.raises(ImageError, match=r"^image: the file is empty"):
        load_image(b"")


def test_draft_decodes_big_jpegs_smaller_but_not_below_the_request(tmp_path):
    _noise(2000, 1500).save(tmp_path / "big.jpg")
    assert load_image(tmp_path / "big.jpg").size == (2000, 1500)
    small = load_image(tmp_path / "big.jpg", draft=256)
    assert small.size[0] < 2000 and min(small.size) >= 256 and small.mode == "RGB"
    Image.new("RGB", (2000, 1500)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", draft=256).size == (2000, 1500)  # only JPEGs have a draft mode


def test_loading_in_a_thread_pool(tmp_path):
    for i in range(8):
        Image.new("RGB", (40, 30), (i * 30, 0, 0)).save(tmp_path / f"{i}.png")
    with ThreadPoolExecutor(4) as pool:
        images = list(pool.map(load_image, sorted(tmp_path.glob("*.png"))))
    assert [im.getpixel((0, 0))[0] for im in images] == [i * 30 for i in range(8)]


def test_thumbnail_fits_keeps_aspect_and_never_upscales():
    big, small = Image.new("RGB", (1000, 500)), Image.new("RGB", (100, 50))
    assert thumbnail(big, 256).size == (256, 128) and big.size == (1000, 500)
    assert thumbnail(small, 256).size == (100, 50) and thumbnail(small) is not small
    with pytest.raises(ValueError, match="size"):
        thumbnail(big, 0)


def test_save_thumbnail_writes_a_jpeg_atomically(tmp_path):
    target = tmp_path / "cache" / "thumbs" / "a.jpg"
    save_thumbnail(Image.new("RGBA", (600, 300), (0, 0, 0, 0)), target, size=128)
    save_thumbnail(Image.new("RGB", (600, 300), RED), target, size=128)  # overwrites in place
    with Image.open(target) as im:
        assert im.format == "JPEG" and im.size == (128, 64) and _close(im.getpixel((64, 32)), RED, tol=8)
    assert [p.name for p in target.parent.iterdir()] == ["a.jpg"]  # no temp files left behind
    with pytest.raises(ValueError, match="quality"):
        save_thumbnail(Image.new("RGB", (4, 4)), target, quality=0)


def test_image_suffixes_are_lower_case_with_dots():
    assert {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"} == IMAGE_SUFFIXES
    assert ".svg" not in IMAGE_SUFFIXES


@pytest.mark.parametrize("path, caption", [
    ("red_circle-02.jpg", "red circle 02"),
    ("IMG_2041.JPG", "IMG 2041"),
    ("my.holiday.photo.png", "my holiday photo"),
    ("/photos/2024/a  b__c.jpeg", "a b c"),
    ("___.jpg", "___"),
    ("cat", "cat"),
    (".jpg", "jpg"),
])
def test_caption_from_filename(path, caption):
    assert caption_from_filename(path) == caption


@pytest.mark.parametrize("text, caption", [
    ("a cat on a mat\n", "a cat on a mat"),
    ("  two\tlines\n\nof text  ", "two lines of text"),
    ("\ufeffwith a BOM", "with a BOM"),
    ("   \n", None),
    ("", None),
])
def test_sidecar_caption(tmp_path, text, caption):
    (tmp_path / "cat.txt").write_text(text, encoding="utf-8")
    assert read_sidecar_caption(tmp_path / "cat.jpg") == caption


def test_sidecar_missing_long_or_badly_encoded(tmp_path):
    assert read_sidecar_caption(tmp_path / "dog.jpg") is None
    (tmp_path / "long.txt").write_text("word " * 1000, encoding="utf-8")
    long = read_sidecar_caption(tmp_path / "long.png")
    assert len(long) <= 1000 and long.startswith("word word")
    (tmp_path / "latin.txt").write_bytes("café au lait".encode("latin-1"))
    assert read_sidecar_caption(tmp_path / "latin.jpg") == "caf\ufffd au lait"


def _iptc_jpeg(path, caption: bytes) -> None:
    """A JPEG carrying an IPTC Caption-Abstract (2:120) in a Photoshop APP13 segment, as photo tools write it."""
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), "green").save(buf, "JPEG")
    record = b"\x1c\x02\x78" + struct.pack(">H", len(caption)) + caption
    record += b"\x00" * (len(record) % 2)
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(record)) + record
    body = b"Photoshop 3.0\x00" + resource
    data = buf.getvalue()
    path.write_bytes(data[:2] + b"\xff\xed" + struct.pack(">H", len(body) + 2) + body + data[2:])


def test_embedded_descriptions_become_captions_and_camera_placeholders_do_not(tmp_path):
    from PIL import PngImagePlugin
    img = Image.new("RGB", (24, 24), "red")

    def jpeg(name, **tags):
        exif = Image.Exif()
        for tag, value in tags.items():
            exif[int(tag[1:], 16)] = value
        img.save(tmp_path / name, exif=exif)
        return tmp_path / name
    assert read_embedded_caption(jpeg("a.jpg", x010E="  a red  bicycle\x00")) == "a red bicycle"
    assert read_embedded_caption(jpeg("b.jpg", x010E="OLYMPUS DIGITAL CAMERA")) is None
    assert read_embedded_caption(jpeg("c.jpg", x010F="Canon", x0110="Canon EOS 5D", x010E="Canon EOS 5D")) is None
    xp_title = "Katze auf dem Sofa".encode("utf-16-le") + b"\x00\x00"  # Windows' Properties > Title
    assert read_embedded_caption(jpeg("d.jpg", x010E="SONY DSC", x9C9B=xp_title)) == "Katze auf dem Sofa"
    spoof = "invoice\u202efdp.exe\x07 cat".encode("utf-16-le")  # a right-to-left override, a bell
    assert read_embedded_caption(jpeg("s.jpg", x9C9C=spoof)) == "invoicefdp.exe cat"  # cleaned as any text is
    info = PngImagePlugin.PngInfo()
    info.add_itxt("Description", "キツネ")
    img.save(tmp_path / "e.png", pnginfo=info)
    assert read_embedded_caption(tmp_path / "e.png") == "キツネ"
    _iptc_jpeg(tmp_path / "f.jpg", b"renard dans la neige")
    assert read_embedded_caption(tmp_path / "f.jpg") == "renard dans la neige"
    assert np.asarray(load_image(tmp_path / "f.jpg")).shape == (24, 24, 3)  # still an ordinary JPEG
    img.save(tmp_path / "g.jpg")
    (tmp_path / "h.jpg").write_bytes(b"not an image")
    assert read_embedded_caption(tmp_path / "g.jpg") is None and read_embedded_caption(tmp_path / "h.jpg") is None
