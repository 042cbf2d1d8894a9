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
The loop itself is midalign/training.py (`fit`), which takes these flags as the fields of TrainSettings.

Data parallel: `torchrun --nproc_per_node N train.py …` splits every global micro-batch over N
processes (midalign/distributed.py); --batch-size and --align-batch-size stay global.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from midalign.align import LOSSES, POOLS
from midalign.cli import add_device_arguments, add_template_argument, finite_float, positive_float, positive_int, run
from midalign.data.experiments import EXPERIMENTS
from midalign.data.tasks import TASKS, UDHR_TASK_LANGS
from midalign.settings import PRESETS, TrainSettings, with_preset
from midalign.training import TrainingDiverged, fit

DEFAULT = TrainSettings()


def parse_args(argv: list[str] | None = None) -> TrainSettings:
    """The flags as TrainSettings, the preset filled in (an explicit flag always wins)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="flag defaults: 'paper' (App. D.1; the default with an experiment) or 'demo' "
                        "(≤10 min on a 2-core CPU; the default otherwise)")
    p.add_argument("--experiment", choices=sorted(EXPERIMENTS),
                   help="the paper's setup (Table 1): sets --task and the train/alignment languages and data, "
                        "downloaded on first use; --task slot/json without --train-data means the same")
    p.add_argument("--data-dir", type=Path, help="root of downloaded datasets (default: $MIDALIGN_CACHE/datasets)")
    g = p.add_argument_group("model and LoRA")
    g.add_argument("--model", default=DEFAULT.model, help="offline alias, local HF folder or hub id")
    add_device_arguments(g, "bf16: bf16 weights + autocast, fp32 LoRA and optimizer (the paper's GPU setting; the "
                            "default on cuda); fp32: the default on cpu")
    g.add_argument("--lora-r", type=positive_int, default=DEFAULT.lora_r, help="LoRA rank")
    g.add_argument("--lora-alpha", type=positive_float, default=DEFAULT.lora_alpha, help="LoRA alpha (scaling alpha/r)")
    g.add_argument("--lora-dropout", type=finite_float, default=DEFAULT.lora_dropout, help="dropout on the LoRA branch input")
    g.add_argument("--lora-targets", nargs="+", default=DEFAULT.lora_targets, help="module names to adapt")
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
    g.add_argument("--max-length", type=positive_int, default=DEFAULT.max_length, help="tokens per task example (prompt cut from the left)")
    g = p.add_argument_group("alignment (paper §3)")
    g.add_argument("--no-align", action="store_true", help="task loss only (the SFT baseline)")
    g.add_argument("--align-layer", type=int, nargs="+",
                   help="decoder layer(s) whose output is aligned (default: middle, L/2); several: the loss averaged")
    g.add_argument("--align-data", nargs="+", type=Path,
                   help="pair files: TSV lang<TAB>sentence<TAB>english or JSONL {lang,text,en} "
                        "(default: the UDHR train articles of every language version, paired with English)")
    g.add_argument("--align-dev-data", nargs="+", type=Path, help="dev pair files (default: UDHR dev articles)")
    g.add_argument("--align-langs", nargs="+", help="restrict alignment pairs to these languages")
    g.add_argument("--pool", choices=list(POOLS), help="pooling of a sentence's states: mean (the paper's), "
                   "mean-skip-first (without the attention-sink first token), bos (first token), last (last token)")
    g.add_argument("--temperature", type=positive_float, help="InfoNCE temperature τ (paper: 0.1 Llama 3, 1.5 Qwen 2.5)")
    g.add_argument("--align-loss", choices=list(LOSSES), default=DEFAULT.align_loss,
                   help="the loss on pooled pairs: infonce (non-English anchor, the official code's) or "
                        "infonce-symmetric (both directions averaged)")
    g.add_argument("--align-dev-batches", type=positive_int, default=DEFAULT.align_dev_batches,
                   help="fixed dev alignment batches per evaluation (the same ones every time)")
    g.add_argument("--align-max-length", type=positive_int, default=DEFAULT.align_max_length,
                   help="tokens kept per alignment sentence (long paragraphs are cut; bounds activation memory)")
    g.add_argument("--align-gather", action="store_true",
                   help="under torchrun: negatives from all processes' pairs (default: per process, as the paper)")
    g = p.add_argument_group("optimisation (paper App. D.1)")
    g.add_argument("--batch-size", type=positive_int, help="task examples per micro-batch")
    g.add_argument("--align-batch-size", type=positive_int, help="translation pairs per alignment micro-batch")
    g.add_argument("--grad-accum", type=positive_int, help="micro-batches per optimizer update (alternating task/alignment)")
    g.add_argument("--lr", type=positive_float, default=DEFAULT.lr, help="peak learning rate (inverse-sqrt schedule)")
    g.add_argument("--warmup-ratio", type=finite_float, default=DEFAULT.warmup_ratio, help="share of updates in linear warmup")
    g.add_argument("--clip", type=finite_float, default=DEFAULT.clip, help="gradient-norm clipping")
    g.add_argument("--epochs", type=positive_float, help="at most this many passes over the task data")
    g.add_argument("--max-steps", type=int, help="optimizer updates (0 = from --epochs)")
    g.add_argument("--eval-every", type=positive_int, help="updates between dev evaluations (and checkpoints)")
    g.add_argument("--patience", type=positive_int, help="stop after this many evaluations without dev-loss improvement")
    g.add_argument("--seed", type=int, default=DEFAULT.seed)
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=DEFAULT.out, help="output folder")
    g.add_argument("--resume", action="store_true", help="continue from --out/state exactly where it stopped")
    g.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds an earlier run (its own files only are removed)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the resolved settings (presets, experiment, τ, layer) as JSON and exit: nothing is "
                        "downloaded but the model's config, nothing trained")
    add_template_argument(g)
    args = p.parse_args(argv)
    if args.align_layer is not None and len(args.align_layer) == 1:  # one layer is recorded as a number
        args.align_layer = args.align_layer[0]
    command = " ".join(sys.argv if argv is None else ["train.py", *argv])
    return with_preset(TrainSettings(**vars(args), command=command))


def main(argv: list[str] | None = None) -> None:
    fit(parse_args(argv))


if __name__ == "__main__":
    run(main, errors=(TrainingDiverged,))
