"""Weight-free image attributes: palette, tone, brightness, complexity, OCR and the stage.

Every image is drawn with Pillow at test time, except two real photos that ship inside
scikit-learn (a core dependency), used to check that photographs do not read as "low"
complexity.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from blift import schemas
from blift.errors import ConfigError
from blift.images import open_image
from blift.registry import load_stage
from blift.stage import ShardInput
from blift.stages.attributes import AttributesConfig, AttributesStage
from blift.stages.attributes.measures import (
    brightness,
    complexity,
    complexity_label,
    edge_density,
    orientation,
    to_rgb,
    tone,
)
from blift.stages.attributes.ocr import OcrEngine, words_to_text
from blift.stages.attributes.palette import (
    NAMES,
    PALETTE,
    dominant_colors,
    nearest_name,
    region_colors,
)

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A real TrueType font: DejaVu when installed, else Pillow's bundled FreeType default."""
    if DEJAVU.is_file():
        return ImageFont.truetype(str(DEJAVU), size)
    return ImageFont.load_default(size=size)


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (120, 80)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def halves(left: tuple[int, int, int], right: tuple[int, int, int], size: tuple[int, int] = (200, 100)) -> Image.Image:
    img = Image.new("RGB", size, left)
    ImageDraw.Draw(img).rectangle((size[0] // 2, 0, size[0], size[1]), fill=right)
    return img


def text_image(text: str, size: tuple[int, int] = (700, 220), font_size: int = 72, xy=(30, 60)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text(xy, text, fill="black", font=font(font_size))
    return img


def text_page() -> Image.Image:
    img = Image.new("RGB", (800, 1000), "white")
    draw = ImageDraw.Draw(img)
    for i in range(35):
        draw.text((30, 20 + 27 * i), f"The quick brown fox jumps over the lazy dog {i}", fill="black", font=font(18))
    return img


def noise(size: int = 256, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def checkerboard(side: int = 512, square: int = 16) -> Image.Image:
    cells = (np.indices((side, side)) // square).sum(axis=0) % 2
    return Image.fromarray((cells * 255).astype(np.uint8)).convert("RGB")


def gradient(w: int = 640, h: int = 480) -> Image.Image:
    return Image.fromarray(np.tile(np.linspace(0, 255, w), (h, 1)).astype(np.uint8)).convert("RGB")


def shapes_poster() -> Image.Image:
    img = Image.new("RGB", (640, 480), "white")
    draw = ImageDraw.Draw(img)
    draw.ellipse((100, 100, 300, 300), fill="red")
    draw.rectangle((350, 150, 550, 400), fill="blue")
    return img


def sklearn_photo(name: str) -> Image.Image:
    import sklearn

    path = Path(sklearn.__file__).parent / "datasets" / "images" / name
    if not path.is_file():
        pytest.skip(f"{path} not shipped with this scikit-learn")
    return Image.open(path)


# ------------------------------------------------------------------------------------ palette


def test_palette_names_are_unique_and_in_the_papers_style() -> None:
    assert len(NAMES) == len(set(NAMES)) and 25 <= len(NAMES) <= 40
    for name in ("Dark_Blue", "Off_White", "Black", "White", "Red", "Navy", "Beige"):
        assert name in PALETTE


def test_solid_dark_blue_is_all_dark_blue() -> None:
    assert dominant_colors(solid(PALETTE["Dark_Blue"])) == [("Dark_Blue", 1.0)]


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((255, 0, 0), "Red"),
        ((0, 0, 255), "Blue"),
        ((0, 0, 139), "Dark_Blue"),  # X11 "darkblue"
        ((255, 255, 255), "White"),
        ((250, 240, 230), "Off_White"),  # X11 "linen"
        ((0, 0, 0), "Black"),
        ((128, 128, 128), "Gray"),
        ((255, 165, 0), "Orange"),
        ((255, 192, 203), "Pink"),
        ((34, 139, 34), "Green"),  # X11 "forestgreen"
        ((0, 128, 128), "Teal"),
        ((128, 0, 128), "Purple"),
        ((139, 69, 19), "Brown"),  # X11 "saddlebrown"
    ],
)
def test_common_colours_get_their_everyday_name(rgb: tuple[int, int, int], name: str) -> None:
    assert nearest_name(rgb) == name


def test_half_red_half_blue_splits_evenly() -> None:
    colors = dict(dominant_colors(halves((255, 0, 0), (0, 0, 255))))
    assert set(colors) == {"Red", "Blue"}
    assert colors["Red"] == pytest.approx(0.5, abs=0.02)
    assert colors["Blue"] == pytest.approx(0.5, abs=0.02)


def test_dominant_colors_are_ranked_limited_and_sum_to_one() -> None:
    img = Image.new("RGB", (100, 100), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 59, 99), fill=(255, 0, 0))  # 60%
    draw.rectangle((60, 0, 89, 99), fill=(0, 0, 0))  # 30%, white keeps 10%
    everything = dominant_colors(img, k=len(NAMES))
    assert [n for n, _ in everything] == ["Red", "Black", "White"]
    assert sum(f for _, f in everything) == pytest.approx(1.0)
    assert [n for n, _ in dominant_colors(img, k=2)] == ["Red", "Black"]
    assert [n for n, _ in dominant_colors(img, k=5, min_fraction=0.2)] == ["Red", "Black"]


def test_red_centre_on_white_border_is_red_foreground_white_background() -> None:
    img = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(img).rectangle((100, 75, 299, 224), fill=(220, 20, 30))
    fg, bg = region_colors(img)
    assert fg == ["Red"]
    assert bg == ["White"]


def test_transparent_and_paletted_and_16bit_images_are_normalised() -> None:
    clear = Image.new("RGBA", (50, 50), (0, 0, 0, 0))  # transparent black shows as white
    assert dominant_colors(clear) == [("White", 1.0)]
    paletted = solid((0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert dominant_colors(paletted)[0][0] == "Blue"
    grey16 = Image.fromarray(np.full((40, 60), 32768, dtype=np.uint16))  # mid grey in 16 bits
    assert to_rgb(grey16).getpixel((0, 0)) == (128, 128, 128)
    assert dominant_colors(solid((255, 0, 0)).convert("CMYK"))[0][0] == "Red"


# ------------------------------------------------------------------------- image attributes


@pytest.mark.parametrize(
    ("w", "h", "expected"),
    [(200, 100, "landscape"), (100, 200, "portrait"), (100, 100, "square"), (1000, 980, "square"),
     (1000, 900, "landscape")],
)
def test_orientation(w: int, h: int, expected: str) -> None:
    assert orientation(w, h) == expected


def test_orientation_rejects_empty_sizes() -> None:
    with pytest.raises(ValueError, match="0x10"):
        orientation(0, 10)


@pytest.mark.parametrize(
    ("img", "expected"),
    [
        (solid((245, 130, 20)), "warm"),  # orange
        (solid((220, 20, 30)), "warm"),  # red
        (solid((30, 80, 220)), "cool"),  # blue
        (solid((0, 210, 220)), "cool"),  # cyan
        (solid((128, 128, 128)), "neutral"),  # grey has no hue
        (gradient(), "neutral"),  # black to white
        (halves((245, 130, 20), (30, 80, 220)), "neutral"),  # balanced
    ],
)
def test_tone(img: Image.Image, expected: str) -> None:
    assert tone(img) == expected


def test_small_colour_spot_on_grey_stays_neutral() -> None:
    img = solid((128, 128, 128), (100, 100))
    ImageDraw.Draw(img).rectangle((0, 0, 19, 19), fill=(255, 0, 0))  # 4% of the pixels
    assert tone(img) == "neutral"


def test_brightness() -> None:
    assert brightness(solid((0, 0, 0))) == 0.0
    assert brightness(solid((255, 255, 255))) == pytest.approx(1.0)
    assert brightness(solid((128, 128, 128))) == pytest.approx(128 / 255, abs=1e-6)
    assert brightness(halves((0, 0, 0), (255, 255, 255))) == pytest.approx(0.5, abs=0.01)


def test_complexity_orders_flat_gradient_shapes_text_texture() -> None:
    scores = {
        "flat": edge_density(solid(PALETTE["Dark_Blue"], (640, 480))),
        "gradient": edge_density(gradient()),
        "shapes": edge_density(shapes_poster()),
        "text": edge_density(text_page()),
        "noise": edge_density(noise()),
        "checker": edge_density(checkerboard()),
    }
    assert scores["flat"] == 0.0
    # A smooth gradient has no edges at all: as simple as flat colour to the eye.
    assert scores["flat"] <= scores["gradient"] < scores["shapes"]
    assert scores["shapes"] < scores["text"]
    assert scores["shapes"] < scores["noise"] and scores["shapes"] < scores["checker"]
    labels = {k: complexity_label(v) for k, v in scores.items()}
    assert labels == {
        "flat": "low",
        "gradient": "low",
        "shapes": "low",
        "text": "high",
        "noise": "high",
        "checker": "high",
    }


def test_real_photos_are_not_low_complexity() -> None:
    poster = edge_density(shapes_poster())
    for name in ("china.jpg", "flower.jpg"):
        label, score = complexity(sklearn_photo(name))
        assert label in ("medium", "high"), (name, score)
        assert score > poster


def test_complexity_does_not_depend_on_resolution() -> None:
    small = edge_density(checkerboard(512, 8))
    large = edge_density(checkerboard(2048, 32))  # the same picture at 4x the pixels
    assert large == pytest.approx(small, abs=0.02)
    thumb = edge_density(text_page().resize((400, 500), Image.Resampling.LANCZOS))
    assert complexity_label(thumb) == complexity_label(edge_density(text_page()))


# ------------------------------------------------------------------------------------------ OCR


@pytest.fixture(autouse=True)
def scoped_ocr_thread_limit() -> Iterator[None]:
    """OCR setup() sets OMP_THREAD_LIMIT for tesseract in its (worker) process; tests set it up in
    pytest's process, so the variable is put back as it was after each test instead of reaching
    later tests' workers (CTranslate2 Whisper asked for 2 threads under OMP_THREAD_LIMIT=1
    transcribes garbage)."""
    before = os.environ.get("OMP_THREAD_LIMIT")
    yield
    if before is None:
        os.environ.pop("OMP_THREAD_LIMIT", None)
    else:
        os.environ["OMP_THREAD_LIMIT"] = before


@pytest.fixture
def ocr() -> OcrEngine:
    engine = OcrEngine()
    engine.setup()
    return engine


def test_ocr_reads_a_large_clear_word(ocr: OcrEngine) -> None:
    text = ocr.read(text_image("HELLO WORLD"))
    assert "hello" in text.lower() and "world" in text.lower()


def test_ocr_upscales_small_images(ocr: OcrEngine) -> None:
    img = text_image("Sale today", size=(160, 50), font_size=18, xy=(8, 12))
    assert ocr.prepare(img).size == (480, 150)  # upscaled 3x (the cap), greyscale
    assert "sale" in ocr.read(img).lower()


def test_ocr_keeps_lines_in_reading_order(ocr: OcrEngine) -> None:
    img = Image.new("RGB", (800, 400), "white")
    draw = ImageDraw.Draw(img)
    draw.text((40, 40), "FIRST LINE", fill="black", font=font(60))
    draw.text((40, 250), "SECOND LINE", fill="black", font=font(60))
    lines = ocr.read(img).lower().splitlines()
    assert lines == ["first line", "second line"]


def _texture(lo: int, hi: int, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A smooth random picture with grey levels in [lo, hi] (a stand-in for a photo)."""
    field = np.random.default_rng(0).normal(0, 1, (60, 80, 3))
    field = lo + (field - field.min()) / (field.max() - field.min()) * (hi - lo)
    return Image.fromarray(field.astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)


@pytest.mark.parametrize(("lo", "hi", "ink"), [(170, 255, "black"), (0, 90, "white")])
def test_ocr_reads_captions_scattered_over_a_picture(ocr: OcrEngine, lo: int, hi: int, ink: str) -> None:
    img = _texture(lo, hi)
    draw = ImageDraw.Draw(img)
    draw.text((40, 30), "WHEN THE CODE", fill=ink, font=font(64))  # top left
    draw.text((150, 490), "FINALLY WORKS", fill=ink, font=font(64))  # bottom right
    assert ocr.read(img).lower().split() == ["when", "the", "code", "finally", "works"]


def test_ocr_of_blank_image_is_empty(ocr: OcrEngine) -> None:
    assert ocr.read(solid((255, 255, 255), (640, 480))) == ""
    assert ocr.read(gradient(320, 240)) == ""  # has contrast, so tesseract runs; finds nothing


def test_words_to_text_filters_confidence_symbols_and_stray_letters() -> None:
    data = {
        "text": ["", "Big", "sale", "~~", "maybe", "ae", "", "now", "on"],
        "conf": ["-1", "95", "91", "88", "40", "70", "-1", "90", "89"],
        "page_num": [1] * 9,
        "block_num": [1, 1, 1, 1, 1, 2, 3, 3, 3],
        "par_num": [1] * 9,
        "line_num": [1, 1, 1, 1, 1, 1, 1, 1, 1],
    }
    # "~~" has no letters, "maybe" is unsure, the line "ae" is a stray 2-letter texture read.
    assert words_to_text(data, 60, min_line_chars=3) == "Big sale\nnow on"
    assert words_to_text(data, 30, min_line_chars=0) == "Big sale maybe\nae\nnow on"


def test_missing_language_data_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tesseract-ocr-zzz"):
        OcrEngine(lang="eng+zzz").setup()


def test_missing_tesseract_binary_is_a_config_error(tmp_path: Path) -> None:
    # In a child process: pytesseract keeps the binary path in a process-wide setting.
    code = (
        "from blift.stages.attributes.ocr import OcrEngine\n"
        "from blift.errors import ConfigError\n"
        "try:\n"
        f"    OcrEngine(tesseract_cmd={str(tmp_path / 'no-tesseract')!r}).setup()\n"
        "except ConfigError as exc:\n"
        "    print('CONFIG', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("CONFIG") and "apt-get install tesseract-ocr" in proc.stdout


# ---------------------------------------------------------------------------------------- stage


def _media_row(uid: str, index: int, **kw) -> dict:
    row = {"uid": uid, "index": index, "url": f"http://127.0.0.1/{uid}/{index}", "status": "ok"}
    row.update(kw)
    return row


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, list[dict]]:
    """A run folder with media files of many kinds and the media rows that point at them."""
    files = tmp_path / "media_files"
    (files / "ab").mkdir(parents=True)
    rows: list[dict] = []

    def add(uid: str, name: str, img: Image.Image | None, mime: str, **save) -> None:
        if img is not None:
            img.save(files / "ab" / name, **save)
        rows.append(_media_row(uid, len([r for r in rows if r["uid"] == uid]), path=f"media_files/ab/{name}",
                               mime=mime))

    # A JPEG stored 200x100 with EXIF orientation 6 (rotate 90): shown 100x200, portrait.
    rotated = solid(PALETTE["Dark_Blue"], (200, 100))
    exif = rotated.getexif()
    exif[0x0112] = 6
    add("reddit:a1", "blue.jpg", rotated, "image/jpeg", exif=exif, quality=95)
    add("reddit:a1", "hello.png", text_image("HELLO WORLD"), "image/png")
    add("reddit:b2", "logo.png", Image.new("RGBA", (300, 300), (255, 0, 0, 0)), "image/png")
    frames = [solid((220, 20, 30), (64, 64)), solid((30, 80, 220), (64, 64))]
    frames[0].save(files / "ab" / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rows.append(_media_row("reddit:c3", 0, path="media_files/ab/anim.gif", mime="image/gif"))
    add("reddit:d4", "grey16.png", Image.fromarray(np.full((60, 80), 30000, dtype=np.uint16)), "image/png")
    (files / "ab" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    rows.append(_media_row("reddit:e5", 0, path="media_files/ab/broken.jpg", mime="image/jpeg"))
    rows.append(_media_row("reddit:f6", 0, path="media_files/ab/gone.png", mime="image/png"))  # missing
    rows.append(_media_row("reddit:g7", 0, status="skipped", reason="unsupported_kind"))
    rows.append(_media_row("reddit:h8", 0, status="failed", reason="http_404", error="404 Not Found"))
    rows.append(_media_row("youtube:v1", 0, path="media_files/ab/video.mp4", mime="video/mp4"))
    return tmp_path, rows


def _run(run_dir: Path, rows: list[dict], **config) -> tuple:
    stage_cls = load_stage("attributes")
    assert stage_cls is AttributesStage
    stage = stage_cls(stage_cls.Config(**config), run_dir)
    stage.setup()
    media = schemas.get("media").from_rows(rows)
    result = stage.process(ShardInput("part-00000", {"media": media}, run_dir))
    return result, result.tables["attributes"]


def test_stage_end_to_end(run_dir: tuple[Path, list[dict]]) -> None:
    folder, rows = run_dir
    result, table = _run(folder, rows)
    schemas.get("attributes").validate(table)
    assert result.records_in == len(rows)
    out = {(r["uid"], r["media_index"]): r for r in table.to_pylist()}
    assert set(out) == {("reddit:a1", 0), ("reddit:a1", 1), ("reddit:b2", 0), ("reddit:c3", 0), ("reddit:d4", 0)}

    blue = out[("reddit:a1", 0)]
    assert (blue["width"], blue["height"], blue["orientation"]) == (100, 200, "portrait")
    assert blue["colors"][0]["name"] == "Dark_Blue" and blue["colors"][0]["fraction"] > 0.95
    assert blue["tone"] == "cool" and blue["complexity"] == "low" and blue["ocr_text"] == ""

    hello = out[("reddit:a1", 1)]
    assert "hello world" in hello["ocr_text"].lower()
    assert hello["background_colors"] == ["White"] and hello["orientation"] == "landscape"

    assert out[("reddit:b2", 0)]["colors"] == [{"name": "White", "fraction": 1.0}]  # transparent
    assert out[("reddit:c3", 0)]["colors"][0]["name"] == "Red"  # first frame of the GIF
    assert out[("reddit:d4", 0)]["colors"][0]["name"] == "Gray"  # 16-bit grey, scaled not clipped

    for row in out.values():
        assert row["scene"] is None and row["caption"] is None and row["keywords"] is None
        assert 0.0 <= row["brightness"] <= 1.0 and 0.0 <= row["complexity_score"] <= 1.0

    failures = {f.record_key: f for f in result.errors}
    assert set(failures) == {"reddit:e5#0", "reddit:f6#0"}
    assert all(f.error_class.value == "permanent" for f in failures.values())
    assert "media_files/ab/gone.png" in failures["reddit:f6#0"].message
    assert "media_files/ab/broken.jpg" in failures["reddit:e5#0"].message
    assert result.counters["media_not_ok"] == 2 and result.counters["not_image"] == 1
    assert result.counters["images"] == 5 and result.counters["ocr_text_found"] == 1


def test_stage_without_ocr_leaves_text_null(run_dir: tuple[Path, list[dict]]) -> None:
    folder, rows = run_dir
    _, table = _run(folder, [r for r in rows if r["uid"] == "reddit:a1"], ocr=False)
    assert table.num_rows == 2
    assert table.column("ocr_text").to_pylist() == [None, None]


def test_stage_is_deterministic(run_dir: tuple[Path, list[dict]]) -> None:
    folder, rows = run_dir
    _, first = _run(folder, rows, ocr=False)
    _, second = _run(folder, rows, ocr=False)
    assert first.equals(second)


def test_stage_config_rejects_typos_and_bad_values() -> None:
    with pytest.raises(ValueError, match="colours_k"):
        AttributesConfig(colours_k=3)
    with pytest.raises(ValueError, match="ocr_min_confidence"):
        AttributesConfig(ocr_min_confidence=150)


def test_open_image_reports_displayed_size_and_decodes_jpeg_reduced(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    big = solid((250, 240, 230), (3000, 1200))
    exif = big.getexif()
    exif[0x0112] = 8
    big.save(path, exif=exif)
    img, size = open_image(path, decode_side=500)
    assert size == (1200, 3000)  # rotated by EXIF
    assert img.size[1] >= 500 and img.size[1] < 3000  # DCT-scaled decode, still rotated
    assert img.size[0] < img.size[1]


@pytest.mark.parametrize("mode", ["CMYK", "L", "RGB"])
def test_open_image_handles_jpeg_colour_modes(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"{mode}.jpg"
    colour = (220, 20, 30) if mode != "L" else (128, 128, 128)
    solid(colour, (900, 600)).convert(mode).save(path, quality=95)
    img, size = open_image(path, decode_side=256)
    assert size == (900, 600)
    assert dominant_colors(img)[0][0] == ("Red" if mode != "L" else "Gray")


def test_truncated_jpeg_is_a_record_error(tmp_path: Path) -> None:
    (tmp_path / "media_files").mkdir()
    buf = tmp_path / "media_files" / "cut.jpg"
    noise(300).save(buf, quality=90)
    buf.write_bytes(buf.read_bytes()[:2000])  # the header survives, the scan does not
    result, table = _run(tmp_path, [_media_row("reddit:t1", 0, path="media_files/cut.jpg", mime="image/jpeg")],
                         ocr=False)
    assert table.num_rows == 0
    [failure] = result.errors
    assert failure.record_key == "reddit:t1#0" and "media_files/cut.jpg" in failure.message
    assert failure.error_type == "OSError"
