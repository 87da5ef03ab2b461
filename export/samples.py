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
