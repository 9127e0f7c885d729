"""Does a pruned network keep one speed for as long as a process runs? Timed again and again.

Two pruned copies of one network differ only in the groups no wider than one channel block
(16 float32 channels with AVX-512): ``sub-block`` keeps half a block there (8 of 16), its
``whole-block`` twin keeps the whole block; every other group keeps half its channels in
both, in whole blocks. The unpruned network and the two copies are timed interleaved
(``measure_latency``, fastest of ``--rounds`` rounds) ``--iterations`` times in one process,
every ``--one-thread-every``-th time on one thread, and each time is written down with the
seconds since the start. A latency model fitted once can only be as right as the speed it
was fitted at is lasting.

Writes ``bench/results/latency_states_<model>_b<batch>.{json,md}``.

    python bench/latency_states.py [--model resnet56] [--batch 64] [--iterations 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dsaprune import models  # noqa: E402
from dsaprune.cost.latency import channel_block, pruned_copy  # noqa: E402
from dsaprune.cost.timing import describe_device, measure_latency, steady_malloc  # noqa: E402
from dsaprune.grouping import find_groups  # noqa: E402
from dsaprune.io import atomic_write_json, atomic_write_text  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def twins(channels: list[int], block: int) -> tuple[list[int], list[int]]:
    """Channel counts of the two copies: half of each group in whole blocks, and in groups no
    wider than a block half a block (``sub``) or the whole block (``whole``)."""
    sub, whole = [], []
    for c in channels:
        if c <= block:
            sub.append(max(1, c // 2))
            whole.append(c)
        else:
            n = max(block, c // 2 // block * block)
            sub.append(n)
            whole.append(n)
    return sub, whole


def markdown(d: dict) -> str:
    rows = d["timings"]
    two = [r for r in rows if r["threads"] == d["threads"]]
    q = [r["sub_ms"] / r["whole_ms"] for r in two]
    lines = [
        f"# One process, the same networks timed {len(rows)} times",
        "",
        f"`{d['command']}` on {d['device']}, batch {d['batch']}, {d['model']}; channel block "
        f"{d['block']}.",
        "",
        f"*sub-block*: groups no wider than a block keep {d['sub'][0]} of {d['channels'][0]} "
        "channels (and the other groups half, in whole blocks); *whole-block*: the same but the "
        "whole block there. Each row is one interleaved timing (fastest of "
        f"{d['rounds']} rounds).",
        "",
        f"At {d['threads']} threads, sub-block / whole-block: min {min(q):.3f}, median "
        f"{statistics.median(q):.3f}, max {max(q):.3f}; sub-block ms: min "
        f"{min(r['sub_ms'] for r in two):.1f}, max {max(r['sub_ms'] for r in two):.1f}; "
        f"whole-block ms: min {min(r['whole_ms'] for r in two):.1f}, max "
        f"{max(r['whole_ms'] for r in two):.1f}; unpruned ms: min "
        f"{min(r['unpruned_ms'] for r in two):.1f}, max {max(r['unpruned_ms'] for r in two):.1f}.",
        "",
        "| s | threads | unpruned ms | sub-block ms | whole-block ms | sub / whole "
        "| sub / unpruned |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['t_s']:.0f} | {r['threads']} | {r['unpruned_ms']:.1f} | {r['sub_ms']:.1f} | "
            f"{r['whole_ms']:.1f} | {r['sub_ms'] / r['whole_ms']:.3f} | "
            f"{r['sub_ms'] / r['unpruned_ms']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--one-thread-every", type=int, default=8)
    ap.add_argument("--system-allocator", action="store_true", help="leave glibc's defaults")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    if not a.system_allocator:
        steady_malloc()
    warnings.simplefilter("ignore")
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    model = models.create(a.model).eval()
    shape = models.input_size(a.model)
    G = find_groups(model, torch.zeros(1, *shape))
    channels = [g.channels for g in G.prunable]
    block = channel_block("cpu")
    sub, whole = twins(channels, block)
    nets = [model, pruned_copy(G, sub, "cpu"), pruned_copy(G, whole, "cpu")]
    rows, t0 = [], time.perf_counter()
    try:
        for i in range(a.iterations):
            n = (
                1
                if a.one_thread_every and i % a.one_thread_every == a.one_thread_every - 1
                else threads
            )
            torch.set_num_threads(n)
            u, s, w = measure_latency(nets, shape, a.batch, "cpu", rounds=a.rounds)
            rows.append(
                {
                    "t_s": time.perf_counter() - t0,
                    "threads": n,
                    "unpruned_ms": 1e3 * u,
                    "sub_ms": 1e3 * s,
                    "whole_ms": 1e3 * w,
                }
            )
            print(
                f"{rows[-1]['t_s']:5.0f}s {n} thread(s): unpruned {1e3 * u:6.1f} ms, sub-block "
                f"{1e3 * s:6.1f}, whole-block {1e3 * w:6.1f} ({s / w:.3f})",
                flush=True,
            )
    finally:
        torch.set_num_threads(threads)
    # result files hold no absolute paths: the folder given to --out is written OUT
    argv = sys.argv[1:]
    args = ["OUT" if k and argv[k - 1] == "--out" else v for k, v in enumerate(argv)]
    d = {
        "command": " ".join(["python bench/latency_states.py", *args]),
        "device": describe_device("cpu"),
        "model": a.model,
        "batch": a.batch,
        "block": block,
        "threads": threads,
        "rounds": a.rounds,
        "allocator": "system" if a.system_allocator else "steady",
        "channels": channels,
        "sub": sub,
        "whole": whole,
        "timings": rows,
    }
    out = Path(a.out)
    stem = f"latency_states_{a.model}_b{a.batch}"
    atomic_write_json(d, out / f"{stem}.json")
    atomic_write_text(markdown(d), out / f"{stem}.md")


if __name__ == "__main__":
    main()
