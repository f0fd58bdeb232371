"""Text in and out: tokenizers (SentencePiece, HF `tokenizer.json`), streaming
detokenization and chat templates."""

from .chat import ChatTemplate, Message, read_chat_template
from .detokenizer import DecodeStreamDetokenizer, Detokenizer, StreamingDetokenizer
from .tokenizer import HFTokenizer, SentencePieceTokenizer, Tokenizer, compare_vocabularies, load_tokenizer

__all__ = ["ChatTemplate", "DecodeStreamDetokenizer", "Detokenizer", "HFTokenizer", "Message", "SentencePieceTokenizer", "StreamingDetokenizer", "Tokenizer",
           "compare_vocabularies", "load_tokenizer", "read_chat_template"]
