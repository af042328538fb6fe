"""Reduce operators: :class:`ReduceOp`, :class:`PreMulSum`, and the spellings accepted for them
(names, numbers, torch's ``ReduceOp``)."""

import enum
import numbers
import sys
from typing import Any, Optional, Union

import numpy as np

from ._errors import InvalidReduceOpError


class ReduceOp(enum.IntEnum):
    """Reduction operators (the C ABI's fcRedOp_t numbers). Wherever one is taken, its name
    as a string (``"sum"``, ``"prod"``/``"product"``, ``"max"``, ``"min"``, ``"avg"``, any
    case) and torch's ``torch.distributed.ReduceOp`` (SUM, PRODUCT, MAX, MIN, AVG) are
    accepted too."""

    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    AVG = 4


class PreMulSum:
    """The premul-sum reduce operator (NCCL's ``ncclRedOpCreatePreMulSum``): the sum over
    ranks of each rank's input multiplied by ``factor``. Every rank passes its own factor
    (the same on all ranks makes it a scaled sum). ``factor`` is a number or a one-element
    array or tensor (read on the host when the call is made), converted to the dtype of the
    call's buffer. Taken by every reducing call (``all_reduce``, ``reduce``,
    ``reduce_scatter``, ``reduce_scatter_v``) on CPU buffers::

        comm.all_reduce(grads, ferrocoll.PreMulSum(1 / comm.size))
    """

    __slots__ = ("factor",)

    def __init__(self, factor: Any) -> None:
        self.factor = _factor(factor)

    def __repr__(self) -> str:
        return f"PreMulSum({self.factor!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PreMulSum) and other.factor == self.factor

    def __hash__(self) -> int:
        return hash(("PreMulSum", self.factor))


def _factor(factor: Any) -> Union[int, float, complex]:
    """A premul-sum factor as a Python number (a one-element array or tensor read on the host)."""
    if isinstance(factor, (bool, np.bool_)) or isinstance(factor, (str, bytes)):
        raise InvalidReduceOpError(
            7004, f"PreMulSum factor={factor!r} must be a number or a one-element array/tensor")
    if isinstance(factor, numbers.Number):
        return factor.item() if isinstance(factor, np.generic) else factor  # type: ignore[return-value]
    size = getattr(factor, "numel", None)
    n = size() if callable(size) else getattr(factor, "size", None)
    if n == 1 and hasattr(factor, "item"):
        detach = getattr(factor, "detach", None)
        value = (detach().cpu() if callable(detach) else factor).reshape(-1)[0].item()
        if isinstance(value, numbers.Number) and not isinstance(value, bool):
            return value
    raise InvalidReduceOpError(
        7004, f"PreMulSum factor must be a number or a one-element array/tensor, got "
        f"{type(factor).__name__}" + (f" of {n} elements" if isinstance(n, int) else ""))

#: A reduce operator: a :class:`ReduceOp` (or its number), its name as a string, a
#: :class:`PreMulSum`, or a ``torch.distributed.ReduceOp`` (premul-sum included; not named
#: here: torch is an optional dependency).
ReduceOpLike = Union[ReduceOp, PreMulSum, str, int, Any]

_OP_NAMES = {
    "sum": ReduceOp.SUM,
    "prod": ReduceOp.PROD,
    "product": ReduceOp.PROD,
    "max": ReduceOp.MAX,
    "min": ReduceOp.MIN,
    "avg": ReduceOp.AVG,
}
# torch.distributed.ReduceOp's names for the operators ferrocoll has.
_TORCH_OPS = {
    "SUM": ReduceOp.SUM,
    "PRODUCT": ReduceOp.PROD,
    "MAX": ReduceOp.MAX,
    "MIN": ReduceOp.MIN,
    "AVG": ReduceOp.AVG,
}
_ACCEPTED_OPS = (
    "accepted: ferrocoll.ReduceOp.{SUM, PROD, MAX, MIN, AVG} (or its number 0-4), "
    "ferrocoll.PreMulSum(factor), torch.distributed.ReduceOp.{SUM, PRODUCT, MAX, MIN, AVG} "
    "or dist._make_nccl_premul_sum(factor), or a string: "
    + ", ".join(repr(k) for k in _OP_NAMES)
    + " (any case)"
)


def _bad_op(op: Any, why: str = "is not a reduce operator") -> InvalidReduceOpError:
    return InvalidReduceOpError(7004, f"op={op!r} {why}; {_ACCEPTED_OPS}")


def _torch_op(op: Any) -> Optional[Union[ReduceOp, PreMulSum]]:
    """``op`` as a ReduceOp if it is torch's ReduceOp (or its RedOpType), else None. Looks
    only when torch.distributed is already imported: never imports torch."""
    dist = sys.modules.get("torch.distributed")
    torch_op = getattr(dist, "ReduceOp", None)
    if torch_op is None or not isinstance(torch_op, type):
        return None
    red_op_type = getattr(torch_op, "RedOpType", None)
    if red_op_type is None:
        return None
    # (torch's metaclass makes RedOpType values instances of ReduceOp too.)
    wrapper = None
    if not isinstance(op, red_op_type):
        if not isinstance(op, torch_op):
            return None
        wrapper, op = op, getattr(op, "op", None)  # the RedOpType a ReduceOp object wraps
    name = getattr(op, "name", None)
    if name in _TORCH_OPS:
        return _TORCH_OPS[name]
    if name == "PREMUL_SUM" and wrapper is not None:
        # dist._make_nccl_premul_sum(factor): (RedOpType.PREMUL_SUM, factor)
        state = wrapper.__getstate__()
        return PreMulSum(state[1])
    raise _bad_op(op, f"(torch.distributed.ReduceOp.{name}) has no ferrocoll counterpart")


def _reduce_op(op: ReduceOpLike) -> Union[ReduceOp, PreMulSum]:
    """``op`` as a :class:`ReduceOp` or :class:`PreMulSum`, or
    :class:`InvalidReduceOpError` listing the accepted values."""
    if isinstance(op, (ReduceOp, PreMulSum)):
        return op
    if isinstance(op, str):
        found = _OP_NAMES.get(op.strip().lower())
        if found is None:
            raise _bad_op(op, "is not the name of a reduce operator")
        return found
    from_torch = _torch_op(op)
    if from_torch is not None:
        return from_torch
    if isinstance(op, (int, np.integer)) and not isinstance(op, (bool, np.bool_)):
        try:
            return ReduceOp(int(op))
        except ValueError:
            raise _bad_op(op, "is not the number of a reduce operator") from None
    raise _bad_op(op)

