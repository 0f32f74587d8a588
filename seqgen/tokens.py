"""Reserved token ids shared by every layer (data, models, decoding, metrics).

Every vocabulary in seqgen starts with these four symbols, so decoders and metrics can
use the ids without importing a tokenizer.
"""

PAD_ID = 0  # padding; a finished row emits PAD
BOS_ID = 1  # fed as the first input of every sequence
EOS_ID = 2  # end of sequence; predicted as the last target
UNK_ID = 3  # unknown symbol (data only)
NUM_SPECIAL = 4
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
