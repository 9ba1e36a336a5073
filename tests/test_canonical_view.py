"""The canonical view: EXIF orientation, margin trimming on any backdrop, blanks; the distortions."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stylespace.data import load_view
from stylespace.data.distortions import DISTORTIONS, junk_images
from stylespace.data.images import canonical_view, fit_to_size

SIZE = (80, 60)


def product_on(background, size=(120, 160), box=(30, 40, 90, 120), colour=(200, 30, 30), stripe=True) -> Image.Image:
    """A red product with a yellow top (so that orientation shows) in ``box`` on a ``background``."""
    image = np.empty((size[1], size[0], 3), np.uint8)
    image[:] = background
    left, top, right, bottom = box
    image[top:bottom, left:right] = colour
    if stripe:
        image[top:top + (bottom - top) // 4, left:right] = (250, 210, 30)  # the top quarter is yellow
    return Image.fromarray(image)


def jpeg(image: Image.Image, quality: int = 80, exif=None) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **({"exif": exif.tobytes()} if exif is not None else {}))
    return buffer.getvalue()


def reference() -> np.ndarray:
    return load_view(product_on((255, 255, 255))).pixels.astype(int)


def same_view(pixels: np.ndarray, expected: np.ndarray) -> bool:
    """Nearly the same view. JPEG's colour bleeding on a coloured backdrop can widen the trimmed box by a
    pixel (about 15 / 255 of mean difference at 80 x 60); a view that was not trimmed differs by 70-95."""
    return float(np.abs(pixels.astype(int) - expected.astype(int)).mean()) < 20


@pytest.mark.parametrize("background", [(255, 255, 255), (225, 225, 225), (128, 128, 128), (30, 30, 30),
                                        (190, 214, 232), (226, 208, 180)],
                         ids=["white", "light-grey", "grey", "near-black", "light-blue", "beige"])
def test_the_same_product_on_any_backdrop_gives_the_same_view(background):
    """Trimmed to the product and put on white, whatever the studio's colour and JPEG noise."""
    view = load_view(jpeg(product_on(background)))
    assert view.background is not None and max(abs(a - b) for a, b in zip(view.background, background)) <= 3
    assert same_view(view.pixels, reference())
    left, top, right, bottom = view.box
    assert abs(left - 0.25) < 0.04 and abs(top - 0.25) < 0.04 and abs(right - 0.75) < 0.04 and abs(bottom - 0.75) < 0.04
    assert not view.blank


def test_margins_inside_margins_and_padding_are_trimmed():
    """A white packshot padded to a square on grey (a marketplace thumbnail) trims to the product."""
    packshot = product_on((255, 255, 255))
    square = Image.new("RGB", (200, 200), (210, 210, 210))
    square.paste(packshot, (40, 20))
    assert same_view(load_view(jpeg(square)).pixels, reference())
    assert not same_view(fit_to_size(square, SIZE), reference())  # untrimmed, it is another picture


def test_a_product_touching_one_edge_is_kept_whole():
    touching = product_on((235, 235, 235), box=(0, 40, 70, 120))
    view = load_view(touching)
    left, top, right, bottom = view.box
    assert left == 0.0 and right <= 0.65 and top >= 0.2 and bottom <= 0.8
    assert (view.pixels[:, :3] != 255).any(axis=2).mean() > 0.5  # the product reaches the view's left edge


def test_a_product_darker_than_its_backdrop_and_a_soft_shadow():
    dark = product_on((240, 240, 240), colour=(60, 60, 60), stripe=False)
    rgb = np.asarray(dark).astype(np.float32)
    shade = np.linspace(0.75, 1.0, rgb.shape[1])[None, :, None]  # a soft shadow across the backdrop
    view = load_view(Image.fromarray((rgb * shade).astype(np.uint8)))
    left, top, right, bottom = view.box
    assert 0.15 < left < 0.3 and 0.7 < right < 0.85 and 0.15 < top < 0.3 and 0.7 < bottom < 0.8
    corners = view.pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 255).all()  # the shadowed backdrop became white


def test_an_image_that_is_all_margin_is_blank():
    for colour in ((255, 255, 255), (128, 128, 128)):
        view = load_view(Image.new("RGB", (300, 400), colour))
        assert view.blank and view.pixels.shape == (*SIZE, 3)
    faint = np.full((400, 300, 3), 200, np.uint8)
    faint[100:102, 100:103] = 190  # a speck is not a product
    assert load_view(Image.fromarray(faint)).blank
    assert not load_view(product_on((255, 255, 255))).blank


def test_a_scene_without_a_uniform_margin_is_kept_whole():
    rng = np.random.default_rng(0)
    scene = Image.fromarray(rng.integers(0, 256, (160, 120, 3), dtype=np.uint8))
    view = canonical_view(scene, SIZE)
    assert view.background is None and view.box == (0.0, 0.0, 1.0, 1.0)


# EXIF orientation n: how the stored pixels were turned from the upright picture (PIL's transposes).
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_1_to_8_are_turned_upright(orientation):
    upright = product_on((255, 255, 255), box=(20, 30, 70, 140))  # tall, yellow top quarter
    stored = upright if STORED[orientation] is None else upright.transpose(STORED[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    view = load_view(jpeg(stored, quality=90, exif=exif))
    assert same_view(view.pixels, load_view(jpeg(upright, quality=90)).pixels), orientation
    left, top, right, bottom = view.box
    assert bottom - top > right - left  # tall again


def test_a_broken_exif_block_does_not_refuse_the_photo():
    image = product_on((255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=b"Exif\x00\x00garbage-that-is-not-tiff")
    assert load_view(buffer.getvalue()).pixels.shape == (*SIZE, 3)


def test_distortions_give_decodable_uploads():
    image = product_on((255, 255, 255), size=(60, 80), box=(15, 10, 45, 70))
    other = product_on((255, 255, 255), size=(60, 80), box=(10, 20, 50, 60), colour=(30, 30, 200))
    rng = np.random.default_rng(0)
    for name, distortion in DISTORTIONS.items():
        data = distortion.apply(image, rng, other)
        assert isinstance(data, bytes) and load_view(data).pixels.shape == (*SIZE, 3), name
        assert distortion.description, name
    views = {name: load_view(data) for name, data in junk_images().items()}
    assert views["blank"].blank and views["near_uniform"].blank
    assert not views["noise"].blank and not views["landscape"].blank


def test_transparency_goes_onto_white_exactly_as_alpha_compositing_would():
    """to_rgb pastes through the alpha channel (cheaper); it must give alpha_composite's pixels, every mode."""
    from stylespace.data.images import to_rgb

    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (64, 48, 4), dtype=np.uint8), "RGBA")
    la = Image.fromarray(rng.integers(0, 256, (64, 48, 2), dtype=np.uint8), "LA")
    palette = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 3
    for image in (rgba, la, palette):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        expected = Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
        assert np.array_equal(np.asarray(to_rgb(image)), np.asarray(expected)), image.mode


# --- a product small in a large frame ---------------------------------------------------------------------


def banded_product(width: int = 240, height: int = 320) -> Image.Image:
    """A packshot with broad features at known places (four colour bands, a dark bar, a white disc): a view
    cut from too few pixels blurs them and shifts its edges."""
    from PIL import ImageDraw

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for k, colour in enumerate([(30, 60, 160), (200, 40, 40), (40, 150, 60), (230, 200, 40)]):
        draw.rectangle([width * (0.1 + 0.2 * k), height * 0.1, width * (0.3 + 0.2 * k), height * 0.9], fill=colour)
    draw.rectangle([width * 0.1, height * 0.4, width * 0.9, height * 0.48], fill=(20, 20, 20))
    draw.ellipse([width * 0.4, height * 0.6, width * 0.6, height * 0.75], fill=(250, 250, 250))
    return image


def in_frame(product: Image.Image, share: float, frame: int = 1200, backdrop=(210, 210, 210)) -> Image.Image:
    """``product`` at ``share`` of the frame's width, off-centre on a light-grey square (a shopper's photo of
    one item on a table)."""
    width = round(frame * share)
    height = round(width * product.height / product.width)
    canvas = Image.new("RGB", (frame, frame), backdrop)
    canvas.paste(product.resize((width, height), Image.Resampling.LANCZOS), ((frame - width) // 3, (frame - height) // 2))
    return canvas


@pytest.mark.parametrize("share", [0.10, 0.25, 0.50])
@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_a_small_product_in_a_large_frame_keeps_its_pixels(share, encoding):
    """The view of a product at 10 / 25 / 50 % of a 1200 px frame's width is the view of the product alone.
    Cut from the working copy (about 80 x 80 here), the 10 % product had 8 x 11 pixels: mean difference 55 (PNG)
    and 43 (JPEG) from the reference, against under 12 now."""
    expected = load_view(banded_product()).pixels.astype(int)
    scene = in_frame(banded_product(), share)
    if encoding == "png":
        buffer = io.BytesIO()
        scene.save(buffer, "PNG")
        data = buffer.getvalue()
    else:
        data = jpeg(scene, quality=92)  # decoded at 1/8 first, then again at the scale the product needs
    view = load_view(data)
    assert np.abs(view.pixels.astype(int) - expected).mean() < 12
    left, top, right, bottom = view.box
    assert 0.7 * share <= right - left <= share + 0.01  # the bands (80 % of the packshot) with a little room


def test_a_catalog_packshot_in_a_grey_square_mirrored_is_cut_from_its_own_pixels():
    """The issue's case: a 60 x 80 packshot pasted on a 400 x 400 light-grey square and mirrored."""
    from PIL import ImageOps

    packshot = banded_product(60, 80)
    canvas = Image.new("RGB", (400, 400), (225, 225, 225))
    canvas.paste(packshot, (150, 160))
    view = load_view(jpeg(ImageOps.mirror(canvas), quality=92))
    expected = load_view(ImageOps.mirror(packshot)).pixels.astype(int)
    assert np.abs(view.pixels.astype(int) - expected).mean() < 12


def test_an_image_at_most_twice_the_input_is_viewed_as_before():
    """No reduced working copy, no second cut: a catalog packshot's view is the working copy's trim, byte for
    byte (the image cache and indexes of packshot catalogs hold the same pixels as before)."""
    from stylespace.data.images import _view_and_trim

    image = in_frame(banded_product(40, 53), 0.5, frame=100)
    view, trim = _view_and_trim(image, SIZE, 10**6)
    top, bottom, left, right = trim.box
    assert trim.work_size == image.size
    unrefined, _ = _view_and_trim(image, SIZE, 10**6, refine=False)
    assert np.array_equal(view.pixels, unrefined.pixels)
