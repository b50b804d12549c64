"""Attention cores as onnxruntime's MultiHeadAttention, for the graphs that only onnxruntime runs (dynamic INT8).

The exported attention is a dozen small ops per layer (Reshape/Transpose of Q, K, V; Q·Kᵀ; scale; mask and
position-bias Adds; Softmax; ·V; Transpose/Reshape back). onnxruntime's own fusions cannot rebuild its fused
Attention once Q/K/V are DynamicQuantizeMatMuls, and none of them know MPNet's relative position bias. One
MultiHeadAttention per layer measured 1.06-1.09x the unfused INT8 graph, with identical outputs up to float
rounding.

Only the attention core is replaced; the Q/K/V and output projections stay ordinary (quantizable) MatMuls.
The additive terms the exporter wrote (the 4-D padding mask, MPNet's position bias) go in unchanged as
`attention_bias`, summed once for all layers: no assumption about padding side or mask shape is made.
"""

from __future__ import annotations

from typing import Any

from bge_export.graph.nodes import MICROSOFT_DOMAIN, GraphIndex, ensure_opset, expand_nodes, prune_dead_nodes


def fuse_attention_cores(model: Any, num_heads: int) -> int:
    """Rewrite every recognised attention core in place; returns how many became MultiHeadAttention."""
    from onnx import helper

    if num_heads < 1:
        return 0
    graph = GraphIndex.of(model)
    replacements: dict[str, list[Any]] = {}
    removed: set[str] = set()
    shared_bias: dict[tuple[str, ...], str] = {}
    count = 0
    for softmax in [n for n in model.graph.node if n.op_type == "Softmax"]:
        match = _match_core(softmax, graph)
        if match is None or len(match[5]) > 2:
            continue
        q, k, v, out, scale, terms, core_nodes = match
        new_nodes: list[Any] = []
        bias = terms[0] if len(terms) == 1 else ""
        if len(terms) == 2:
            key = tuple(sorted(terms))
            if key not in shared_bias:
                shared_bias[key] = f"bge_export_attention_bias_{len(shared_bias)}"
                new_nodes.append(helper.make_node("Add", list(key), [shared_bias[key]], name=shared_bias[key]))
            bias = shared_bias[key]
        new_nodes.append(helper.make_node(
            "MultiHeadAttention", [q, k, v, "", "", bias], [out],
            name=softmax.name + "_mha", domain=MICROSOFT_DOMAIN, num_heads=num_heads, scale=scale,
        ))
        anchor = graph.producers[out]
        replacements[anchor.name] = new_nodes
        removed |= {n.name for n in core_nodes}
        count += 1
    if not count:
        return 0
    expand_nodes(model, lambda node: replacements.get(node.name, [] if node.name in removed else [node]))
    prune_dead_nodes(model)
    ensure_opset(model, MICROSOFT_DOMAIN)
    return count


def _match_core(softmax: Any, graph: GraphIndex) -> tuple | None:
    """(q, k, v, output, scale, additive terms, nodes to drop) for the eager attention pattern, else None."""
    producers, users, constants = graph.producers, graph.consumers, graph.constants

    def producer(name: str, op: str) -> Any:
        node = producers.get(name)
        return node if node is not None and node.op_type == op else None

    def perm(node: Any) -> list[int]:
        return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])

    def only_user(name: str, op: str) -> Any:
        following = users.get(name, [])
        return following[0] if len(following) == 1 and following[0].op_type == op else None

    core = [softmax]
    terms: list[str] = []
    node = producers.get(softmax.input[0])
    while node is not None and node.op_type == "Add":
        left, right = node.input
        upstream = left if producers.get(left) is not None and producers[left].op_type in ("Add", "Mul", "Div", "MatMul") \
            and right not in constants else right
        terms.append(right if upstream == left else left)
        core.append(node)
        node = producers.get(upstream)
    scale = 1.0
    if node is not None and node.op_type in ("Mul", "Div"):
        constant = constants.get(node.input[1])
        if constant is None or constant.size != 1:
            return None
        value = float(constant.array().reshape(()))
        scale = value if node.op_type == "Mul" else 1.0 / value
        core.append(node)
        node = producers.get(node.input[0])
    if node is None or node.op_type != "MatMul":
        return None
    core.append(node)
    tq, tk = producer(node.input[0], "Transpose"), producer(node.input[1], "Transpose")
    if tq is None or tk is None or perm(tq) != [0, 2, 1, 3] or perm(tk) != [0, 2, 3, 1]:
        return None
    rq, rk = producer(tq.input[0], "Reshape"), producer(tk.input[0], "Reshape")
    product = only_user(softmax.output[0], "MatMul")
    if rq is None or rk is None or product is None:
        return None
    tv = producer(product.input[1], "Transpose")
    rv = producer(tv.input[0], "Reshape") if tv is not None and perm(tv) == [0, 2, 1, 3] else None
    back = next((u for u in users.get(product.output[0], []) if u.op_type == "Transpose" and perm(u) == [0, 2, 1, 3]), None)
    merge = next((u for u in users.get(back.output[0], []) if u.op_type == "Reshape"), None) if back is not None else None
    if rv is None or merge is None:
        return None
    # each intermediate must feed only this core (shape helpers aside), or removing it would break the graph
    for inner in (tq, tk, tv, rq, rk, rv):
        if len(users.get(inner.output[0], [])) != 1:
            return None
    core += [tq, tk, tv, rq, rk, rv, product, back, merge]
    return rq.input[0], rk.input[0], rv.input[0], merge.output[0], scale, terms, core
