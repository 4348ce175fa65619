"""Latency of the drawing pad: how long the server takes to read one drawn letter.

Starts ``microconv serve``'s application on a free local port (in this process, on a
background thread) and posts the same 256x256 pad picture of a generated letter many times
over one kept-alive connection, as the page does. Reports the median and 90th percentile of
the whole request (decode, find and prepare the letter, run the network, encode the answer
with its feature maps), and the same work called in process without HTTP. The load average
is printed too: on a shared machine it explains slow runs.

    python benchmarks/serve_latency.py [--checkpoint model.npz] [--backend numpy] [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from microconv.cli.bench import print_result
from microconv.cli import serve
from microconv.letters import synth
from microconv.letters.checkpoint import load_checkpoint, save_checkpoint
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing

TARGET_MS = 100


def pad_picture(seed=0):
    """A generated letter as the pad sends it: black ink on white, 256x256 PNG."""
    letter = synth.draw_letter(0, np.random.default_rng(seed))
    big = Image.fromarray(255 - letter).resize((256, 256), Image.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, "PNG")
    return buffer.getvalue()


def milliseconds(times):
    times = 1000 * np.asarray(times)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "min_ms": float(times.min())}


def measure(checkpoint, backend, requests):
    reader = serve.LetterReader(load_checkpoint(checkpoint, backend))
    picture = pad_picture()
    in_process, cpu = [], []
    for _ in range(requests // 4 + 3):
        start, start_cpu = time.perf_counter(), time.process_time()
        reader.read_letter(picture)
        in_process.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    over_http = []
    with serve.running(serve.create_app(reader, Path(checkpoint).name)) as url:
        host, port = url.split("//")[1].strip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        for i in range(requests + 3):
            start = time.perf_counter()
            connection.request("POST", "/api/letter", body=picture,
                               headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise SystemExit(f"the server answered {response.status}: {body[:200]!r}")
            if i >= 3:                                     # the first ones warm up
                over_http.append(time.perf_counter() - start)
        connection.close()
    return {"backend": reader.classifier.model.backend.describe(), "requests": requests,
            "answer_bytes": len(body), "http": milliseconds(over_http),
            "in_process": milliseconds(in_process[3:]), "in_process_cpu": milliseconds(cpu[3:]),
            "load_average": os.getloadavg()[0], "target_ms": TARGET_MS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="default: an untrained model (the work is the same)")
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = os.path.join(folder, "untrained.npz")
            save_checkpoint(checkpoint, ConvoAlphabetModel("numpy", seed=0), Preprocessing())
        result = measure(checkpoint, args.backend, args.requests)
    http_ms, alone, cpu = result["http"], result["in_process"], result["in_process_cpu"]
    print_result(result, args.json,
                 f"{result['backend']}: one drawn letter per request, median "
                 f"{http_ms['median_ms']:.1f} ms (p90 {http_ms['p90_ms']:.1f} ms) over HTTP, "
                 f"{alone['median_ms']:.1f} ms in process ({cpu['median_ms']:.1f} ms CPU); "
                 f"target < {TARGET_MS} ms; {result['requests']} requests, answers of "
                 f"{result['answer_bytes']:,} bytes, load average {result['load_average']:.1f}")

if __name__ == "__main__":
    main()
