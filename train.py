"""Alternating task / middle-layer alignment LoRA training (Liu & Niehues 2025, §3; docs/method.md §1–4).

    python train.py                                  # offline default: UDHR X→English MT, demo preset
    python train.py --experiment slot --align-layer 16  # the paper's slot filling: data fetched on first use
    python train.py --preset paper --task slot --train-data massive/1.1/data --align-data tatoeba.tsv
    python train.py --no-align                       # task only: the SFT baseline
    python train.py --align-only                     # alignment only: the module for merging (§6.3)
    python train.py --experiment slot --align-only --dry-run   # print the resolved settings, train nothing

Each optimizer update sums `--grad-accum` micro-batches alternating task, alignment, task, … The task
loss is cross-entropy on the answer (+ end-of-turn token); the alignment loss is InfoNCE between
mean-pooled outputs of decoder layer `--align-layer` of translation pairs, computed by a pass that stops
at that layer. Outputs in --out: adapters `best/` and `last/` (PEFT format), `state/` for --resume,
`log.jsonl` (every step and evaluation), `config.json` (the exact command and settings).

Data parallel: `torchrun --nproc_per_node N train.py …` splits every global micro-batch over N
processes (midalign/distributed.py); --batch-size and --align-batch-size stay global.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from midalign.adapters import adapter_from_model, save_adapter
from midalign.align import POOLING, AlignConfig, pairs_loss
from midalign.checkpoint import load_model_and_tokenizer, resolve_model_dir
from midalign.cli import add_device_arguments, finite_float, positive_float, positive_int, run
from midalign.config import ModelConfig
from midalign.data.assemble import alignment_pairs, group_pairs, task_examples
from midalign.data.experiments import EXPERIMENTS
from midalign.data.tasks import TASKS, UDHR_TASK_LANGS, Pair
from midalign.devloss import dev_losses
from midalign.distributed import World, close_world, init_world
from midalign.errors import CheckpointError, DataError
from midalign.io import atomic_write_text
from midalign.lora import DEFAULT_TARGETS, LoRAConfig, apply_lora, trainable_parameters
from midalign.memory import estimate_training_memory
from midalign.precision import autocast
from midalign.registry import DEFAULT_MODEL
from midalign.rundir import RunLock, check_resume_settings, check_run_folder
from midalign.schedule import ALIGN, TASK, alignment_batch, inverse_sqrt_lr, micro_batch_kinds, task_batch
from midalign.sft import EncodedExamples, answer_tokens, collate, task_loss
from midalign.state import find_state, load_state, save_state, write_checkpoint

# Every preset is a set of flag defaults; an explicit flag always wins. `paper` = App. D.1.
PRESETS = {
    "paper": dict(batch_size=32, align_batch_size=32, grad_accum=4, epochs=5, max_steps=0, eval_every=200,
                  patience=5, pool="mean", temperature=None),  # τ by model family (FAMILY_TEMPERATURE)
    "demo": dict(batch_size=4, align_batch_size=16, grad_accum=2, epochs=5, max_steps=16, eval_every=8,
                 patience=5, pool="mean-skip-first", temperature=0.1),
}
# App. D.1: τ tuned on the MT dev loss, 0.1 for Llama 3 and 1.5 for Qwen 2.5 (--temperature overrides).
FAMILY_TEMPERATURE = {"llama": 0.1, "qwen2": 1.5}


class TrainingDiverged(RuntimeError):
    pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="flag defaults: 'paper' (App. D.1; the default with an experiment) or 'demo' "
                        "(≤10 min on a 2-core CPU; the default otherwise)")
    p.add_argument("--experiment", choices=sorted(EXPERIMENTS),
                   help="the paper's setup (Table 1): sets --task and the train/alignment languages and data, "
                        "downloaded on first use; --task slot/json without --train-data means the same")
    p.add_argument("--data-dir", type=Path, help="root of downloaded datasets (default: $MIDALIGN_CACHE/datasets)")
    g = p.add_argument_group("model and LoRA")
    g.add_argument("--model", default=DEFAULT_MODEL, help="offline alias, local HF folder or hub id")
    add_device_arguments(g, "bf16: bf16 weights + autocast, fp32 LoRA and optimizer (the paper's GPU setting; the "
                            "default on cuda); fp32: the default on cpu")
    g.add_argument("--lora-r", type=positive_int, default=8, help="LoRA rank")
    g.add_argument("--lora-alpha", type=positive_float, default=16.0, help="LoRA alpha (scaling alpha/r)")
    g.add_argument("--lora-dropout", type=finite_float, default=0.1, help="dropout on the LoRA branch input")
    g.add_argument("--lora-targets", nargs="+", default=list(DEFAULT_TARGETS), help="module names to adapt")
    g.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute layer activations in the backward pass (less memory, ~30%% more compute)")
    g = p.add_argument_group("task")
    g.add_argument("--task", choices=sorted(TASKS),
                   help="the task (midalign/data/tasks.py; default mt, or an experiment's own task)")
    g.add_argument("--align-only", action="store_true",
                   help="train the alignment objective alone: the module merged into a task adapter (§6.3)")
    g.add_argument("--train-data", nargs="+", type=Path,
                   help="task training files (default for mt: the offline UDHR train articles)")
    g.add_argument("--dev-data", nargs="+", type=Path, help="task dev files (slot: default the train files' dev partition)")
    g.add_argument("--train-langs", nargs="+", help=f"task languages (mt/UDHR default {' '.join(UDHR_TASK_LANGS)}; "
                                                    f"slot default {' '.join(EXPERIMENTS['slot'].train_langs)})")
    g.add_argument("--mt-direction", choices=["to-en", "from-en", "both"],
                   help="translation direction relative to English (default to-en; the mt experiment: both)")
    g.add_argument("--max-length", type=positive_int, default=512, help="tokens per task example (prompt cut from the left)")
    g = p.add_argument_group("alignment (paper §3)")
    g.add_argument("--no-align", action="store_true", help="task loss only (the SFT baseline)")
    g.add_argument("--align-layer", type=int, help="decoder layer whose output is aligned (default: middle, L/2)")
    g.add_argument("--align-data", nargs="+", type=Path,
                   help="pair files: TSV lang<TAB>sentence<TAB>english or JSONL {lang,text,en} "
                        "(default: the UDHR train articles of every language version, paired with English)")
    g.add_argument("--align-dev-data", nargs="+", type=Path, help="dev pair files (default: UDHR dev articles)")
    g.add_argument("--align-langs", nargs="+", help="restrict alignment pairs to these languages")
    g.add_argument("--pool", choices=POOLING, help="mean pooling, or mean without the attention-sink first token")
    g.add_argument("--temperature", type=positive_float, help="InfoNCE temperature τ (paper: 0.1 Llama 3, 1.5 Qwen 2.5)")
    g.add_argument("--align-symmetric", action="store_true", help="average both directions of the loss")
    g.add_argument("--align-dev-batches", type=positive_int, default=8,
                   help="fixed dev alignment batches per evaluation (the same ones every time)")
    g.add_argument("--align-max-length", type=positive_int, default=128,
                   help="tokens kept per alignment sentence (long paragraphs are cut; bounds activation memory)")
    g.add_argument("--align-gather", action="store_true",
                   help="under torchrun: negatives from all processes' pairs (default: per process, as the paper)")
    g = p.add_argument_group("optimisation (paper App. D.1)")
    g.add_argument("--batch-size", type=positive_int, help="task examples per micro-batch")
    g.add_argument("--align-batch-size", type=positive_int, help="translation pairs per alignment micro-batch")
    g.add_argument("--grad-accum", type=positive_int, help="micro-batches per optimizer update (alternating task/alignment)")
    g.add_argument("--lr", type=positive_float, default=5e-4, help="peak learning rate (inverse-sqrt schedule)")
    g.add_argument("--warmup-ratio", type=finite_float, default=0.03, help="share of updates in linear warmup")
    g.add_argument("--clip", type=finite_float, default=1.0, help="gradient-norm clipping")
    g.add_argument("--epochs", type=positive_float, help="at most this many passes over the task data")
    g.add_argument("--max-steps", type=int, help="optimizer updates (0 = from --epochs)")
    g.add_argument("--eval-every", type=positive_int, help="updates between dev evaluations (and checkpoints)")
    g.add_argument("--patience", type=positive_int, help="stop after this many evaluations without dev-loss improvement")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    g.add_argument("--resume", action="store_true", help="continue from --out/state exactly where it stopped")
    g.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds an earlier run (its own files only are removed)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the resolved settings (presets, experiment, τ, layer) as JSON and exit: nothing is "
                        "downloaded but the model's config, nothing trained")
    g.add_argument("--no-default-template", action="store_true",
                   help="Llama 3: the template the released official adapters were trained with (no "
                        "<|begin_of_text|> in the text, a newline after each <|eot_id|>; the tokenizer adds BOS)")
    p.set_defaults(align_dev_split=False)  # set by an experiment: hold out dev pairs from its alignment data
    pre, _ = p.parse_known_args(argv)
    paper = experiment_name(pre)
    preset = pre.preset or ("paper" if paper else "demo")
    p.set_defaults(**PRESETS[preset], preset_resolved=preset)
    return p.parse_args(argv)


def experiment_name(args: argparse.Namespace) -> str | None:
    """--experiment NAME, or a --task without --train-data nor an offline default whose name is one of the
    paper's experiments (slot, json): the paper's setup for that task."""
    implied = args.task in EXPERIMENTS and TASKS[args.task].offline is None and not args.train_data
    return args.experiment or (args.task if implied else None)


def resolution(args: argparse.Namespace, preset: str) -> str:
    """The first log line: which experiment and preset a command resolved to, and why."""
    name = experiment_name(args)
    why = ("--experiment" if args.experiment else f"--task {args.task} without --train-data") if name else None
    preset_why = "--preset" if args.preset else ("the default with an experiment" if name else "the default")
    flags = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in PRESETS[preset].items() if v is not None)
    return ((f"[train] experiment {name} ({why}: the paper's data and languages, Table 1); " if name else "[train] ") +
            f"preset {preset} ({preset_why}; explicit flags win): {flags}")


def resolve_settings(args: argparse.Namespace, config) -> None:
    """Settings that follow from the experiment and the model: task, languages, direction, τ, layer.
    Flags given explicitly keep their values."""
    exp = EXPERIMENTS.get(experiment_name(args))
    if exp is not None:
        args.task = args.task or exp.task
        args.train_langs = args.train_langs or (exp.train_langs if not args.align_only else None)
        args.mt_direction = args.mt_direction or exp.mt_direction
        args.align_langs = args.align_langs or (exp.align_langs if not args.no_align else None)
    args.task = args.task or "mt"
    args.mt_direction = args.mt_direction or "to-en"
    if args.temperature is None:
        args.temperature = FAMILY_TEMPERATURE[config.model_type]
    if args.align_layer is None:
        args.align_layer = config.num_hidden_layers // 2


def apply_experiment(args: argparse.Namespace) -> None:
    """The experiment's data files (fetched on first use) where no file flag was given."""
    exp = EXPERIMENTS.get(experiment_name(args))
    if exp is None:
        return
    train, dev, pairs = exp.train_files(args.data_dir, task=not args.align_only, align=not args.no_align)
    if not args.align_only:
        args.train_data, args.dev_data = args.train_data or train, args.dev_data or dev
    if not args.no_align and not args.align_data:
        args.align_data, args.align_dev_split = pairs, True


# ------------------------------------------------------------------------------------------- loop

def memory_line(model, lora_config: LoRAConfig, args, encoded, world: World) -> str:
    """The estimate of midalign.memory for this run's largest task and alignment passes, per process."""
    dtype = model.lm_head.weight.dtype
    per_rank = lambda n: max(1, n // world.size)
    passes, estimates = [], []
    if encoded:
        seq = max(len(p) + len(a) for p, a in encoded)
        answer = per_rank(args.batch_size) * max(len(a) for _, a in encoded)
        estimates.append(estimate_training_memory(model.config, lora_config, dtype, per_rank(args.batch_size), seq,
                                                  answer_tokens=answer, grad_checkpoint=args.grad_checkpoint))
        passes.append(f"task {per_rank(args.batch_size)} × ≤{seq} tokens")
    if not args.no_align:
        n = 2 * per_rank(args.align_batch_size)
        estimates.append(estimate_training_memory(model.config, lora_config, dtype, n, args.align_max_length,
                                                  layers=args.align_layer, grad_checkpoint=args.grad_checkpoint))
        passes.append(f"alignment {n} × ≤{args.align_max_length} tokens to layer {args.align_layer}")
    worst = max(estimates, key=lambda e: e.total)
    return f"[memory] estimate per process ({'; '.join(passes)}): {worst.describe()}"


@dataclass
class RunData:
    """A run's encoded task examples and alignment pairs (train and dev)."""
    task: EncodedExamples  # (prompt ids, answer ids + end-of-turn), tokenized when first drawn
    dev_task: EncodedExamples
    pairs_by_lang: dict[str, list[Pair]]
    n_pairs: int
    dev_pairs: list[Pair]
    align: AlignConfig


def load_run_data(args: argparse.Namespace, tok) -> RunData:
    train_task, dev_task = ([], []) if args.align_only else task_examples(
        TASKS[args.task], args.train_data, args.dev_data, args.train_langs, args.mt_direction)
    if not args.align_only and not train_task:
        raise DataError(f"no task training examples (task {args.task}, languages {args.train_langs or 'default'})")
    pairs, dev_pairs = ([], []) if args.no_align else alignment_pairs(
        args.align_data, args.align_dev_data, args.align_langs, args.align_dev_split, args.seed)
    align = AlignConfig(args.align_layer, args.temperature, args.pool, args.align_symmetric, args.align_batch_size,
                        args.align_max_length)
    return RunData(EncodedExamples(train_task, tok, args.max_length), EncodedExamples(dev_task, tok, args.max_length),
                   group_pairs(pairs), len(pairs), dev_pairs, align)


def check_settings(args: argparse.Namespace, n_layers: int, world: World) -> None:
    """Settings errors, raised before anything is downloaded or written."""
    if not 1 <= args.align_layer <= n_layers:
        raise DataError(f"--align-layer {args.align_layer} is out of range: this model has decoder layers 1..{n_layers}")
    if args.align_only and args.no_align:
        raise DataError("--align-only with --no-align leaves nothing to train")
    for flag, size in (("--batch-size", args.batch_size), ("--align-batch-size", args.align_batch_size)):
        if size % world.size:
            raise DataError(f"{flag} {size} is the global batch and must be divisible by the {world.size} processes")


def schedule_length(args: argparse.Namespace, kinds: list[str], data: RunData) -> tuple[int, int]:
    """(updates, warmup updates): --max-steps, else --epochs over the task data (alignment-only: the pairs)."""
    if args.max_steps:
        total = args.max_steps
    elif TASK in kinds:
        total = math.ceil(args.epochs * len(data.task) / (args.batch_size * kinds.count(TASK)))
    else:
        total = math.ceil(args.epochs * data.n_pairs / (args.align_batch_size * kinds.count(ALIGN)))
    return total, max(1, round(args.warmup_ratio * total))


def open_run(args, argv, world: World, start: int, settings: dict):
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
            {"command": " ".join(sys.argv if argv is None else ["train.py", *argv]),
             **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, **settings},
            indent=1, default=str))
    except OSError as e:
        raise CheckpointError(f"cannot write to --out {out}: {e}; choose a writable folder") from e
    return open(out / "log.jsonl", "a", buffering=1)


def micro_batch_loss(kind: str, index: int, model, tok, data: RunData, args, world: World, gather) -> torch.Tensor:
    """The loss of this rank's share of global micro-batch `index` of objective `kind` (task or alignment)."""
    device = model.lm_head.weight.device
    if kind == TASK:
        batch = world.trim([data.task[i] for i in task_batch(len(data.task), args.batch_size, index, args.seed)])
        n_tokens = answer_tokens(collate(batch, tok.pad_id)[2])  # the global batch's
        return task_loss(model, *(t.to(device) for t in collate(world.shard(batch), tok.pad_id)), num_tokens=n_tokens)
    pairs = world.shard(alignment_batch(data.pairs_by_lang, data.align.batch_size, index, args.seed))
    return pairs_loss(model, tok, pairs, data.align, gather) / world.size


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    world = init_world()
    lock, finished = RunLock(args.out), False
    try:
        train(args, argv, world, lock)
        finished = True
    finally:
        lock.release()
        close_world(world, finished)


def train(args: argparse.Namespace, argv: list[str] | None, world: World, lock: RunLock) -> None:
    # --- setup: settings, model, data, LoRA, optimizer (paper App. D.1)
    torch.manual_seed(args.seed)
    if world.main:
        print(resolution(args, args.preset_resolved), file=sys.stderr)
    folder = resolve_model_dir(args.model)
    resolve_settings(args, ModelConfig.from_hf(folder))
    if args.dry_run:
        print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, indent=1, default=str))
        return
    if world.main:
        check_run_folder(args.out, args.resume, args.overwrite)
    model, tok = load_model_and_tokenizer(args.model, args.device or world.device(), args.dtype,
                                          args.no_default_template)
    dtype = model.lm_head.weight.dtype
    check_settings(args, model.config.num_hidden_layers, world)
    world.main_first(lambda: apply_experiment(args))  # rank 0 downloads, the others then verify
    data = load_run_data(args, tok)
    kinds = micro_batch_kinds(args.grad_accum, task=not args.align_only, align=not args.no_align)
    total, warmup = schedule_length(args, kinds, data)
    if data.task:  # tokenize only the task examples this run's micro-batches draw
        data.task.prepare(sorted({i for index in range(total * kinds.count(TASK))
                                  for i in task_batch(len(data.task), args.batch_size, index, args.seed)}))
    lora_config = LoRAConfig(args.lora_r, args.lora_alpha, args.lora_dropout, tuple(args.lora_targets))
    apply_lora(model, lora_config)  # the same initial weights on every rank (same seed)
    torch.manual_seed(args.seed + world.rank)  # LoRA dropout differs across ranks
    model.gradient_checkpointing = args.grad_checkpoint
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)
    amp, gather, out = autocast(model.lm_head.weight.device, dtype), world.gather if args.align_gather else None, args.out
    trainer, start = {"best_dev_loss": None, "best_step": None, "bad_evals": 0}, 0
    if args.resume:
        state = find_state(out)
        if state is None:
            raise CheckpointError(f"--resume: no complete training state in {out}/state; start without --resume")
        # every setting that shapes the run as saved; a longer --max-steps keeps the schedule's warm-up
        warmup = check_resume_settings(out, {**vars(args), "dtype": str(dtype)}) or warmup
        trainer = load_state(state, model, optimizer, world)
        start = trainer.pop("step")
    if world.main:
        lock.acquire()
    log = open_run(args, argv, world, start, {"world_size": world.size, "total_steps": total, "warmup_steps": warmup,
                                              "micro_batches": kinds, "dtype": str(dtype)})
    announce(args, model, lora_config, data, kinds, total, world)
    has_dev = bool(data.dev_task or data.dev_pairs)
    save_adapter_as = lambda name: write_checkpoint(f"{name} adapter", out, lambda: save_adapter(
        adapter_from_model(model, lora_config), out / name))
    save_training_state = lambda: write_checkpoint("training state", out, lambda: save_state(
        out, model, optimizer, step, trainer, world))

    # --- the loop: each update sums alternating task / alignment micro-batches (paper §3)
    bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not world.main)
    say = bar.write if world.main else (lambda text: None)
    t0 = time.perf_counter()
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
                raise TrainingDiverged(f"{kind} loss is {value} at update {step} (micro-batch {j + 1}); "
                                       f"the last good checkpoint is {out / 'state'} — lower --lr or check the data")
            (loss / len(kinds)).backward()
            losses[kind].append(value)
        # --- update
        world.all_reduce_grads(params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, args.clip).item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step, "lr": lr, "grad_norm": grad_norm, "elapsed_s": round(time.perf_counter() - t0, 2),
                  **{name: sum(losses[k]) / len(losses[k]) for k, name in ((TASK, "task_loss"), (ALIGN, "align_loss"))
                     if losses[k]}}
        if log:
            log.write(json.dumps(record) + "\n")
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k.endswith("loss")})
        bar.update(1)
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
        save_training_state()
        if has_dev and trainer["bad_evals"] >= args.patience:
            say(f"[train] early stop: {args.patience} evaluations without improvement")
            break
    bar.close()
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


def announce(args, model, lora_config: LoRAConfig, data: RunData, kinds: list[str], total: int, world: World) -> None:
    """The run's summary and memory estimate (rank 0), and a warning when there is no dev data."""
    if not world.main:
        return
    alignment = "off" if args.no_align else (f"at layer {args.align_layer}/{model.config.num_hidden_layers}: "
                                             f"{data.n_pairs} pairs in {len(data.pairs_by_lang)} languages")
    task = ("task off (--align-only)" if args.align_only else
            f"task {args.task}: {len(data.task)} train / {len(data.dev_task)} dev examples")
    print(f"[train] {args.model}: {trainable_parameters(model):,} LoRA parameters (r {args.lora_r}); {task}; alignment "
          f"{alignment}; {total} updates of {' + '.join(kinds)}" + (f" on {world.size} processes" if world.size > 1 else ""),
          file=sys.stderr)
    print(memory_line(model, lora_config, args, data.task.prepared(), world), file=sys.stderr)
    if not (data.dev_task or data.dev_pairs):
        print("[train] no dev data (task or alignment): no dev loss, no early stopping; best/ will be the last "
              "adapter. Pass --dev-data / --align-dev-data to select the best checkpoint.", file=sys.stderr)


if __name__ == "__main__":
    run(main, errors=(TrainingDiverged,))
