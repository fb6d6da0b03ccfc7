"""Ray's DAG API (lazy computation graphs): `f.bind(...)`, `dag.execute(...)`.

Owns the nodes a bound call makes and how a DAG runs (see dag_node). Not the
`.bind` entry points themselves (remote_function, actors: they build these nodes),
and not Ray's Compiled Graphs (`experimental_compile` raises NotImplementedError).
"""

from .class_node import ClassMethodNode, ClassNode
from .dag_node import (
    BIND_INDEX_KEY,
    IS_CLASS_METHOD_OUTPUT_KEY,
    PARENT_CLASS_NODE_KEY,
    PREV_CLASS_METHOD_CALL_KEY,
    DAGNode,
)
from .function_node import FunctionNode
from .input_node import DAGInputData, InputAttributeNode, InputNode
from .output_node import MultiOutputNode

__all__ = [
    "BIND_INDEX_KEY",
    "IS_CLASS_METHOD_OUTPUT_KEY",
    "PARENT_CLASS_NODE_KEY",
    "PREV_CLASS_METHOD_CALL_KEY",
    "ClassMethodNode",
    "ClassNode",
    "DAGInputData",
    "DAGNode",
    "FunctionNode",
    "InputAttributeNode",
    "InputNode",
    "MultiOutputNode",
]
