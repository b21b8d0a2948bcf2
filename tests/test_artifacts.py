"""The typed owners of what stages hand each other (kolm.artifacts): round trips, broken files, the run layout."""

from __future__ import annotations

import json

import pytest

from kolm.artifacts import (
    AddedToken,
    DataFolder,
    ResizeRecord,
    RunFolder,
    TokenizerExtension,
    find_new_token_start,
)
from kolm.errors import KolmError


def _ext() -> TokenizerExtension:
    added = [AddedToken(100, "▁한", " 한", "char", [3, 4, 5]), AddedToken(101, "▁한국", " 한국", "merge", [100, 7])]
    return TokenizerExtension(added=added, family="sentencepiece", base="org/base", base_vocab_size=100,
                              vocab_size=102, corpus=["ko.txt"], checks={"unreachable_tokens": 0},
                              compression_base={"korean_chars_per_token": 0.7},
                              compression_extended={"korean_chars_per_token": 2.1}, details={"seconds": {"learn": 1}})


def test_extension_round_trip_and_layout(tmp_path):
    ext = _ext()
    path = ext.write(tmp_path)
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    # the counts are written for human readers; one line per added token
    assert (data["num_added"], data["num_new_chars"], data["num_new_merge_tokens"]) == (2, 1, 1)
    assert data["seconds"] == {"learn": 1} and "details" not in data and "stored_counts" not in data
    assert sum(1 for line in text.splitlines() if line.startswith('    {"id"')) == 2
    back = TokenizerExtension.read(tmp_path)
    assert back == TokenizerExtension.read(path)
    assert back.added == ext.added and back.details == ext.details and back.base_vocab_size == 100
    assert back.added_ids() == [100, 101] and back.korean_chars_per_token() == (0.7, 2.1)
    assert TokenizerExtension.read(tmp_path / "elsewhere") is None


def test_extension_counts_stated_without_tokens_are_kept(tmp_path):
    (tmp_path / "extension.json").write_text(json.dumps({"num_added": 500, "num_new_chars": 125, "added": []}))
    ext = TokenizerExtension.read(tmp_path)
    assert (ext.num_added, ext.num_new_chars, ext.num_new_merge_tokens) == (500, 125, 0)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"added": [{"token": "x"}]}', '{"family": "x"}'])
def test_broken_extension_names_the_file(tmp_path, text):
    (tmp_path / "extension.json").write_text(text)
    with pytest.raises(KolmError, match="extension.json"):
        TokenizerExtension.read(tmp_path)


def test_resize_record_round_trip(tmp_path):
    stats = {"init": "subword-mean", "old_vocab_size": 100, "new_vocab_size": 128, "base_tokenizer_size": 100,
             "tokenizer_size": 102, "new_tokens": 2, "new_rows": 28, "tied": False,
             "input_embeddings": {"base_row_norm": 1.0}, "config": {"model": "org/base"}}
    rec = ResizeRecord.from_stats(stats)
    assert rec.source_model == "org/base" and rec.details["input_embeddings"] == {"base_row_norm": 1.0}
    rec.write(tmp_path)
    assert json.loads((tmp_path / "resize.json").read_text()) == stats
    assert ResizeRecord.read(tmp_path) == rec
    (tmp_path / "resize.json").write_text('{"base_tokenizer_size": "x"}')
    with pytest.raises(KolmError, match="resize.json"):
        ResizeRecord.read(tmp_path)


def test_new_token_start_prefers_resize_record(tmp_path):
    assert find_new_token_start(tmp_path) is None
    _ext().write(tmp_path)
    assert find_new_token_start(tmp_path) == 100
    ResizeRecord(base_tokenizer_size=96).write(tmp_path)
    assert find_new_token_start(tmp_path) == 96


def test_data_folder_errors_name_what_is_missing(tmp_path):
    with pytest.raises(KolmError, match="build it with `kolm data build`"):
        _ = DataFolder(tmp_path).manifest
    (tmp_path / ".work").mkdir()
    with pytest.raises(KolmError, match="unfinished build"):
        _ = DataFolder(tmp_path).manifest
    (tmp_path / "manifest.json").write_text(json.dumps({"seq_len": 8, "languages": {"ko": {}}}))
    with pytest.raises(KolmError, match="not a kolm data manifest"):
        _ = DataFolder(tmp_path).manifest
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"seq_len": 8, "train": {"path": "train"}, "tokenizer": {"sha256": "ab", "bos_id": None, "eos_id": 2},
         "languages": {"ko": {"validation": {"path": "validation/ko"}}}}))
    folder = DataFolder(tmp_path)
    assert folder.manifest.prefix_id == 2 and folder.lang_tokens() is None
    with pytest.raises(KolmError, match="missing train split"):
        folder.check_splits()
    (tmp_path / "train").mkdir()
    with pytest.raises(KolmError, match="holds no .arrow files"):  # an empty folder is no split
        folder.check_splits()
    from datasets import Dataset

    Dataset.from_dict({"input_ids": [[1, 2]]}).save_to_disk(str(tmp_path / "train"))
    with pytest.raises(KolmError, match="validation split for 'ko'"):
        folder.check_splits()
    folder.check_splits(validation=False)


def test_run_folder_layout(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert not RunFolder.is_run(run.path) and not run.has_started() and run.read_recipe() == {}
    sf = run.stage(1, "full")
    assert sf.path == tmp_path / "run" / "stages" / "01-full" and not sf.done
    sf.final.mkdir(parents=True)
    sf.mark_done(sf.final)
    assert sf.done and run.has_started() and run.stage_finals() == [sf.final]
    run.recipe.write_text("model: m\nstages: [{name: full}]\n")
    assert RunFolder.is_run(run.path) and run.read_recipe()["model"] == "m"
    run.recipe.write_text("model: [unclosed\n")
    with pytest.raises(KolmError, match="recipe.yaml"):
        run.read_recipe()
