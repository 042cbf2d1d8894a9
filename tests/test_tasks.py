"""A task is one record (midalign/data/tasks.py): a toy task defined in this file alone trains and evaluates
through the real scripts, and no code outside the task file tells tasks apart by name."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from midalign.data.tasks import TASKS, Example, Task

ROOT = Path(__file__).parent.parent
SENTIMENT = [("en", "I love this film", "positive"), ("en", "What a dull evening", "negative"),
             ("de", "Ich liebe diesen Film", "positive"), ("de", "Was für ein langweiliger Abend", "negative")]


def read_sentiment(path: Path, split: str, direction: str | None) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [Example(r["lang"], "Is the sentence positive or negative?", r["text"], r["label"])
            for r in rows if r["split"] == split]


def accuracy(examples: list[Example], predictions: list[str]) -> dict:
    return {"accuracy": 100 * statistics.mean(p.strip() == ex.answer for ex, p in zip(examples, predictions))}


def test_a_new_task_is_one_record(tiny_chat_checkpoint, tmp_path, monkeypatch):
    import evaluate
    import train

    monkeypatch.setitem(TASKS, "sentiment", Task("sentiment", read=read_sentiment, score=accuracy, metric="accuracy",
                                                  max_new_tokens=3, splits_in_one_file=True))
    data = tmp_path / "sentiment.jsonl"
    data.write_text("".join(json.dumps({"lang": l, "text": t, "label": y, "split": split}) + "\n"
                            for split in ("train", "dev", "test") for l, t, y in SENTIMENT))
    out = tmp_path / "run"
    train.main(["--model", str(tiny_chat_checkpoint), "--task", "sentiment", "--train-data", str(data), "--no-align",
                "--max-steps", "2", "--eval-every", "2", "--batch-size", "2", "--grad-accum", "1", "--out", str(out)])
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "task_loss" in r] == [1, 2]
    assert [r for r in log if r.get("eval")][0]["dev_task_loss"] > 0  # dev split from the same file
    evaluate.main(["--model", str(tiny_chat_checkpoint), "--task", "sentiment", "--data", str(data), "--adapter",
                   str(out / "best"), "--out", str(tmp_path / "eval")])
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert scores["metric"] == "accuracy" and list(scores["per_language"]) == ["en", "de"]
    predictions = [json.loads(l) for l in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    for lang in ("en", "de"):  # the score is the record's scorer applied to the written predictions
        rows = [p for p in predictions if p["lang"] == lang]
        expected = 100 * statistics.mean(p["prediction"] == p["reference"] for p in rows)
        assert scores["per_language"][lang]["score"] == scores["per_language"][lang]["accuracy"] == expected


def test_no_code_outside_the_task_file_compares_a_task_name():
    sources = [p for p in [*ROOT.glob("*.py"), *(ROOT / "midalign").rglob("*.py"), *(ROOT / "experiments").glob("*.py")]
               if p.name != "tasks.py"]
    pattern = re.compile(r"""task\w*\s*(==|!=)\s*["']|task\w*\s+(not\s+)?in\s+\(\s*["']""")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in sources
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []
    assert pattern.search('if args.task == "mt":') and pattern.search("task in ('slot', 'json')")  # the check works


def imports(path: Path) -> set[str]:
    """The modules `path` imports (every import statement, function-level ones included)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_the_library_never_imports_a_script_has_no_cycles_and_experiments_call_it():
    scripts = {"train", "evaluate", "retrieve", "merge"}
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "midalign").rglob("*.py")}
    graph = {m: {i for i in imports(p) if i in modules and i != m} for m, p in modules.items()}
    assert {m: sorted(imports(p) & scripts) for m, p in modules.items() if imports(p) & scripts} == {}
    for experiment in (ROOT / "experiments").glob("*.py"):  # library functions, never a script's argv
        assert not imports(experiment) & scripts, experiment.name

    def cycle_from(start: str, node: str, path: list[str]) -> list[str] | None:
        for nxt in graph[node]:
            if nxt == start:
                return [*path, nxt]
            if nxt not in path and (found := cycle_from(start, nxt, [*path, nxt])):
                return found
        return None
    cycles = [c for m in modules if (c := cycle_from(m, m, [m]))]
    assert cycles == []
