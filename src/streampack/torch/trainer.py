"""`StreampackCallback`: a streampack iterable dataset under `transformers.Trainer`.

At `Trainer(...)` it hands the dataset the per-device batch size and world size, checks that an
epoch has a length or `max_steps` is set, and sets `ignore_data_skip` (the dataset resumes
itself: the Trainer's own skip would re-read every batch before the resume point). At each save
it writes the dataset's state into the checkpoint folder; on `train(resume_from_checkpoint=...)`
it reads it back, and the next batch is the one an uninterrupted run would have had.

Accelerate splits an iterable dataset between ranks itself (rank 0 loads for all by default,
`dispatch_batches`; or every rank loads and keeps its slice), so the dataset then splits only
between DataLoader workers, in chunks that keep accelerate's split exact (see `partition.py`).
"""

import json
import logging
import os

from transformers import TrainerCallback

from ..errors import ConfigError
from .datasets import _Shared

log = logging.getLogger(__name__)

STATE_FILE = "streampack_data_state.json"


def load_data_state(checkpoint) -> dict | None:
    """The dataset state saved in a Trainer checkpoint folder, or None if there is none."""
    path = os.path.join(os.fspath(checkpoint), STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


class StreampackCallback(TrainerCallback):
    """Pass the training dataset; give `checkpoint` only when resuming from a folder other than
    `output_dir/checkpoint-<step>` (where the Trainer saved it)."""

    def __init__(self, dataset, checkpoint=None) -> None:
        self.dataset = dataset
        self.checkpoint = checkpoint
        self._updates_per_epoch: int | None = None

    def _active(self) -> bool:
        # Map-style datasets go through the Trainer's sampler, which already resumes exactly.
        return isinstance(self.dataset, _Shared)

    def on_init_end(self, args, state, control, **kwargs):
        if not self._active():
            return
        config = args.accelerator_config
        if getattr(config, "split_batches", False):
            raise ConfigError(
                "accelerator_config split_batches=True is not supported with a streampack "
                "dataset: it changes what a batch of each rank holds; leave it False"
            )
        mode = "shard" if getattr(config, "dispatch_batches", None) is False else "dispatch"
        self.dataset._trainer = (mode, args.train_batch_size, args.world_size)
        if args.max_steps <= 0:
            try:
                len(self.dataset)
            except TypeError as error:
                raise ConfigError(
                    f"{error} (TrainingArguments has max_steps={args.max_steps})"
                ) from None
        if not args.ignore_data_skip:
            log.info("ignore_data_skip set to True: the streampack dataset resumes by itself")
            args.ignore_data_skip = True

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if not self._active():
            return
        kind = type(train_dataloader).__name__
        mode, batch, size = self.dataset._trainer
        if kind == "DataLoaderDispatcher":
            mode = "dispatch"
        elif kind == "DataLoaderShard" and size > 1:
            mode = "shard"
        self.dataset._trainer = (mode, batch, size)
        # The Trainer's own count of update steps per epoch, which its resume uses too.
        try:
            batches = len(train_dataloader)
        except TypeError:
            self._updates_per_epoch = args.max_steps
        else:
            steps = args.gradient_accumulation_steps
            self._updates_per_epoch = max(batches // steps + int(batches % steps > 0), 1)
        if state.global_step == 0:
            return
        epoch, taken = self._position(args, state.global_step)
        folder = self.checkpoint or os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        saved = load_data_state(folder)
        if saved is None:
            log.warning(
                "no %s in %s: the dataset resumes at epoch %d after %d samples by re-reading "
                "up to there; pass StreampackCallback(dataset, checkpoint=<folder>) if the "
                "checkpoint is elsewhere",
                STATE_FILE,
                folder,
                epoch,
                taken,
            )
            saved = {**self.dataset.state_dict(taken=0), "position": None}
        elif (saved["epoch"], saved["taken"]) != (epoch, taken):
            raise ConfigError(
                f"{folder}: the data state says epoch {saved['epoch']} after {saved['taken']} "
                f"samples, but the Trainer resumes step {state.global_step} at epoch {epoch} "
                f"after {taken}: batch size, gradient accumulation or world size changed"
            )
        self.dataset.load_state_dict({**saved, "epoch": epoch, "taken": taken})

    def _position(self, args, global_step: int) -> tuple[int, int]:
        """(epoch, samples of one rank consumed in it) at `global_step`, as the Trainer counts."""
        epoch = global_step // self._updates_per_epoch
        batches = (global_step % self._updates_per_epoch) * args.gradient_accumulation_steps
        return epoch, batches * args.train_batch_size

    def on_save(self, args, state, control, **kwargs):
        if not self._active() or not state.is_world_process_zero:
            return
        epoch, taken = self._position(args, state.global_step)
        saved = self.dataset.state_dict(taken=taken)
        saved["epoch"] = epoch
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, STATE_FILE)
        with open(path + ".partial", "w", encoding="utf-8") as handle:
            json.dump(saved, handle, indent=1)
        os.replace(path + ".partial", path)
