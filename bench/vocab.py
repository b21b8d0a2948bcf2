"""Benchmark of `kolm vocab extend` (issue 2): compression, English identity, reachability, wall time.

    python bench/vocab.py [--new-tokens 16000] [--repeat 3]

- Extends Llama-2 with Korean tokens learned from 90% of ../shared/corpora/ko_dev.txt (every 10th line is held
  out) and compares characters per token on the held-out Korean and on English (en_dev.txt) with Llama-2,
  Llama-3 and a Korean-only SentencePiece-style BPE with the same number of tokens trained on the same text.
- Bar: on held-out Korean the extended Llama-2 reaches >= 95% of the Korean-only BPE's chars/token, English ids
  are 100% identical to Llama-2 and no added token is unreachable.
- Wall time: `kolm vocab extend` (in-process, median of --repeat runs) against bare `tokenizers` BpeTrainer on
  the same text in the same run. Bar: <= 1.5x.
- The morpheme-aware mode is compared with the default at the same (smaller) size, which both modes support.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import lines, median_time, need_shared, print_json, print_table  # noqa: E402


def korean_only_bpe(train: list[str], vocab_size: int):
    """A SentencePiece-style BPE (byte fallback, `▁` spaces) trained from scratch on the Korean text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(train, trainer)
    return tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=16000)
    ap.add_argument("--morph-tokens", type=int, default=5000, help="size for the default-vs-morpheme-aware rows")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from tokenizers import Tokenizer

    from kolm.vocab.extend import ExtendConfig, run
    from kolm.vocab.morph import get_kiwi
    from kolm.vocab.report import measure

    shared = need_shared()
    ko = lines("ko_dev.txt")
    train = [x for i, x in enumerate(ko) if i % 10]
    held = [x for i, x in enumerate(ko) if i % 10 == 0]
    en = lines("en_dev.txt")
    tmp = Path(tempfile.mkdtemp(prefix="kolm-bench-vocab-"))
    corpus = tmp / "ko_train.txt"
    corpus.write_text("\n".join(train) + "\n", encoding="utf-8")
    llama2, llama3 = shared / "tokenizers" / "llama2", shared / "tokenizers" / "llama3"
    get_kiwi()  # load once, outside the timings

    def extend(n: int, out: str, morph: bool = False) -> dict:
        cfg = ExtendConfig(base=str(llama2), corpus=[str(corpus)], num_new_tokens=n, output=str(tmp / out),
                           min_frequency=1, morpheme_aware=morph, overwrite=True)
        return run(cfg)

    # min_frequency=1 for both: BpeTrainer's default keeps merges seen once, and 16k merges need them here
    t_bare, ko_only = median_time(lambda: korean_only_bpe(train, args.new_tokens), args.repeat)
    t_kolm, info = median_time(lambda: extend(args.new_tokens, "ext"), args.repeat)
    extend(args.morph_tokens, "ext_small")
    extend(args.morph_tokens, "ext_small_morph", morph=True)

    toks = {
        "llama2": Tokenizer.from_file(str(llama2 / "tokenizer.json")),
        f"llama2+kolm {args.new_tokens}": Tokenizer.from_file(str(tmp / "ext" / "tokenizer.json")),
        f"llama2+kolm {args.morph_tokens}": Tokenizer.from_file(str(tmp / "ext_small" / "tokenizer.json")),
        f"llama2+kolm {args.morph_tokens} morph": Tokenizer.from_file(str(tmp / "ext_small_morph" / "tokenizer.json")),
        "llama3": Tokenizer.from_file(str(llama3 / "tokenizer.json")),
        f"korean-only BPE {args.new_tokens}": ko_only,
    }
    base_en = [e.ids for e in toks["llama2"].encode_batch(en, add_special_tokens=False)]
    rows = []
    for name, tok in toks.items():
        m_ko = measure(tok, held, morphemes=True)
        m_en = measure(tok, en, morphemes=False)
        same = sum(a.ids == b for a, b in zip(tok.encode_batch(en, add_special_tokens=False), base_en, strict=True))
        rows.append({
            "tokenizer": name,
            "vocab": tok.get_vocab_size(with_added_tokens=True),
            "ko held-out c/tok": m_ko["chars_per_token"],
            "ko words c/tok": m_ko["ko_chars_per_token"],
            "en c/tok": m_en["chars_per_token"],
            "morph-aligned": m_ko["morph_precision"],
            "en ids = llama2": f"{100 * same / len(en):.2f}%" if name.startswith("llama2") else "-",
        })
    print_table(rows, f"Korean held-out: {len(held)} lines; English: {len(en)} lines (en_dev.txt)")

    ext_row, ko_row = rows[1], rows[-1]
    ratio_lines = ext_row["ko held-out c/tok"] / ko_row["ko held-out c/tok"]
    ratio_words = ext_row["ko words c/tok"] / ko_row["ko words c/tok"]
    learn = info["seconds"]["read"] + info["seconds"]["learn"]
    bars = [
        {"check": "ko words c/tok vs Korean-only BPE", "value": f"{ratio_words:.3f}", "bar": ">= 0.95",
         "ok": ratio_words >= 0.95},
        {"check": "ko whole lines c/tok vs Korean-only BPE", "value": f"{ratio_lines:.3f}", "bar": ">= 0.95",
         "ok": ratio_lines >= 0.95},
        {"check": "English ids identical", "value": ext_row["en ids = llama2"], "bar": "100%",
         "ok": ext_row["en ids = llama2"] == "100.00%"},
        {"check": "unreachable added tokens", "value": str(info["checks"]["unreachable_tokens"]), "bar": "0",
         "ok": info["checks"]["unreachable_tokens"] == 0},
        {"check": "wall time: full command / bare BpeTrainer", "value": f"{t_kolm / t_bare:.2f}x "
         f"({t_kolm:.2f}s / {t_bare:.2f}s)", "bar": "<= 1.5x", "ok": t_kolm / t_bare <= 1.5},
        {"check": "wall time: read+learn only / bare BpeTrainer", "value": f"{learn / t_bare:.2f}x", "bar": "-",
         "ok": learn / t_bare <= 1.5},
    ]
    print_table(bars, f"Bars (kolm: +{info['num_added']} tokens, {info['num_new_chars']} chars; "
                      f"median of {args.repeat} runs)")
    print_json("vocab", {"rows": rows, "bars": bars, "seconds": {"kolm": t_kolm, "bare_bpe": t_bare},
                         "extension": {k: v for k, v in info.items() if k != "added"}})
    json.dump({"rows": rows, "bars": bars}, open(tmp / "result.json", "w"), ensure_ascii=False)


if __name__ == "__main__":
    main()
