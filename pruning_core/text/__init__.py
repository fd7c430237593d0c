"""Pretrained text encoders, offline: loading all-MiniLM-L6-v2 as one-tensor ``SentenceEncoder`` (``encoder``), its
attention-head and FFN-neuron groups with a magnitude plan (``groups``), and how far pruned embeddings moved
(``metrics``). transformers is imported only when an encoder is loaded."""

from .encoder import (
    EncoderLoadError,
    SentenceEncoder,
    builtin_minilm,
    builtin_minilm_folder,
    encode,
    load_sentence_encoder,
    tokenize,
)
from .groups import EncoderGroups, build_encoder_groups, encoder_channel_scores, encoder_plan
from .metrics import EmbeddingAgreement, embedding_agreement, embedding_cosine, neighbour_agreement, topk_overlap

__all__ = ["EmbeddingAgreement", "EncoderGroups", "EncoderLoadError", "SentenceEncoder", "build_encoder_groups",
           "builtin_minilm", "builtin_minilm_folder", "embedding_agreement", "embedding_cosine", "encode",
           "encoder_channel_scores", "encoder_plan", "load_sentence_encoder", "neighbour_agreement", "tokenize",
           "topk_overlap"]
