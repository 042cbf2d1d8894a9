"""Alternating task / middle-layer alignment LoRA training (Liu & Niehues 2025, §3; REFERENCE.md §1–4).

    python train.py                                  # offline default: UDHR X→English MT, demo preset
    python train.py --experiment slot --align-layer 16  # the paper's slot filling: data fetched on first use
    python train.py --preset paper --task slot --train-data massive/1.1/data --align-data tatoeba.tsv
    python train.py --no-align                       # task only: the SFT baseline
    python train.py --task none                      # alignment only: the module for merging (§6.3)
    python train.py --experiment slot --task none --dry-run   # print the resolved settings, train nothing

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
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from midalign.adapters import adapter_from_model, save_adapter
from midalign.align import POOLING, alignment_loss
from midalign.checkpoint import CheckpointError, load_model, resolve_model_dir
from midalign.config import ModelConfig
from midalign.data import udhr
from midalign.data.experiments import EXPERIMENTS
from midalign.data.tasks import Pair, load_massive, load_pairs, load_parallel_jsonl, load_uner, mt_examples
from midalign.errors import DataError, MidalignError
from midalign.distributed import World, close_world, init_world
from midalign.io import atomic_dir, atomic_write_text
from midalign.lora import DEFAULT_TARGETS, LoRAConfig, apply_lora, trainable_parameters
from midalign.memory import estimate_training_memory
from midalign.registry import DEFAULT_MODEL
from midalign.schedule import ALIGN, TASK, alignment_batch, inverse_sqrt_lr, micro_batch_kinds, task_batch
from midalign.sft import answer_tokens, collate, encode_examples, task_loss
from midalign.tokenizer import ChatTokenizer

# Every preset is a set of flag defaults; an explicit flag always wins. `paper` = App. D.1.
PRESETS = {
    "paper": dict(batch_size=32, align_batch_size=32, grad_accum=4, epochs=5, max_steps=0, eval_every=200,
                  patience=5, pool="mean", temperature=None),  # τ by model family (FAMILY_TEMPERATURE)
    "demo": dict(batch_size=4, align_batch_size=16, grad_accum=2, epochs=5, max_steps=16, eval_every=8,
                 patience=5, pool="mean-skip-first", temperature=0.1),
}
SUPERVISED = ["de", "es", "fr", "ru", "zh"]  # offline default (UDHR MT) task languages
# App. D.1: τ tuned on the MT dev loss, 0.1 for Llama 3 and 1.5 for Qwen 2.5 (--temperature overrides).
FAMILY_TEMPERATURE = {"llama": 0.1, "qwen2": 1.5}
# Alignment dev pairs held out from an experiment's alignment data, per language (the early-stopping
# dev loss is task + alignment, as in the official code): this share, at most ALIGN_DEV_MAX pairs.
ALIGN_DEV_SHARE, ALIGN_DEV_MAX = 0.1, 100


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
    g.add_argument("--device", help="cpu or cuda (default: cuda when available; bf16 autocast on cuda)")
    g.add_argument("--lora-r", type=int, default=8, help="LoRA rank")
    g.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (scaling alpha/r)")
    g.add_argument("--lora-dropout", type=float, default=0.1, help="dropout on the LoRA branch input")
    g.add_argument("--lora-targets", nargs="+", default=list(DEFAULT_TARGETS), help="module names to adapt")
    g.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute layer activations in the backward pass (less memory, ~30%% more compute)")
    g = p.add_argument_group("task")
    g.add_argument("--task", choices=["mt", "slot", "json", "none"],
                   help="default mt (an experiment's own task); 'none' trains the alignment objective alone")
    g.add_argument("--train-data", nargs="+", type=Path,
                   help="task training files (default for mt: the offline UDHR train articles)")
    g.add_argument("--dev-data", nargs="+", type=Path, help="task dev files (slot: default the train files' dev partition)")
    g.add_argument("--train-langs", nargs="+", help=f"task languages (mt/UDHR default {' '.join(SUPERVISED)}; "
                                                    f"slot default {' '.join(EXPERIMENTS['slot'].train_langs)})")
    g.add_argument("--mt-direction", choices=["to-en", "from-en", "both"],
                   help="translation direction relative to English (default to-en; the mt experiment: both)")
    g.add_argument("--max-length", type=int, default=512, help="tokens per task example (prompt cut from the left)")
    g = p.add_argument_group("alignment (paper §3)")
    g.add_argument("--no-align", action="store_true", help="task loss only (the SFT baseline)")
    g.add_argument("--align-layer", type=int, help="decoder layer whose output is aligned (default: middle, L/2)")
    g.add_argument("--align-data", nargs="+", type=Path,
                   help="pair files: TSV lang<TAB>sentence<TAB>english or JSONL {lang,text,en} "
                        "(default: the UDHR train articles of every language version, paired with English)")
    g.add_argument("--align-dev-data", nargs="+", type=Path, help="dev pair files (default: UDHR dev articles)")
    g.add_argument("--align-langs", nargs="+", help="restrict alignment pairs to these languages")
    g.add_argument("--pool", choices=POOLING, help="mean pooling, or mean without the attention-sink first token")
    g.add_argument("--temperature", type=float, help="InfoNCE temperature τ (paper: 0.1 Llama 3, 1.5 Qwen 2.5)")
    g.add_argument("--align-symmetric", action="store_true", help="average both directions of the loss")
    g.add_argument("--align-dev-batches", type=int, default=8,
                   help="fixed dev alignment batches per evaluation (the same ones every time)")
    g.add_argument("--align-max-length", type=int, default=128,
                   help="tokens kept per alignment sentence (long paragraphs are cut; bounds activation memory)")
    g.add_argument("--align-gather", action="store_true",
                   help="under torchrun: negatives from all processes' pairs (default: per process, as the paper)")
    g = p.add_argument_group("optimisation (paper App. D.1)")
    g.add_argument("--batch-size", type=int, help="task examples per micro-batch")
    g.add_argument("--align-batch-size", type=int, help="translation pairs per alignment micro-batch")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer update (alternating task/alignment)")
    g.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (inverse-sqrt schedule)")
    g.add_argument("--warmup-ratio", type=float, default=0.03, help="share of updates in linear warmup")
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    g.add_argument("--epochs", type=float, help="at most this many passes over the task data")
    g.add_argument("--max-steps", type=int, help="optimizer updates (0 = from --epochs)")
    g.add_argument("--eval-every", type=int, help="updates between dev evaluations (and checkpoints)")
    g.add_argument("--patience", type=int, help="stop after this many evaluations without dev-loss improvement")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    g.add_argument("--resume", action="store_true", help="continue from --out/state exactly where it stopped")
    g.add_argument("--dry-run", action="store_true",
                   help="print the resolved settings (presets, experiment, τ, layer) as JSON and exit: nothing is "
                        "downloaded but the model's config, nothing trained")
    g.add_argument("--no-default-template", action="store_true",
                   help="Llama 3: the template the released official adapters were trained with (no "
                        "<|begin_of_text|> in the text, a newline after each <|eot_id|>; the tokenizer adds BOS)")
    p.set_defaults(align_dev_split=False)  # set by an experiment: hold out dev pairs from its alignment data
    pre, _ = p.parse_known_args(argv)
    paper = experiment_name(pre)
    p.set_defaults(**PRESETS[pre.preset or ("paper" if paper else "demo")])
    return p.parse_args(argv)


def experiment_name(args: argparse.Namespace) -> str | None:
    """--experiment NAME, or --task slot/json without --train-data (the paper's setup for that task)."""
    return args.experiment or (args.task if args.task in ("slot", "json") and not args.train_data else None)


def resolve_settings(args: argparse.Namespace, config) -> None:
    """Settings that follow from the experiment and the model: task, languages, direction, τ, layer.
    Flags given explicitly keep their values (`--task none` included)."""
    exp = EXPERIMENTS.get(experiment_name(args))
    if exp is not None:
        args.task = args.task or exp.task
        args.train_langs = args.train_langs or (exp.train_langs if args.task != "none" else None)
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
    train, dev, pairs = exp.train_files(args.data_dir, task=args.task != "none", align=not args.no_align)
    if args.task != "none":
        args.train_data, args.dev_data = args.train_data or train, args.dev_data or dev
    if not args.no_align and not args.align_data:
        args.align_data, args.align_dev_split = pairs, True


# ------------------------------------------------------------------------------------------- data

def group_pairs(pairs: list[Pair]) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {}
    for pair in pairs:
        out.setdefault(pair.lang, []).append(pair)
    return out


def udhr_pairs(split: str, langs: list[str] | None) -> list[Pair]:
    return [Pair(l, s, e) for l, s, e in udhr.english_pairs(split, langs=langs)]


def mt_from_pairs(pairs: list[Pair], direction: str):
    out = []
    if direction in ("to-en", "both"):
        out += mt_examples(pairs, to_english=True)
    if direction in ("from-en", "both"):
        out += mt_examples(pairs, to_english=False)
    return out


def files(paths: list[Path]) -> list[Path]:
    out = []
    for path in paths:
        out += sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return out


def task_data(args) -> tuple[list, list]:
    """(train, dev) task examples."""
    if args.task == "none":
        return [], []
    if args.task == "mt":
        if not args.train_data:
            langs = args.train_langs or SUPERVISED
            return (mt_from_pairs(udhr_pairs("train", langs), args.mt_direction),
                    mt_from_pairs(udhr_pairs("dev", langs), args.mt_direction))
        load = lambda fs: [ex for f in files(fs) for ex in _alma(f, args.mt_direction)]
        return load(args.train_data), load(args.dev_data) if args.dev_data else []
    if args.task == "slot":
        langs = args.train_langs or EXPERIMENTS["slot"].train_langs
        train = [ex for f in files(args.train_data) for ex in load_massive(f, "train", langs)]
        dev = [ex for f in files(args.dev_data or args.train_data) for ex in load_massive(f, "dev", langs)]
        return train, dev
    return ([ex for f in files(args.train_data) for ex in load_uner(f)],
            [ex for f in files(args.dev_data or []) for ex in load_uner(f)])


def _alma(path: Path, direction: str):
    """ALMA files are named like train.de-en.json(l); the pair comes from the name."""
    pair = path.name.split(".")[-2] if path.name.count(".") >= 2 else ""
    if "-" not in pair:
        raise DataError(f"{path}: cannot tell the language pair; name the file like train.de-en.jsonl")
    src, tgt = pair.split("-", 1)
    x = src if tgt == "en" else tgt
    out = []
    if direction in ("to-en", "both"):
        out += load_parallel_jsonl(path, x, "en")
    if direction in ("from-en", "both"):
        out += load_parallel_jsonl(path, "en", x)
    return out


def hold_out(pairs: list[Pair], seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, dev): per language, ALIGN_DEV_SHARE of the pairs (at most ALIGN_DEV_MAX, at least 1 when a
    language has 2+) drawn with a fixed seed become dev pairs; the rest stay for training."""
    train, dev = [], []
    for lang, group in group_pairs(pairs).items():
        order = torch.randperm(len(group), generator=torch.Generator().manual_seed(seed)).tolist()
        n = min(ALIGN_DEV_MAX, max(1 if len(group) > 1 else 0, round(ALIGN_DEV_SHARE * len(group))))
        dev += [group[i] for i in order[:n]]
        train += [group[i] for i in order[n:]]
    return train, dev


def align_data(args) -> tuple[list[Pair], list[Pair]]:
    if args.no_align:
        return [], []
    if args.align_data:
        train = [p for f in args.align_data for p in load_pairs(f)]
        dev = [p for f in args.align_dev_data or [] for p in load_pairs(f)]
        if args.align_dev_split and not dev:
            train, dev = hold_out(train, args.seed)
    else:
        train, dev = udhr_pairs("train", args.align_langs), udhr_pairs("dev", args.align_langs)
    if args.align_langs:
        train = [p for p in train if p.lang in args.align_langs]
        dev = [p for p in dev if p.lang in args.align_langs]
        missing = set(args.align_langs) - {p.lang for p in train}
        if missing:
            raise DataError(f"no alignment pairs for {', '.join(sorted(missing))}: add them to --align-data "
                            f"or drop them from --align-langs")
    if len({p.en for p in train}) < 2:
        raise DataError("alignment needs at least 2 pairs with different English sentences")
    return train, dev


def encode_pairs(tok, pairs: list[Pair], max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Raw sentences with the tokenizer's default special tokens (no chat template), cut to max_length."""
    cut = lambda texts: [ids[:max_length] for ids in tok.encode_batch(texts)]
    return cut([p.text for p in pairs]), cut([p.en for p in pairs])


# ----------------------------------------------------------------------------------- checkpoints

def save_state(out: Path, model, optimizer, step: int, trainer: dict, world: World = World()) -> None:
    """LoRA weights, optimizer, every rank's RNG and the counters, written atomically to out/state."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    ranks = world.gather_objects(rng)
    if not world.main:
        return
    with atomic_dir(out / "state") as tmp:
        save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad},
                  str(tmp / "lora.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(ranks, tmp / "rng.pt")
        (tmp / "trainer.json").write_text(json.dumps({**trainer, "step": step, "world_size": world.size}))


def find_state(out: Path) -> Path | None:
    """out/state, or the previous complete copy if a crash hit between the two renames of a save."""
    if (out / "state" / "trainer.json").is_file():
        return out / "state"
    old = sorted(out.glob(".state.old-*"), key=lambda p: p.stat().st_mtime)
    return old[-1] if old and (old[-1] / "trainer.json").is_file() else None


def load_state(state: Path, model, optimizer, world: World = World()) -> dict:
    trainer = json.loads((state / "trainer.json").read_text())
    if trainer.pop("world_size", 1) != world.size:
        raise CheckpointError(f"{state} was written by a run with a different number of processes; "
                              f"resume with the same torchrun --nproc_per_node")
    lora = load_file(str(state / "lora.safetensors"))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(lora) != set(params):
        raise CheckpointError(f"{state}: saved LoRA parameters do not match this model/LoRA configuration")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(lora[n])
    optimizer.load_state_dict(torch.load(state / "optimizer.pt", weights_only=True))
    rng = torch.load(state / "rng.pt", weights_only=True)[world.rank]
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return trainer


# ------------------------------------------------------------------------------------------- loop

@torch.no_grad()
def evaluate(model, args, tok, dev_task, dev_pairs, autocast) -> dict:
    """Mean dev task loss and alignment loss (fixed batches); dev loss = their sum, as the official code."""
    model.eval()
    result = {}
    if dev_task:
        losses = []
        for i in range(0, len(dev_task), args.batch_size):
            chunk = dev_task[i:i + args.batch_size]
            with autocast():
                batch = (t.to(model.lm_head.weight.device) for t in collate(chunk, tok.pad_id))
                losses.append((task_loss(model, *batch).item(), len(chunk)))
        result["dev_task_loss"] = sum(l * n for l, n in losses) / sum(n for _, n in losses)
    if dev_pairs:
        losses = []
        by_lang = group_pairs(dev_pairs)
        for i in range(min(max(len(dev_pairs) // args.align_batch_size, 1), args.align_dev_batches)):
            batch = alignment_batch(by_lang, args.align_batch_size, i, seed=12345)
            with autocast():
                losses.append(alignment_loss(model, *encode_pairs(tok, batch, args.align_max_length), args.align_layer,
                                             args.temperature, args.pool, args.align_symmetric, tok.pad_id).item())
        result["dev_align_loss"] = sum(losses) / len(losses)
    result["dev_loss"] = result.get("dev_task_loss", 0.0) + result.get("dev_align_loss", 0.0)
    model.train()
    return result


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


def write_checkpoint(what: str, out: Path, save) -> None:
    """Run `save()`; a failed write (disk full, no permission) becomes an error that says the previous copy is intact."""
    try:
        save()
    except OSError as e:
        raise CheckpointError(f"could not write {what} in {out}: {e}. Nothing was half-written: the previous "
                              f"{what} is intact. Free disk space (or pick another --out) and rerun with --resume") from e


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    world = init_world()
    try:
        train(args, argv, world)
    finally:
        close_world(world)


def train(args: argparse.Namespace, argv: list[str] | None, world: World) -> None:
    torch.manual_seed(args.seed)
    folder = resolve_model_dir(args.model)
    device = torch.device(args.device) if args.device else None
    if device is None and world.size > 1 and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    resolve_settings(args, ModelConfig.from_hf(folder))
    if args.dry_run:
        print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, indent=1,
                         default=str))
        return
    model, tok = load_model(folder, device=device), ChatTokenizer(folder, args.no_default_template)
    model.name_or_path = args.model
    device = model.lm_head.weight.device
    L = model.config.num_hidden_layers
    if not 1 <= args.align_layer <= L:
        raise DataError(f"--align-layer {args.align_layer} is out of range: this model has decoder layers 1..{L}")
    if args.task == "none" and args.no_align:
        raise DataError("--task none with --no-align leaves nothing to train")
    for flag, size in (("--batch-size", args.batch_size), ("--align-batch-size", args.align_batch_size)):
        if size % world.size:
            raise DataError(f"{flag} {size} is the global batch and must be divisible by the {world.size} processes")

    world.main_first(lambda: apply_experiment(args))  # rank 0 downloads, the others then verify
    train_task, dev_task_examples = task_data(args)
    train_pairs, dev_pairs = align_data(args)
    if args.task != "none" and not train_task:
        raise DataError(f"no task training examples (task {args.task}, languages {args.train_langs or 'default'})")
    encoded = encode_examples(train_task, tok, args.max_length)
    dev_task = encode_examples(dev_task_examples, tok, args.max_length)
    by_lang = group_pairs(train_pairs)
    kinds = micro_batch_kinds(args.grad_accum, task=args.task != "none", align=not args.no_align)
    n_task, n_align = kinds.count(TASK), kinds.count(ALIGN)
    if args.max_steps:
        total = args.max_steps
    elif n_task:
        total = math.ceil(args.epochs * len(encoded) / (args.batch_size * n_task))
    else:
        total = math.ceil(args.epochs * len(train_pairs) / (args.align_batch_size * n_align))
    warmup = max(1, round(args.warmup_ratio * total))

    lora_config = LoRAConfig(args.lora_r, args.lora_alpha, args.lora_dropout, tuple(args.lora_targets))
    apply_lora(model, lora_config)  # the same initial weights on every rank (same seed)
    torch.manual_seed(args.seed + world.rank)  # LoRA dropout differs across ranks
    model.gradient_checkpointing = args.grad_checkpoint
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)
    autocast = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda"
                else contextlib.nullcontext)
    gather = world.gather if args.align_gather else None

    out = args.out
    trainer = {"best_dev_loss": None, "best_step": None, "bad_evals": 0}
    start = 0
    if args.resume:
        state = find_state(out)
        if state is None:
            raise CheckpointError(f"--resume: no complete training state in {out}/state; start without --resume")
        trainer = load_state(state, model, optimizer, world)
        start = trainer.pop("step")
    if world.main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            log_lines = [l for l in (out / "log.jsonl").read_text().splitlines() if json.loads(l).get("step", 0) <= start] \
                if args.resume and (out / "log.jsonl").is_file() else []
            atomic_write_text(out / "log.jsonl", "".join(l + "\n" for l in log_lines))
            atomic_write_text(out / "config.json", json.dumps(
                {"command": " ".join(sys.argv if argv is None else ["train.py", *argv]),
                 **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                 "world_size": world.size, "total_steps": total, "warmup_steps": warmup, "micro_batches": kinds},
                indent=1, default=str))
        except OSError as e:
            raise CheckpointError(f"cannot write to --out {out}: {e}; choose a writable folder") from e
        print(f"[train] {args.model}: {trainable_parameters(model):,} LoRA parameters (r {args.lora_r}); "
              f"task {args.task}: {len(encoded)} train / {len(dev_task)} dev examples; alignment "
              f"{'off' if args.no_align else f'at layer {args.align_layer}/{L}: {len(train_pairs)} pairs in {len(by_lang)} languages'}; "
              f"{total} updates of {' + '.join(kinds)}" + (f" on {world.size} processes" if world.size > 1 else ""),
              file=sys.stderr)
        print(memory_line(model, lora_config, args, encoded, world), file=sys.stderr)
    has_dev = bool(dev_task or dev_pairs)
    if not has_dev and world.main:
        print("[train] no dev data (task or alignment): no dev loss, no early stopping; best/ will be the last "
              "adapter. Pass --dev-data / --align-dev-data to select the best checkpoint.", file=sys.stderr)
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, desc="train", unit="step", disable=not world.main)
    say = bar.write if world.main else (lambda text: None)
    log = open(out / "log.jsonl", "a", buffering=1) if world.main else None
    t0 = time.perf_counter()
    for step in range(start + 1, total + 1):
        lr = inverse_sqrt_lr(step, args.lr, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = {TASK: [], ALIGN: []}
        for j, kind in enumerate(kinds):
            index = (step - 1) * kinds.count(kind) + kinds[:j].count(kind)  # this objective's micro-batch number
            with autocast():
                if kind == TASK:
                    chosen = task_batch(len(encoded), args.batch_size, index, args.seed)
                    batch = world.trim([encoded[i] for i in chosen])
                    n_tokens = answer_tokens(collate(batch, tok.pad_id)[2])  # the global batch's
                    loss = task_loss(model, *(t.to(device) for t in collate(world.shard(batch), tok.pad_id)),
                                     num_tokens=n_tokens)
                else:
                    pairs = world.shard(alignment_batch(by_lang, args.align_batch_size, index, args.seed))
                    loss = alignment_loss(model, *encode_pairs(tok, pairs, args.align_max_length), args.align_layer,
                                          args.temperature, args.pool, args.align_symmetric, tok.pad_id,
                                          gather) / world.size
            value = world.sum(loss.item())  # the global batch's loss, the same on every rank
            if not math.isfinite(value):
                raise TrainingDiverged(f"{kind} loss is {value} at update {step} (micro-batch {j + 1}); "
                                       f"the last good checkpoint is {out / 'state'} — lower --lr or check the data")
            (loss / len(kinds)).backward()
            losses[kind].append(value)
        world.all_reduce_grads(params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, args.clip).item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step, "lr": lr, "grad_norm": grad_norm, "elapsed_s": round(time.perf_counter() - t0, 2)}
        for kind, name in ((TASK, "task_loss"), (ALIGN, "align_loss")):
            if losses[kind]:
                record[name] = sum(losses[kind]) / len(losses[kind])
        if log:
            log.write(json.dumps(record) + "\n")
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k.endswith("loss")})
        bar.update(1)
        if (step % args.eval_every == 0 or step == total) and not has_dev:
            write_checkpoint("training state", out, lambda: save_state(out, model, optimizer, step, trainer, world))
        elif step % args.eval_every == 0 or step == total:
            ev = evaluate(model, args, tok, dev_task, dev_pairs, autocast)  # every rank: the same full dev set
            improved = trainer["best_dev_loss"] is None or ev["dev_loss"] < trainer["best_dev_loss"]
            if improved:
                trainer.update(best_dev_loss=ev["dev_loss"], best_step=step, bad_evals=0)
                if world.main:
                    write_checkpoint("best adapter", out, lambda: save_adapter(adapter_from_model(model, lora_config),
                                                                               out / "best"))
            else:
                trainer["bad_evals"] += 1
            if log:
                log.write(json.dumps({"step": step, "eval": True, **ev, "improved": improved}) + "\n")
            say(f"[eval] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in ev.items()))
            write_checkpoint("training state", out, lambda: save_state(out, model, optimizer, step, trainer, world))
            if trainer["bad_evals"] >= args.patience:
                say(f"[train] early stop: {args.patience} evaluations without improvement")
                break
    bar.close()
    if not world.main:
        return
    log.close()
    write_checkpoint("last adapter", out, lambda: save_adapter(adapter_from_model(model, lora_config), out / "last"))
    if not has_dev:
        write_checkpoint("best adapter", out, lambda: save_adapter(adapter_from_model(model, lora_config), out / "best"))
        print(f"[train] done in {time.perf_counter() - t0:.0f} s (no dev data: best/ = last/); adapters in "
              f"{out}/best and {out}/last", file=sys.stderr)
        return
    print(f"[train] done in {time.perf_counter() - t0:.0f} s; best dev loss {trainer['best_dev_loss']:.4f} at "
          f"step {trainer['best_step']}; adapters in {out}/best and {out}/last", file=sys.stderr)


def cli(argv: list[str] | None = None) -> None:
    """main() with the errors a user can fix printed as one line and exit status 1."""
    try:
        main(argv)
    except (MidalignError, TrainingDiverged) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    cli()
