"""Sequence to sequence: encoder-decoder models (Cho et al. 2014; Sutskever et al. 2014),
attention (Bahdanau et al. 2015; Luong et al. 2015), pointer networks (Vinyals et al. 2015),
greedy and batched beam-search decoding, the masked sequence loss. Token ids only: the
vocabulary lives in ``rnnlab.tasks.seq2seq``. See docs/seq2seq.md.
"""

from rnnlab.seq2seq.decoding import (
                                     Decoded,
                                     Hypothesis,
                                     beam_search,
                                     greedy_decode,
                                     hypotheses_to_tensor,
                                     length_penalty,
)
from rnnlab.seq2seq.model import (
                                     AdditiveAttention,
                                     Encoder,
                                     MultiplicativeAttention,
                                     Seq2Seq,
                                     Seq2SeqOutput,
                                     maxout,
                                     reverse_within_lengths,
)
from rnnlab.seq2seq.pointer import PointerNetwork, PointerOutput
from rnnlab.seq2seq.training import (
    TrainerAdapter,
                                     average_checkpoints,
                                     scheduled_sampling_probability,
                                     sequence_loss,
                                     train_step,
)

__all__ = [
    "AdditiveAttention", "Decoded", "Encoder", "Hypothesis", "MultiplicativeAttention",
    "PointerNetwork", "PointerOutput", "Seq2Seq", "Seq2SeqOutput", "TrainerAdapter",
    "average_checkpoints",
    "beam_search", "greedy_decode", "hypotheses_to_tensor", "length_penalty", "maxout",
    "reverse_within_lengths", "scheduled_sampling_probability", "sequence_loss", "train_step",
]
