"""Image to text: a convolutional encoder of region features and recurrent captioners over it
(Show and Tell, Vinyals et al. 2016; Show, Attend and Tell, Xu et al. 2015), decoded with the
beam search of :mod:`rnnlab.seq2seq`, and the word-region alignment model of Karpathy &
Fei-Fei (2017). See docs/captioning.md and docs/captioning_alignment.md."""

from rnnlab.captioning.alignment import (
    RegionAlignment,
    alignment_accuracy,
    alignment_png,
    encode_sentences,
    ranking_loss,
    score_matrix,
    viterbi_align,
)
from rnnlab.captioning.encoder import ConvEncoder
from rnnlab.captioning.io import (
    KINDS,
    MODEL_KINDS,
    Caption,
    attention_overlay_png,
    caption_images,
    checkpoint_name,
    find_captioner,
    load_captioner,
    load_image,
    save_captioner,
)
from rnnlab.captioning.models import CaptionOutput, ShowAndTell, ShowAttendTell

__all__ = ["KINDS", "MODEL_KINDS", "Caption", "CaptionOutput", "ConvEncoder", "RegionAlignment",
           "ShowAndTell", "ShowAttendTell", "alignment_accuracy", "alignment_png",
           "attention_overlay_png", "caption_images", "checkpoint_name", "encode_sentences",
           "find_captioner", "load_captioner", "load_image", "ranking_loss", "save_captioner",
           "score_matrix", "viterbi_align"]
