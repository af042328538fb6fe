"""DDP's compression hook and shrinking a process group, for the torch backend
(re-exported by :mod:`ferrocoll.torch`)."""

import contextlib
import itertools
import os

import numpy as np
import torch
import torch.distributed as dist


def _backend(pg=None):
    """The ferrocoll process group behind ``pg`` (default: the world group)."""
    from ferrocoll.torch import ProcessGroupFerrocoll

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
