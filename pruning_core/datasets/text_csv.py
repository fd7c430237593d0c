"""A CSV of texts with optional labels, uploaded or named on the command line, read as hostile input.

The bytes are read up to a bound (``MAX_CSV_BYTES`` and the server's file limit) before anything is parsed, decoded
as strict UTF-8, and parsed by the ``csv`` module (whose per-field limit, 131,072 characters by default, stays in
force) row by row, stopping at ``MAX_ROWS``; each text is at most ``MAX_TEXT_CHARS`` characters. Nothing is
evaluated. Every problem raises ``data.DataError`` with one sentence for the person who supplied the file.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from ..data import DataError
from ..limits import human_bytes, max_file_bytes
from .text import tokenized_splits

MAX_CSV_BYTES = 64 << 20
MAX_ROWS = 100_000
MAX_TEXT_CHARS = 20_000
MAX_LABEL_CHARS = 200
MAX_CLASSES = 10_000


def _read_bounded(source, name: str) -> bytes:
    """At most ``min(MAX_CSV_BYTES, max_file_bytes())`` bytes of ``source`` (bytes, or a binary file object read
    in 1 MiB pieces); one byte more is a refusal, so a stream of any length never takes more memory."""
    limit = min(MAX_CSV_BYTES, max_file_bytes())
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = len(source)
        if size > limit:
            raise DataError(f"{name}: the file is {human_bytes(size)}; a CSV of texts may be at most "
                            f"{human_bytes(limit)}. Nothing was parsed.")
        return bytes(source)
    pieces, total = [], 0
    while True:
        piece = source.read(min(1 << 20, limit + 1 - total))
        if not piece:
            return b"".join(pieces)
        pieces.append(piece)
        total += len(piece)
        if total > limit:
            raise DataError(f"{name}: the file is larger than {human_bytes(limit)}, the most a CSV of texts may "
                            "be. Nothing was parsed.")


def read_text_csv(source, name: str = "texts.csv") -> tuple[list[str], np.ndarray | None, tuple[str, ...]]:
    """(texts, labels or None, class names) of a CSV with a header row naming a ``text`` column and optionally a
    ``label`` column (names compared case-insensitively, surrounding spaces ignored).

    Labels: when every one is a whole number >= 0 they are the class indices (class names "0" .. "max");
    otherwise they are names, numbered in sorted order (as torchvision's ``ImageFolder`` numbers its folders).
    An empty label column means unlabelled; some labels empty and others not is refused. Blank lines are
    skipped; a row with an empty text is refused."""
    raw = _read_bounded(source, name)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text (byte {e.start:,} cannot be decoded); save the CSV as UTF-8.") \
            from e
    del raw
    if "\x00" in text:
        raise DataError(f"{name}: holds NUL characters, so it is a binary file rather than a CSV of texts.")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{name}: the file is empty; a CSV of texts has a header row with a 'text' column.")
        columns = [h.strip().casefold() for h in header]
        if "text" not in columns:
            shown = ", ".join(repr(h[:40]) for h in header[:5]) + (" ..." if len(header) > 5 else "")
            raise DataError(f"{name}: the header row has no 'text' column (it has {shown or 'nothing'}).")
        t_col = columns.index("text")
        l_col = columns.index("label") if "label" in columns else None
        texts, labels = [], []
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(texts) >= MAX_ROWS:
                raise DataError(f"{name}: more than {MAX_ROWS:,} rows; upload at most {MAX_ROWS:,} texts.")
            line = reader.line_num
            if len(row) <= t_col or not row[t_col].strip():
                raise DataError(f"{name}: line {line:,} has no text.")
            if len(row[t_col]) > MAX_TEXT_CHARS:
                raise DataError(f"{name}: the text on line {line:,} has {len(row[t_col]):,} characters; a text may "
                                f"have at most {MAX_TEXT_CHARS:,} (tokenisers cut them far shorter).")
            texts.append(row[t_col].strip())
            if l_col is not None:
                label = row[l_col].strip() if len(row) > l_col else ""
                if len(label) > MAX_LABEL_CHARS:
                    raise DataError(f"{name}: the label on line {line:,} is {len(label):,} characters long.")
                labels.append(label)
    except csv.Error as e:
        raise DataError(f"{name}: not a readable CSV file (line {reader.line_num:,}: {e}).") from e
    if not texts:
        raise DataError(f"{name}: the file has a header but no texts.")
    if l_col is None or not any(labels):
        return texts, None, ()
    if not all(labels):
        missing = labels.index("")
        raise DataError(f"{name}: some rows have a label and others not (text {missing + 1:,} has none); label "
                        "every row or none.")
    if all(label.isdecimal() and label.isascii() for label in labels):
        numbers = [int(label) for label in labels]
        top = max(numbers)
        if top >= MAX_CLASSES:
            raise DataError(f"{name}: label {str(top)[:30]} is too large; labels are class indices 0, 1, 2, ... "
                            f"(at most {MAX_CLASSES:,} classes).")
        return texts, np.array(numbers, dtype=np.int64), tuple(str(i) for i in range(top + 1))
    names = tuple(sorted(set(labels)))
    if len(names) > MAX_CLASSES:
        raise DataError(f"{name}: {len(names):,} different labels; at most {MAX_CLASSES:,} classes are allowed.")
    index = {c: i for i, c in enumerate(names)}
    return texts, np.array([index[label] for label in labels], dtype=np.int64), names


def load_text_csv(source, tokenizer_dir: str | os.PathLike | None = None, name: str = "texts.csv",
                  max_length: int = 128, seed: int = 0, calib_fraction: float = 0.2, max_calib: int = 512):
    """``DataSplits`` of an uploaded CSV of texts (``read_text_csv``), tokenised offline like
    ``text.sentence_eval_set`` (x: (N, 2, L) int64 [token ids; attention mask]); y the labels, or -1 when the
    file has none. A seeded calibration split of ``calib_fraction`` of each class (at most ``max_calib``); the rest
    is the evaluation split. A refused file raises ``DataError`` and returns nothing, so whatever the caller had
    loaded stays."""
    try:
        texts, labels, class_names = read_text_csv(source, name)
    except DataError:
        raise
    except MemoryError as e:
        raise DataError(f"{name}: this server does not have the memory to read this file.") from e
    except Exception as e:  # a last net: nothing but DataError leaves this function
        raise DataError(f"{name}: not a readable CSV file ({type(e).__name__}: {str(e)[:200]}).") from e
    what = f"{len(class_names)} classes" if labels is not None else "unlabelled"
    note = (f"{len(texts):,} texts from {name} ({what}). "
            + ("Accuracy is measured against the file's labels." if labels is not None else
               "Without labels, figures measure agreement with the dense model only."))
    return tokenized_splits(name, texts, labels, class_names, tokenizer_dir, max_length, seed, calib_fraction,
                            max_calib, note)


__all__ = ["MAX_CLASSES", "MAX_CSV_BYTES", "MAX_ROWS", "MAX_TEXT_CHARS", "load_text_csv", "read_text_csv"]
