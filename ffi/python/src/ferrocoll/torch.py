"""``torch.distributed`` backend ``"ferrocoll"``: ``import ferrocoll.torch`` registers it, then

    dist.init_process_group("ferrocoll")      # e.g. under torchrun

runs all_reduce (SUM, PRODUCT, MIN, MAX, AVG, PREMUL_SUM), all_gather(_into_tensor),
reduce_scatter(_tensor), broadcast, reduce, all_to_all(_single), gather, scatter, barrier,
send/recv/isend/irecv and batch_isend_irecv through the C ABI, on CPU tensors, and on CUDA
tensors with ``FERROCOLL_DEVICE=cuda`` (the library's NCCL backend). Uneven sizes run as the
library's uneven collectives: ``all_gather``/``reduce_scatter`` with tensors of different sizes
(all-gather-v, reduce-scatter-v), ``all_to_all_single`` with splits and ``all_to_all`` with
tensors of different sizes (all-to-all-v); these and ``PREMUL_SUM``
(``dist._make_nccl_premul_sum(factor)``, each rank its own factor, a number or a one-element
tensor read on the host) take CPU tensors only. The ranks meet through the store torch
passes in: rank 0 makes a unique id (its process serves ferrocoll's rendezvous store, on
``FERROCOLL_SOCKET_IFNAME`` or the first non-loopback interface) and publishes it there.

Calls are asynchronous: each returns at once, and its Work (and Future) completes when the
collective has, so DistributedDataParallel overlaps its gradient all-reduce with the backward
pass. ``init_process_group(timeout=…)`` bounds every call (on expiry the call fails and the
communicator is aborted).

Surviving a failed rank (the store ``FERROCOLL_STORE`` names must outlive it, e.g.
``file:DIR``; ``FERROCOLL_HEARTBEAT_TIMEOUT`` bounds detection): every survivor's pending and
later calls raise ``ferrocoll.RevokedError``; :func:`shrink_group` then makes a group of the
survivors (the new default group when the default one shrinks), as
``torch.distributed.shrink_group`` does for NCCL.
"""

import collections
import contextlib
import ctypes
import datetime
import math
import os
import threading
from typing import Any, Deque, List, Optional, Sequence, Tuple, Union

try:
    import torch
except ModuleNotFoundError as _e:  # torch is an optional dependency: the `torch` extra
    if _e.name != "torch":
        raise
    raise ImportError(
        "ferrocoll.torch needs PyTorch, which is not installed: install ferrocoll with its "
        "`torch` extra, pip install 'ferrocoll[torch]' (from a checkout: "
        "pip install './ffi/python[torch]'), or pip install torch",
        name="torch",
    ) from _e
import torch.distributed as dist

import ferrocoll
from ferrocoll import _LIB, Communicator, _reduce_op
from ferrocoll._torch_work import (  # noqa: F401  (_Work and _Call: used by the collectives)
    _DTYPES, _Call, _complete, _Issuing, _p, _Pending, _seconds, _Work, _work,
)

__all__ = ["ProcessGroupFerrocoll", "shrink_group", "compression_hook"]


_OPS = {
    "SUM": ferrocoll.ReduceOp.SUM,
    "PRODUCT": ferrocoll.ReduceOp.PROD,
    "MAX": ferrocoll.ReduceOp.MAX,
    "MIN": ferrocoll.ReduceOp.MIN,
    "AVG": ferrocoll.ReduceOp.AVG,
}

def _splits_error(what: str, name: str, message: str) -> ValueError:
    return ValueError(f"ferrocoll: {what}: {name} {message}")


def _opts_op(opts: Any, what: str) -> Union[int, ferrocoll.PreMulSum]:
    """The fcRedOp_t number of ``opts.reduceOp`` (SUM when there are no options), or the
    :class:`ferrocoll.PreMulSum` of ``dist._make_nccl_premul_sum(factor)`` (its factor read on
    the host; ``_Call.red_op`` makes the operator)."""
    op = getattr(opts, "reduceOp", None)
    if op is None:
        return int(ferrocoll.ReduceOp.SUM)
    kind = getattr(op, "op", op)  # a ReduceOp object wraps its RedOpType
    name = getattr(kind, "name", None)
    if name in _OPS:
        return int(_OPS[name])
    if name == "PREMUL_SUM":
        return _reduce_op(op)  # type: ignore[return-value]
    raise ValueError(
        f"ferrocoll: {what} with reduce op {name or op} is not supported; ferrocoll has "
        "SUM, PRODUCT, MAX, MIN, AVG and PREMUL_SUM"
    )



class ProcessGroupFerrocoll(_Issuing, dist.ProcessGroup):
    """A ``torch.distributed`` process group over one ferrocoll communicator.

    Every call is issued as one asynchronous group of the C ABI (``fcGroupStart``, the
    calls, ``fcGroupEndAsync``) and returns at once; a completion thread per group waits for
    the works in issue order, copies results back where a staging copy was used (a
    non-contiguous tensor, a list of outputs), then completes the call's Work and Future
    (with the error, if the call failed). The tensors stay referenced until then. A call
    torch waits for at once (``async_op=False``, e.g. ``dist.all_reduce(t)``) while nothing
    is in flight runs on the calling thread instead: the same result without the thread
    hand-offs, which would add about 100 µs to a small call.

    ``timeout`` (``init_process_group(timeout=…)``, or a call's own option) bounds each call
    from its issue: a call still running then fails with :class:`ferrocoll.CommTimeoutError`
    and the communicator is aborted, as NCCL's watchdog does; later calls raise that error.
    It is also the communicator's ``FERROCOLL_TIMEOUT`` unless that variable is set.

    Coalescing (``start_coalescing``/``end_coalescing``, ``batch_isend_irecv``,
    ``_coalescing_manager``, ``allreduce_coalesced``): the calls of a batch form one group,
    issued together when it ends, so a batch of sends and receives never deadlocks.

    CUDA tensors run on the library's NCCL backend (``FERROCOLL_DEVICE=cuda`` when the group
    is created, NCCL loadable; not the uneven calls and premul-sum, which are host-only): the
    C calls get the tensors' device pointers and
    ``torch.cuda.current_stream()``; the work is queued on that stream when the Work
    completes."""

    def __init__(self, store: Any, rank: int, size: int, timeout: Any = None,
                 comm: Optional[Communicator] = None) -> None:
        self._timeout = _seconds(timeout)
        self._device_kind = os.environ.get("FERROCOLL_DEVICE", "cpu").strip().lower() or "cpu"
        if comm is not None:
            # A group over an existing communicator (shrink_group): no rendezvous.
            super().__init__(comm.rank, comm.size)
            self._comm = comm
        else:
            super().__init__(rank, size)
            # torchrun's agent store outlives a group (a re-created default group sees the
            # same keys): each creation adds `size` joins to a counter, so the generation of
            # this one is the same on every rank and its unique id never one of a destroyed
            # group.
            generation = (store.add("ferrocoll/joins", 1) - 1) // size
            key = f"ferrocoll/unique_id/{generation}"
            if rank == 0:
                uid = ferrocoll.get_unique_id()
                store.set(key, uid)
            else:
                uid = bytes(store.get(key))
            with _ferrocoll_timeout(self._timeout):
                self._comm = Communicator.init_rank(size, uid, rank)
        self._h = self._comm._h
        # While coalescing: the batch being collected (its C group is open on this thread).
        self._batch: Optional[_Call] = None
        self._batch_outs: List[Tuple[torch.futures.Future, Any]] = []
        # Issued calls, oldest first, and the threads that complete them (started lazily).
        self._cond = threading.Condition()
        self._queue: Deque[_Pending] = collections.deque()
        self._inline: Optional[_Pending] = None  # a blocking call in progress (timed too)
        self._threads: List[threading.Thread] = []
        self._stopping = False
        self._closed = False
        self._failure: Optional[BaseException] = None
        # None, or a list that receives (what, issued, completed) perf_counter times of every
        # completed call (benches/ddp_vs_gloo.py reads it to measure overlap).
        self.trace: Optional[List[Tuple[str, float, float]]] = None

    def getBackendName(self) -> str:
        return "ferrocoll"

    # torch's ProcessGroup reads its name from its registered backends, and this group (a
    # Python subclass) registers none: it keeps its name itself, so that a group made by
    # dist.new_group can be destroyed on its own.
    def _set_group_name(self, name: str) -> None:
        self._group_name = name
        super()._set_group_name(name)

    @property
    def group_name(self) -> str:
        return getattr(self, "_group_name", "")


    # -- collectives (each list holds one tensor per device; CPU means one) ----------------
    def allreduce(self, tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        return self.allreduce_coalesced(tensors, opts, "all_reduce")

    def allreduce_coalesced(self, tensors: List[torch.Tensor], opts: Any = None,
                            what: str = "all_reduce_coalesced") -> _Work:
        c = self._start(what)
        op = _opts_op(opts, what)
        for i, t in enumerate(tensors):
            x = c.tensor(t, f"tensor {i}", True)
            c.call(_LIB.fcAllReduce, _p(x), _p(x), x.numel(), c.dtype(x), c.red_op(op, x))
        return self._submit(c, tensors, opts)

    def allgather(self, output_tensor_lists: List[List[torch.Tensor]],
                  input_tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        c = self._start("all_gather")
        p = self.size()
        for outs, inp in zip(output_tensor_lists, input_tensors):
            if len(outs) != p:
                raise ValueError(f"ferrocoll: all_gather: {len(outs)} output tensors, expected "
                                 f"{p} (one per rank)")
            x = c.tensor(inp, "input", False)
            for o in outs:
                c.on(o.device, "output")
            sizes = [o.numel() for o in outs]
            if len(set(sizes)) == 1 and sizes[0] == x.numel():
                flat = c.staging((p,) + tuple(x.shape), x)
                c.call(_LIB.fcAllGather, _p(x), _p(flat), x.numel(), c.dtype(x))
            else:  # uneven sizes: all-gather-v
                me = self.rank()
                if sizes[me] != x.numel():
                    raise ValueError(
                        f"ferrocoll: all_gather: input has {x.numel()} elements, but output "
                        f"tensor {me} (this rank's) has {sizes[me]}: they must match")
                c.host_only("all_gather with tensors of different sizes")
                flat = c.staging((sum(sizes),), x)
                c.call(_LIB.fcAllGatherV, _p(x), x.numel(), _p(flat), c.counts(sizes), None,
                       c.dtype(x))
            c.finish.append(lambda outs=outs, flat=flat, sizes=sizes: [
                o.copy_(f.reshape(o.shape)) for o, f in zip(outs, flat.reshape(-1).split(sizes))])
        return self._submit(c, output_tensor_lists, opts)

    def allgather_coalesced(self, output_tensor_lists: List[List[torch.Tensor]],
                            input_tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        return self.allgather(output_tensor_lists, input_tensors, opts)

    def _allgather_base(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> _Work:
        return self.allgather_into_tensor_coalesced([output], [input], opts, "all_gather_into_tensor")

    def all_gather_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> _Work:
        return self._allgather_base(output, input, opts)

    def allgather_into_tensor_coalesced(self, outputs: List[torch.Tensor],
                                        inputs: List[torch.Tensor], opts: Any = None,
                                        what: str = "all_gather_into_tensor_coalesced") -> _Work:
        c = self._start(what)
        for o, i in zip(outputs, inputs):
            if o.numel() != i.numel() * self.size():
                raise ValueError(f"ferrocoll: {what}: output has {o.numel()} elements, expected "
                                 f"world_size × input = {self.size()} × {i.numel()}")
            x, y = c.tensor(i, "input", False), c.tensor(o, "output", True)
            c.call(_LIB.fcAllGather, _p(x), _p(y), x.numel(), c.dtype(x))
        return self._submit(c, outputs, opts)

    all_gather_single_coalesced = allgather_into_tensor_coalesced

    def reduce_scatter(self, output_tensors: List[torch.Tensor],
                       input_tensor_lists: List[List[torch.Tensor]], opts: Any = None) -> _Work:
        c = self._start("reduce_scatter")
        op = _opts_op(opts, "reduce_scatter")
        p = self.size()
        for out, ins in zip(output_tensors, input_tensor_lists):
            if len(ins) != p:
                raise ValueError(f"ferrocoll: reduce_scatter: {len(ins)} input tensors, "
                                 f"expected {p} (one per rank)")
            y = c.tensor(out, "output", True)
            for t in ins:
                c.on(t.device, "input")
            flat = c.tensor(torch.cat([t.reshape(-1) for t in ins]), "input", False)
            sizes = [t.numel() for t in ins]
            if all(n == y.numel() for n in sizes):
                c.call(_LIB.fcReduceScatter, _p(flat), _p(y), y.numel(), c.dtype(y),
                       c.red_op(op, y))
            else:  # uneven sizes: reduce-scatter-v
                me = self.rank()
                if sizes[me] != y.numel():
                    raise ValueError(
                        f"ferrocoll: reduce_scatter: output has {y.numel()} elements, but "
                        f"input tensor {me} (this rank's) has {sizes[me]}: they must match")
                c.host_only("reduce_scatter with tensors of different sizes")
                c.call(_LIB.fcReduceScatterV, _p(flat), _p(y), c.counts(sizes), None,
                       c.dtype(y), c.red_op(op, y))
        return self._submit(c, output_tensors, opts)

    def _reduce_scatter_base(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> _Work:
        return self.reduce_scatter_tensor_coalesced([output], [input], opts, "reduce_scatter_tensor")

    def reduce_scatter_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> _Work:
        return self._reduce_scatter_base(output, input, opts)

    def reduce_scatter_tensor_coalesced(self, outputs: List[torch.Tensor],
                                        inputs: List[torch.Tensor], opts: Any = None,
                                        what: str = "reduce_scatter_tensor_coalesced") -> _Work:
        c = self._start(what)
        op = _opts_op(opts, what)
        for o, i in zip(outputs, inputs):
            if i.numel() != o.numel() * self.size():
                raise ValueError(f"ferrocoll: {what}: input has {i.numel()} elements, expected "
                                 f"world_size × output = {self.size()} × {o.numel()}")
            x, y = c.tensor(i, "input", False), c.tensor(o, "output", True)
            c.call(_LIB.fcReduceScatter, _p(x), _p(y), y.numel(), c.dtype(y), c.red_op(op, y))
        return self._submit(c, outputs, opts)

    reduce_scatter_single_coalesced = reduce_scatter_tensor_coalesced

    def broadcast(self, tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        c = self._start("broadcast")
        root = opts.rootRank if opts is not None else 0
        for i, t in enumerate(tensors):
            x = c.tensor(t, f"tensor {i}", True)
            c.call(_LIB.fcBroadcast, _p(x), _p(x), x.numel(), c.dtype(x), root)
        return self._submit(c, tensors, opts)

    def reduce(self, tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        c = self._start("reduce")
        op, root = _opts_op(opts, "reduce"), opts.rootRank if opts is not None else 0
        for i, t in enumerate(tensors):
            x = c.tensor(t, f"tensor {i}", True)
            c.call(_LIB.fcReduce, _p(x), _p(x), x.numel(), c.dtype(x), c.red_op(op, x), root)
        return self._submit(c, tensors, opts)

    def _split_counts(self, what: str, t: torch.Tensor, splits: Sequence[int],
                      name: str) -> List[int]:
        """Element counts per rank of ``t`` split along dim 0 by ``splits`` (rows; empty:
        even), checked: one non-negative entry per rank, summing to the rows of ``t``."""
        p = self.size()
        rows = t.shape[0] if t.dim() else 1
        per_row = math.prod(t.shape[1:]) if t.dim() else 1
        if not splits:
            if rows % p:
                raise _splits_error(what, name, f"is empty (even splits), but the {rows} rows "
                                    f"do not split evenly over {p} ranks; pass the splits")
            return [rows // p * per_row] * p
        if len(splits) != p:
            raise _splits_error(what, name, f"has {len(splits)} entries, expected {p} (one "
                                "per rank)")
        for i, n in enumerate(splits):
            if int(n) < 0:
                raise _splits_error(what, f"{name}[{i}]", f"is {n}, expected a non-negative "
                                    "number of rows")
        if sum(int(n) for n in splits) != rows:
            raise _splits_error(what, name, f"{list(splits)} sums to {sum(splits)}, but the "
                                f"tensor has {rows} rows (dim 0)")
        return [int(n) * per_row for n in splits]

    def alltoall_base(self, output: torch.Tensor, input: torch.Tensor,
                      output_split_sizes: List[int], input_split_sizes: List[int],
                      opts: Any = None) -> _Work:
        what = "all_to_all_single"
        send = self._split_counts(what, input, input_split_sizes, "input_split_sizes")
        recv = self._split_counts(what, output, output_split_sizes, "output_split_sizes")
        c = self._start(what)
        x, y = c.tensor(input, "input", False), c.tensor(output, "output", True)
        if len(set(send + recv)) == 1:
            c.call(_LIB.fcAllToAll, _p(x), _p(y), send[0], c.dtype(x))
        else:  # uneven splits: all-to-all-v
            c.host_only("all_to_all_single with uneven splits")
            c.call(_LIB.fcAllToAllV, _p(x), c.counts(send), None, _p(y), c.counts(recv), None,
                   c.dtype(x))
        return self._submit(c, output, opts)

    def all_to_all_single(self, output: torch.Tensor, input: torch.Tensor,
                          output_split_sizes: List[int], input_split_sizes: List[int],
                          opts: Any = None) -> _Work:
        return self.alltoall_base(output, input, output_split_sizes, input_split_sizes, opts)

    def alltoall(self, output_tensors: List[torch.Tensor], input_tensors: List[torch.Tensor],
                 opts: Any = None) -> _Work:
        what = "all_to_all"
        p = self.size()
        if len(output_tensors) != p or len(input_tensors) != p:
            raise ValueError(f"ferrocoll: {what}: {len(input_tensors)} inputs and "
                             f"{len(output_tensors)} outputs, expected {p} of each (one per rank)")
        c = self._start(what)
        for t in list(input_tensors) + list(output_tensors):
            c.on(t.device, "tensor")
        send = [t.numel() for t in input_tensors]
        recv = [t.numel() for t in output_tensors]
        flat_in = torch.cat([t.reshape(-1) for t in input_tensors])
        c.keep.append(flat_in)
        flat_out = c.staging((sum(recv),), flat_in)
        c.tensor(flat_in, "input", False)
        if len(set(send + recv)) == 1:
            c.call(_LIB.fcAllToAll, _p(flat_in), _p(flat_out), send[0], c.dtype(flat_in))
        else:  # tensors of different sizes: all-to-all-v
            c.host_only("all_to_all with tensors of different sizes")
            c.call(_LIB.fcAllToAllV, _p(flat_in), c.counts(send), None, _p(flat_out),
                   c.counts(recv), None, c.dtype(flat_in))
        c.finish.append(lambda: [o.copy_(f.reshape(o.shape)) for o, f in
                                 zip(output_tensors, flat_out.split(recv))])
        return self._submit(c, output_tensors, opts)

    def gather(self, output_tensors: List[List[torch.Tensor]],
               input_tensors: List[torch.Tensor], opts: Any = None) -> _Work:
        what = "gather"
        p, root = self.size(), opts.rootRank if opts is not None else 0
        c = self._start(what)
        x = c.tensor(input_tensors[0], "input", False)
        outs: List[torch.Tensor] = []
        if self.rank() == root:
            outs = _root_tensors(c, output_tensors, p, x.numel(), "output", "input")
            flat = c.staging((p, x.numel()), x)
            c.call(_LIB.fcGather, _p(x), _p(flat), x.numel(), c.dtype(x), root)
            c.finish.append(lambda: [o.copy_(f.reshape(o.shape)) for o, f in zip(outs, flat)])
        else:
            c.call(_LIB.fcGather, _p(x), None, x.numel(), c.dtype(x), root)
        return self._submit(c, output_tensors, opts)

    def scatter(self, output_tensors: List[torch.Tensor],
                input_tensors: List[List[torch.Tensor]], opts: Any = None) -> _Work:
        what = "scatter"
        p, root = self.size(), opts.rootRank if opts is not None else 0
        c = self._start(what)
        y = c.tensor(output_tensors[0], "output", True)
        if self.rank() == root:
            ins = _root_tensors(c, input_tensors, p, y.numel(), "input", "output")
            flat = c.tensor(torch.cat([t.reshape(-1) for t in ins]), "input", False)
            c.call(_LIB.fcScatter, _p(flat), _p(y), y.numel(), c.dtype(y), root)
        else:
            c.call(_LIB.fcScatter, None, _p(y), y.numel(), c.dtype(y), root)
        return self._submit(c, output_tensors, opts)

    def barrier(self, opts: Any = None) -> _Work:
        c = self._start("barrier")
        c.call(_LIB.fcBarrier)
        return self._submit(c, None, opts)

    def send(self, tensors: List[torch.Tensor], dst: int, tag: int = 0) -> _Work:
        c = self._start("send")
        for t in tensors:
            x = c.tensor(t, "tensor", False)
            c.call(_LIB.fcSend, _p(x), x.numel(), c.dtype(x), dst)
        return self._submit(c, tensors)

    def recv(self, tensors: List[torch.Tensor], src: int, tag: int = 0) -> _Work:
        c = self._start("recv")
        for t in tensors:
            x = c.tensor(t, "tensor", True)
            c.call(_LIB.fcRecv, _p(x), x.numel(), c.dtype(x), src)
        return self._submit(c, tensors)

    def recv_anysource(self, tensors: List[torch.Tensor], tag: int = 0) -> _Work:
        raise NotImplementedError("ferrocoll: recv from any source is not supported; name the "
                                  "source rank (src=...)")

    # -- lifecycle -------------------------------------------------------------------------
    def _wait_for_pending_works(self) -> None:
        with self._cond:
            while self._queue:
                self._cond.wait()

    def shutdown(self) -> None:
        """Waits for the calls in flight (each bounded by its timeout), stops the group's
        threads and destroys the communicator. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop()
        with contextlib.suppress(ferrocoll.FerrocollError):
            self._comm.destroy()

    # -- failures --------------------------------------------------------------------------
    def revoke(self) -> None:
        """Revokes the communicator on every rank: pending and later calls on this group
        raise ``ferrocoll.RevokedError`` everywhere (within the heartbeat period on the other
        ranks). The group stays usable for :func:`shrink_group`."""
        self._comm.revoke()

    def abort(self) -> None:
        """Revokes the communicator (the peers' calls on it fail too) and frees it: the
        calls in flight fail (their Works raise), the group's threads stop, later calls
        raise. Idempotent; the group is unusable afterwards (torch's abort path; to go on
        with the survivors use :func:`shrink_group` instead)."""
        if self._failure is None:
            self._failure = ferrocoll.SystemFailureError(
                7002, "ferrocoll: the process group was aborted")
        already = self._closed
        self._closed = True
        self._kill()
        if not already:
            self._stop()

    def shrink(self, exclude: Optional[Sequence[int]] = None,
               abort: bool = False) -> "ProcessGroupFerrocoll":
        """A new :class:`ProcessGroupFerrocoll` over part of this group (see
        :meth:`ferrocoll.Communicator.shrink`): with ``exclude`` None, the survivors agreed
        after a failure; otherwise every rank but ``exclude``. Not registered with
        ``torch.distributed``: :func:`shrink_group` does that."""
        comm = self._comm.shrink(exclude, abort=abort)
        timeout = None if self._timeout is None else datetime.timedelta(seconds=self._timeout)
        return ProcessGroupFerrocoll(None, 0, 0, timeout, comm=comm)


@contextlib.contextmanager
def _ferrocoll_timeout(seconds: Optional[float]) -> Any:
    """``FERROCOLL_TIMEOUT`` = ``seconds`` while a communicator is created, unless set."""
    if seconds is None or "FERROCOLL_TIMEOUT" in os.environ:
        yield
        return
    os.environ["FERROCOLL_TIMEOUT"] = f"{seconds:g}"
    try:
        yield
    finally:
        os.environ.pop("FERROCOLL_TIMEOUT", None)




def _root_tensors(c: Any, lists: List[List[torch.Tensor]], p: int, n: int, name: str,
                  other: str) -> List[torch.Tensor]:
    """The root's one-per-rank tensors of gather (outputs) or scatter (inputs), checked: ``p``
    of them, on the call's device kind, each of ``n`` elements (as the ``other`` tensor)."""
    ts = list(lists[0]) if lists else []
    if len(ts) != p:
        raise ValueError(f"ferrocoll: {c.what}: {len(ts)} {name} tensors on the root, "
                         f"expected {p} (one per rank)")
    for i, t in enumerate(ts):
        c.on(t.device, name)
        if t.numel() != n:
            raise ValueError(f"ferrocoll: {c.what}: {name} tensor {i} has {t.numel()} "
                             f"elements, expected {n} (as the {other})")
    return ts


def _create(store, rank, size, timeout):
    return ProcessGroupFerrocoll(store, rank, size, timeout)


dist.Backend.register_backend("ferrocoll", _create, devices=["cpu", "cuda"])

from ferrocoll._torch_hooks import (  # noqa: E402,F401  (re-exported; _backend: benches)
    _backend, compression_hook, shrink_group)
