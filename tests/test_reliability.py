"""Crash safety, failed writes, diverging losses and the security rules (issue: reliability and scale).

Each fault runs train.py in a subprocess through tests/faults.py: a real SIGKILL, not an exception.
"""

from __future__ import annotations

import errno
import json
import pickle
import re
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_args, write_tiny_data
from midalign.errors import CheckpointError, MidalignError

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))


def run(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "tests" / "faults.py"), fault, *args] if fault else \
        [sys.executable, str(ROOT / "train.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def adapters_equal(a: Path, b: Path) -> bool:
    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def log_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tiny_chat_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("full")
    data = write_tiny_data(folder / "data")
    res = run(*tiny_args(tiny_chat_checkpoint, data, folder / "run"))
    assert res.returncode == 0, res.stderr
    return data, folder / "run"


@pytest.mark.parametrize("fault", ["kill-mid-step", "kill-in-save", "kill-in-rename"])
def test_sigkill_then_resume_equals_the_uninterrupted_run_bit_for_bit(fault, tiny_chat_checkpoint, uninterrupted, tmp_path):
    data, full = uninterrupted
    out = tmp_path / "run"
    res = run(*tiny_args(tiny_chat_checkpoint, data, out), fault=fault)
    assert res.returncode == -signal.SIGKILL, res.stderr
    if fault == "kill-in-rename":
        assert not (out / "state").exists() and list(out.glob(".state.old-*"))  # only the previous copy is complete
    res = run(*tiny_args(tiny_chat_checkpoint, data, out, "--resume"))
    assert res.returncode == 0, res.stderr
    assert adapters_equal(full / "last", out / "last") and adapters_equal(full / "best", out / "best")
    assert log_rows(full) == log_rows(out)
    assert not list(out.glob(".state.*")), "stale temporary copies are removed after a successful save"


def test_ctrl_c_is_one_line_and_resume_continues_exactly(tiny_chat_checkpoint, uninterrupted, tmp_path):
    data, full = uninterrupted
    out = tmp_path / "run"
    res = run(*tiny_args(tiny_chat_checkpoint, data, out), fault="ctrl-c-mid-step")
    assert res.returncode == 130, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "interrupted (Ctrl-C); files written so far are complete"
    ran = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "elapsed_s" in r]
    res = run(*tiny_args(tiny_chat_checkpoint, data, out, "--resume"))
    assert res.returncode == 0, res.stderr
    assert adapters_equal(full / "last", out / "last") and log_rows(full) == log_rows(out)
    # the clock goes on from the last kept update: elapsed_s is the run's training time, never reset
    seconds = [r["elapsed_s"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "elapsed_s" in r]
    assert len(ran) >= 2 and seconds == sorted(seconds)


def test_every_script_ends_a_user_error_or_an_interrupt_through_cli_run():
    for script in ("train.py", "evaluate.py", "retrieve.py", "merge.py", "experiments/miniature.py",
                   "experiments/slot.py", "midalign/data/__main__.py", "midalign/registry.py",
                   "midalign/memory.py", "midalign/generate.py"):
        lines = (ROOT / script).read_text().rstrip().splitlines()
        assert lines[-1].strip().startswith("run(") and 'if __name__ == "__main__":' in lines[-2:-5:-1], script


def test_nan_loss_stops_naming_step_and_objective_and_keeps_the_last_good_checkpoint(tiny_chat_checkpoint, uninterrupted, tmp_path):
    data, full = uninterrupted
    out = tmp_path / "run"
    res = run(*tiny_args(tiny_chat_checkpoint, data, out), fault="nan-task")
    assert res.returncode == 1
    assert "error: task loss is nan at update 3 (micro-batch 1)" in res.stderr and str(out / "state") in res.stderr
    assert json.loads((out / "state" / "trainer.json").read_text())["step"] == 2
    state = load_file(out / "state" / "lora.safetensors")  # the checkpoint of update 2 loads and is finite
    assert all(torch.isfinite(t).all() for t in state.values())
    assert [r["step"] for r in log_rows(out) if "eval" not in r] == [1, 2]
    # before the first checkpoint (--eval-every 5): no checkpoint is named that does not exist
    res = run(*tiny_args(tiny_chat_checkpoint, data, tmp_path / "early", "--eval-every", "5"), fault="nan-task")
    assert res.returncode == 1 and "update 3 (micro-batch 1); no checkpoint was saved yet" in res.stderr
    assert not (tmp_path / "early" / "state").exists()


@contextmanager
def small_filesystem(folder: Path, size: str):
    """A tmpfs of `size` mounted at `folder` (as root), else None: this machine cannot make one."""
    folder.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
    except FileNotFoundError:  # no mount command
        mounted = False
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write zeros into `folder` until its disk is full; returns the file."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def test_a_disk_that_fills_up_is_a_one_line_error_and_resume_continues_exactly(tiny_chat_checkpoint, uninterrupted,
                                                                               tmp_path, monkeypatch):
    """The disk fills up after the first training state was saved: a real full disk where the test can
    mount a 4 MiB tmpfs (both writers' errors on one escaped before: safetensors' SafetensorError and
    torch.save's RuntimeError), elsewhere an OSError(ENOSPC) from the writer. Nothing is half-written, the
    state of update 2 is intact, and once there is room `--resume` ends bit-identical to an uninterrupted run."""
    import train
    from midalign import state, training

    data, full = uninterrupted
    with small_filesystem(tmp_path / "fs", "4m") as fs:
        out, real_save_state, calls, filler = (fs or tmp_path) / "run", training.save_state, [], []

        def disk_fills_up_then_save(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                if fs is not None:
                    filler.append(fill(fs))
                else:
                    def full_disk(tensors, path, **_):
                        Path(path).write_bytes(b"\0" * 100)
                        raise OSError(errno.ENOSPC, "No space left on device")
                    monkeypatch.setattr(state, "save_file", full_disk)
            return real_save_state(*args, **kwargs)

        monkeypatch.setattr(training, "save_state", disk_fills_up_then_save)
        with pytest.raises(CheckpointError, match=r"could not write training state in .*No space left on device.* "
                                                  r"every earlier checkpoint is intact.* rerun with --resume$"):
            train.main(tiny_args(tiny_chat_checkpoint, data, out))
        assert json.loads((out / "state" / "trainer.json").read_text())["step"] == 2
        assert not [p.name for p in out.iterdir() if ".tmp-" in p.name], "the half-written copy is removed"
        monkeypatch.undo()
        for f in filler:
            f.unlink()
        train.main(tiny_args(tiny_chat_checkpoint, data, out, "--resume"))
        assert adapters_equal(out / "last", full / "last") and adapters_equal(out / "best", full / "best")


def test_a_disk_that_fills_up_while_evaluating_is_a_one_line_error(tiny_chat_checkpoint, tmp_path, monkeypatch):
    """The free space is checked before decoding; a disk that fills up during it fails the final write:
    one line, nothing half-written (an OSError traceback before). Real where a tmpfs can be mounted."""
    import evaluate

    data = write_tiny_data(tmp_path / "data")
    with small_filesystem(tmp_path / "fs", "4m") as fs:
        out, real_predict = (fs or tmp_path) / "eval", evaluate.predict

        def predict_then_disk_full(*args, **kwargs):
            result = real_predict(*args, **kwargs)
            if fs is not None:
                fill(fs)
            else:
                monkeypatch.setattr(evaluate, "atomic_write_text", lambda *a: (_ for _ in ()).throw(
                    OSError(errno.ENOSPC, "No space left on device")))
            return result

        monkeypatch.setattr(evaluate, "predict", predict_then_disk_full)
        with pytest.raises(MidalignError, match=r"could not write --out .*No space left on device.*Nothing was "
                                                r"half-written"):
            evaluate.main(["--model", str(tiny_chat_checkpoint), "--data", str(data["dev"]), "--max-new-tokens", "2",
                           "--out", str(out)])
        assert not out.exists() and not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def test_too_little_disk_space_is_said_before_the_expensive_part(tiny_chat_checkpoint, tmp_path, monkeypatch):
    """train.py needs room for its checkpoints (10 x the LoRA weights), evaluate.py and retrieve.py 1 MiB,
    checked before the first update, generation or embedding."""
    import evaluate
    import retrieve
    import train
    from midalign import io

    data = write_tiny_data(tmp_path / "data")
    monkeypatch.setattr(io.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 5000))
    model = ["--model", str(tiny_chat_checkpoint)]
    with pytest.raises(MidalignError, match=r"0.0 MiB free on its disk, the checkpoints need about 1.1 MiB"):
        train.main(tiny_args(tiny_chat_checkpoint, data, tmp_path / "run"))
    with pytest.raises(MidalignError, match=r"0.0 MiB free on its disk, the results need about 1.0 MiB"):
        evaluate.main([*model, "--data", str(data["dev"]), "--out", str(tmp_path / "e")])
    with pytest.raises(MidalignError, match=r"the results need about 1.0 MiB"):
        retrieve.main([*model, "--langs", "de", "fr", "--out", str(tmp_path / "r")])
    assert not (tmp_path / "e").exists() and not (tmp_path / "r").exists()


def test_outputs_are_readable_and_never_the_current_folder(tiny_chat_checkpoint, tmp_path, monkeypatch):
    """Adapters and states were written mode 0600 (safetensors' writer, the 0700 temp folder); `merge.py
    --out .` left a `..tmp-*` folder beside the current one; an --out below a file failed after the merge."""
    import merge
    import train

    data = write_tiny_data(tmp_path / "data")
    run_dir = tmp_path / "run"
    train.main(tiny_args(tiny_chat_checkpoint, data, run_dir, "--max-steps", "2"))
    modes = {str(p.relative_to(run_dir)): p.stat().st_mode & 0o777 for p in run_dir.rglob("*") if p.name != ".lock"}
    assert modes["last/adapter_model.safetensors"] == modes["state/lora.safetensors"] == 0o644
    assert set(modes.values()) == {0o644, 0o755}, modes
    adapters = [str(run_dir / "best"), str(run_dir / "last")]
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(MidalignError, match=r"is the current folder \(or holds it\)"):
        merge.main(["--adapters", *adapters, "--out", "."])
    with pytest.raises(MidalignError, match=r"is the current folder \(or holds it\)"):
        merge.main(["--adapters", *adapters, "--out", str(tmp_path)])
    (here / "file").write_text("x")
    with pytest.raises(MidalignError, match=r"--out file/merged: cannot write there"):
        merge.main(["--adapters", *adapters, "--out", "file/merged"])
    merge.main(["--adapters", *adapters, "--out", "merged"])
    assert sorted(p.name for p in here.iterdir()) == ["file", "merged"]  # no temp folder left anywhere
    assert {p.stat().st_mode & 0o777 for p in (here / "merged").iterdir()} == {0o644}


def test_unwritable_output_folder_is_a_clear_error(tiny_chat_checkpoint, tmp_path):
    data = write_tiny_data(tmp_path / "data")
    (tmp_path / "file").write_text("not a folder")
    res = run(*tiny_args(tiny_chat_checkpoint, data, tmp_path / "file" / "run"))
    assert res.returncode == 1 and "error: cannot write to --out" in res.stderr and "writable folder" in res.stderr


def test_resume_without_a_state_is_a_clear_error(tiny_chat_checkpoint, tmp_path):
    data = write_tiny_data(tmp_path / "data")
    res = run(*tiny_args(tiny_chat_checkpoint, data, tmp_path / "run", "--resume"))
    assert res.returncode == 1 and "no complete training state" in res.stderr


def test_a_run_stopped_before_its_first_checkpoint_is_started_over_not_resumed(tiny_chat_checkpoint, tmp_path):
    """After an early Ctrl-C the folder holds config.json and log.jsonl but no state: the plain rerun said
    "pass --resume", and --resume said "start without --resume" — each sent the user to the other."""
    import train

    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2"))
    for name in ("state", "best", "last"):  # as a run stopped before its first checkpoint leaves it
        shutil.rmtree(out / name)
    with pytest.raises(CheckpointError) as again:
        train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2"))
    assert "saved no training state to resume" in str(again.value) and "--resume" not in str(again.value)
    with pytest.raises(CheckpointError, match=r"start it over with --overwrite instead of --resume$"):
        train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2", "--resume"))
    train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2", "--overwrite"))
    assert (out / "state" / "trainer.json").is_file()


# ---------------------------------------------------------------------------------------- security

class _Exploit:
    """A pickle that runs code when loaded with the full unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("name, damage", [
    ("lora.safetensors", _truncate),
    ("optimizer.pt", _truncate),
    ("rng.pt", lambda p: torch.save([{"torch": torch.zeros(3, dtype=torch.uint8)}], p)),  # not a generator state
    ("rng.pt", lambda p: torch.save({"torch": 1}, p)),  # no entry per rank
])
def test_a_damaged_training_state_is_a_one_line_error_naming_the_file(tiny_chat_checkpoint, uninterrupted, tmp_path,
                                                                      name, damage):
    data, full = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(full, out)
    damage(out / "state" / name)
    res = run(*tiny_args(tiny_chat_checkpoint, data, out, "--resume"))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: {out / 'state' / name}: unreadable (")


def test_training_state_is_loaded_without_running_pickled_code(tiny_chat_checkpoint, uninterrupted, tmp_path):

    data, full = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(full, out)
    marker = tmp_path / "pwned"
    (out / "state" / "optimizer.pt").write_bytes(pickle.dumps({"state": _Exploit(marker)}))
    res = run(*tiny_args(tiny_chat_checkpoint, data, out, "--resume"))
    assert res.returncode == 1 and "optimizer.pt: unreadable (Weights only load failed" in res.stderr
    assert not marker.exists()


def test_chat_template_runs_in_the_sandbox(tiny_chat_checkpoint, tmp_path):

    from midalign.tokenizer import ChatTokenizer, TokenizerError

    folder = tmp_path / "model"
    shutil.copytree(tiny_chat_checkpoint, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match="access to attribute '__class__' of 'str' object is unsafe"):
        ChatTokenizer(folder).render_chat([{"role": "user", "content": "hi"}])


def test_chat_templates_run_within_time_and_size_limits_and_odd_shapes_are_clear_errors(
        tiny_chat_checkpoint, tmp_path, monkeypatch):
    import time

    from midalign import tokenizer
    from midalign.tokenizer import ChatTokenizer, TokenizerError

    monkeypatch.setattr(tokenizer, "RENDER_SECONDS", 0.5)
    folder = tmp_path / "model"
    shutil.copytree(tiny_chat_checkpoint, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())

    def with_template(value) -> ChatTokenizer:
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": value}))
        return ChatTokenizer(folder)

    hi = [{"role": "user", "content": "hi"}]
    start = time.monotonic()  # 10^10 loop steps, no output and no call: it would run for hours
    with pytest.raises(TokenizerError, match="rendering took longer than 0.5 s"):
        with_template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
                      ).render_chat(hi)
    assert time.monotonic() - start < 5
    with pytest.raises(TokenizerError, match="the rendered prompt exceeds 65,568 characters"):  # 6 GB, in chunks
        with_template("{% for i in range(100000) %}{{ 'x' * 60000 }}{% endfor %}").render_chat(hi)
    with pytest.raises(TokenizerError, match="would make 1,000,000,000 items"):  # 1 GB in one expression
        with_template("{% set s = 'x' * 1000000000 %}{{ s | length }}").render_chat(hi)
    with pytest.raises(TokenizerError, match="raises to the power 100000000"):
        with_template("{{ 10 ** 100000000 }}").render_chat(hi)
    with pytest.raises(TokenizerError, match="chat template failed: TypeError"):  # no traceback for its own bugs
        with_template("{% for c in 5 %}{% endfor %}").render_chat(hi)
    # what ordinary templates do is untouched
    ok = "{% for m in messages %}{{ m.content * 2 }}{% endfor %}{% for i in range(3) | reverse %}{{ i }}{% endfor %}"
    assert with_template(ok).render_chat(hi) == "hihi210"
    assert with_template([{"name": "default", "template": ok}]).render_chat(hi) == "hihi210"
    # tokenizer_config.json shapes the loader does not know: one line naming the file
    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: chat_template must be a string .* not int"):
        with_template(42)
    with pytest.raises(TokenizerError, match="names tool_use but no 'default' template"):
        with_template([{"name": "tool_use", "template": ok}])
    with pytest.raises(TokenizerError, match="items are not all"):
        with_template([{"template": ok}])
    (folder / "tokenizer_config.json").write_text("[]")
    with pytest.raises(TokenizerError, match="tokenizer_config.json: expected a JSON object, found list"):
        ChatTokenizer(folder)


def test_checkpoint_code_and_pickles_are_never_used(tiny_chat_checkpoint, tmp_path):

    from midalign.checkpoint import load_model
    from midalign.errors import CheckpointError

    folder = tmp_path / "model"
    shutil.copytree(tiny_chat_checkpoint, folder)
    marker = tmp_path / "pwned"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('code ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    load_model(folder, device="cpu")  # remote code is ignored: the architecture comes from model_type
    assert not marker.exists()

    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save({"model.embed_tokens.weight": _Exploit(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model(folder, device="cpu")
    assert not marker.exists()


def test_resume_with_another_process_count_is_refused(tiny_chat_checkpoint, uninterrupted, tmp_path):

    import train

    data, full = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(full, out)
    trainer = json.loads((out / "state" / "trainer.json").read_text())
    (out / "state" / "trainer.json").write_text(json.dumps({**trainer, "world_size": 2}))
    with pytest.raises(CheckpointError, match="resume with the same torchrun --nproc_per_node"):
        train.main(tiny_args(tiny_chat_checkpoint, data, out, "--resume"))


def test_a_finished_run_is_never_replaced_silently_and_one_writer_at_a_time(tiny_chat_checkpoint, tmp_path):
    """Training into a folder that holds a run needs --resume or --overwrite (it replaced it silently before);
    a second writer stops naming the holder's pid (both exited 0 before, the first reporting the second's
    weights)."""
    import os

    import train
    from midalign.errors import CheckpointError

    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2"))
    best = (out / "best" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="holds a training run .* pass --resume to continue it, --overwrite"):
        train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2", "--seed", "1"))
    assert (out / "best" / "adapter_model.safetensors").read_bytes() == best
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"holds files train.py did not make \(notes.txt\)"):
        train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2", "--overwrite"))
    (out / "notes.txt").unlink()
    train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2", "--seed", "1", "--overwrite"))
    assert (out / "best" / "adapter_model.safetensors").read_bytes() != best
    assert json.loads((out / "config.json").read_text())["seed"] == 1

    other = tmp_path / "busy"
    other.mkdir()
    (other / ".lock").write_text(str(os.getppid()))  # a live process holds it
    with pytest.raises(CheckpointError, match=f"being written by another process \\(pid {os.getppid()}\\)"):
        train.main(tiny_args(tiny_chat_checkpoint, data, other, "--max-steps", "1"))
    (other / ".lock").write_text("999999999")  # a process that is gone: its lock is taken over
    train.main(tiny_args(tiny_chat_checkpoint, data, other, "--max-steps", "1"))
    assert not (other / ".lock").exists() and (other / "last").is_dir()

    held = tmp_path / "held"  # a run another live process is still writing: --overwrite leaves it whole
    shutil.copytree(out, held)
    (held / ".lock").write_text(str(os.getppid()))
    files = {p.relative_to(held): p.read_bytes() for p in held.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="being written by another process"):
        train.main(tiny_args(tiny_chat_checkpoint, data, held, "--max-steps", "1", "--overwrite"))
    assert {p.relative_to(held): p.read_bytes() for p in held.rglob("*") if p.is_file()} == files


def test_resume_refuses_other_settings_and_names_them(tiny_chat_checkpoint, tmp_path):
    """--resume with another lr, batch size, seed or τ continued and rewrote config.json before."""
    import train
    from midalign.errors import CheckpointError

    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2"))
    config = (out / "config.json").read_text()
    with pytest.raises(CheckpointError, match=r"--lr 0.0005 → 0.001; --seed 0 → 3"):
        train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "4", "--resume", "--lr", "1e-3",
                             "--seed", "3"))
    assert (out / "config.json").read_text() == config
    train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "4", "--resume"))  # longer: allowed
    rows = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if "eval" not in l]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert json.loads((out / "config.json").read_text())["warmup_steps"] == json.loads(config)["warmup_steps"]


@pytest.mark.parametrize("field, value", [
    ("clip", -1.0), ("lora_dropout", -0.1), ("lora_dropout", 1.0), ("temperature", -0.5), ("pool", "max"),
    ("align_loss", "mse"), ("lr", 0.0), ("warmup_ratio", 1.5), ("batch_size", 0), ("align_batch_size", 1),
    ("grad_accum", 0), ("lora_r", 0), ("max_steps", -1), ("eval_every", 0), ("dtype", "fp16"), ("task", "ner"),
    ("align_layer", 0), ("align_layer", [12, 0]), ("epochs", float("nan")), ("lora_targets", []),
    ("train_data", "train.jsonl"), ("seed", 1.5), ("overwrite", "yes"), ("patience", True)])
def test_every_invalid_setting_is_one_error_before_anything_is_written(tmp_path, field, value):
    """fit(TrainSettings(...)), the way the studies train, skipped the command line's checks: 13 of 18 invalid
    values ended in raw exceptions (some after writing files) and 3 trained the wrong objective with exit 0."""
    from midalign.errors import SettingsError
    from midalign.settings import TrainSettings
    from midalign.training import fit

    out = tmp_path / "run"
    with pytest.raises(SettingsError, match=f"^{field} = .* \\(train.py --{field.replace('_', '-')}\\) must be "):
        fit(TrainSettings(out=out, **{field: value}))
    assert not out.exists()


@pytest.mark.parametrize("call, message", [
    (dict(layers=[0, 99]), "layers = [0, 99] must be a non-empty list of 0..4"),
    (dict(layers=[]), "layers = [] must be a non-empty list of 0..4"),
    (dict(pools=["max"]), "pools = ['max'] must be a non-empty list of mean, mean-skip-first, bos, last"),
    (dict(pools="mean"), "pools = 'mean' must be a non-empty list of"),  # a string is not a list of poolings
    (dict(k=0), "k = 0 must be an integer ≥ 1"),
    (dict(margin="dot"), "margin = 'dot' must be one of ratio, cosine"),
    (dict(batch_size=2.5), "batch_size = 2.5 must be an integer ≥ 1"),
    (dict(sentences={"de": ["a", "b"]}), "sentences must be two or more languages of the same number (≥ 1) of "
                                         "row-aligned sentences; got {'de': 2}"),
    (dict(sentences={"de": ["a", "b"], "en": ["c"]}), "sentences must be two or more languages of the same number "
                                                      "(≥ 1) of row-aligned sentences; got {'de': 2, 'en': 1}"),
])
def test_retrieval_arguments_from_python_are_checked_before_any_work(tiny_chat_checkpoint, monkeypatch, call, message):
    """layer_retrieval ran every forward pass before an unknown margin failed (ValueError), and an unknown
    pooling or an out-of-range layer failed as a KeyError or an IndexError."""
    from midalign import retrieval
    from midalign.checkpoint import load_model_and_tokenizer
    from midalign.errors import SettingsError

    model, tok = load_model_and_tokenizer(tiny_chat_checkpoint, "cpu", "fp32")
    monkeypatch.setattr(retrieval, "embed_layers", lambda *a, **k: pytest.fail("embedded before the check"))
    arguments = dict(sentences={"de": ["Hallo", "Welt"], "en": ["Hello", "world"]}, layers=[0, 2], pools=["mean"],
                     k=4, margin="ratio", batch_size=2) | call
    with pytest.raises(SettingsError, match="^" + re.escape("layer_retrieval: " + message)):
        retrieval.layer_retrieval(model, tok, progress=False, **arguments)



def test_retrieval_accepts_any_collection_of_layers_and_poolings(tiny_chat_checkpoint):
    """The studies pass the POOLS table itself and a range of layers."""
    from midalign import retrieval
    from midalign.align import POOLS
    from midalign.checkpoint import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(tiny_chat_checkpoint, "cpu", "fp32")
    sentences = {"de": ["Hallo", "Welt"], "en": ["Hello", "world"]}
    res = retrieval.layer_retrieval(model, tok, sentences, range(3), POOLS, progress=False)
    assert res["layers"] == [0, 1, 2] and list(res["pools"]) == list(POOLS)


def test_evaluation_arguments_from_python_are_checked_before_any_work(tiny_chat_checkpoint):
    from midalign.checkpoint import load_model_and_tokenizer
    from midalign.data.tasks import TASKS
    from midalign.errors import SettingsError
    from midalign.evaluation import load_examples, predict

    data = write_tiny_data(Path(tiny_chat_checkpoint).parent / "eval-data")
    with pytest.raises(SettingsError, match=r"^load_examples: limit = 0 must be None or an integer ≥ 1"):
        load_examples(TASKS["mt"], [data["dev"]], limit=0)
    with pytest.raises(SettingsError, match=r"^load_examples: partition = 'validation' must be one of train, dev, test"):
        load_examples(TASKS["mt"], [data["dev"]], partition="validation")
    examples = load_examples(TASKS["mt"], [data["dev"]])
    model, tok = load_model_and_tokenizer(tiny_chat_checkpoint, "cpu", "fp32")
    with pytest.raises(SettingsError, match=r"^predict: max_new_tokens = 0 must be an integer ≥ 1"):
        predict(model, tok, examples, 0, 4, progress=False)
    with pytest.raises(SettingsError, match=r"^predict: batch_size = '8' must be an integer ≥ 1"):
        predict(model, tok, examples, 8, "8", progress=False)


def test_invalid_flags_on_the_command_line_are_the_same_one_line_errors(tmp_path):
    """`--clip -1` trained by gradient ascent, a negative --lora-dropout turned dropout off."""
    for flags, field in ((["--clip", "-1"], "clip"), (["--lora-dropout", "-0.2"], "lora_dropout")):
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *flags, "--out", str(tmp_path / "run")],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 1 and done.stderr.startswith(f"error: {field} = "), done.stderr
        assert not (tmp_path / "run").exists()


def test_resume_identifies_data_by_content_not_by_path_spelling(tiny_chat_checkpoint, tmp_path):
    """--resume compared path strings: it continued on changed data at the same path and refused the same files
    named another way."""
    import train

    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    train.main(tiny_args(tiny_chat_checkpoint, data, out, "--max-steps", "2"))
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    moved = {k: tmp_path / "moved" / Path(v).name for k, v in data.items()}  # the same bytes, another path
    train.main(tiny_args(tiny_chat_checkpoint, moved, out, "--max-steps", "3", "--resume"))
    assert json.loads((out / "config.json").read_text())["data_files"]["train_data"][0]["size"] == \
        moved["train"].stat().st_size
    first = moved["train"].read_text().splitlines()[0]
    moved["train"].write_text(moved["train"].read_text().rstrip("\n") + "\n" + first + "\n")  # changed content, same path
    with pytest.raises(CheckpointError, match="--train-data: the files' contents differ from the run's"):
        train.main(tiny_args(tiny_chat_checkpoint, moved, out, "--max-steps", "4", "--resume"))
