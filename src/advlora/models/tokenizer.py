"""A small WordPiece tokenizer with a deterministic vocabulary, saved as a Hugging Face tokenizer.

``tokenizers``' WordPiece trainer breaks frequency ties in hash-map order, which differs between processes;
two builds on the same captions then disagree on token ids. The vocabulary here is built by counting words
in Python instead: special tokens, every character (alone and as a ``##`` continuation), then whole words by
descending count (ties alphabetical). Words outside it fall back to characters, as WordPiece does.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2000, max_length: int = 32) -> PreTrainedTokenizerFast:
    """A lower-case WordPiece tokenizer ([CLS] text [SEP], BERT-style special tokens) for ``texts``.

    Both tiny CLIP and tiny BLIP use it: CLIP pools the last token ([SEP], the eos), BLIP the first ([CLS]).
    The ids of the special tokens are fixed: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for t in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    vocab: dict[str, int] = {}
    for tok in [*SPECIAL, *chars, *(f"##{c}" for c in chars)]:
        vocab.setdefault(tok, len(vocab))
    for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", bos_token="[CLS]", eos_token="[SEP]",
                                   model_max_length=max_length)
