"""llama.cpp tokenization parity of kolm's outputs: does a model that kolm extended and resized,
converted to GGUF by llama.cpp's own converter, tokenize in llama.cpp exactly as in transformers?

    python bench/llamacpp_parity.py [--new-tokens 16000] [--adversarial 20000] [--bases llama2,mistral,llama3]
                                    [--real-model DIR] [--standin] [--work bench/out/llamacpp-parity]

1. llama.cpp comes from PyPI: ``pip download --no-deps --no-binary :all: llama-cpp-python`` (the sdist vendors
   llama.cpp, its ``convert_hf_to_gguf.py`` and ``gguf-py``); ``llama-tokenize`` is built with cmake, CPU only.
   Both are cached under bench/out/llamacpp/ (a few minutes the first time).
2. Per base tokenizer of ../shared (Llama-2, Mistral, Llama-3): ``kolm vocab extend`` learns --new-tokens Korean
   tokens from 90% of ko_dev.txt (every 10th line is held out); a tiny Llama on the base vocabulary is resized to
   it by ``kolm model resize``. ``--real-model DIR`` adds a row for a real model folder (e.g. SmolLM2-135M from
   ``kolm model import``): its own tokenizer is extended the same way and the model itself is resized.
   ``--standin`` adds such a row for GPT-2's byte-level tokenizer (rebuilt from llama.cpp's test vocabulary) on a
   tiny Llama. Every model is also converted as it is (the "base" rows), so that a difference llama.cpp already
   has with the base is told apart from one that kolm's extension brings.
3. Each resized folder is converted by the vendored ``convert_hf_to_gguf.py``: as kolm wrote it and, for the
   SentencePiece family, once more without kolm's tokenizer.model (the "before": the converter then reads
   tokenizer.json).
4. ``llama-tokenize --ids --no-bos --no-escape --stdin`` tokenizes the held-out Korean and English lines (every
   10th line of ko_dev.txt and en_dev.txt) and --adversarial seeded strings (kolm.vocab.spm_model.fuzz_strings:
   Korean/English/new tokens glued, whitespace runs, leading spaces, digits, emoji, byte-fallback characters,
   NFD Hangul). To avoid one process per string, strings are joined by the EOS token's text: llama.cpp cuts the
   text at special tokens and tokenizes every piece as a fresh text (dummy prefix included), as transformers
   does. That is checked against one process per string on the first strings of every run. Strings that contain
   an added token's text are left out. The reference is ``tokenizers`` on the folder's tokenizer.json (no special
   tokens added), which is what training used.

Prints a table (lines agreeing per language, adversarial strings differing) and a BENCH_JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, lines, print_json, print_table  # noqa: E402

CACHE = REPO / "bench" / "out" / "llamacpp"
CHUNK = 4000  # strings per llama-tokenize process
SELF_CHECK = 12  # strings also tokenized one process each


# ----------------------------------------------------------------------------------------------- llama.cpp


def llamacpp(cache: Path = CACHE) -> tuple[Path, Path]:
    """(llama.cpp source folder, llama-tokenize binary), downloaded and built once into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    sdists = sorted(cache.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        print("downloading the llama-cpp-python sdist from PyPI ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d",
                        str(cache), "llama-cpp-python"], check=True, stdout=subprocess.DEVNULL)
        sdists = sorted(cache.glob("llama_cpp_python-*.tar.gz"))
    src = cache / sdists[-1].name.removesuffix(".tar.gz") / "vendor" / "llama.cpp"
    if not (src / "convert_hf_to_gguf.py").is_file():
        with tarfile.open(sdists[-1]) as tf:
            tf.extractall(cache, filter="data")
    build = cache / "build"
    binary = build / "bin" / "llama-tokenize"
    if not binary.is_file():
        print(f"building llama-tokenize from {src} (CPU only; a few minutes, once) ...", flush=True)
        flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                 "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DGGML_OPENMP=OFF",
                 "-DBUILD_SHARED_LIBS=OFF"]
        with open(cache / "build.log", "w") as log:
            subprocess.run(["cmake", "-S", str(src), "-B", str(build), *flags], check=True, stdout=log, stderr=log)
            subprocess.run(["cmake", "--build", str(build), "--target", "llama-tokenize", "-j", str(os.cpu_count())],
                           check=True, stdout=log, stderr=log)
    return src, binary


def convert(src: Path, model: Path, out: Path) -> Path:
    """``convert_hf_to_gguf.py MODEL`` (the vendored gguf-py is on its path); returns the .gguf file."""
    proc = subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(model), "--outfile", str(out),
                           "--outtype", "f16"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed on {model}:\n{proc.stderr[-3000:]}")
    return out


def parse_ids(stdout: str) -> list[int]:
    """The id list that ``llama-tokenize --ids`` prints (``[1, 2, 3]``) on its last non-empty line."""
    last = [x for x in stdout.splitlines() if x.strip()][-1]
    return [int(x) for x in json.loads(last)]


def _tokenize(binary: Path | list[str], gguf: Path, text: str) -> list[int]:
    cmd = [*([str(binary)] if isinstance(binary, Path) else binary), "-m", str(gguf), "--ids", "--no-bos",
           "--no-escape", "--stdin", "--log-disable"]
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"llama-tokenize failed on {gguf}: {proc.stderr.decode(errors='replace')[-2000:]}")
    return parse_ids(proc.stdout.decode("utf-8"))


def client_ids(binary: Path | list[str], gguf: Path, strings: list[str], sep: tuple[str, int]) -> list[list[int]]:
    """llama.cpp's ids for every string: chunks joined by the separator token (text, id), split at its id."""
    text, sid = sep
    out: list[list[int]] = []
    for k in range(0, len(strings), CHUNK):
        chunk = strings[k:k + CHUNK]
        ids = _tokenize(binary, gguf, text.join(chunk))
        parts: list[list[int]] = [[]]
        for i in ids:
            if i == sid:
                parts.append([])
            else:
                parts[-1].append(i)
        if len(parts) != len(chunk):
            sys.exit(f"{gguf}: {len(parts)} pieces for {len(chunk)} strings; the separator {text!r} was not kept")
        out += parts
    alone = [_tokenize(binary, gguf, s) for s in strings[:SELF_CHECK]]
    if alone != out[:SELF_CHECK]:
        sys.exit(f"{gguf}: joining strings by {text!r} changes llama.cpp's ids; the bench cannot batch here")
    return out


# ----------------------------------------------------------------------------------------------- kolm outputs


def extend_and_resize(name: str, base_tok: Path, base_model: Path | None, corpus: Path, work: Path, n: int
                      ) -> tuple[Path, Path]:
    """``kolm vocab extend`` (``n`` tokens, fewer allowed) and ``kolm model resize`` of ``base_model`` (default: a
    tiny Llama on the base vocabulary); returns (base model folder, resized folder)."""
    from kolm.model.resize import ResizeConfig
    from kolm.model.resize import run as resize
    from kolm.vocab.extend import ExtendConfig
    from kolm.vocab.extend import run as extend

    tok, out = work / f"tok-{name}", work / f"model-{name}"
    extend(ExtendConfig(base=str(base_tok), corpus=[str(corpus)], num_new_tokens=n, output=str(tok),
                        min_frequency=1, allow_fewer=True, overwrite=True))
    if base_model is None:
        base_model = tiny_model(base_tok, work / f"base-{name}")
    resize(ResizeConfig(model=str(base_model), tokenizer=str(tok), output=str(out), overwrite=True))
    return base_model, out


def tiny_model(tok: Path, out: Path, tie: bool = False) -> Path:
    """A tiny Llama (2 layers, hidden 64) on ``tok``'s vocabulary, saved with ``tok``'s files beside it."""
    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    n = Tokenizer.from_file(str(tok / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    cfg = LlamaConfig(vocab_size=n, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=tie)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    for f in tok.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out


def gpt2_standin(src: Path, out: Path) -> Path:
    """A stand-in for a real byte-level model (``--standin``): GPT-2's tokenizer, rebuilt from the vocabulary-only
    GGUF that llama.cpp ships for its tokenizer tests (models/ggml-vocab-gpt-2.gguf), on a tiny tied Llama."""
    sys.path.insert(0, str(src / "gguf-py"))
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    fields = GGUFReader(str(src / "models" / "ggml-vocab-gpt-2.gguf")).fields
    tokens = [bytes(fields["tokenizer.ggml.tokens"].parts[i]).decode() for i in fields["tokenizer.ggml.tokens"].data]
    merges = [tuple(bytes(fields["tokenizer.ggml.merges"].parts[i]).decode().split(" "))
              for i in fields["tokenizer.ggml.merges"].data]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder, tok.post_processor = decoders.ByteLevel(), processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    tok_dir = out.with_name(out.name + "-tokenizer")
    tok_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(tok_dir / "tokenizer.json"))
    eot = "<|endoftext|>"
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": eot, "eos_token": eot, "unk_token": eot,
        "model_max_length": 1024}))
    return tiny_model(tok_dir, out, tie=True)


def separator(folder: Path) -> tuple[str, int]:
    """The EOS token (text, id) of the folder's tokenizer: a special token llama.cpp cuts text at."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.eos_token is None:
        sys.exit(f"{folder}: the tokenizer has no eos_token to join strings with")
    return tok.eos_token, tok.eos_token_id


def adversarial(folder: Path, sample: list[str], n: int) -> list[str]:
    """``n`` seeded strings built from the folder's vocabulary (as text) and ``sample`` (spm_model.fuzz_strings)."""
    from kolm.vocab.families import detect
    from kolm.vocab.spm_model import fuzz_strings, id_tokens

    tj = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    family = detect(tj)
    return fuzz_strings([family.token_text(t) for t in id_tokens(tj)], sample, n, seed=13)


# ----------------------------------------------------------------------------------------------- comparing


def compare(binary: Path | list[str], gguf: Path, folder: Path, sets: dict[str, list[str]]) -> dict[str, Any]:
    """Per set: strings compared, strings with llama.cpp ids == tokenizer.json ids, the differing strings."""
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(folder / "tokenizer.json"))
    specials = [a.content for a in hf.get_added_tokens_decoder().values() if a.content]
    sep = separator(folder)
    out: dict[str, Any] = {}
    for name, strings in sets.items():
        todo = [s for s in strings if not any(x in s for x in specials)]
        want = [e.ids for e in hf.encode_batch(todo, add_special_tokens=False)]
        got = client_ids(binary, gguf, todo, sep)
        differing = [s for s, a, b in zip(todo, want, got) if a != b]
        out[name] = {"strings": len(todo), "agree": len(todo) - len(differing), "left_out": len(strings) - len(todo),
                     "differing": differing}
    return out


def _label(folder: Path, extended: bool) -> str:
    from kolm.vocab.families import detect

    if (folder / "tokenizer.model").is_file():
        return "kolm's" if extended else "the base's"
    family = detect(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")))
    return "none (tokenizer.json)" if family.name == "sentencepiece" else "- (byte-level)"


def rows_for(name: str, base: Path, model: Path, src: Path, binary: Path | list[str], sets: dict[str, list[str]],
             work: Path) -> list[dict[str, Any]]:
    """Convert the base model, kolm's resized ``model`` and, when it has a tokenizer.model, a copy without it (the
    "before"); compare each. One row per variant; "not in base" counts differences the base did not have."""
    from kolm.artifacts import TokenizerExtension

    ext = TokenizerExtension.read(model)
    variants = [("base", base, False)]
    if (model / "tokenizer.model").is_file():
        before = work / f"{model.name}-no-tokenizer-model"
        shutil.rmtree(before, ignore_errors=True)
        shutil.copytree(model, before)
        (before / "tokenizer.model").unlink()
        variants.append((f"kolm +{ext.num_added}", before, True))
    variants.append((f"kolm +{ext.num_added}", model, True))
    rows: list[dict[str, Any]] = []
    for label, folder, extended in variants:
        res = compare(binary, convert(src, folder, work / f"{name}-{folder.name}.gguf"), folder, sets)
        base_bad = set(rows[0]["_detail"]["adversarial"]["differing"]) if rows else set()
        adv = res["adversarial"]
        rows.append({"base": name, "model": label, "tokenizer.model": _label(folder, extended),
                     **{k: f"{v['agree']}/{v['strings']}" for k, v in res.items() if k != "adversarial"},
                     "adversarial differing": f"{adv['strings'] - adv['agree']}/{adv['strings']}",
                     "not in base": sum(x not in base_bad for x in adv["differing"]) if rows else "-",
                     "_detail": res})
    return rows


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A row for the JSON line: the table's cells and, per set, counts and the first differing strings."""
    detail = {k: {**{f: v[f] for f in ("strings", "agree", "left_out")},
                  "first_differences": [x[:120] for x in v["differing"][:3]]} for k, v in row["_detail"].items()}
    return {**{k: v for k, v in row.items() if not k.startswith("_")}, "detail": detail}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--new-tokens", type=int, default=16000)
    ap.add_argument("--adversarial", type=int, default=20000, help="seeded adversarial strings per model")
    ap.add_argument("--bases", default="llama2,mistral,llama3", help="shared tokenizers to extend ('' for none)")
    ap.add_argument("--real-model", type=Path, action="append", default=[], help="a model folder (repeatable)")
    ap.add_argument("--standin", action="store_true", help="add a stand-in real-model row: GPT-2's byte-level "
                    "tokenizer (from llama.cpp's test vocabularies) on a tiny Llama")
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "llamacpp-parity")
    ap.add_argument("--tokenize-cmd", default=None, help="a llama-tokenize command to use instead of building one "
                    "(with --converter-src)")
    ap.add_argument("--converter-src", type=Path, default=None,
                    help="a llama.cpp source folder holding convert_hf_to_gguf.py (with --tokenize-cmd)")
    args = ap.parse_args(argv)
    from common import need_shared

    shared = need_shared()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.tokenize_cmd:
        src, binary = args.converter_src, args.tokenize_cmd.split()
    else:
        src, binary = llamacpp()
    ko, en = lines("ko_dev.txt"), lines("en_dev.txt")
    corpus = args.work / "ko_train.txt"
    corpus.write_text("\n".join(x for i, x in enumerate(ko) if i % 10) + "\n", encoding="utf-8")
    held = {"ko held-out": [x for i, x in enumerate(ko) if i % 10 == 0],
            "en held-out": [x for i, x in enumerate(en) if i % 10 == 0]}
    models = [(b, shared / "tokenizers" / b, None) for b in args.bases.split(",") if b]
    models += [(f"real:{p.name}", p, p) for p in args.real_model]
    if args.standin:
        standin = gpt2_standin(src, args.work / "standin-gpt2")
        models.append(("standin:gpt2", standin, standin))
    rows = []
    for name, tok, model in models:
        base, folder = extend_and_resize(name.replace(":", "-"), tok, model, corpus, args.work, args.new_tokens)
        sets = {**held, "adversarial": adversarial(folder, held["ko held-out"] + held["en held-out"],
                                                   args.adversarial)}
        rows += rows_for(name.replace(":", "-"), base, folder, src, binary, sets, args.work)
    print_table([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
                f"llama.cpp ({src.parent.parent.name if src else 'given'}) vs transformers (tokenizer.json), "
                "token ids without BOS; 'not in base': adversarial strings that differ here but not for the base")
    print_json("llamacpp_parity", {"new_tokens": args.new_tokens, "adversarial": args.adversarial,
                                   "rows": [_public(r) for r in rows]})


if __name__ == "__main__":
    main()
