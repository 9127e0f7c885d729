"""bench/demo_allocation.py: its masks keep each group's highest-Fisher channels, and a
fine-tune with every channel kept and no step left is the shipped network itself."""

import pytest
import torch


@pytest.mark.slow
def test_masks_keep_the_top_fisher_channels_and_a_whole_mask_is_the_shipped_network(
    bench_script, monkeypatch
):
    demo = bench_script("demo_allocation_bench", "demo_allocation.py")
    t = demo.Task()
    t.x_eval, t.y_eval = t.x_eval[:500], t.y_eval[:500]  # the bench scores 4000: seconds each
    g = torch.Generator().manual_seed(0)
    fisher = [torch.rand(p.channels, generator=g) for p in t.P]
    counts = torch.tensor([max(1, p.channels // 3) for p in t.P], dtype=torch.float64)
    m = t.masks(counts, fisher)
    for k, f in enumerate(fisher):
        kept = set(torch.nonzero(m[k]).flatten().tolist())
        assert kept == set(torch.topk(f, int(counts[k])).indices.tolist())
    monkeypatch.setattr(demo, "STEPS", 0)  # no fine-tune step: the masks alone decide
    whole = demo.finetune(t, t.C, fisher, offset=0)
    base = t.accuracy(t.base)
    assert whole == [base] * 3
    assert base > 90  # the shipped network fits its task (96.75% on the demo's)
