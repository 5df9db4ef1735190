"""A plain reference BERT tokenizer (the basic tokenizer then greedy longest-match-first WordPiece, as in Google's
original tokenization.py and Hugging Face's BertTokenizer), written from the algorithm's description, to check
Recycling.Training's tokenisation (Microsoft.ML.Tokenizers) against an independent implementation.
Run: /usr/bin/python3 scripts/training/bert_tokenize.py VOCAB.txt
  (VOCAB: all-MiniLM-L6-v2's, e.g. from `recycle zoo fetch minilm`; writes Recycling.Tests/Training/Fixtures/minilm_tokens.json)."""
import json, os, sys, unicodedata

SENTENCES = [
    "This is a test.",
    "Hello world! How are you?",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage, while the crowd cheers.",
    "I can't believe it's already 2026 -- time flies!",
    "Café déjà vu: naïve résumé façade.",
    "UPPER case And MiXeD CaSe words",
    "Tokenization of unaffable, antidisestablishmentarianism and hyperparameters.",
    "Prices rose 3.5% to $1,234.56 (about €1.000) on 12/05/2024.",
    "東京は日本の首都です。 北京 is the capital of China.",
    "Emoji 😀 and symbols ♥ ☃ are rare in vocabularies.",
    "e-mail: someone@example.com, url: https://example.org/a?b=c",
    "Tabs\tand\nnewlines   and  many    spaces, no\u00a0break\u3000ideographic",
    "Ångström, Dvořák, Łódź, São Paulo, Ελληνικά, Русский, 한국어, ﬁne ligature",
    "\"Quoted\" text with 'single quotes' and [brackets] {braces} <angles>",
    "Supercalifragilisticexpialidocious" * 5,
    "",
]


def load_vocab(path):
    with open(path, encoding="utf-8") as f:
        return {line.rstrip("\r\n"): i for i, line in enumerate(f)}


def is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokenize(text, lower):
    cleaned = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
            continue
        if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
            cleaned.append(" ")
        elif is_cjk(cp):
            cleaned.append(" " + ch + " ")
        else:
            cleaned.append(ch)
    tokens = []
    for word in "".join(cleaned).split():
        if lower:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        current = ""
        for ch in word:
            if is_punctuation(ch):
                if current:
                    tokens.append(current)
                tokens.append(ch)
                current = ""
            else:
                current += ch
        if current:
            tokens.append(current)
    return tokens


def wordpiece(word, vocab, max_chars=100):
    if len(word) > max_chars:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = ("##" if start > 0 else "") + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def pieces(text, vocab, lower=True):
    return [vocab[p] for word in basic_tokenize(text, lower) for p in wordpiece(word, vocab)]


def encode(text, vocab, lower=True):
    return [vocab["[CLS]"]] + pieces(text, vocab, lower) + [vocab["[SEP]"]]


def encode_pair(text, pair, vocab, max_length):
    """[CLS] a [SEP] b [SEP] with token types 0/1, truncated 'longest_first': one token at a time from the longer."""
    a, b = pieces(text, vocab), pieces(pair, vocab)
    while len(a) + len(b) > max_length - 3:
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    ids = [vocab["[CLS]"]] + a + [vocab["[SEP]"]] + b + [vocab["[SEP]"]]
    return ids, [0] * (len(a) + 2) + [1] * (len(b) + 1)


if __name__ == "__main__":
    vocab = load_vocab(sys.argv[1])
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Recycling.Tests", "Training", "Fixtures", "minilm_tokens.json")
    cases = [{"text": s, "ids": encode(s, vocab)} for s in SENTENCES]
    for i in range(0, 8, 2):
        ids, types = encode_pair(SENTENCES[i], SENTENCES[i + 7], vocab, 16)
        cases.append({"text": SENTENCES[i], "pair": SENTENCES[i + 7], "max_length": 16, "ids": ids, "types": types})
    with open(out, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n]\n")
    for c in cases[:3]:
        print(c["text"], c["ids"])
