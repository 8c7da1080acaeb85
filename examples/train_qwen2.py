"""Train a small randomly initialised Qwen2-architecture model with the `Trainer` on streampack
data, streaming (`--mode stream`) or from a token store (`--mode store`), on CPU.

    python examples/train_qwen2.py --data ../shared/data/medicalgpt/pretrain --max-steps 40
    python examples/train_qwen2.py ... --resume out/train/checkpoint-20

`--record FILE` writes one JSON line per training batch (step and a digest of its input ids), so
that a resumed run can be compared with an uninterrupted one.
"""

import argparse
import hashlib
import json
import logging
import os
import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer, TrainingArguments

import streampack
from streampack.torch import StoreIterableDataset, StreamDataset, StreampackCallback


def batch_digest(input_ids: torch.Tensor) -> str:
    return hashlib.sha1(input_ids.cpu().numpy().tobytes()).hexdigest()


class RecordingTrainer(Trainer):
    """The Trainer, writing a digest of every batch it trains on to `record`."""

    def __init__(self, *args, record: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.record = record

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.record is not None:
            with open(self.record, "a", encoding="utf-8") as handle:
                line = {"step": self.state.global_step, "batch": batch_digest(inputs["input_ids"])}
                handle.write(json.dumps(line) + "\n")
        return super().training_step(model, inputs, num_items_in_batch)


def tiny_qwen2(vocab_size: int, block_size: int, hidden: int, layers: int) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=block_size,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="pretraining text (files, folder, glob)")
    parser.add_argument("--mode", choices=("stream", "store"), default="stream")
    parser.add_argument("--store", help="token store folder for --mode store (packed if absent)")
    parser.add_argument("--output-dir", default="out/train")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--save-steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--logging-steps", type=int, default=5)
    parser.add_argument("--resume", help="a checkpoint folder to resume from")
    parser.add_argument("--record", help="append a digest of every training batch to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # The streampack part: about ten lines.
    tokenizer = streampack.load_tokenizer(None)
    if args.mode == "stream":
        stream = streampack.stream(args.data, tokenizer=tokenizer, block_size=args.block_size)
        train = StreamDataset(stream)
    else:
        store = args.store or os.path.join(args.output_dir, "store")
        if not os.path.isdir(store):
            streampack.pack(args.data, store, tokenizer=tokenizer, block_size=args.block_size)
        train = StoreIterableDataset(store, seed=0)

    model = tiny_qwen2(tokenizer.vocab_size, args.block_size, args.hidden, args.layers)
    training = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        logging_steps=args.logging_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        dataloader_num_workers=args.workers,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = RecordingTrainer(
        model=model,
        args=training,
        train_dataset=train,
        callbacks=[StreampackCallback(train)],
        record=args.record,
    )
    trainer.train(resume_from_checkpoint=args.resume)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": trainer.state.global_step,
        "losses": losses,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
