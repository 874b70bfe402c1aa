"""Sequence-to-sequence data: vocabularies and tokenisers, offline data sets with known answers
(reversal/copy/sort, CLDR date normalisation, number words, pointer sorting and convex hulls)
and the metrics (exact match, token accuracy, BLEU, chrF by sacrebleu), bucketed by length.
See ``docs/seq2seq_tasks.md``."""

from rnnlab.tasks.seq2seq.data import (
    DATE_FORMATS,
    NUMBER_LANGUAGES,
    TOKEN_TASKS,
    Pairs,
    date_locale_split,
    date_locales,
    dates,
    number_split,
    number_words,
    token_task,
)
from rnnlab.tasks.seq2seq.metrics import (
    METRICS,
    bleu,
    bucket_edges,
    bucketed,
    chrf,
    exact_match,
    signatures,
    token_accuracy,
)
from rnnlab.tasks.seq2seq.pointer import (
    POINTER_TASKS,
    PointerData,
    add_end_position,
    convex_hull,
    hull_order,
    pointer_sort,
    pointer_task,
)
from rnnlab.tasks.seq2seq.vocab import (
    BOS,
    EOS,
    PAD,
    UNK,
    Batch,
    CharTokenizer,
    Vocabulary,
    WordTokenizer,
    get_tokenizer,
    iterate_batches,
    make_batch,
    pad_ids,
)

__all__ = [
    "BOS", "DATE_FORMATS", "EOS", "METRICS", "NUMBER_LANGUAGES", "PAD", "POINTER_TASKS",
    "TOKEN_TASKS", "UNK", "Batch", "CharTokenizer", "Pairs", "PointerData", "Vocabulary",
    "WordTokenizer", "add_end_position", "bleu", "bucket_edges", "bucketed", "chrf", "convex_hull",
    "date_locale_split", "date_locales", "dates", "exact_match", "get_tokenizer", "hull_order",
    "iterate_batches", "make_batch", "number_split",
    "number_words", "pad_ids", "pointer_sort", "pointer_task",
    "signatures", "token_accuracy", "token_task",
]
