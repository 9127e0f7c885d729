"""The dependency graph: Torch-Pruning's ``DependencyGraph`` with a linear-time group search,
concatenation and split widths read from the traced tensors, and channel shuffles found and
passed as identities."""

from __future__ import annotations

import torch_pruning as tp
from torch import nn


class _Graph(tp.DependencyGraph):
    """Torch-Pruning's dependency graph with a group search that explores each (layer, pruning
    operation) only for indices it has not explored there yet.

    The stock search re-explores a layer whenever it arrives with an index list it has not seen
    in exactly that form. Where channels split and rejoin in overlapping slices (ReXNet's
    partial residuals, dense concatenations) the same layer is reached with many different
    subsets, and the search grows exponentially (minutes for one network). Index mappings act on
    each index separately, so indices already explored at a layer lead nowhere new: skipping
    them gives the same group, after the final merge, in linear time.

    Channel shuffles (a reshape that splits the channels, a transpose, a reshape back) are
    found after tracing and passed as identities, recorded in ``shuffles``: their channel order
    depends on the width, so a group that crosses one cannot lose channels and keep the pruned
    network equal to the masked one. Torch-Pruning's own reshape mapping fails on them."""

    def _build_dependency(self, module2node):
        super()._build_dependency(module2node)
        _exact_concat_and_split(module2node)
        self.shuffles = _find_shuffles(module2node)
        for op in self.shuffles:
            module2node[op].type = tp.ops.OPTYPE.ELEMENTWISE  # no reshape index mapping

    def get_pruning_group(self, module, pruning_fn, idxs):
        from torch_pruning import _helpers
        from torch_pruning.dependency import index_mapping
        from torch_pruning.dependency.dependency import Dependency
        from torch_pruning.dependency.group import Group
        from torch_pruning.pruner import function

        if module not in self.module2node:
            raise ValueError(f"module {module} is not in the dependency graph")
        if isinstance(module, nn.Conv2d) and module.groups == module.out_channels > 1:
            pruning_fn = function.prune_depthwise_conv_out_channels
        start = [_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs]
        index_mapping.update_index_mapping(self)
        root = self.module2node[module]
        # (target node, operation) -> [first dependency, indices in arrival order, their idx]
        items: dict = {}

        def add(dep, at) -> None:
            entry = items.setdefault((dep.target, dep.handler), [dep, [], set()])
            for index in at:
                if index.idx not in entry[2]:
                    entry[1].append(index)
                    entry[2].add(index.idx)

        add(Dependency(pruning_fn, pruning_fn, source=root, target=root), start)
        explored = {(root, pruning_fn): set(start)}
        todo = [(root, pruning_fn, start)]
        while todo:
            node, fn, at = todo.pop()
            for dep in node.dependencies:
                if not dep.is_triggered_by(fn):
                    continue
                moved = at
                for mapping in dep.index_mapping:
                    if mapping is not None:
                        moved = mapping(moved)
                seen = explored.setdefault((dep.target, dep.handler), set())
                new = [i for i in moved if i not in seen]
                if not new:
                    continue
                seen.update(new)
                add(dep, new)
                todo.append((dep.target, dep.handler, new))
        merged = Group()
        for dep, at, _ in items.values():
            target = dep.target.module
            if isinstance(target, nn.Parameter) and any(target is p for p in self.ignored_params):
                continue
            merged.add_dep(dep, _helpers.to_plain_idxs(at))
            merged[len(merged) - 1].root_idxs = _helpers.to_root_idxs(at)
        merged._DG = self
        return merged


def _width(grad_fn, nr: int, dim: int) -> int | None:
    """The size along ``dim`` of output ``nr`` of the operation behind ``grad_fn``."""
    try:
        return int(grad_fn._input_metadata[nr].shape[dim])
    except (AttributeError, IndexError, TypeError, RuntimeError):
        return None


def _edge(consumer, producer) -> int | None:
    """Which output of ``producer`` node ``consumer`` takes (its autograd output number)."""
    nrs = {nr for f, nr in consumer.grad_fn.next_functions if f is producer.grad_fn}
    return nrs.pop() if len(nrs) == 1 else None


def _exact_concat_and_split(module2node) -> None:
    """Concatenation and split widths read from the traced tensors themselves.

    Torch-Pruning infers them by walking the graph to the nearest layer, which miscounts where
    a split's piece feeds a concatenation directly (ShuffleNetV2's pass-through half), and
    numbers a split's pieces in the order their consumers were traced, not by which piece each
    takes. Where the traced widths are not available, its own inference stays."""
    from torch_pruning.dependency.index_mapping import _SplitIndexMapping

    for op, node in module2node.items():
        fn = node.grad_fn
        dim = getattr(fn, "_saved_dim", None)
        if fn is None or dim != 1:
            continue
        if node.type == tp.ops.OPTYPE.CONCAT:
            sizes = []
            for n in node.inputs:
                nr = _edge(node, n) if n.grad_fn is not None else None
                sizes.append(None if nr is None else _width(n.grad_fn, nr, 1))
            if None not in sizes and sum(sizes) == _width(fn, 0, 1):
                op.concat_sizes = sizes
        elif node.type == tp.ops.OPTYPE.SPLIT:
            widths = [_width(fn, i, 1) for i in range(len(getattr(fn, "_input_metadata", ())))]
            pieces = [_edge(n, node) if n.grad_fn is not None else None for n in node.outputs]
            if not widths or None in widths or None in pieces:
                continue
            starts = [sum(widths[:i]) for i in range(len(widths) + 1)]
            for out, p in zip(node.outputs, pieces, strict=True):
                span = starts[p : p + 2]
                for dep in node.dependencies:
                    if dep.target is out:
                        dep.index_mapping[0] = _SplitIndexMapping(offset=span, reverse=False)
                for dep in out.dependencies:
                    if dep.target is node:
                        dep.index_mapping[0] = _SplitIndexMapping(offset=span, reverse=True)
            node.enable_index_mapping = False  # keep these mappings
            op.split_sizes, op.offsets = widths, starts


def _find_shuffles(module2node) -> set:
    """The operations of every channel shuffle: a reshape of a 4-d tensor, then transposes,
    permutes or copies, then a reshape."""
    reshape = tp.ops.OPTYPE.RESHAPE
    found: set = set()
    for op, node in module2node.items():
        sizes = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
        if node.type != reshape or sizes is None or len(sizes) != 4:
            continue
        chain, moved, at = [op], False, node
        while len(at.outputs) == 1:
            at = at.outputs[0]
            name = at.grad_fn.name().lower() if at.grad_fn is not None else ""
            if at.type == reshape:
                if moved:
                    found.update([*chain, at.module])
                break
            if not any(k in name for k in ("transpose", "permute", "clone")):
                break
            moved |= "clone" not in name
            chain.append(at.module)
    return found
