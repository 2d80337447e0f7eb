"""A small WordPiece tokenizer built with ``tokenizers`` and saved as a Hugging Face tokenizer."""
from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2000, max_length: int = 32) -> PreTrainedTokenizerFast:
    """Train a lower-case WordPiece tokenizer on ``texts`` ([CLS] text [SEP], BERT-style special tokens).

    Both tiny CLIP and tiny BLIP use it: CLIP pools the last token ([SEP], the eos), BLIP the first ([CLS]).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tok.train_from_iterator(list(texts), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", bos_token="[CLS]", eos_token="[SEP]", model_max_length=max_length)
