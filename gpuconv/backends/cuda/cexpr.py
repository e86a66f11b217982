"""Integer constant expressions of a kernel source's object-like macros, evaluated on the host.

The host checks a launch against what the kernel was compiled with: `__launch_bounds__(DIRECT_THREADS)`
and `__shared__ A As[GEMM_BK][GEMM_BM + GEMM_PAD]` are expressions of the file's macros, with -D
overrides taking the place of the `#ifndef` defaults. Only integer literals, parentheses and
+ - * / % are understood (all the kernels use); anything else is an error naming the expression.
"""
from __future__ import annotations

import ast
import operator
import re

_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)(?:[ \t]+([^\n]*))?$", re.MULTILINE)
_IDENT = re.compile(r"\b[A-Za-z_]\w*\b")
_INT_SUFFIX = re.compile(r"\b(\d+)(?:[uU]?[lL]{0,2}|[lL]{1,2}[uU])\b")
# C's / and % on the non-negative values of tile arithmetic are Python's // and %.
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.floordiv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def macro_table(source: str, defines: tuple[tuple[str, int], ...] = ()) -> dict[str, str]:
    """Object-like macros of `source` (function-like ones are skipped), -D `defines` overriding."""
    table = {}
    for name, body in _DEFINE.findall(source):
        table.setdefault(name, (body or "").split("//")[0].strip())
    table.update({k: str(v) for k, v in defines})
    return table


def evaluate(expr: str, macros: dict[str, str], _depth: int = 0) -> int:
    if _depth > 32:
        raise ValueError(f"macro expansion of {expr!r} does not terminate")

    def expand(m: re.Match) -> str:
        name = m.group(0)
        if name not in macros:
            raise ValueError(f"cannot evaluate {expr!r}: {name} is not an object-like macro of the source")
        return f"({evaluate(macros[name], macros, _depth + 1)})"

    text = _INT_SUFFIX.sub(r"\1", expr)
    text = _IDENT.sub(expand, text)
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ValueError(f"cannot evaluate {expr!r}: not an integer constant expression") from None
    return _eval(tree, expr)


def _eval(node, expr: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval(node.operand, expr)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left, expr), _eval(node.right, expr))
    raise ValueError(f"cannot evaluate {expr!r}: only integers, parentheses and + - * / % are understood")
