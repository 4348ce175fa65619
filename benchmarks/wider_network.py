"""How much a wider network would read better: the ConvoAlphabetModel's recipe at other widths.

The page and crop figures of docs/photos.md are bounded by how well the network reads the
data set's own letters. This asks whether more channels would raise that bound: PyTorch
trains the model with every layer ``width`` times as wide (1: the model itself), by
``microconv train``'s loop and settings (``time_to_accuracy.torch_run``: the same batches,
augmentation, generated share, Adam, warm-up and cosine), and reads the whole test split once,
at the end. Every width starts from PyTorch's draw of the same seed, the weights scaled as
microconv's are (``bench.torch_model``). Widths run in turn, one thread each by default.

    python benchmarks/wider_network.py --data-dir ../shared/data/handwritten-letters \
        --widths 1 3 --epochs 24
"""

from __future__ import annotations

import argparse
import json
import time

from microconv.cli.bench import torch_model, torch_threads
from microconv.cli.time_to_accuracy import torch_run
from microconv.letters.training import TrainConfig

WHOLE_TEST_SPLIT = 10 ** 9          # a validation size that takes every test image
ONLY_AT_THE_END = 10 ** 9           # validating every this many steps: at the last step only


def measure(data_dir, width, epochs, seed=0):
    """{"width", "parameters", "epochs", "test_accuracy", "seconds"} for one trained width."""
    import torch

    torch.manual_seed(seed)
    model = torch_model(torch, width=width)
    # No threshold to stop at: the run ends after its one validation.
    config = TrainConfig(data_dir=str(data_dir), epochs=epochs, seed=seed,
                         validation_size=WHOLE_TEST_SPLIT, eval_every=ONLY_AT_THE_END).checked()
    started = time.perf_counter()
    summary = torch_run(config, thresholds=(), model=model)
    step, _, accuracy = summary["validations"][-1]
    return {"width": width, "parameters": sum(p.numel() for p in model.parameters()),
            "epochs": epochs, "steps": step, "test_accuracy": accuracy,
            "seconds": round(time.perf_counter() - started, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with torch_threads(args.threads):
        for width in args.widths:
            print(json.dumps(measure(args.data_dir, width, args.epochs, args.seed)), flush=True)


if __name__ == "__main__":
    main()
