"""A training run's settings (train.py's flags as fields), the presets, and the policy that resolves them
from the experiment and the model, checked before any work (paper App. D.1; docs/usage.md#training-trainpy).
The loop that runs them is midalign/training.py."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from midalign.align import LOSSES, POOLS, AlignConfig
from midalign.checks import among, count, names, number, paths
from midalign.data.experiments import EXPERIMENTS
from midalign.data.tasks import TASKS
from midalign.distributed import World
from midalign.errors import DataError, SettingsError
from midalign.lora import DEFAULT_TARGETS
from midalign.precision import DTYPES
from midalign.registry import DEFAULT_MODEL

# Every preset is a set of flag defaults; an explicit flag always wins. `paper` = App. D.1.
PRESETS = {
    "paper": dict(batch_size=32, align_batch_size=32, grad_accum=4, epochs=5, max_steps=0, eval_every=200,
                  patience=5, pool="mean", temperature=None),  # τ by model family (FAMILY_TEMPERATURE)
    "demo": dict(batch_size=4, align_batch_size=16, grad_accum=2, epochs=5, max_steps=16, eval_every=8,
                 patience=5, pool="mean-skip-first", temperature=0.1),
}
# App. D.1: τ tuned on the MT dev loss, 0.1 for Llama 3 and 1.5 for Qwen 2.5 (--temperature overrides).
FAMILY_TEMPERATURE = {"llama": 0.1, "qwen2": 1.5}



@dataclass
class TrainSettings:
    """Every setting of a run (train.py's flags; `train.py --help` says what each does). None means: from
    the preset (batch sizes, accumulation, length, evaluation, pooling, τ), the experiment (task, languages,
    data) or the model (τ by family, the middle layer)."""
    preset: str | None = None
    experiment: str | None = None
    data_dir: Path | None = None
    # model and LoRA
    model: str = DEFAULT_MODEL
    device: str | None = None
    dtype: str | None = None
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    grad_checkpoint: bool = False
    # task
    task: str | None = None
    align_only: bool = False
    train_data: list[Path] | None = None
    dev_data: list[Path] | None = None
    train_langs: list[str] | None = None
    mt_direction: str | None = None
    max_length: int = 512
    # alignment (paper §3)
    no_align: bool = False
    align_layer: int | list[int] | None = None  # several: the loss averaged over them
    align_data: list[Path] | None = None
    align_dev_data: list[Path] | None = None
    align_langs: list[str] | None = None
    align_dev_split: bool = False  # set by an experiment: hold out dev pairs from its alignment data
    pool: str | None = None
    temperature: float | None = None
    align_loss: str = "infonce"  # a name in midalign.align.LOSSES
    align_dev_batches: int = 8
    align_max_length: int = 128
    align_gather: bool = False
    # optimisation (paper App. D.1)
    batch_size: int | None = None
    align_batch_size: int | None = None
    grad_accum: int | None = None
    lr: float = 5e-4
    warmup_ratio: float = 0.03
    clip: float = 1.0
    epochs: float | None = None
    max_steps: int | None = None
    eval_every: int | None = None
    patience: int | None = None
    seed: int = 0
    # output
    out: Path = Path("runs/demo")
    resume: bool = False
    overwrite: bool = False
    dry_run: bool = False
    no_default_template: bool = False
    preset_resolved: str | None = None
    command: str | None = None  # how the run was started, for config.json (train.py: its command line)


def _layers():
    one = count(1)[0]
    return (lambda v: one(v) or (isinstance(v, (list, tuple)) and len(v) > 0 and all(map(one, v))),
            "a decoder layer (an integer ≥ 1) or a non-empty list of them")


_FLAG = (lambda v: isinstance(v, bool), "True or False")
# field → (test, what it must be); a field left None takes its value from the preset, experiment or model.
RULES = {
    "preset": among(PRESETS), "experiment": among(EXPERIMENTS), "dtype": among(DTYPES),
    "model": (lambda v: isinstance(v, (str, Path)) and str(v) != "", "an offline alias, a local folder or a hub id"),
    "device": (lambda v: isinstance(v, str) and v.split(":")[0] in ("cpu", "cuda"), "cpu, cuda or cuda:N"),
    "lora_r": count(1), "lora_alpha": number(0), "lora_dropout": number(0, 1, high_open=True, low_open=False),
    "lora_targets": names(), "task": among(TASKS), "train_data": paths(), "dev_data": paths(),
    "train_langs": names(), "mt_direction": among(("to-en", "from-en", "both")), "max_length": count(1),
    "align_layer": _layers(), "align_data": paths(), "align_dev_data": paths(), "align_langs": names(),
    "pool": among(POOLS), "temperature": number(0), "align_loss": among(LOSSES),
    "align_dev_batches": count(1), "align_max_length": count(1), "batch_size": count(1),
    "align_batch_size": count(2), "grad_accum": count(1), "lr": number(0),
    "warmup_ratio": number(0, 1, high_open=True, low_open=False), "clip": number(0), "epochs": number(0),
    "max_steps": count(0), "eval_every": count(1), "patience": count(1), "seed": count(-2 ** 63),
    "out": (lambda v: isinstance(v, (str, Path)) and str(v) != "", "a folder path"),
    **{name: _FLAG for name in ("grad_checkpoint", "align_only", "no_align", "align_dev_split", "align_gather",
                                "resume", "overwrite", "dry_run", "no_default_template")},
}
NULLABLE = {"preset", "experiment", "dtype", "device", "task", "train_data", "dev_data", "train_langs",
            "mt_direction", "align_layer", "align_data", "align_dev_data", "align_langs", "pool", "temperature",
            "batch_size", "align_batch_size", "grad_accum", "epochs", "max_steps", "eval_every", "patience",
            "data_dir", "preset_resolved", "command"}


def validate(settings: TrainSettings) -> TrainSettings:
    """Every field's type, range and choices: the one check train.py's flags and `fit(TrainSettings(...))` both
    pass before anything is loaded or written; the first bad field is a SettingsError naming it and its flag."""
    for f in fields(settings):
        value = getattr(settings, f.name)
        if value is None and f.name in NULLABLE:
            continue
        test, want = RULES.get(f.name, (lambda v: isinstance(v, (str, Path)), "a path or text"))
        if not test(value):
            want = want() if callable(want) else want
            raise SettingsError(f"{f.name} = {value!r} (train.py --{f.name.replace('_', '-')}) must be {want}")
    return settings


def with_preset(settings: TrainSettings) -> TrainSettings:
    """The settings with every preset field still None taken from the preset: `preset`, else `paper`
    with an experiment and `demo` without (an explicit value always wins)."""
    preset = settings.preset or ("paper" if experiment_name(settings) else "demo")
    return replace(settings, preset_resolved=preset,
                   **{k: v for k, v in PRESETS[preset].items() if getattr(settings, k) is None})



def command_line(settings: TrainSettings) -> str:
    """What config.json records as the command: train.py's own, else the fields that differ from the defaults."""
    if settings.command:
        return settings.command
    default = TrainSettings()
    changed = [f"{f.name}={getattr(settings, f.name)!r}" for f in fields(settings)
               if f.name != "preset_resolved" and getattr(settings, f.name) != getattr(default, f.name)]
    return f"midalign.training.fit(TrainSettings({', '.join(changed)}))"


def experiment_name(args: TrainSettings) -> str | None:
    """--experiment NAME, or a --task without --train-data nor an offline default whose name is one of the
    paper's experiments (slot, json): the paper's setup for that task."""
    implied = args.task in EXPERIMENTS and TASKS[args.task].offline is None and not args.train_data
    return args.experiment or (args.task if implied else None)


def resolution(args: TrainSettings) -> str:
    """The first log line: which experiment and preset a command resolved to, and why."""
    name = experiment_name(args)
    why = ("--experiment" if args.experiment else f"--task {args.task} without --train-data") if name else None
    preset_why = "--preset" if args.preset else ("the default with an experiment" if name else "the default")
    preset = args.preset_resolved
    flags = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in PRESETS[preset].items() if v is not None)
    return ((f"[train] experiment {name} ({why}: the paper's data and languages, Table 1); " if name else "[train] ") +
            f"preset {preset} ({preset_why}; explicit flags win): {flags}")


def resolve_settings(args: TrainSettings, config) -> None:
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


def apply_experiment(args: TrainSettings) -> None:
    """The experiment's data files (fetched on first use) where no file flag was given."""
    exp = EXPERIMENTS.get(experiment_name(args))
    if exp is None:
        return
    train, dev, pairs = exp.train_files(args.data_dir, task=not args.align_only, align=not args.no_align)
    if not args.align_only:
        args.train_data, args.dev_data = args.train_data or train, args.dev_data or dev
    if not args.no_align and not args.align_data:
        args.align_data, args.align_dev_split = pairs, True



def align_layers(args: TrainSettings) -> tuple[int, ...]:
    """The aligned layer(s) as a tuple (`align_layer` is one layer or a list)."""
    return tuple(args.align_layer) if isinstance(args.align_layer, (list, tuple)) else (args.align_layer,)


def check_settings(args: TrainSettings, n_layers: int, world: World) -> None:
    """Settings errors, raised before anything is downloaded or written."""
    for layer in align_layers(args):
        if not 1 <= layer <= n_layers:
            raise DataError(f"--align-layer {layer} is out of range: this model has decoder layers 1..{n_layers}")
    if not args.no_align:  # the pooling and loss names and τ, before any work
        AlignConfig(align_layers(args), args.temperature, args.pool, args.align_loss)
    if args.align_only and args.no_align:
        raise DataError("--align-only with --no-align leaves nothing to train")
    for flag, size in (("--batch-size", args.batch_size), ("--align-batch-size", args.align_batch_size)):
        if size % world.size:
            raise DataError(f"{flag} {size} is the global batch and must be divisible by the {world.size} processes")
