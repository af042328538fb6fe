"""``torch.distributed`` backend ``"ferrocoll"``: ``import ferrocoll.torch`` registers it, then

    dist.init_process_group("ferrocoll")      # e.g. under torchrun

runs all_reduce, all_gather(_into_tensor), reduce_scatter(_tensor), broadcast, reduce,
all_to_all_single, barrier and send/recv on CPU tensors through the C ABI. The ranks meet
through the store torch passes in: rank 0 makes a unique id (its process serves ferrocoll's
rendezvous store, on ``FERROCOLL_SOCKET_IFNAME`` or the first non-loopback interface) and
publishes it there. Calls complete before they return (the returned work is already done);
``FERROCOLL_TIMEOUT`` bounds each call.

Surviving a failed rank (the store ``FERROCOLL_STORE`` names must outlive it, e.g.
``file:DIR``; ``FERROCOLL_HEARTBEAT_TIMEOUT`` bounds detection): every survivor's pending and
later calls raise ``ferrocoll.RevokedError``; :func:`shrink_group` then makes a group of the
survivors (the new default group when the default one shrinks), as
``torch.distributed.shrink_group`` does for NCCL.
"""

import contextlib
import ctypes
import itertools
import os

import numpy as np

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
from torch._C._distributed_c10d import _create_work_from_future

import ferrocoll
from ferrocoll import _LIB, Communicator, _check

__all__ = ["ProcessGroupFerrocoll", "shrink_group", "compression_hook"]

_DTYPES = {
    torch.int8: 0,
    torch.uint8: 1,
    torch.int32: 2,
    torch.int64: 4,
    torch.float16: 6,
    torch.float32: 7,
    torch.float64: 8,
    torch.bfloat16: 9,
}
for _name, _code in (("uint32", 3), ("uint64", 5), ("float8_e4m3fn", 10), ("float8_e5m2", 11)):
    if hasattr(torch, _name):
        _DTYPES[getattr(torch, _name)] = _code

_OPS = {
    dist.ReduceOp.SUM: ferrocoll.ReduceOp.SUM,
    dist.ReduceOp.PRODUCT: ferrocoll.ReduceOp.PROD,
    dist.ReduceOp.MAX: ferrocoll.ReduceOp.MAX,
    dist.ReduceOp.MIN: ferrocoll.ReduceOp.MIN,
    dist.ReduceOp.AVG: ferrocoll.ReduceOp.AVG,
}


def _done(result=None):
    fut = torch.futures.Future()
    fut.set_result(result)
    return _create_work_from_future(fut)


def _op(opts):
    op = getattr(opts, "reduceOp", dist.ReduceOp.SUM)
    for k, v in _OPS.items():
        if op == k:
            return int(v)
    raise ValueError(f"ferrocoll: unsupported reduce op {op}")


def _dtype(t):
    if t.device.type != "cpu":
        raise ValueError(f"ferrocoll: only CPU tensors are supported, got {t.device}")
    try:
        return _DTYPES[t.dtype]
    except KeyError:
        raise ValueError(f"ferrocoll: unsupported dtype {t.dtype}") from None


def _p(t):
    return ctypes.c_void_p(t.data_ptr()) if t.numel() else None


class ProcessGroupFerrocoll(dist.ProcessGroup):
    """A ``torch.distributed`` process group over one ferrocoll communicator.

    It supports coalescing (``batch_isend_irecv``, ``_coalescing_manager``) through
    fcGroupStart/fcGroupEnd: the calls of a batch are issued together when it ends, so a
    batch of sends and receives never deadlocks."""

    def __init__(self, store, rank, size, timeout=None, comm=None):
        if comm is not None:
            # A group over an existing communicator (shrink_group): no rendezvous.
            super().__init__(comm.rank, comm.size)
            self._comm, self._h, self._batch = comm, comm._h, None
            return
        super().__init__(rank, size)
        # torchrun's agent store outlives a group (a re-created default group sees the same
        # keys): each creation adds `size` joins to a counter, so the generation of this one
        # is the same on every rank and its unique id never one of a destroyed group.
        generation = (store.add("ferrocoll/joins", 1) - 1) // size
        key = f"ferrocoll/unique_id/{generation}"
        if rank == 0:
            uid = ferrocoll.get_unique_id()
            store.set(key, uid)
        else:
            uid = bytes(store.get(key))
        self._comm = Communicator.init_rank(size, uid, rank)
        self._h = self._comm._h
        # While coalescing: the tensors of queued calls (kept alive) and their write-backs.
        self._batch = None

    def getBackendName(self):
        return "ferrocoll"

    def _run(self, tensors, call):
        """Calls ``call`` on contiguous versions of ``tensors`` (pairs of tensor and "is
        written"); copies written non-contiguous tensors back now, or at the batch's end."""
        dense = [t if t.is_contiguous() else t.contiguous() for t, _ in tensors]
        call(*dense)
        back = [(t, c) for (t, written), c in zip(tensors, dense) if written and c is not t]
        if self._batch is None:
            for t, c in back:
                t.copy_(c)
        else:
            self._batch.append((tensors, dense, back))

    def _not_batched(self, what):
        if self._batch is not None:
            raise ValueError(f"ferrocoll: {what} cannot be coalesced")

    # -- coalescing ----------------------------------------------------------------------
    @property
    def supports_coalescing(self):
        return True

    def _get_backend(self, device):
        # This group is its own (only) backend: torch asks it whether it coalesces.
        return self

    def start_coalescing(self, device):
        if self._batch is not None:
            raise ValueError("ferrocoll: coalescing blocks do not nest")
        _check(_LIB.fcGroupStart())
        self._batch = []

    def end_coalescing(self, device):
        batch, self._batch = self._batch or [], None
        _check(_LIB.fcGroupEnd())
        for _, _, back in batch:
            for t, c in back:
                t.copy_(c)
        return _done()

    _start_coalescing = start_coalescing
    _end_coalescing = end_coalescing

    # -- collectives (each list holds one tensor per device; CPU means one) ----------------
    def allreduce(self, tensors, opts=None):
        op = _op(opts)
        for t in tensors:
            self._run([(t, True)], lambda c: _check(
                _LIB.fcAllReduce(_p(c), _p(c), c.numel(), _dtype(c), op, self._h, None)))
        return _done(tensors)

    def allreduce_coalesced(self, tensors, opts=None):
        return self.allreduce(tensors, opts)

    def allgather(self, output_tensor_lists, input_tensors, opts=None):
        self._not_batched("all_gather into a list")
        for outs, inp in zip(output_tensor_lists, input_tensors):
            flat = torch.empty((len(outs),) + tuple(inp.shape), dtype=inp.dtype)
            self._allgather_base(flat, inp, opts)
            for o, chunk in zip(outs, flat):
                o.copy_(chunk)
        return _done(output_tensor_lists)

    def _allgather_base(self, output, input, opts=None):
        if output.numel() != input.numel() * self.size():
            raise ValueError("ferrocoll: output must hold world_size × input elements")
        self._run([(input, False), (output, True)], lambda i, o: _check(
            _LIB.fcAllGather(_p(i), _p(o), i.numel(), _dtype(i), self._h, None)))
        return _done(output)

    def all_gather_single(self, output, input, opts=None):
        return self._allgather_base(output, input, opts)

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts=None):
        for o, i in zip(outputs, inputs):
            self._allgather_base(o, i, opts)
        return _done(outputs)

    def reduce_scatter(self, output_tensors, input_tensor_lists, opts=None):
        self._not_batched("reduce_scatter from a list")
        for out, ins in zip(output_tensors, input_tensor_lists):
            flat = torch.cat([t.reshape(-1) for t in ins])
            self._reduce_scatter_base(out, flat, opts)
        return _done(output_tensors)

    def _reduce_scatter_base(self, output, input, opts=None):
        op = _op(opts)
        if input.numel() != output.numel() * self.size():
            raise ValueError("ferrocoll: input must hold world_size × output elements")
        self._run([(input, False), (output, True)], lambda i, o: _check(
            _LIB.fcReduceScatter(_p(i), _p(o), o.numel(), _dtype(o), op, self._h, None)))
        return _done(output)

    def reduce_scatter_single(self, output, input, opts=None):
        return self._reduce_scatter_base(output, input, opts)

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts=None):
        for o, i in zip(outputs, inputs):
            self._reduce_scatter_base(o, i, opts)
        return _done(outputs)

    def broadcast(self, tensors, opts=None):
        root = opts.rootRank if opts is not None else 0
        for t in tensors:
            self._run([(t, True)], lambda c: _check(
                _LIB.fcBroadcast(_p(c), _p(c), c.numel(), _dtype(c), root, self._h, None)))
        return _done(tensors)

    def reduce(self, tensors, opts=None):
        op, root = _op(opts), opts.rootRank
        for t in tensors:
            self._run([(t, True)], lambda c: _check(
                _LIB.fcReduce(_p(c), _p(c), c.numel(), _dtype(c), op, root, self._h, None)))
        return _done(tensors)

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        return self.alltoall_base(output, input, output_split_sizes, input_split_sizes, opts)

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        if output_split_sizes or input_split_sizes:
            raise ValueError("ferrocoll: all_to_all_single with split sizes is not supported")
        n = input.numel() // self.size()
        self._run([(input, False), (output, True)], lambda i, o: _check(
            _LIB.fcAllToAll(_p(i), _p(o), n, _dtype(i), self._h, None)))
        return _done(output)

    def barrier(self, opts=None):
        _check(_LIB.fcBarrier(self._h, None))
        return _done()

    def send(self, tensors, dst, tag=0):
        for t in tensors:
            self._run([(t, False)], lambda c: _check(
                _LIB.fcSend(_p(c), c.numel(), _dtype(c), dst, self._h, None)))
        return _done(tensors)

    def recv(self, tensors, src, tag=0):
        for t in tensors:
            self._run([(t, True)], lambda c: _check(
                _LIB.fcRecv(_p(c), c.numel(), _dtype(c), src, self._h, None)))
        return _done(tensors)

    def shutdown(self):
        self._comm.__exit__(None, None, None)

    # -- failures --------------------------------------------------------------------------
    def revoke(self):
        """Revokes the communicator on every rank: pending and later calls on this group
        raise ``ferrocoll.RevokedError`` everywhere (within the heartbeat period on the other
        ranks). The group stays usable for :func:`shrink_group`."""
        self._comm.revoke()

    def abort(self):
        """Revokes the communicator (the peers' calls on it fail too) and frees it, ending a
        call in progress in another thread. Idempotent; the group is unusable afterwards
        (torch's abort path; to go on with the survivors use :func:`shrink_group`
        instead)."""
        with contextlib.suppress(ferrocoll.InvalidUsageError):
            self._comm.revoke()
        with contextlib.suppress(ferrocoll.InvalidUsageError):
            self._comm.abort()

    def shrink(self, exclude=None, abort=False):
        """A new :class:`ProcessGroupFerrocoll` over part of this group (see
        :meth:`ferrocoll.Communicator.shrink`): with ``exclude`` None, the survivors agreed
        after a failure; otherwise every rank but ``exclude``. Not registered with
        ``torch.distributed``: :func:`shrink_group` does that."""
        return ProcessGroupFerrocoll(None, 0, 0, comm=self._comm.shrink(exclude, abort=abort))


def _backend(pg=None):
    """The ferrocoll process group behind ``pg`` (default: the world group)."""
    pg = pg if pg is not None else dist.group.WORLD
    if isinstance(pg, ProcessGroupFerrocoll):
        return pg
    try:
        b = pg._get_backend(torch.device("cpu"))
    except Exception:  # noqa: BLE001 - any failure means "not ours"
        b = None
    if isinstance(b, ProcessGroupFerrocoll):
        return b
    raise RuntimeError("compression_hook needs a process group of backend 'ferrocoll'")


def _refuse_powersgd(codec):
    """Raises ValueError if ``codec`` (a ``FERROCOLL_COMPRESSION`` spelling; None: that
    variable) names PowerSGD, which the hook cannot run (see :func:`compression_hook`)."""
    spelling = codec if codec is not None else os.environ.get("FERROCOLL_COMPRESSION", "")
    name = str(spelling).strip().lower().split(":", 1)[0]
    if name == "powersgd":
        where = repr(codec) if codec is not None else f"FERROCOLL_COMPRESSION={spelling!r}"
        raise ValueError(
            f"ferrocoll: compression_hook cannot use PowerSGD ({where}): a DDP bucket is a flat "
            "vector of many gradients, and PowerSGD compresses one 2-D gradient matrix at a time "
            "(ferrocoll's all_reduce_compressed_2d, Rust API only). Use a 1-D codec (fp16, bf16, "
            "fp8, topk:0.01, onebit), or torch's own PowerSGD hook, which runs over this backend "
            "(torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook.powerSGD_hook)")


_HOOKS = itertools.count()


def compression_hook(codec="fp16"):
    """A DistributedDataParallel communication hook that all-reduces each gradient bucket
    compressed with ``codec`` (a ``FERROCOLL_COMPRESSION`` spelling: ``"fp16"``, ``"bf16"``,
    ``"fp8"``, ``"fp8e5m2"``, ``"topk:0.01"``, ``"onebit"``, ``"none"``, ``"auto"``; None: the
    environment variable), carrying each bucket's compression error to its next step (error
    feedback), then averages::

        ddp.register_comm_hook(None, ferrocoll.torch.compression_hook("fp8"))

    PowerSGD (``"powersgd:R"``) is refused here with a ValueError: it compresses one 2-D
    gradient matrix at a time, and a bucket is a flat vector of many gradients (the C ABI's
    ``fcAllReduceCompressed``, which the hook calls, refuses it too). For PowerSGD under DDP
    use torch's ``powerSGD_hook`` (``torch.distributed.algorithms.ddp_comm_hooks``), which
    runs its all-reduces over this backend.

    The state argument of the hook is the process group (None: the world group). Buckets
    that are not float32 are all-reduced exactly."""
    _refuse_powersgd(codec)
    # Error feedback keeps one residual per key, of the key's first length; a residual
    # belongs to the exact gradients it was computed from. DDP may rebuild its buckets (after
    # the first iteration, in gradient-ready order): the same bucket index can then hold
    # other parameters, or another number of elements (which the C ABI refuses as a
    # FeedbackMismatch). So the key names this hook (two DDP models on one process group
    # must not share residuals), the bucket index, its element count and its parameters'
    # identities (a reordered bucket of the same length must not inherit another
    # parameter's residual): a rebuilt bucket starts from fresh state, and the residual of
    # the layout it replaced is dropped. Only float32 buckets use a key, so the dtype is
    # always float32 there. Keys are local to each rank: nothing about them is exchanged.
    hook_id = next(_HOOKS)
    keys = {}  # bucket index -> key of its current layout

    def key_of(pg, bucket, numel):
        try:
            params = tuple((p.data_ptr(), p.numel()) for p in bucket.parameters())
        except Exception:  # noqa: BLE001 - older torch or no parameter list: length only
            params = ()
        key = f"ddp{hook_id}-bucket{bucket.index()}-n{numel}-p{hash(params) & (2**64 - 1):016x}"
        old = keys.get(bucket.index())
        if old != key:
            if old is not None:
                pg._comm.reset_compression(old)  # free the replaced layout's residual
            keys[bucket.index()] = key
        return key

    def hook(state, bucket):
        pg = _backend(state)
        t = bucket.buffer()
        dense = t if t.is_contiguous() else t.contiguous()
        arr = dense.detach().numpy()
        if dense.dtype == torch.float32:
            key = key_of(pg, bucket, dense.numel())
            pg._comm.all_reduce_compressed(arr, key=key, codec=codec)
        else:
            pg._comm.all_reduce(arr)
        dense.div_(pg.size())
        if dense is not t:
            t.copy_(dense)
        fut = torch.futures.Future()
        fut.set_result(t)
        return fut

    return hook


def shrink_group(exclude=None, group=None, abort=False):
    """The ferrocoll equivalent of ``torch.distributed.shrink_group`` (which drives NCCL's
    communicators only): returns a new process group over the ranks of ``group`` (None: the
    default group) that remain, and frees the old one.

    ``exclude`` None (or empty): after a failure, every surviving rank calls it and the
    group spans the survivors the ranks agree on (``ferrocoll.RevokedError`` told them of the
    failure); torch's own function needs the failed ranks listed instead. Otherwise every rank
    not in ``exclude`` calls it with the same list. ``abort=True`` (torch's ``SHRINK_ABORT``)
    revokes the old group first, failing calls still running on it. Ranks are renumbered
    densely in the old order. When the default group shrinks, the new group becomes the
    default (``dist.all_reduce(t)`` then runs on it) and the other groups are destroyed, as
    torch does. Raises ``ferrocoll.ExcludedError`` on a rank left out."""
    old = _backend(group)
    new = old.shrink(exclude, abort=abort)
    # The old ranks of the members, in new-rank order (the agreed survivors are known only
    # to the communicator).
    olds = new._comm.all_gather(np.array([old.rank()], np.int64)).reshape(-1).tolist()
    c10d = dist.distributed_c10d
    world = getattr(c10d, "_world", None)
    target = dist.group.WORLD if group is None else group
    default = target is dist.group.WORLD
    if world is not None and target in getattr(world, "pg_map", {}):
        backend_name, store = world.pg_map[target]
        if default:
            for pg in [pg for pg in list(world.pg_map) if pg is not target]:
                with contextlib.suppress(Exception):
                    dist.destroy_process_group(pg)
        name = f"ferrocoll_shrunk_{'_'.join(map(str, olds))}_{next(_SHRINKS)}"
        with contextlib.suppress(Exception):
            c10d._cleanup_process_group_global_state(target)
        if hasattr(c10d, "_register_pg_in_world"):
            c10d._register_pg_in_world(new, backend_name, store, name, "",
                                       {g: r for r, g in enumerate(olds)})
            new._set_group_name(name)
        if default and hasattr(c10d, "_update_default_pg"):
            c10d._update_default_pg(new)
    old.shutdown()
    return new


_SHRINKS = itertools.count()


def _create(store, rank, size, timeout):
    return ProcessGroupFerrocoll(store, rank, size, timeout)


dist.Backend.register_backend("ferrocoll", _create, devices=["cpu"])
