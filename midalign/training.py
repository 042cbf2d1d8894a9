"""The training loop of the method (Liu & Niehues 2025, §3; docs/method.md §1–4), as a library function.

    from midalign.training import TrainSettings, fit
    best = fit(TrainSettings(task="slot", train_data=[Path("massive/data")], no_align=True, preset="paper",
                             out=Path("runs/sft")))   # SFT with App. D.1's settings (without a preset: the demo's)

`train.py` is its command line: each flag is a field of TrainSettings (`--align-layer` → `align_layer`);
the settings, presets and how they resolve are midalign/settings.py, this module is the loop.
Each optimizer update sums `grad_accum` micro-batches alternating task, alignment, task, … The task loss
is cross-entropy on the answer (+ end-of-turn token); the alignment loss (`align_loss`, InfoNCE by
default) compares pooled (`pool`) outputs of decoder layer(s) `align_layer` of translation pairs, computed
by a pass that stops at the highest. Outputs in `out`: adapters `best/` and `last/` (PEFT format),
`state/` for `resume`, `log.jsonl` (every step and evaluation), `config.json` (the exact command and
settings).

Under torchrun every global micro-batch is split over the processes (midalign/distributed.py);
`batch_size` and `align_batch_size` stay global.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from midalign.adapters import adapter_from_model, save_adapter
from midalign.align import AlignConfig, encode_pairs, pairs_loss
from midalign.checkpoint import load_model_and_tokenizer, resolve_model_dir
from midalign.config import ModelConfig
from midalign.cost import COST_SAMPLE, MEASURE_AFTER, estimate_line, matmul_rate, measured_line, pass_flops
from midalign.data.assemble import alignment_pairs, group_pairs, task_examples
from midalign.data.tasks import TASKS, Pair
from midalign.devloss import dev_losses
from midalign.distributed import World, close_world, init_world
from midalign.errors import CheckpointError, DataError
from midalign.io import atomic_write_text, check_free_space
from midalign.lora import LoRAConfig, apply_lora, trainable_parameters
from midalign.memory import estimate_training_memory
from midalign.precision import autocast
from midalign.rundir import RunLock, check_resume_settings, check_run_folder, data_files
from midalign.schedule import (ALIGN, TASK, GradientSplit, alignment_batch, inverse_sqrt_lr, micro_batch_kinds,
                               task_batch)
from midalign.settings import (TrainSettings, align_layers, apply_experiment, check_settings, command_line,
                               resolution, resolve_settings, validate, with_preset)
from midalign.sft import EncodedExamples, answer_tokens, collate, task_loss
from midalign.state import find_state, load_state, save_state, write_checkpoint

class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the message names the update, the objective and the last checkpoint."""


def fit(settings: TrainSettings) -> Path:
    """Train (or resume) the run `settings` describe; returns its best adapter's folder."""
    args = with_preset(validate(settings))
    world = init_world()
    lock, finished = RunLock(args.out), False
    try:
        train_loop(args, world, lock)
        finished = True
    finally:
        lock.release()
        close_world(world, finished)
    return args.out / "best"


# ------------------------------------------------------------------------------------ a run's parts

def batch_rows(args: TrainSettings, data: RunData) -> tuple[int, int]:
    """The rows a task and an alignment micro-batch really hold: a batch size beyond the data draws every
    example (task) or every distinct English sentence (alignment) once."""
    english = len({p.en for pairs in data.pairs_by_lang.values() for p in pairs})
    return min(args.batch_size, len(data.task)), min(args.align_batch_size, english)


def memory_line(model, lora_config: LoRAConfig, args: TrainSettings, data: RunData, world: World) -> str:
    """The estimate of midalign.memory for this run's largest task and alignment passes, per process."""
    dtype = model.lm_head.weight.dtype
    per_rank = lambda n: max(1, n // world.size)
    task_rows, align_rows = batch_rows(args, data)
    encoded = data.task.prepared()
    passes, estimates = [], []
    if encoded:
        seq = max(len(p) + len(a) for p, a in encoded)
        answer = per_rank(task_rows) * max(len(a) for _, a in encoded)
        estimates.append(estimate_training_memory(model.config, lora_config, dtype, per_rank(task_rows), seq,
                                                  answer_tokens=answer, grad_checkpoint=args.grad_checkpoint))
        passes.append(f"task {per_rank(task_rows)} × ≤{seq} tokens")
    if not args.no_align:
        n = 2 * per_rank(align_rows)
        estimates.append(estimate_training_memory(model.config, lora_config, dtype, n, args.align_max_length,
                                                  layers=max(align_layers(args)), grad_checkpoint=args.grad_checkpoint))
        passes.append(f"alignment {n} × ≤{args.align_max_length} tokens to layer {max(align_layers(args))}")
    worst = max(estimates, key=lambda e: e.total)
    return f"[memory] estimate per process ({'; '.join(passes)}): {worst.describe()}"


def update_flops(config, args: TrainSettings, data: RunData, kinds: list[str], tok, world: World) -> float:
    """One process's floating-point work per update: its task micro-batches (the mean prepared example's
    tokens, the LM head on the answers) and alignment micro-batches (both sides of the mean pair, to the
    aligned layer), forward and backward (midalign.cost.pass_flops)."""
    task_rows, align_rows = (max(1, n // world.size) for n in batch_rows(args, data))
    flops = 0.0
    if TASK in kinds and (encoded := data.task.prepared()):
        tokens = sum(len(p) + len(a) for p, a in encoded) / len(encoded)
        answer = sum(len(a) for _, a in encoded) / len(encoded)
        flops += kinds.count(TASK) * pass_flops(config, task_rows * tokens, head_tokens=task_rows * answer)
    if ALIGN in kinds:
        sample = [p for pairs in data.pairs_by_lang.values() for p in pairs[:64 // len(data.pairs_by_lang) + 1]]
        src, en = encode_pairs(tok, sample, args.align_max_length)
        tokens = sum(map(len, src + en)) / len(sample)  # both sides of a pair
        flops += kinds.count(ALIGN) * pass_flops(config, align_rows * tokens, layers=max(align_layers(args)))
    return flops


@dataclass
class RunData:
    """A run's encoded task examples and alignment pairs (train and dev)."""
    task: EncodedExamples  # (prompt ids, answer ids + end-of-turn), tokenized when first drawn
    dev_task: EncodedExamples
    pairs_by_lang: dict[str, list[Pair]]
    n_pairs: int
    dev_pairs: list[Pair]
    align: AlignConfig


def load_run_data(args: TrainSettings, tok) -> RunData:
    train_task, dev_task = ([], []) if args.align_only else task_examples(
        TASKS[args.task], args.train_data, args.dev_data, args.train_langs, args.mt_direction)
    if not args.align_only and not train_task:
        raise DataError(f"no task training examples (task {args.task}, languages {args.train_langs or 'default'})")
    pairs, dev_pairs = ([], []) if args.no_align else alignment_pairs(
        args.align_data, args.align_dev_data, args.align_langs, args.align_dev_split, args.seed)
    align = AlignConfig(align_layers(args), args.temperature, args.pool, args.align_loss, args.align_batch_size,
                        args.align_max_length)
    return RunData(EncodedExamples(train_task, tok, args.max_length), EncodedExamples(dev_task, tok, args.max_length),
                   group_pairs(pairs), len(pairs), dev_pairs, align)


def schedule_length(args: TrainSettings, kinds: list[str], data: RunData) -> tuple[int, int]:
    """(updates, warmup updates): --max-steps, else --epochs over the task data (alignment-only: the pairs)."""
    if args.max_steps:
        total = args.max_steps
    elif TASK in kinds:
        total = math.ceil(args.epochs * len(data.task) / (args.batch_size * kinds.count(TASK)))
    else:
        total = math.ceil(args.epochs * data.n_pairs / (args.align_batch_size * kinds.count(ALIGN)))
    return total, max(1, round(args.warmup_ratio * total))


def open_run(args: TrainSettings, world: World, start: int, settings: dict):
    """Write --out/config.json, keep the log up to `start` (resume); the log file open for appending."""
    out = args.out
    if not world.main:
        return None
    try:
        out.mkdir(parents=True, exist_ok=True)
        log_lines = [l for l in (out / "log.jsonl").read_text().splitlines() if json.loads(l).get("step", 0) <= start] \
            if args.resume and (out / "log.jsonl").is_file() else []
        atomic_write_text(out / "log.jsonl", "".join(l + "\n" for l in log_lines))
        atomic_write_text(out / "config.json", json.dumps(
            {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
             "command": command_line(args), **settings},
            indent=1, default=str))
    except OSError as e:
        raise CheckpointError(f"cannot write to --out {out}: {e}; choose a writable folder") from e
    return open(out / "log.jsonl", "a", buffering=1)


def logged_seconds(out: Path) -> float:
    """Seconds of training the log in `out` records (its last update's; 0 when it has none): a resumed
    run's clock goes on from there, so `elapsed_s` stays the run's training time."""
    log = out / "log.jsonl"
    times = [r["elapsed_s"] for r in map(json.loads, log.read_text().splitlines()) if "elapsed_s" in r] \
        if log.is_file() else []
    return times[-1] if times else 0.0


def micro_batch_loss(kind: str, index: int, model, tok, data: RunData, args, world: World, gather) -> torch.Tensor:
    """The loss of this rank's share of global micro-batch `index` of objective `kind` (task or alignment)."""
    device = model.lm_head.weight.device
    if kind == TASK:
        batch = world.trim([data.task[i] for i in task_batch(len(data.task), args.batch_size, index, args.seed)])
        n_tokens = answer_tokens(collate(batch, tok.pad_id)[2])  # the global batch's
        return task_loss(model, *(t.to(device) for t in collate(world.shard(batch), tok.pad_id)), num_tokens=n_tokens)
    pairs = world.shard(alignment_batch(data.pairs_by_lang, data.align.batch_size, index, args.seed))
    return pairs_loss(model, tok, pairs, data.align, gather) / world.size


# ------------------------------------------------------------------------------------------- loop

def train_loop(args: TrainSettings, world: World, lock: RunLock) -> None:
    """Set the run up (model, data, LoRA, AdamW; state on resume), then update, evaluate and save."""
    # --- setup: settings, model, data, LoRA, optimizer (paper App. D.1)
    torch.manual_seed(args.seed)
    if world.main:
        print(resolution(args), file=sys.stderr)
    folder = resolve_model_dir(args.model)
    config = ModelConfig.from_hf(folder)
    resolve_settings(args, config)
    check_settings(args, config.num_hidden_layers, world)
    if args.dry_run:
        print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()}, indent=1, default=str))
        return
    if world.main:  # the lock first: a folder another live run holds is refused before anything in it is removed
        lock.acquire()
        check_run_folder(args.out, args.resume, args.overwrite)
    model, tok = load_model_and_tokenizer(args.model, args.device or world.device(), args.dtype,
                                          args.no_default_template)
    dtype = model.lm_head.weight.dtype
    world.main_first(lambda: apply_experiment(args))  # rank 0 downloads, the others then verify
    data = load_run_data(args, tok)
    kinds = micro_batch_kinds(args.grad_accum, task=not args.align_only, align=not args.no_align)
    total, warmup = schedule_length(args, kinds, data)
    # only the task examples this run's micro-batches draw are tokenized: first a spread sample for the time
    # estimate (said within the first minute), then the rest
    drawn = sorted({i for index in range(total * kinds.count(TASK))
                    for i in task_batch(len(data.task), args.batch_size, index, args.seed)}) if data.task else []
    data.task.prepare(drawn[::max(1, len(drawn) // COST_SAMPLE)])
    lora_config = LoRAConfig(args.lora_r, args.lora_alpha, args.lora_dropout, tuple(args.lora_targets))
    apply_lora(model, lora_config)  # the same initial weights on every rank (same seed)
    torch.manual_seed(args.seed + world.rank)  # LoRA dropout differs across ranks
    model.gradient_checkpointing = args.grad_checkpoint
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)
    if world.main:  # before the first update: room for best/, last/ and state/ (LoRA + AdamW's two moments),
        # each written beside its previous copy until the rename
        check_free_space(args.out, 10 * sum(p.numel() * p.element_size() for p in params), "the checkpoints")
    amp, gather, out = autocast(model.lm_head.weight.device, dtype), world.gather if args.align_gather else None, args.out
    trainer, start = {"best_dev_loss": None, "best_step": None, "bad_evals": 0}, 0
    files = data_files(args) if world.main else None  # the data by content, for --resume
    if args.resume:
        state = find_state(out)
        if state is None:
            raise CheckpointError(f"--resume: no complete training state in {out}/state (the run stopped before its "
                                  f"first checkpoint); start it over with --overwrite instead of --resume")
        # every setting that shapes the run as saved; a longer --max-steps keeps the schedule's warm-up
        warmup = check_resume_settings(out, {**asdict(args), "dtype": str(dtype), "data_files": files}) or warmup
        trainer = load_state(state, model, optimizer, world)
        start = trainer.pop("step")
    log = open_run(args, world, start, {"world_size": world.size, "total_steps": total, "warmup_steps": warmup,
                                        "data_files": files,
                                        "micro_batches": kinds, "dtype": str(dtype)})
    announce(args, model, tok, lora_config, data, kinds, total, world)
    data.task.prepare(drawn, progress=world.main)
    if world.main:
        print(memory_line(model, lora_config, args, data, world), file=sys.stderr)
    has_dev = bool(data.dev_task or data.dev_pairs)
    save_adapter_as = lambda name: write_checkpoint(f"{name} adapter", out, lambda: save_adapter(
        adapter_from_model(model, lora_config), out / name))
    save_training_state = lambda done: write_checkpoint("training state", out, lambda: save_state(
        out, model, optimizer, done, trainer, world))  # `done`: the updates made so far

    # --- the loop: each update sums alternating task / alignment micro-batches (paper §3)
    # the bar is closed on an error or Ctrl-C too, before the one-line message
    split = GradientSplit(params) if len(set(kinds)) > 1 else None  # joint: each objective's gradient norm
    with tqdm(total=total, initial=start, desc="train", unit="step", disable=not world.main) as bar:
        say = bar.write if world.main else (lambda text: None)
        t0 = time.perf_counter() - (logged_seconds(out) if log else 0.0)
        for step in range(start + 1, total + 1):
            lr = inverse_sqrt_lr(step, args.lr, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = {TASK: [], ALIGN: []}
            for j, kind in enumerate(kinds):
                index = (step - 1) * kinds.count(kind) + kinds[:j].count(kind)  # this objective's micro-batch number
                with amp():
                    loss = micro_batch_loss(kind, index, model, tok, data, args, world, gather)
                value = world.sum(loss.item())  # the global batch's loss, the same on every rank
                if not math.isfinite(value):
                    saved = find_state(out)
                    raise TrainingDiverged(
                        f"{kind} loss is {value} at update {step} (micro-batch {j + 1}); " +
                        (f"the last good checkpoint is {saved}" if saved else "no checkpoint was saved yet") +
                        " — lower --lr or check the data")
                (loss / len(kinds)).backward()
                losses[kind].append(value)
                if split is not None:
                    split.add(kind)
            # --- update
            world.all_reduce_grads(params)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.clip).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            record = {"step": step, "lr": lr, "grad_norm": grad_norm, "elapsed_s": round(time.perf_counter() - t0, 2),
                      **{name: sum(losses[k]) / len(losses[k])
                         for k, name in ((TASK, "task_loss"), (ALIGN, "align_loss")) if losses[k]},
                      **({f"{k}_grad_norm": v for k, v in split.norms().items()} if split is not None else {})}
            if log:
                log.write(json.dumps(record) + "\n")
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k.endswith("loss")})
            bar.update(1)
            if step == start + 1:  # the first update warms up; the next ones are timed
                timed_from = time.perf_counter()
            elif step == start + MEASURE_AFTER and step < total:
                say(measured_line(time.perf_counter() - timed_from, MEASURE_AFTER - 1, step, total))
            # --- evaluate (dev loss = task + alignment), keep the best, stop early
            if step % args.eval_every and step != total:
                continue
            if has_dev:
                ev = dev_losses(model, tok, data.dev_task, data.dev_pairs, data.align, batch_size=args.batch_size,
                                align_batches=args.align_dev_batches, autocast=amp)
                improved = trainer["best_dev_loss"] is None or ev["dev_loss"] < trainer["best_dev_loss"]
                if improved:
                    trainer.update(best_dev_loss=ev["dev_loss"], best_step=step, bad_evals=0)
                    if world.main:
                        save_adapter_as("best")
                else:
                    trainer["bad_evals"] += 1
                if log:
                    log.write(json.dumps({"step": step, "eval": True, **ev, "improved": improved}) + "\n")
                say(f"[eval] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in ev.items()))
            save_training_state(step)
            if has_dev and trainer["bad_evals"] >= args.patience:
                say(f"[train] early stop: {args.patience} evaluations without improvement")
                break
    if not world.main:
        return
    log.close()
    save_adapter_as("last")
    if not has_dev:
        save_adapter_as("best")
    best = (f"best dev loss {trainer['best_dev_loss']:.4f} at step {trainer['best_step']}" if has_dev
            else "no dev data: best/ = last/")
    print(f"[train] done in {time.perf_counter() - t0:.0f} s; {best}; adapters in {out}/best and {out}/last",
          file=sys.stderr)


def announce(args: TrainSettings, model, tok, lora_config: LoRAConfig, data: RunData, kinds: list[str], total: int,
             world: World) -> None:
    """The run's summary and time estimate (rank 0; the memory estimate follows once every drawn example is
    tokenized), and a warning when there is no dev data."""
    if not world.main:
        return
    alignment = "off" if args.no_align else (f"at layer {'+'.join(map(str, align_layers(args)))}/"
                                             f"{model.config.num_hidden_layers} ({args.pool}, {args.align_loss}): "
                                             f"{data.n_pairs} pairs in {len(data.pairs_by_lang)} languages")
    task = ("task off (--align-only)" if args.align_only else
            f"task {args.task}: {len(data.task)} train / {len(data.dev_task)} dev examples")
    print(f"[train] {args.model}: {trainable_parameters(model):,} LoRA parameters (r {args.lora_r}); {task}; alignment "
          f"{alignment}; {total} updates of {' + '.join(kinds)}" + (f" on {world.size} processes" if world.size > 1 else ""),
          file=sys.stderr)
    task_rows, align_rows = batch_rows(args, data)
    if not args.align_only and task_rows < args.batch_size:
        print(f"[train] --batch-size {args.batch_size} exceeds the {task_rows} task examples: each task micro-batch "
              f"holds {task_rows}", file=sys.stderr)
    if not args.no_align and align_rows < args.align_batch_size:
        print(f"[train] --align-batch-size {args.align_batch_size} exceeds the {align_rows} distinct English "
              f"sentences of the pairs: each alignment micro-batch holds {align_rows}", file=sys.stderr)
    print(estimate_line(update_flops(model.config, args, data, kinds, tok, world), total,
                        matmul_rate(model.lm_head.weight.device, model.lm_head.weight.dtype),
                        model.lm_head.weight.device, model.lm_head.weight.dtype, args.preset_resolved), file=sys.stderr)
    if not (data.dev_task or data.dev_pairs):
        print("[train] no dev data (task or alignment): no dev loss, no early stopping; best/ will be the last "
              "adapter. Pass --dev-data / --align-dev-data to select the best checkpoint.", file=sys.stderr)
