"""Benchmark of `kolm vocab extend`: compression, English identity, reachability, wall time.

    python bench/vocab.py [--new-tokens 16000] [--repeat 3] [--scales 1,8,32,64]

- Extends Llama-2 with Korean tokens learned from 90% of ../shared/corpora/ko_dev.txt (every 10th line is held
  out) and compares characters per token on the held-out Korean and on English (en_dev.txt) with Llama-2,
  Llama-3 (and Llama-3 extended with --llama3-tokens) and a Korean-only SentencePiece-style BPE with the same
  number of tokens trained on the same text.
- The Korean-only reference for the bar splits digits one by one, as Llama-2 (and Mistral) do: no base with that
  rule has a multi-digit token, and an extension may not add one (it would change how English numbers
  tokenize). A second reference that merges digits is printed beside it.
- Bar: on held-out Korean the extended Llama-2 reaches >= 95% of the Korean-only BPE's chars/token, English ids
  are 100% identical to Llama-2 and no added token is unreachable.
- Wall time: `kolm vocab extend` (in-process, median of --repeat runs; it reads the corpus file and writes the
  tokenizer folder) against a bare `tokenizers` BpeTrainer that trains from the same file and saves its
  tokenizer.json, in the same run. Bar: <= 1.5x. Measured on the training file and on copies of it repeated
  k times (--scales): repetition keeps the learned merges and scales the counting work, which is how a larger
  corpus differs; kolm's fixed costs (loading the 32k base, building and checking the 48k result) do not grow.
- The morpheme-aware mode is compared with the default at the same (smaller) size, which both modes support.
- Corpus scale (does the command stay fast and small on a large corpus? ``--scale-mb``, ``--skip-scale`` to
  leave it out): wall time and peak RSS of the whole
  process tree (the command and its worker processes, /proc polled every 50 ms) of `kolm vocab extend` run as a
  command, against the bare BpeTrainer in its own process, on the training file repeated to 100 MB and 1 GB
  (medians of --scale-repeat at 100 MB, one run at 1 GB), on the largest *distinct* Korean text this machine
  has (ko_dev.txt plus Korean help pages of Debian's gimp-help-ko and libreoffice-help-ko, fetched with
  `apt-get download` when apt is there; ``--distinct FILE`` to give one), on one 50 MB line against the same
  bytes in lines (a line is read in bounded pieces, never whole), and the morpheme-aware mode with 1 and 2 processes (at
  --morph-tokens). Bars: kolm / bare <= 1.0x at >= 100 MB, peak RSS <= 0.5 GB at 100 MB and 1 GB and flat between them.
  Large files go to bench/out/.
- Budget-sized vocabularies (``--budgets``, alone; ``--sizes 256,1000,2000,8000``): SmolLM2's tokenizer (the cached
  model, when it is there), Llama-3, Llama-2 and Mistral extended by each size in both modes (``bpe``,
  ``syllables``) on the same 90% of ko_dev.txt (min_frequency 1, allow_fewer), each through ``kolm vocab extend``
  itself (so its checks ran): Korean bytes per token on the held-out 10%, the share of Hangul syllable occurrences
  that no token boundary splits, and the exact expansion (``TokenizerExtension.expansion_table`` + ``expand``)
  against the base tokenization on the held-out Korean, 2,000 English lines and mixed lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, harvest_distinct, lines, median_time, need_shared, print_json, print_table  # noqa: E402

from kolm.artifacts import TokenizerExtension  # noqa: E402


def korean_only_bpe(train: list[str] | Path, vocab_size: int, split_digits: bool = True):
    """A SentencePiece-style BPE (byte fallback, `▁` spaces) trained from scratch on the Korean text (a list of
    lines, or a file that the Rust trainer reads itself); ``split_digits`` as Llama-2's SentencePiece model."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    pre = [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)]
    if split_digits:
        pre.append(pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    if isinstance(train, Path):
        tok.train([str(train)], trainer)
    else:
        tok.train_from_iterator(train, trainer)
    return tok


def bare_bpe_file(corpus: Path, vocab_size: int, out: Path) -> None:
    """What a bare `tokenizers` script does: train from the file, save tokenizer.json."""
    korean_only_bpe(corpus, vocab_size).save(str(out))


# ------------------------------------------------------------------------------------------------ corpus scale


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (0 once it is gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(x.split()[1]) for x in fh if x.startswith("VmRSS:")), 0)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / 1024


def measured(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS of the process tree in MB) of a command; exits with its stderr if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mb(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{err[-3000:]}")
    return wall, peak


def repeat_to(src: Path, dst: Path, mb: float) -> Path:
    """``dst``: ``src`` repeated to at least ``mb`` MB (kept if already there)."""
    want = int(mb * 1e6)
    if not dst.is_file() or dst.stat().st_size < want:
        data = src.read_bytes()
        with dst.open("wb") as fh:
            for _ in range(-(-want // len(data))):
                fh.write(data)
    return dst


def one_line(src: Path, dst: Path, mb: float) -> Path:
    """``dst``: the documents of ``src`` joined by spaces into ONE line of at least ``mb`` MB."""
    if not dst.is_file():
        line = " ".join(src.read_text(encoding="utf-8").split("\n")).strip().encode()
        with dst.open("wb") as fh:
            for _ in range(-(-int(mb * 1e6) // (len(line) + 1))):
                fh.write(line + b" ")
            fh.write(b"\n")
    return dst


def scale_rows(args: argparse.Namespace, train_file: Path, base: Path) -> list[dict]:
    """The corpus-scale table (see the module docstring)."""
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)

    def kolm_cmd(src: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "kolm.cli", "vocab", "extend", "--base", str(base), "--corpus", str(src),
                "--num-new-tokens", str(args.new_tokens), "--min-frequency", "1", "--output",
                str(out / "ext-scale"), "--overwrite", *extra]  # a later --num-new-tokens in extra wins

    def bare_cmd(src: Path) -> list[str]:
        return [sys.executable, __file__, "--bare", str(src), "--new-tokens", str(args.new_tokens)]

    def row(name: str, src: Path, repeat: int, *extra: str, bare: bool = True) -> dict:
        runs_b = [measured(bare_cmd(src)) for _ in range(repeat)] if bare else []
        runs_k = [measured(kolm_cmd(src, *extra)) for _ in range(repeat)]
        tb = statistics.median(t for t, _ in runs_b) if bare else None
        tk = statistics.median(t for t, _ in runs_k)
        info = TokenizerExtension.read(out / "ext-scale").details
        got = {"corpus": name, "MB": round(src.stat().st_size / 1e6, 1), "runs": repeat,
                "bare s": round(tb, 1) if bare else "-", "kolm s": round(tk, 1),
                "kolm / bare": f"{tk / tb:.2f}x" if bare else "-",
                "bare peak MB": round(max(m for _, m in runs_b)) if bare else "-",
                "kolm peak MB": round(max(m for _, m in runs_k)), "procs": info["num_proc"],
                "windowed docs": info["long_documents"]["windowed"]}
        print("scale row " + json.dumps(got), flush=True)  # partial results survive a failure further on
        return got

    rows = []
    sizes = [float(x) for x in args.scale_mb.split(",")]
    for mb in sizes:
        src = repeat_to(train_file, out / f"ko_train_{mb:g}mb.txt", mb)
        rows.append(row(f"train x{src.stat().st_size / train_file.stat().st_size:.0f} ({mb:g} MB)", src,
                        args.scale_repeat if mb <= 200 else 1))
    distinct = Path(args.distinct) if args.distinct else harvest_distinct(out / "ko_distinct.txt",
                                                                          need_shared() / "corpora" / "ko_dev.txt")
    if distinct:
        rows.append(row("distinct Korean", distinct, args.scale_repeat))
    lines50 = repeat_to(train_file, out / "ko_train_50mb.txt", 50)
    line50 = one_line(train_file, out / "ko_one_line_50mb.txt", 50)
    rows.append(row("50 MB in lines", lines50, 1))
    rows.append(row("50 MB in ONE line", line50, 1))
    morph = repeat_to(train_file, out / f"ko_train_{args.morph_mb:g}mb.txt", args.morph_mb)
    for n in (1, 2):
        rows.append(row(f"morpheme-aware, {n} proc", morph, 1, "--morpheme-aware", "--num-proc", str(n),
                        "--num-new-tokens", str(args.morph_tokens), bare=False))
    return rows


def scale_bars(rows: list[dict]) -> list[dict]:
    bars = []
    big = [r for r in rows if r["corpus"].startswith("train") and r["MB"] >= 100]
    for r in big:
        ratio = float(r["kolm / bare"][:-1])
        bars.append({"check": f"wall time {r['corpus']}: kolm / bare BpeTrainer", "value": r["kolm / bare"],
                     "bar": "<= 1.0x", "ok": ratio <= 1.0})
        bars.append({"check": f"peak RSS {r['corpus']} (process tree)", "value": f"{r['kolm peak MB']} MB",
                     "bar": "<= 500 MB", "ok": r["kolm peak MB"] <= 500})
    if len(big) >= 2:
        grow = big[-1]["kolm peak MB"] / big[0]["kolm peak MB"]
        bars.append({"check": f"peak RSS {big[-1]['MB']} MB / {big[0]['MB']} MB", "value": f"{grow:.2f}x",
                     "bar": "flat (<= 1.2x)", "ok": grow <= 1.2})
    one = {r["corpus"]: r for r in rows}
    if "50 MB in ONE line" in one:
        a, b = one["50 MB in ONE line"], one["50 MB in lines"]
        bars.append({"check": "one 50 MB line vs the same bytes in lines: time, peak RSS",
                     "value": f"{a['kolm s'] / b['kolm s']:.2f}x, {a['kolm peak MB'] / b['kolm peak MB']:.2f}x",
                     "bar": "<= 1.5x, <= 1.5x",
                     "ok": a["kolm s"] <= 1.5 * b["kolm s"] and a["kolm peak MB"] <= 1.5 * b["kolm peak MB"]})
    return bars


def budget_rows(sizes: list[int], work: Path) -> list[dict]:
    """The budget table (see the module docstring): one row per base, size and mode."""
    from tokenizers import Tokenizer

    from kolm.artifacts.extension import expand
    from kolm.vocab.extend import ExtendConfig, run
    from kolm.vocab.report import measure

    shared = need_shared()
    ko = lines("ko_dev.txt")
    train, held = [x for i, x in enumerate(ko) if i % 10], [x for i, x in enumerate(ko) if i % 10 == 0]
    other = lines("en_dev.txt")[:2000] + [f"{a} {b}" for a, b in zip(held[:300], lines("en_dev.txt")[-300:],
                                                                      strict=False)]
    corpus = work / "ko_train.txt"
    corpus.write_text("\n".join(train) + "\n", encoding="utf-8")
    bases = {name: shared / "tokenizers" / name for name in ("llama3", "llama2", "mistral")}
    try:
        from kolm.model.zoo import smollm2

        bases = {"smollm2": Path(smollm2()), **bases}
    except Exception as e:  # noqa: BLE001 - the table is still worth having without it
        print(f"SmolLM2 left out: {e}")
    rows = []
    for name, folder in bases.items():
        base = Tokenizer.from_file(str(folder / "tokenizer.json"))
        m = measure(base, held)
        rows.append({"tokenizer": name, "size": 0, "mode": "base", "added": 0, "syllable tokens": "-",
                     "ko bytes/tok": m["bytes_per_token"], "syllables whole": 1 - m["ko_split_char_share"],
                     "expansion = base": "-", "s": "-"})
        want = [e.ids for e in base.encode_batch(held + other, add_special_tokens=False)]
        for n in sizes:
            for mode in ("bpe", "syllables"):
                out = work / f"{name}-{n}-{mode}"
                t0 = time.perf_counter()
                info = run(ExtendConfig(base=str(folder), corpus=[str(corpus)], num_new_tokens=n, output=str(out),
                                        min_frequency=1, mode=mode, allow_fewer=True, overwrite=True))
                secs = time.perf_counter() - t0
                tok = Tokenizer.from_file(str(out / "tokenizer.json"))
                m = measure(tok, held)
                table = TokenizerExtension.read(out).expansion_table()
                got = [e.ids for e in tok.encode_batch(held + other, add_special_tokens=False)]
                same = sum(expand(g, table)[0] == w for g, w in zip(got, want, strict=True))
                rows.append({"tokenizer": name, "size": n, "mode": mode, "added": info["num_added"],
                             "syllable tokens": info["num_syllable_tokens"] or info["num_new_chars"],
                             "ko bytes/tok": m["bytes_per_token"], "syllables whole": 1 - m["ko_split_char_share"],
                             "expansion = base": f"{same}/{len(want)}", "s": round(secs, 1)})
                print("budget row " + json.dumps(rows[-1], ensure_ascii=False), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=16000)
    ap.add_argument("--morph-tokens", type=int, default=5000, help="size for the default-vs-morpheme-aware rows")
    ap.add_argument("--llama3-tokens", type=int, default=6000, help="size of the Llama-3 extension row")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scales", default="1,8,32,64",
                    help="wall time on the training file repeated k times, for each k in this list")
    ap.add_argument("--scale-mb", default="100,1000", help="sizes (MB) of the corpus-scale rows")
    ap.add_argument("--scale-repeat", type=int, default=3, help="runs per corpus-scale row up to 200 MB (median)")
    ap.add_argument("--morph-mb", type=float, default=4.0, help="corpus size of the morpheme-aware timing rows")
    ap.add_argument("--distinct", help="a distinct Korean corpus for the scale table (default: harvested)")
    ap.add_argument("--skip-scale", action="store_true", help="leave out the corpus-scale table")
    ap.add_argument("--scale-only", action="store_true", help="only the corpus-scale table")
    ap.add_argument("--budgets", action="store_true", help="only the budget-sized vocabularies table")
    ap.add_argument("--sizes", default="256,1000,2000,8000", help="extension sizes of the --budgets table")
    ap.add_argument("--bare", help=argparse.SUPPRESS)  # child process: the bare BpeTrainer on this file
    args = ap.parse_args()
    if args.bare:
        bare_bpe_file(Path(args.bare), args.new_tokens, Path(tempfile.mkdtemp()) / "bare.json")
        return
    if args.budgets:
        rows = budget_rows([int(x) for x in args.sizes.split(",")], Path(tempfile.mkdtemp(prefix="kolm-budgets-")))
        print_table(rows, "Korean held-out (every 10th line of ko_dev.txt): bytes per token, share of Hangul syllable "
                          "occurrences inside one token; expansion: held-out Korean + English + mixed lines")
        print_json("vocab_budgets", {"rows": rows})
        return
    if args.scale_only:
        train = [x for i, x in enumerate(lines("ko_dev.txt")) if i % 10]
        corpus = REPO / "bench" / "out" / "ko_train.txt"
        corpus.write_text("\n".join(train) + "\n", encoding="utf-8")
        scale = scale_rows(args, corpus, need_shared() / "tokenizers" / "llama2")
        print_table(scale, "Corpus scale (see the module docstring)")
        print_table(scale_bars(scale), "Bars")
        print_json("vocab_scale", {"scale": scale, "bars": scale_bars(scale)})
        return
    scales = sorted({int(k) for k in args.scales.split(",")} | {1})

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

    def extend(n: int, out: str, morph: bool = False, src: Path = corpus, base: Path = llama2) -> dict:
        cfg = ExtendConfig(base=str(base), corpus=[str(src)], num_new_tokens=n, output=str(tmp / out),
                           min_frequency=1, morpheme_aware=morph, overwrite=True)
        return run(cfg)

    # min_frequency=1 for kolm: BpeTrainer's default keeps merges seen once, and 16k merges need them here
    timing, info = [], None
    for k in scales:
        src = corpus if k == 1 else tmp / f"ko_train_x{k}.txt"
        if k > 1:
            src.write_text(corpus.read_text(encoding="utf-8") * k, encoding="utf-8")
        out = "ext" if k == 1 else "ext_scaled"
        t_bare, _ = median_time(lambda src=src: bare_bpe_file(src, args.new_tokens, tmp / "bare.json"), args.repeat)
        t_kolm, got = median_time(lambda src=src, out=out: extend(args.new_tokens, out, src=src), args.repeat)
        info = got if k == 1 else info
        sec = got["seconds"]
        timing.append({"corpus": f"x{k}", "MB": round(src.stat().st_size / 1e6, 1), "bare s": t_bare,
                       "kolm s": t_kolm, "kolm / bare": f"{t_kolm / t_bare:.2f}x",
                       "kolm read+learn s": sec["read"] + sec["learn"], "kolm check+write s":
                       sec["total"] - sec["read"] - sec["learn"], "bar <= 1.5x": t_kolm / t_bare <= 1.5})
        print(f"timed x{k}: bare {t_bare:.2f}s, kolm {t_kolm:.2f}s", flush=True)
    ko_only = korean_only_bpe(train, args.new_tokens)
    ko_only_digits = korean_only_bpe(train, args.new_tokens, split_digits=False)
    extend(args.morph_tokens, "ext_small")
    extend(args.morph_tokens, "ext_small_morph", morph=True)
    info3 = extend(args.llama3_tokens, "ext_llama3", base=llama3)

    toks = {
        "llama2": Tokenizer.from_file(str(llama2 / "tokenizer.json")),
        f"llama2+kolm {args.new_tokens}": Tokenizer.from_file(str(tmp / "ext" / "tokenizer.json")),
        f"llama2+kolm {args.morph_tokens}": Tokenizer.from_file(str(tmp / "ext_small" / "tokenizer.json")),
        f"llama2+kolm {args.morph_tokens} morph": Tokenizer.from_file(str(tmp / "ext_small_morph" / "tokenizer.json")),
        "llama3": Tokenizer.from_file(str(llama3 / "tokenizer.json")),
        f"llama3+kolm {args.llama3_tokens}": Tokenizer.from_file(str(tmp / "ext_llama3" / "tokenizer.json")),
        f"korean-only BPE {args.new_tokens}": ko_only,
        f"korean-only BPE {args.new_tokens}, digits merged": ko_only_digits,
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

    ext_row, ko_row, ko_digits_row = rows[1], rows[-2], rows[-1]
    ratio_lines = ext_row["ko held-out c/tok"] / ko_row["ko held-out c/tok"]
    ratio_words = ext_row["ko words c/tok"] / ko_row["ko words c/tok"]
    ratio_digits = ext_row["ko held-out c/tok"] / ko_digits_row["ko held-out c/tok"]
    print_table(timing, f"Wall time, median of {args.repeat} runs each (bare: train from the file + save)")
    bars = [
        {"check": "ko words c/tok vs Korean-only BPE", "value": f"{ratio_words:.3f}", "bar": ">= 0.95",
         "ok": ratio_words >= 0.95},
        {"check": "ko whole lines c/tok vs Korean-only BPE", "value": f"{ratio_lines:.3f}", "bar": ">= 0.95",
         "ok": ratio_lines >= 0.95},
        {"check": "English ids identical", "value": ext_row["en ids = llama2"], "bar": "100%",
         "ok": ext_row["en ids = llama2"] == "100.00%"},
        {"check": "unreachable added tokens", "value": str(info["checks"]["unreachable_tokens"]), "bar": "0",
         "ok": info["checks"]["unreachable_tokens"] == 0},
        {"check": f"llama3+kolm {args.llama3_tokens}: unreachable as is / by merges alone",
         "value": f"{info3['checks']['unreachable_tokens']} / {info3['checks']['unreachable_tokens_merges_only']}",
         "bar": "0 / 0", "ok": info3["checks"]["unreachable_tokens"] == info3["checks"][
             "unreachable_tokens_merges_only"] == 0},
        {"check": "(info) ko whole lines vs Korean-only BPE with digits merged", "value": f"{ratio_digits:.3f}",
         "bar": "-", "ok": "-"},
    ]
    for t in timing:
        bars.append({"check": f"wall time, corpus {t['corpus']} ({t['MB']} MB): kolm / bare BpeTrainer",
                     "value": t["kolm / bare"], "bar": "<= 1.5x", "ok": t["bar <= 1.5x"]})
    scale: list[dict] = []
    if not args.skip_scale:
        scale = scale_rows(args, corpus, llama2)
        print_table(scale, "Corpus scale: `kolm vocab extend` (command, default --num-proc) vs the bare BpeTrainer "
                           "(own process); peak RSS of the whole process tree")
        bars += scale_bars(scale)
    print_table(bars, f"Bars (kolm: +{info['num_added']} tokens, {info['num_new_chars']} chars)")
    print_json("vocab", {"rows": rows, "bars": bars, "timing": timing, "scale": scale,
                         "extension": {k: v for k, v in info.items() if k != "added"}})
    json.dump({"rows": rows, "bars": bars}, open(tmp / "result.json", "w"), ensure_ascii=False)


if __name__ == "__main__":
    main()
