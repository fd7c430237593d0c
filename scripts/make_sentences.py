"""The offline sentence corpus as a CSV with a ``text`` column, to read it or to upload it back as a text dataset.

    .venv/bin/python scripts/make_sentences.py sentences.csv [--min-chars 40] [--max-chars 300]

The sentences are ``pruning_core.datasets.corpus_sentences``: the prose of the Python language reference shipped
with CPython (``pydoc_data.topics``), cut by ``split_sentences``, filtered by ``is_prose_sentence`` and
deduplicated; the same list the app's sentence set draws from. Prints how many there are and their lengths.
"""

from __future__ import annotations

import argparse
import csv
import statistics

from pruning_core.datasets import corpus_sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the CSV file to write")
    parser.add_argument("--min-chars", type=int, default=40)
    parser.add_argument("--max-chars", type=int, default=300)
    args = parser.parse_args()
    sentences = corpus_sentences(args.min_chars, args.max_chars)
    with open(args.output, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        writer.writerows([s] for s in sentences)
    lengths = [len(s.split()) for s in sentences]
    print(f"{len(sentences)} sentences written to {args.output}; words per sentence: median "
          f"{statistics.median(lengths):g}, min {min(lengths)}, max {max(lengths)}")


if __name__ == "__main__":
    main()
