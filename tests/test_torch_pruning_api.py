"""The Torch-Pruning internals that ``dsaprune/grouping/graph.py`` builds on (the only module that
imports it) still exist with the shape it relies on. A new Torch-Pruning release that moves one
fails here, by name, rather than deep inside grouping."""

import inspect

import pytest

tp = pytest.importorskip("torch_pruning")


def test_the_private_names_grouping_uses_exist():
    from torch_pruning import _helpers
    from torch_pruning.dependency import index_mapping
    from torch_pruning.dependency.dependency import Dependency  # noqa: F401
    from torch_pruning.dependency.group import Group  # noqa: F401
    from torch_pruning.pruner import function

    missing = [
        name
        for name, ok in {
            "_helpers._HybridIndex": hasattr(_helpers, "_HybridIndex"),
            "_helpers.to_plain_idxs": hasattr(_helpers, "to_plain_idxs"),
            "_helpers.to_root_idxs": hasattr(_helpers, "to_root_idxs"),
            "index_mapping.update_index_mapping": hasattr(index_mapping, "update_index_mapping"),
            "index_mapping._SplitIndexMapping": hasattr(index_mapping, "_SplitIndexMapping"),
            "function.prune_depthwise_conv_out_channels": hasattr(
                function, "prune_depthwise_conv_out_channels"
            ),
            "DependencyGraph._build_dependency": hasattr(tp.DependencyGraph, "_build_dependency"),
            "DependencyGraph.get_pruning_group": hasattr(tp.DependencyGraph, "get_pruning_group"),
            "ops.OPTYPE": all(
                hasattr(tp.ops.OPTYPE, k) for k in ("ELEMENTWISE", "CONCAT", "SPLIT", "RESHAPE")
            ),
        }.items()
        if not ok
    ]
    assert not missing, (
        f"torch_pruning {tp.__version__} lacks {missing}, which dsaprune/grouping/graph.py uses: "
        "pin the version pyproject.toml names, or port graph.py"
    )
    params = list(inspect.signature(tp.DependencyGraph._build_dependency).parameters)
    assert params == ["self", "module2node"], params
