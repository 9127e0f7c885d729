"""The examples under examples/, on their small settings: a torchvision segmentation network and
a torchvision detector, each pruned by the Pruner inside its own training loop."""

import importlib.util
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("torchvision") is None:  # the zoo extra, which `make test` installs
    pytest.skip("torchvision is not installed", allow_module_level=True)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str) -> dict:
    spec = importlib.util.spec_from_file_location(f"example_{script}", EXAMPLES / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        return mod.main(["--small"])
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["segment", "detect"])
def test_example_meets_its_budget_and_cuts_without_changing_outputs(script):
    r = _run(script)
    assert r["flops_ratio"] <= 0.5 and r["flops_after"] == r["flops_counted"]
    assert r["met_by"] in ("allocator", "shift")
    assert r["max_output_difference"] < 1e-4  # the cut network computes what the masked one did
    if script == "segment":
        assert r["miou_cut"] == pytest.approx(r["miou_masked"], abs=1e-6)
    else:
        assert r["map50_cut"] == pytest.approx(r["map50_masked"], abs=1e-6)
        assert r["detections_cut"] > 0  # torchvision's post-processing ran, NMS included


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None,
    reason="optional: ultralytics and its ~560 MB of dependencies (see examples/yolo.py)",
)
def test_yolo_from_its_yaml_prunes_with_its_own_loss():
    r = _run("yolo")
    assert r["flops_ratio"] <= 0.5 and r["flops_after"] == r["flops_counted"]
    assert r["prunable_groups"] > 30 and r["max_output_difference"] < 1e-3
