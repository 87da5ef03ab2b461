"""Multilingual sample texts for parity checks (export report and tests)."""

from __future__ import annotations

SAMPLES: list[str] = [
    "What is the capital of France?",
    "Berlin ist die Hauptstadt und bevölkerungsreichste Stadt Deutschlands.",
    "Le chat dort sur le canapé pendant que la pluie tombe doucement dehors.",
    "¿Dónde está la biblioteca más cercana? Necesito devolver tres libros hoy.",
    "東京は日本の首都であり、世界最大級の都市圏を持つ。",
    "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。",  # noqa: RUF001
    "القاهرة هي عاصمة مصر وأكبر مدنها، وتقع على ضفاف نهر النيل.",
    "Москва — столица России и крупнейший по численности населения город страны.",
    "भारत की राजधानी नई दिल्ली है, जो यमुना नदी के किनारे स्थित है।",
    "x",
    "  leading and trailing whitespace\n\n",
    "Emoji 🚀🌍 and symbols ∑∫√ mixed with code: def f(x): return x ** 2",
    (
        "A long passage that repeats to reach a few hundred tokens. "
        "Embedding models map text to vectors so that similar meanings land close together; "
        "binary quantization keeps one bit per dimension and rescoring restores precision. "
    )
    * 8,
]

# Text that tokenizers disagree on (issue 9): every prompt's export is checked to give the same token
# ids from the shipped tokenizer.json (Rust ``tokenizers``, as the service runs it) and from the
# checkpoint's own transformers tokenizer class. One string per trap, so a failure names the trap.
HOSTILE: list[str] = [
    "trailing space ",
    " leading space",
    "  both sides  ",
    "runs   of    spaces",
    "tab\tseparated\t\tcolumns\t",
    "windows\r\nline\r\nendings\r\n",
    "old mac\rline ends\r",
    "unix\nlines\n\n\n",
    "\n\t \r\n",
    " ",
    "",
    "zero\u200bwidth\u200cnon\u200djoiner\u2060word\ufeffbom",
    "\u200b",
    "مرحبا بالعالم \u200e",  # Arabic with a trailing left-to-right mark (the real-world case)
    "x\u200e",
    "\u200fשלום\u200f עולם",  # noqa: RUF001
    "bidi \u202aembedded\u202c \u2066isolate\u2069 \u202eoverride\u202c",
    "caf\u00e9 NFC",
    "cafe\u0301 NFD",
    "\u1e9b\u0323 \u212b \u00c5 A\u030a",  # canonical and compatibility equivalents
    "\ufb01 ligature, \uff21\uff22\uff23 fullwidth, \u2460 circled, \u00bd",
    "no\u00a0break\u2009thin\u3000ideographic space",
    "emoji 🚀🌍 👩‍💻 family 👨‍👩‍👧‍👦 flag 🇩🇪 skin 👍🏽 keycap 1️⃣",
    "東京タワーは高さ333メートル。　全角スペース",
    "机器学习，深度学习；自然语言处理！",  # noqa: RUF001
    "القاهرة هي عاصمة مصر، وأكبر مدنها.",
    "हिन्दी में लिखा गया वाक्य, क्षत्रिय ज्ञान।",
    "<|im_end|> <|im_start|>user\n<|endoftext|>",
    "<s> </s> <pad> <unk> <mask> [CLS] [SEP] [PAD] [MASK] [UNK]",
    "a<|im_end|>b <s>x</s> y[SEP]z",
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 6,
    "x" * 300,
    "日本" * 120,
    "https://example.com/a?b=c&d=%20e#frag user@example.org C:\\path\\file.txt",
    "def f(x):\n    return x ** 2  # comment\n\treturn None",
    "\u0000nul \u0007bell \u001besc \u007fdel \u0085nel \u2028line \u2029para",
    "ÅÄÖ åäö ÑñÇç ẞß İı ΣσςΩ Ǆǅǆ",
]
