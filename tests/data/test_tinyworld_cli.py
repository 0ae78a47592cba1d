"""``minillama data``: byte-identical files for the same seed, a manifest that matches them, and
task files that the oracle can score from and the stages read back."""

from __future__ import annotations

import hashlib
import json

import pytest

from minillama.cli import main as minillama
from minillama.data import Oracle
from minillama.data.files import build_parser, load_tasks, main, read_tasks, subset, val_tasks

SMALL = ["--chars", "20000", "--eval-chars", "4000", "--chat", "150", "--eval-chat", "40", "--safety", "60",
         "--eval-safety", "20", "--quiet"]
SPLITS = ("train", "val", "test")
FILES = ({f"{s}.txt" for s in SPLITS} | {f"{k}_{s}.jsonl" for k in ("chat", "safety", "cloze") for s in SPLITS}
         | {"world.json", "manifest.json"})


def test_same_seed_same_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(["--out", str(a), "--seed", "3", *SMALL]) == 0
    assert minillama(["data", "--out", str(b), "--seed", "3", *SMALL]) == 0  # through the top-level CLI
    assert main(["--out", str(c), "--seed", "4", *SMALL]) == 0
    assert {p.name for p in a.iterdir()} == FILES
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "train.txt").read_bytes() != (c / "train.txt").read_bytes()
    manifest = json.loads((a / "manifest.json").read_text())
    for name, info in manifest["files"].items():
        data = (a / name).read_bytes()
        assert info["sha256"] == hashlib.sha256(data).hexdigest() and info["bytes"] == len(data)
    assert len((a / "train.txt").read_text()) >= 20_000
    assert sum(1 for _ in open(a / "chat_val.jsonl")) == 40


def test_task_files_are_enough_for_the_oracle(tmp_path):
    main(["--out", str(tmp_path), "--seed", "0", *SMALL])
    oracle = Oracle(read_tasks(*(tmp_path / f"{k}_test.jsonl" for k in ("chat", "safety"))))
    assert len(oracle) == 60
    for line in open(tmp_path / "chat_test.jsonl"):
        row = json.loads(line)
        assert oracle.combined(row["prompt"], row["reference"]).score == 1.0
        assert oracle.safety(row["prompt"], "I'm sorry, but I can't help with that.").label == "false_refusal"


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for action in build_parser()._actions:
        assert action.help and action.option_strings[-1] in out


def test_the_stages_read_tasks_back(tmp_path):
    main(["--out", str(tmp_path), "--seed", "0", *SMALL])
    chat_val = load_tasks(tmp_path, "chat_val")
    assert [t.prompt for t in chat_val] == [json.loads(line)["prompt"] for line in open(tmp_path / "chat_val.jsonl")]
    assert val_tasks(tmp_path, 3, 2) == chat_val[:3] + load_tasks(tmp_path, "safety_val")[:2]
    picked = subset(chat_val, 10, seed=1)
    assert len(picked) == 10 and picked == [t for t in chat_val if t in picked]  # in file order
    assert picked == subset(chat_val, 10, seed=1) != subset(chat_val, 10, seed=1, stream=8)
    with pytest.raises(ValueError, match="chat_nope.jsonl: no such file; the data folder must be one written by"):
        load_tasks(tmp_path, "chat_nope")


def test_bad_sizes_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="chars must be >= 0"):
        main(["--out", str(tmp_path), "--chars", "-5"])
    assert minillama(["data", "--out", str(tmp_path), "--chars", "-5"]) == 2  # one line, exit status 2
    assert capsys.readouterr().err == "minillama data: error: chars must be >= 0, got -5\n"
    with pytest.raises(ValueError, match="n_people"):
        main(["--out", str(tmp_path), "--n-people", "1", "--quiet"])
