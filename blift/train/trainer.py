"""The training loop of ``blift train``: transformers' Trainer on mixed BLIFT instruction records.

``train(config)`` loads the model (:mod:`blift.train.models`), opens every data source
(:mod:`blift.train.data`), mixes the record kinds at the configured ratio
(:mod:`blift.train.mixing`), batches them with :class:`~blift.train.collator.VlmCollator`, and runs
``transformers.Trainer``, so it works the same under plain ``python`` (one device) and under
``accelerate launch`` (data parallel, DeepSpeed ZeRO-2 offload with the shipped config).

* Checkpoints go to ``output_dir/checkpoint-N`` every ``save_steps``; with ``resume`` a rerun
  continues from the last one (weights, optimizer, scheduler, data order, step count).
* Loss, learning rate and epoch are logged every ``logging_steps`` as plain log lines (and to
  ``report_to`` integrations when configured).
* A record the collator cannot use (media missing, too long for ``max_length``...) is dropped
  from its batch with its id and reason logged and counted; it never stops the run.
* At the end the model is saved to ``output_dir`` (full weights, or the LoRA adapter plus the
  projector; ``lora.merge`` also writes merged full weights to ``output_dir/merged``) with its
  processor, and ``train_summary.json`` (steps, losses, tokens, time, drops) is written atomically.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blift.errors import ConfigError
from blift.models import devices
from blift.tables import atomic_write_bytes
from blift.train.config import TrainConfig

log = logging.getLogger(__name__)

SUMMARY = "train_summary.json"
DROPPED_KEY = "blift_dropped"  # batch key carrying the ids of records the collator dropped


@dataclass
class TrainResult:
    """What a training run did (also written to ``output_dir/train_summary.json``)."""

    output_dir: str
    global_step: int
    epochs: float
    losses: list[tuple[int, float]]  # (step, loss) as logged, across resumed sessions
    train_tokens: int  # non-padding input tokens (media tokens included) over the whole run
    seconds: float  # this session's wall time
    resumed_from: str | None
    examples: int = 0  # records in one pass of the mixed data
    kinds: dict[str, list[int]] = field(default_factory=dict)  # kind -> [available, used per pass]
    dropped: dict[str, str] = field(default_factory=dict)  # record id -> reason (this session)
    model_type: str = ""
    precision: str = ""


# -- precision ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    """How a run computes: mixed-precision flags for the Trainer and the dtype weights load in."""

    name: str  # bf16 | fp16 | fp32
    weights: str  # float32 | bfloat16 | float16

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    @property
    def fp16(self) -> bool:
        return self.name == "fp16"


def pick_precision(config: TrainConfig, cuda: bool) -> Precision:
    """``auto``: bf16 on a GPU that has it, fp16 on older GPUs, fp32 on the CPU.

    Weights load in half precision only where something else keeps fp32 master weights or the
    half weights never change: DeepSpeed (its optimizer holds fp32 copies) and LoRA (the base is
    frozen; peft keeps adapters in fp32). Plain full fine-tuning loads fp32 weights and runs in
    autocast, because AdamW updates of 2e-5 vanish when added to bf16 weights."""
    name = config.precision
    if name == "auto":
        if not cuda:
            name = "fp32"
        else:
            import torch

            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "fp32":
        return Precision("fp32", "float32")
    half = "bfloat16" if name == "bf16" else "float16"
    keeps_master = bool(config.deepspeed) or config.lora.enabled
    return Precision(name, half if keeps_master else "float32")


def check_deepspeed(config: TrainConfig, where: str = "deepspeed") -> str | None:
    """The DeepSpeed JSON path to hand to the Trainer, after checking DeepSpeed can run here."""
    path = config.deepspeed_path()
    if path is None:
        return None
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"{where}: {config.deepspeed!r} asks for DeepSpeed, which is not installed here. "
                          "Install it on the GPU machine (pip install deepspeed; it compiles against CUDA), "
                          "or remove 'deepspeed' from the config to train without it")
    if not path.is_file():
        raise ConfigError(f"{where}: {path} does not exist")
    try:
        json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{where}: {path} is not valid JSON ({exc})") from None
    return str(path)


# -- data --------------------------------------------------------------------------------------


class MixedDataset:
    """Records of several sources seen through one index list (the mix), as a torch Dataset."""

    def __init__(self, parts: Sequence[Any], indices: Sequence[int]) -> None:
        self.parts = list(parts)
        self.offsets: list[int] = []
        total = 0
        for part in self.parts:
            self.offsets.append(total)
            total += len(part)
        self.total = total
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        from bisect import bisect_right

        from blift.errors import InvalidRecord

        flat = self.indices[i]
        part = bisect_right(self.offsets, flat) - 1
        local = flat - self.offsets[part]
        try:
            return self.parts[part][local]
        except InvalidRecord as exc:
            return Unreadable(self._record_id(part, local), str(exc))

    def _record_id(self, part: int, local: int) -> str:
        """The id column of a record (data[part], row local) for naming it in a drop."""
        try:
            return str(self.parts[part].records.select_columns(["id"])[local]["id"])
        except Exception:  # noqa: BLE001 - naming a broken record must not fail in turn
            return f"data[{part}] row {local}"


def build_dataset(config: TrainConfig) -> tuple[MixedDataset, dict[str, tuple[int, int]]]:
    """Open every source and mix the record kinds at ``config.mix``; (dataset, per kind the
    records available and the records one pass uses: more than available means repeated)."""
    from blift.train.data import open_examples
    from blift.train.mixing import mix_counts, mix_indices

    parts, kinds = [], []
    for i, source in enumerate(config.data):
        dataset = open_examples(source, num_frames=config.num_frames)
        if len(dataset) == 0:
            log.warning("train: data[%d] %s has no records", i, source.describe())
        parts.append(dataset)
        kinds.extend(record_kinds(dataset, source.kind))
    if not kinds:
        raise ConfigError("data: the configured sources hold no records")
    try:
        counts = mix_counts(kinds, config.mix)
        indices = mix_indices(kinds, config.mix, config.seed)
    except ValueError as exc:
        raise ConfigError(f"field 'mix' {config.mix}: {exc}") from None
    log.info("train: %d records per pass after mixing %s (kind: available -> used: %s)", len(indices), config.mix,
             ", ".join(f"{k}: {have} -> {used}" for k, (have, used) in counts.items()))
    return MixedDataset(parts, indices), counts


PREFLIGHT_SCAN = 200  # records looked at to find one of each media kind


def preflight(dataset: MixedDataset, collator: Any, max_length: int, num_frames: int) -> None:
    """Collate the first record of each media kind before training: when the media alone of a
    kind do not fit ``max_length`` (8 LLaVA-1.5 frames are 4,608 tokens), every such record would
    be dropped one batch at a time, hours into the run; refuse up front instead."""
    from blift.train.collator import CollatorError

    seen: set[str] = set()
    for i in range(min(len(dataset), PREFLIGHT_SCAN)):
        example = dataset[i]
        if isinstance(example, Unreadable) or example.media_kind in seen:
            continue
        seen.add(example.media_kind)
        try:
            collator([example])
        except CollatorError as exc:
            if "media tokens end at" in str(exc):
                raise ConfigError(
                    f"{example.media_kind} records do not fit: {exc}. Lower num_frames (now {num_frames}) or raise "
                    f"max_length (now {max_length})") from None


def record_kinds(dataset: Any, kind: str | None) -> list[str]:
    """The mixing bucket of each record: the source's ``kind`` when set, else the record's
    ``task`` (RecordDataset.kinds reads that column without decoding any media)."""
    if kind is not None:
        return [kind] * len(dataset)
    return list(dataset.kinds())


@dataclass(frozen=True)
class Unreadable:
    """Stands in for a record whose media or fields could not be read, so the collator can drop
    it by name instead of the DataLoader dying on the exception."""

    id: str
    reason: str


class DroppingCollator:
    """Wraps a VlmCollator: when a batch fails on a record, the record is dropped (its id and
    reason logged and sent along in the batch under DROPPED_KEY) and the rest is collated."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, examples: list[Any]) -> dict[str, Any]:
        from blift.train.collator import CollatorError

        dropped = {ex.id: ex.reason for ex in examples if isinstance(ex, Unreadable)}
        for rid, reason in dropped.items():
            log.warning("train: dropped record %s: %s", rid, reason)
        examples = [ex for ex in examples if not isinstance(ex, Unreadable)]
        if examples:
            try:
                batch = self.collator(examples)
                batch[DROPPED_KEY] = dropped
                return batch
            except CollatorError:
                pass
        kept = []
        for ex in examples:
            try:
                self.collator([ex])
                kept.append(ex)
            except CollatorError as exc:
                dropped[exc.record_id] = str(exc)
                log.warning("train: dropped %s", exc)
        if not kept:
            raise RuntimeError(f"every record of a batch was dropped: {dropped}")
        batch = self.collator(kept)
        batch[DROPPED_KEY] = dropped
        return batch


# -- the loop ----------------------------------------------------------------------------------


def _trainer_class() -> type:
    from transformers import Trainer

    class BliftTrainer(Trainer):
        """Trainer that takes the dropped-records note off each batch before the forward pass,
        and resumes full fine-tuning checkpoints through ``from_pretrained`` (see
        :func:`load_full_checkpoint`)."""

        dropped: dict[str, str]

        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            self.dropped.update(inputs.pop(DROPPED_KEY, None) or {})
            return super().training_step(model, inputs, num_items_in_batch)

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            from transformers import PreTrainedModel

            target = model if model is not None else self.model
            if (isinstance(target, PreTrainedModel) and not self.is_deepspeed_enabled and not self.is_fsdp_enabled
                    and any(Path(resume_from_checkpoint).glob("*.safetensors"))):
                load_full_checkpoint(target, Path(resume_from_checkpoint))
                return
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    return BliftTrainer


def load_full_checkpoint(model: Any, folder: Path) -> None:
    """Load a ``checkpoint-N`` of a full fine-tuning run into ``model``, in place.

    transformers 5 saves LLaVA-family weights under the original checkpoint names
    (``language_model.model.layers...``) while its Trainer resumes with a raw ``load_state_dict``
    against the new module names (``model.language_model.layers...``): nothing matches, it only
    warns, and training silently goes on from the base weights. ``from_pretrained`` applies the
    key conversion, so the checkpoint is loaded through it (a transient CPU copy of the model)
    and copied over; any key still unmatched is an error, never a warning."""
    param = next(model.parameters())
    loaded = type(model).from_pretrained(str(folder), dtype=param.dtype, device_map="cpu")
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    del loaded
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"resume from {folder}: checkpoint does not match the model "
                           f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")
    log.info("train: model weights restored from %s", folder)


def _log_callback() -> Any:
    from transformers import TrainerCallback

    class LogLines(TrainerCallback):
        """One log line per logging step: step/total, loss, learning rate, epoch, speed."""

        def __init__(self) -> None:
            self.start = time.monotonic()
            self.first_step: int | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start, self.first_step = time.monotonic(), state.global_step

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            done = state.global_step - (self.first_step or 0)
            rate = done / max(time.monotonic() - self.start, 1e-9)
            log.info("train: step %d/%d loss %.4f lr %.3g epoch %.2f (%.2f steps/s)", state.global_step,
                     state.max_steps, logs["loss"], logs.get("learning_rate", float("nan")),
                     logs.get("epoch", state.epoch or 0.0), rate)

    return LogLines()


def training_arguments(config: TrainConfig, precision: Precision, *, cuda: bool, deepspeed: str | None) -> Any:
    """transformers TrainingArguments for ``config`` (v5 names: ``warmup_steps`` takes the warmup
    ratio as a float < 1; checkpointing is set on the model by models.py, not here)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu=not cuda,
        deepspeed=deepspeed,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=config.dataloader_workers,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        report_to=config.report_to or "none",
        disable_tqdm=not sys.stderr.isatty(),
    )


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` folder holding a trainer state, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    if not output_dir.is_dir():
        return None
    found = get_last_checkpoint(str(output_dir))
    return found if found and (Path(found) / "trainer_state.json").is_file() else None


def train(config: TrainConfig, *, resume: bool = True, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.data``; see the module docstring.

    ``callbacks``: extra ``transformers.TrainerCallback`` objects (progress displays, tests)."""
    from transformers import PrinterCallback

    from blift.train.collator import VlmCollator
    from blift.train.models import load_model_and_processor

    started = time.monotonic()
    cuda = devices.torch_cuda_available()
    deepspeed = check_deepspeed(config)
    precision = pick_precision(config, cuda)
    output_dir = Path(config.output_dir)
    resumed_from = last_checkpoint(output_dir) if resume else None

    from transformers import set_seed

    set_seed(config.seed)  # before the LoRA adapters are created, so a run's initial weights repeat
    model, processor, model_type = load_model_and_processor(
        config.model, model_type=config.model_type, dtype=precision.weights, lora=config.lora,
        tune_vision=config.tune_vision, gradient_checkpointing=config.gradient_checkpointing)
    dataset, kinds = build_dataset(config)
    collator = DroppingCollator(VlmCollator(processor, model_type, max_length=config.max_length,
                                            num_frames=config.num_frames, model_config=model.config))
    preflight(dataset, collator.collator, config.max_length, config.num_frames)
    args = training_arguments(config, precision, cuda=cuda, deepspeed=deepspeed)
    trainer = _trainer_class()(model=model, args=args, data_collator=collator, train_dataset=dataset,
                               processing_class=processor, callbacks=[_log_callback(), *callbacks])
    trainer.dropped = {}
    trainer.remove_callback(PrinterCallback)  # its raw dict prints duplicate our log lines
    log.info("train: %s (%s) on %s, %s, %d records/pass, output %s%s", config.model, model_type,
             "cuda" if cuda else "cpu", precision.name, len(dataset), output_dir,
             f", resuming from {resumed_from}" if resumed_from else "")
    trainer.train(resume_from_checkpoint=resumed_from)

    state = trainer.state
    result = TrainResult(
        output_dir=str(output_dir), global_step=state.global_step, epochs=float(state.epoch or 0.0),
        losses=[(int(h["step"]), float(h["loss"])) for h in state.log_history if "loss" in h],
        train_tokens=int(state.num_input_tokens_seen or 0), seconds=round(time.monotonic() - started, 3),
        resumed_from=resumed_from, examples=len(dataset), kinds={k: list(v) for k, v in kinds.items()},
        dropped=dict(trainer.dropped), model_type=model_type, precision=precision.name)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(output_dir))
        if config.lora.enabled and config.lora.merge:
            _save_merged(trainer.model, processor, output_dir / "merged")
        write_json_atomic(output_dir / SUMMARY, asdict(result))
        log.info("train: done, %d steps, last loss %s, %d records dropped, model in %s", result.global_step,
                 f"{result.losses[-1][1]:.4f}" if result.losses else "n/a", len(result.dropped), output_dir)
    return result


def _save_merged(model: Any, processor: Any, folder: Path) -> None:
    """Base weights with the LoRA adapters folded in, loadable without peft."""
    unwrapped = getattr(model, "module", model)
    merged = unwrapped.merge_and_unload()
    merged.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    log.info("train: merged LoRA weights in %s", folder)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over ``path``."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())
