"""``kolm data inspect DIR``: print the manifest of a built data set as tables, and decoded samples.

Shows the tokenizer and train totals, one row per source (documents read/kept/dropped by reason, bytes,
tokens, epochs), one row per language (target vs achieved token share, validation size), then for each
language a few validation documents decoded from their ``input_ids`` and a few packed train sequences decoded
(documents separated by the EOS token, shown as ``⏎EOS⏎``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kolm.artifacts import MANIFEST_FILE, DataFolder
from kolm.config import ConfigError, field
from kolm.errors import KolmError
from kolm.tables import text_table


@dataclass
class InspectConfig:
    """``kolm data inspect DIR``."""

    dir: str = field("", path=True, help="output folder of `kolm data build`")
    samples: int = field(2, help="decoded samples per language (validation) and of train sequences")
    chars: int = field(300, help="characters shown per sample")

    def __post_init__(self) -> None:
        if self.samples < 0 or self.chars < 1:
            raise ConfigError("samples must be >= 0 and chars >= 1")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    return text_table([str(h) for h in headers], [[str(c) for c in r] for r in rows], left=1, head_left=True)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def _clip(text: str, n: int) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= n else text[:n] + "…"


def format_manifest(m: dict[str, Any]) -> str:
    tok = m["tokenizer"]
    out = [f"tokenizer  {tok['path']}  sha256 {tok['sha256'][:16]}…  vocab {tok['vocab_size']}  "
           f"eos {tok['eos_token']}={tok['eos_id']}  add_bos {tok['add_bos']}",
           f"train      {m['train']['sequences']} sequences x {m['seq_len']} tokens = {m['train']['tokens']} tokens "
           f"in {m['train']['shards']} shard(s); {m['train']['tail_tokens_dropped']} tail tokens dropped", ""]
    rows = []
    for name, s in m["sources"].items():
        drops = ", ".join(f"{k} {v}" for k, v in sorted(s["dropped"].items(), key=lambda kv: -kv[1])) or "-"
        rows.append([name, s["lang"], s["read"], s["kept"], sum(s["dropped"].values()), _mb(s["bytes_read"]),
                     _mb(s["bytes_kept"]), s["tokens_kept"], s["validation_docs"], f"{s['epochs']:.3f}",
                     s["train_tokens_sampled"], drops])
    out.append(_table(["source", "lang", "read", "kept", "dropped", "MB read", "MB kept", "tokens kept", "val docs",
                       "epochs", "train tokens", "dropped by reason"], rows))
    out.append("")
    rows = [[lang, f"{v['target_share']:.4f}", f"{v['achieved_share']:.4f}",
             f"{(v['achieved_share'] - v['target_share']) * 100:+.3f}", v["train_tokens"], v["validation"]["docs"],
             v["validation"]["tokens"], v["validation"]["bytes"]] for lang, v in m["languages"].items()]
    out.append(_table(["language", "target", "achieved", "diff (pp)", "train tokens", "val docs", "val tokens",
                       "val bytes"], rows))
    pii: dict[str, int] = {}
    for s in m["sources"].values():
        for k, v in s.get("pii_masked", {}).items():
            pii[k] = pii.get(k, 0) + v
    out.append("")
    out.append("PII masked: " + (", ".join(f"{k} {v}" for k, v in sorted(pii.items())) or "none"))
    return "\n".join(out)


def run(cfg: InspectConfig) -> None:
    if not cfg.dir:
        raise KolmError("give the output folder of `kolm data build`: kolm data inspect DIR")
    root = Path(cfg.dir)
    folder = DataFolder(root)
    if not folder.exists():
        from kolm.data.build import describe_unfinished

        hint = describe_unfinished(root)
        raise KolmError(f"no {MANIFEST_FILE} in {root}" + (f" ({hint})" if hint else ""))
    m = folder.raw_manifest()
    print(format_manifest(m))
    if cfg.samples == 0:
        return
    import datasets
    from tokenizers import Tokenizer

    datasets.disable_progress_bars()
    tok_file = Path(m["tokenizer"]["path"]) / "tokenizer.json"
    tok = Tokenizer.from_file(str(tok_file)) if tok_file.is_file() else None
    decode = (lambda ids: tok.decode(ids, skip_special_tokens=False)) if tok else (lambda ids: str(ids[:64]))
    for lang, v in m["languages"].items():
        ds = datasets.load_from_disk(str(root / v["validation"]["path"]))
        print(f"\n== {lang}: validation documents (decoded from input_ids) ==")
        for i in range(min(cfg.samples, len(ds))):
            row = ds[i]
            print(f"[{i}] {row['source']}, {row['n_tokens']} tokens, {row['n_bytes']} bytes: "
                  f"{_clip(decode(row['input_ids']), cfg.chars)}")
    train = datasets.load_from_disk(str(root / m["train"]["path"]))
    eos = m["tokenizer"]["eos_id"]
    print(f"\n== train: {min(cfg.samples, len(train))} of {len(train)} packed sequences (decoded) ==")
    for i in range(min(cfg.samples, len(train))):
        ids = train[i]["input_ids"]
        parts, cur = [], []
        for t in ids:
            if t == eos:
                parts.append(cur)
                cur = []
            else:
                cur.append(t)
        parts.append(cur)
        text = "⏎EOS⏎".join(decode(p) for p in parts)
        print(f"[{i}] {len(parts) - 1} EOS: {_clip(text, cfg.chars)}")
