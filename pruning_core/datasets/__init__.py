"""Offline datasets beyond the 8x8 digits, and hostile-safe uploads of image folders and text tables.

* ``photo_eval_set``: unlabelled ImageNet-style crops of the colour photos shipped with scikit-image and
  scikit-learn (``photos``);
* ``sentence_eval_set``, ``corpus_sentences``, ``split_sentences``: unlabelled English sentences of the Python
  language reference shipped with CPython, tokenised offline (``text``);
* ``load_image_folder_zip``, ``load_image_folder``, ``load_text_csv``: a zipped or server-side folder of images
  (one class per subfolder) and a CSV of texts with optional labels, checked before anything is allocated
  (``folders``, ``text``).

Every dataset is a ``data.DataSplits`` that says whether it is ``labelled``, its ``class_names`` and a ``note`` on
what figures measured on it mean.
"""

from .folders import load_image_folder, load_image_folder_zip
from .images import IMAGENET_MEAN, IMAGENET_STD
from .photos import PHOTOS, photo_eval_set
from .text import corpus_sentences, sentence_eval_set, split_sentences, tokenize_sentences
from .text_csv import load_text_csv

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PHOTOS", "corpus_sentences", "load_image_folder",
           "load_image_folder_zip", "load_text_csv", "photo_eval_set", "sentence_eval_set",
           "split_sentences", "tokenize_sentences"]
