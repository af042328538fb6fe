/*
 * A TEST DOUBLE of a vendor's collective library and its device runtime, over host memory.
 * Compiled twice by the tests:
 *   -DDOUBLE_NCCL: NCCL's public entry points (nccl.h 2.23 signatures and enums) and the
 *                  CUDA runtime calls ferrocoll uses;
 *   -DDOUBLE_HCCL: HCCL's (hccl.h / hccl_types.h) and ACL's.
 * It is not the vendors' code and runs on no device: "device memory" is host memory, and a
 * stream is an in-order queue of operations run when the stream (or an event recorded on
 * it) is synchronised. A communicator spans processes of one host through a shared-memory
 * segment named by the unique id; its collectives meet in a barrier with a deadline
 * (FC_DOUBLE_TIMEOUT_MS, default 10000), past which the communicator holds an asynchronous
 * error. Group calls defer their collectives to the group's end, as NCCL issues them there.
 * FC_DOUBLE_FAIL=<function name> makes that call fail with the vendor's usage error and a
 * last-error message saying so. Send/recv are not modelled (they fail with a usage error).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ element types */
enum et { T_I8, T_U8, T_I32, T_U32, T_I64, T_U64, T_F16, T_F32, T_F64, T_BF16, T_BAD };
enum rop { R_SUM, R_PROD, R_MAX, R_MIN, R_AVG, R_BAD };

static size_t esize(enum et t) {
    switch (t) {
    case T_I8: case T_U8: return 1;
    case T_F16: case T_BF16: return 2;
    case T_I32: case T_U32: case T_F32: return 4;
    default: return 8;
    }
}

static float h2f(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, b;
    if (e == 0) {
        float f = (float)m / 1024.0f / 16384.0f;
        return s ? -f : f;
    }
    if (e == 31) b = s | 0x7f800000u | (m << 13);
    else b = s | ((e + 112) << 23) | (m << 13);
    float f; memcpy(&f, &b, 4); return f;
}

static uint16_t f2h(float f) {
    uint32_t b; memcpy(&b, &f, 4);
    uint32_t s = (b >> 16) & 0x8000; int e = (int)((b >> 23) & 255) - 112; uint32_t m = b & 0x7fffff;
    if (((b >> 23) & 255) == 255) return (uint16_t)(s | 0x7c00 | (m ? 0x200 : 0));
    if (e >= 31) return (uint16_t)(s | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)s;
        m |= 0x800000; int sh = 14 - e; uint32_t r = m >> sh, rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(s | r);
    }
    uint32_t r = ((uint32_t)e << 10) | (m >> 13), rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(s | r);
}

static float bf2f(uint16_t h) { uint32_t b = (uint32_t)h << 16; float f; memcpy(&f, &b, 4); return f; }
static uint16_t f2bf(float f) {
    uint32_t b; memcpy(&b, &f, 4);
    if ((b & 0x7fffffff) > 0x7f800000) return (uint16_t)((b >> 16) | 0x40);
    return (uint16_t)((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}

/* acc = acc (op) x, element i of type t; `n` ranks for the average's final division. */
#define RED(T, a, x, op) do { T *A = (T *)(a); T X = *(const T *)(x); \
    switch (op) { case R_SUM: case R_AVG: *A = (T)(*A + X); break; case R_PROD: *A = (T)(*A * X); break; \
    case R_MAX: if (X > *A) *A = X; break; case R_MIN: if (X < *A) *A = X; break; default: break; } } while (0)

static void reduce_into(void *acc, const void *x, enum et t, enum rop op) {
    switch (t) {
    case T_I8: RED(int8_t, acc, x, op); break;
    case T_U8: RED(uint8_t, acc, x, op); break;
    case T_I32: RED(int32_t, acc, x, op); break;
    case T_U32: RED(uint32_t, acc, x, op); break;
    case T_I64: RED(int64_t, acc, x, op); break;
    case T_U64: RED(uint64_t, acc, x, op); break;
    case T_F32: RED(float, acc, x, op); break;
    case T_F64: RED(double, acc, x, op); break;
    case T_F16: case T_BF16: {
        int h = t == T_F16;
        float a = h ? h2f(*(uint16_t *)acc) : bf2f(*(uint16_t *)acc);
        float b = h ? h2f(*(const uint16_t *)x) : bf2f(*(const uint16_t *)x);
        RED(float, &a, &b, op);
        *(uint16_t *)acc = h ? f2h(a) : f2bf(a);
        break;
    }
    default: break;
    }
}

static void divide(void *acc, enum et t, int n) {
    switch (t) {
    case T_F32: *(float *)acc /= (float)n; break;
    case T_F64: *(double *)acc /= (double)n; break;
    case T_F16: *(uint16_t *)acc = f2h(h2f(*(uint16_t *)acc) / (float)n); break;
    case T_BF16: *(uint16_t *)acc = f2bf(bf2f(*(uint16_t *)acc) / (float)n); break;
    case T_I8: *(int8_t *)acc /= n; break;
    case T_U8: *(uint8_t *)acc /= n; break;
    case T_I32: *(int32_t *)acc /= n; break;
    case T_U32: *(uint32_t *)acc /= (uint32_t)n; break;
    case T_I64: *(int64_t *)acc /= n; break;
    case T_U64: *(uint64_t *)acc /= (uint64_t)n; break;
    default: break;
    }
}

/* ------------------------------------------------------------------ last error, injection */
static __thread char last_error[512];
static void set_error(const char *msg) { snprintf(last_error, sizeof last_error, "%s", msg); }

/* Whether FC_DOUBLE_FAIL names `call` (then the last error says so). */
static int injected(const char *call) {
    const char *f = getenv("FC_DOUBLE_FAIL");
    if (f && strcmp(f, call) == 0) {
        snprintf(last_error, sizeof last_error, "double: FC_DOUBLE_FAIL made %s fail", call);
        return 1;
    }
    return 0;
}

static long timeout_ms(void) {
    const char *t = getenv("FC_DOUBLE_TIMEOUT_MS");
    return t ? atol(t) : 10000;
}

static long now_ms(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ communicators */
#define SLOT (8u << 20)
#define ID_MAGIC "FCDBL-id"

struct shared {
    int world, joined, count, gen, aborted;
};

struct comm {
    struct shared *h;
    unsigned char *slots;
    int rank, world, async_err;
    size_t map_bytes;
};

/* Meets every rank in a barrier; -1 (and an asynchronous error) past the deadline or after
 * an abort. */
static int barrier(struct comm *c) {
    struct shared *h = c->h;
    int gen = __atomic_load_n(&h->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&h->count, 1, __ATOMIC_ACQ_REL) == c->world) {
        __atomic_store_n(&h->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&h->gen, gen + 1, __ATOMIC_RELEASE);
        return 0;
    }
    long end = now_ms() + timeout_ms();
    while (__atomic_load_n(&h->gen, __ATOMIC_ACQUIRE) == gen) {
        if (__atomic_load_n(&h->aborted, __ATOMIC_ACQUIRE) || now_ms() > end) {
            set_error("double: a peer did not reach the collective in time (or aborted)");
            return -1;
        }
        sched_yield();
    }
    return 0;
}

static struct comm *comm_open(const unsigned char *id, int world, int rank) {
    if (memcmp(id, ID_MAGIC, 8) != 0 || world < 1 || rank < 0 || rank >= world) {
        set_error("double: bad unique id, world or rank");
        return NULL;
    }
    char name[64];
    uint64_t tag; memcpy(&tag, id + 8, 8);
    snprintf(name, sizeof name, "/fcdbl-%016llx", (unsigned long long)tag);
    size_t bytes = 4096 + (size_t)world * SLOT;
    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)bytes) != 0) { set_error("double: shm_open failed"); return NULL; }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) { set_error("double: mmap failed"); return NULL; }
    struct comm *c = calloc(1, sizeof *c);
    c->h = p; c->slots = (unsigned char *)p + 4096; c->rank = rank; c->world = world; c->map_bytes = bytes;
    __atomic_add_fetch(&c->h->joined, 1, __ATOMIC_ACQ_REL);
    long end = now_ms() + timeout_ms();
    while (__atomic_load_n(&c->h->joined, __ATOMIC_ACQUIRE) < world) {
        if (now_ms() > end) { set_error("double: not every rank joined in time"); munmap(p, bytes); free(c); return NULL; }
        sched_yield();
    }
    if (barrier(c) != 0) { munmap(p, bytes); free(c); return NULL; }
    if (rank == 0) shm_unlink(name);
    return c;
}

static void comm_close(struct comm *c, int abort_it) {
    if (!c) return;
    if (abort_it) __atomic_store_n(&c->h->aborted, 1, __ATOMIC_RELEASE);
    munmap(c->h, c->map_bytes);
    free(c);
}

enum coll { C_ALLREDUCE, C_ALLGATHER, C_REDUCESCATTER, C_BROADCAST };

struct op {
    int is_copy;
    enum coll coll;
    const void *send; void *recv; size_t count; enum et t; enum rop r; int root;
    struct comm *c;
};

/* Runs one collective of `c` (all ranks run the same sequence). */
static int run_coll(struct op *o) {
    struct comm *c = o->c;
    size_t es = esize(o->t), n = o->count, w = (size_t)c->world, me = (size_t)c->rank;
    unsigned char *mine = c->slots + me * SLOT;
    size_t in_bytes = (o->coll == C_REDUCESCATTER ? n * w : n) * es;
    if (in_bytes > SLOT) { set_error("double: a call larger than the double's 8 MiB slot"); c->async_err = 1; return -1; }
    if (o->coll != C_BROADCAST || c->rank == o->root) memcpy(mine, o->send, in_bytes);
    if (barrier(c) != 0) { c->async_err = 1; return -1; }
    unsigned char *out = o->recv;
    switch (o->coll) {
    case C_ALLREDUCE: case C_REDUCESCATTER: {
        size_t off = o->coll == C_REDUCESCATTER ? me * n * es : 0;
        unsigned char tmp[8];
        for (size_t i = 0; i < n; i++) {
            memcpy(tmp, c->slots + off + i * es, es);
            for (size_t r = 1; r < w; r++) reduce_into(tmp, c->slots + r * SLOT + off + i * es, o->t, o->r);
            if (o->r == R_AVG) divide(tmp, o->t, c->world);
            memcpy(out + i * es, tmp, es);
        }
        break;
    }
    case C_ALLGATHER:
        for (size_t r = 0; r < w; r++) memcpy(out + r * n * es, c->slots + r * SLOT, n * es);
        break;
    case C_BROADCAST:
        memcpy(out, c->slots + (size_t)o->root * SLOT, n * es);
        break;
    }
    if (barrier(c) != 0) { c->async_err = 1; return -1; }
    return 0;
}

/* ------------------------------------------------------------------ streams and events */
/* `base`: operations run and dropped before `ops[0]`; event marks count from the start. */
struct stream { struct op *ops; size_t len, cap, done, base; };
struct event { struct stream *s; size_t mark; };
static struct stream default_stream;

static struct stream *S(void *s) { return s ? (struct stream *)s : &default_stream; }

static void push(struct stream *s, struct op o) {
    if (s->len == s->cap) { s->cap = s->cap ? 2 * s->cap : 16; s->ops = realloc(s->ops, s->cap * sizeof o); }
    s->ops[s->len++] = o;
}

/* Runs the queued operations of `s` up to number `upto` (counted from the stream's start);
 * -1 if one failed. */
static int run_until(struct stream *s, size_t upto) {
    int rc = 0;
    for (; s->base + s->done < upto && s->done < s->len; s->done++) {
        struct op *o = &s->ops[s->done];
        if (o->is_copy) memcpy(o->recv, o->send, o->count);
        else if (run_coll(o) != 0) rc = -1;
    }
    if (s->done == s->len) { s->base += s->len; s->done = s->len = 0; }
    return rc;
}

/* Group calls: collectives issued between start and end are queued at the end. */
static int group_depth;
static struct { struct stream *s; struct op o; } *grouped;
static size_t n_grouped, cap_grouped;

static void issue(void *stream, struct op o) {
    if (group_depth > 0) {
        if (n_grouped == cap_grouped) { cap_grouped = cap_grouped ? 2 * cap_grouped : 16; grouped = realloc(grouped, cap_grouped * sizeof *grouped); }
        grouped[n_grouped].s = S(stream); grouped[n_grouped].o = o; n_grouped++;
    } else {
        push(S(stream), o);
    }
}

static void group_end_(void) {
    if (group_depth > 0 && --group_depth == 0) {
        for (size_t i = 0; i < n_grouped; i++) push(grouped[i].s, grouped[i].o);
        n_grouped = 0;
    }
}

/* Device allocations, so that the pointer query can tell them from host memory. */
static void *allocs[4096];
static size_t alloc_sizes[4096];
#ifdef DOUBLE_NCCL
/* The device set last (one process drives one device). */
static int current_device;
/* Any address inside an allocation is device memory, as the real query says. */
static int is_device(const void *p) {
    const char *c = p;
    for (int i = 0; i < 4096; i++)
        if (allocs[i] && c >= (char *)allocs[i] && c < (char *)allocs[i] + alloc_sizes[i]) return 1;
    return 0;
}
#endif
static void *dev_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    for (int i = 0; i < 4096; i++) if (!allocs[i]) { allocs[i] = p; alloc_sizes[i] = n ? n : 1; break; }
    return p;
}
static void dev_free(void *p) {
    for (int i = 0; i < 4096; i++) if (allocs[i] == p) allocs[i] = NULL;
    free(p);
}

static void make_id(unsigned char *id, size_t bytes) {
    memset(id, 0, bytes);
    memcpy(id, ID_MAGIC, 8);
    uint64_t tag = ((uint64_t)getpid() << 32) ^ (uint64_t)now_ms() ^ (uint64_t)(uintptr_t)id;
    static uint64_t seq;
    tag ^= ++seq * 0x9e3779b97f4a7c15ull;
    memcpy(id + 8, &tag, 8);
}

#ifdef DOUBLE_NCCL
/* ================================================================== NCCL + CUDA runtime */
typedef struct { char internal[128]; } ncclUniqueId;
typedef struct comm *ncclComm_t;
enum { ncclSuccess, ncclUnhandledCudaError, ncclSystemError, ncclInternalError, ncclInvalidArgument,
       ncclInvalidUsage, ncclRemoteError, ncclInProgress };

static enum et nccl_t(int t) { return t >= 0 && t <= 9 ? (enum et)t : T_BAD; }
static enum rop nccl_op(int o) { return o >= 0 && o <= 4 ? (enum rop)o : R_BAD; }

int ncclGetVersion(int *v) { *v = 22304; return ncclSuccess; }
const char *ncclGetErrorString(int r) { return r == 0 ? "no error" : "double: an error"; }
const char *ncclGetLastError(ncclComm_t c) { (void)c; return last_error; }
int ncclGetUniqueId(ncclUniqueId *id) { make_id((unsigned char *)id->internal, 128); return ncclSuccess; }

int ncclCommInitRank(ncclComm_t *comm, int n, ncclUniqueId id, int rank) {
    if (injected("ncclCommInitRank")) return ncclInvalidUsage;
    *comm = comm_open((unsigned char *)id.internal, n, rank);
    return *comm ? ncclSuccess : ncclSystemError;
}
int ncclCommDestroy(ncclComm_t c) { comm_close(c, 0); return ncclSuccess; }
int ncclCommAbort(ncclComm_t c) { comm_close(c, 1); return ncclSuccess; }
int ncclCommGetAsyncError(ncclComm_t c, int *e) { *e = c->async_err ? ncclRemoteError : ncclSuccess; return ncclSuccess; }
int ncclCommCount(ncclComm_t c, int *n) { *n = c->world; return ncclSuccess; }
int ncclCommUserRank(ncclComm_t c, int *r) { *r = c->rank; return ncclSuccess; }
int ncclGroupStart(void) { group_depth++; return ncclSuccess; }
int ncclGroupEnd(void) { group_end_(); return ncclSuccess; }

static int coll(const char *name, enum coll k, const void *s, void *r, size_t n, int t, int op, int root, ncclComm_t c, void *st) {
    if (injected(name)) return ncclInvalidUsage;
    struct op o = { 0, k, s, r, n, nccl_t(t), k == C_ALLGATHER || k == C_BROADCAST ? R_SUM : nccl_op(op), root, c };
    if (o.t == T_BAD || o.r == R_BAD) { set_error("double: a type or operator it does not know"); return ncclInvalidArgument; }
    issue(st, o);
    return ncclSuccess;
}
int ncclAllReduce(const void *s, void *r, size_t n, int t, int op, ncclComm_t c, void *st) { return coll("ncclAllReduce", C_ALLREDUCE, s, r, n, t, op, 0, c, st); }
int ncclAllGather(const void *s, void *r, size_t n, int t, ncclComm_t c, void *st) { return coll("ncclAllGather", C_ALLGATHER, s, r, n, t, 0, 0, c, st); }
int ncclReduceScatter(const void *s, void *r, size_t n, int t, int op, ncclComm_t c, void *st) { return coll("ncclReduceScatter", C_REDUCESCATTER, s, r, n, t, op, 0, c, st); }
int ncclBroadcast(const void *s, void *r, size_t n, int t, int root, ncclComm_t c, void *st) { return coll("ncclBroadcast", C_BROADCAST, s, r, n, t, 0, root, c, st); }
int ncclSend(const void *b, size_t n, int t, int p, ncclComm_t c, void *st) { (void)b; (void)n; (void)t; (void)p; (void)c; (void)st; set_error("double: send/recv are not modelled"); return ncclInvalidUsage; }
int ncclRecv(void *b, size_t n, int t, int p, ncclComm_t c, void *st) { (void)b; (void)n; (void)t; (void)p; (void)c; (void)st; set_error("double: send/recv are not modelled"); return ncclInvalidUsage; }

int cudaRuntimeGetVersion(int *v) { *v = 12080; return 0; }
const char *cudaGetErrorName(int e) { return e ? "cudaErrorDouble" : "cudaSuccess"; }
const char *cudaGetErrorString(int e) { return e ? last_error : "no error"; }
int cudaGetDeviceCount(int *n) { *n = 1; return 0; }
int cudaSetDevice(int d) { current_device = d; return 0; }
int cudaStreamCreate(void **s) { *s = calloc(1, sizeof(struct stream)); return 0; }
int cudaStreamDestroy(void *s) { free(S(s)->ops); free(s); return 0; }
int cudaStreamSynchronize(void *s) { return run_until(S(s), (size_t)-1) ? 1 : 0; }
int cudaMemcpyAsync(void *d, const void *s, size_t n, int kind, void *st) {
    (void)kind; if (injected("cudaMemcpyAsync")) return 1;
    struct op o = { 1, 0, s, d, n, T_U8, R_SUM, 0, NULL }; push(S(st), o); return 0;
}
int cudaMalloc(void **p, size_t n) { *p = dev_alloc(n); return 0; }
int cudaFree(void *p) { dev_free(p); return 0; }
struct attrs { int type, device; void *dp, *hp; };
int cudaPointerGetAttributes(struct attrs *a, const void *p) { a->type = is_device(p) ? 2 : 0; a->device = is_device(p) ? current_device : -1; a->dp = a->hp = (void *)p; return 0; }
int cudaEventCreate(void **e) { *e = calloc(1, sizeof(struct event)); return 0; }
int cudaEventRecord(void *e, void *s) { struct event *ev = e; ev->s = S(s); ev->mark = S(s)->base + S(s)->len; return 0; }
int cudaEventSynchronize(void *e) { struct event *ev = e; return ev->s && run_until(ev->s, ev->mark) ? 1 : 0; }
int cudaEventDestroy(void *e) { free(e); return 0; }
#endif

#ifdef DOUBLE_HCCL
/* ================================================================== HCCL + ACL runtime */
typedef struct { char internal[4108]; } HcclRootInfo;
enum { HCCL_SUCCESS, HCCL_E_PARA, HCCL_E_PTR, HCCL_E_MEMORY, HCCL_E_INTERNAL, HCCL_E_NOT_SUPPORT };
#define HCCL_E_REMOTE 21

/* HcclDataType: INT8 0, INT16 1, INT32 2, FP16 3, FP32 4, INT64 5, UINT64 6, UINT8 7,
 * UINT16 8, UINT32 9, FP64 10, BFP16 11 — not NCCL's order. */
static enum et hccl_t(int t) {
    static const enum et m[12] = { T_I8, T_BAD, T_I32, T_F16, T_F32, T_I64, T_U64, T_U8, T_BAD, T_U32, T_F64, T_BF16 };
    return t >= 0 && t < 12 ? m[t] : T_BAD;
}
static enum rop hccl_op(int o) { return o >= 0 && o <= 3 ? (enum rop)o : R_BAD; }

const char *HcclGetErrorString(int r) { return r == 0 ? "no error" : last_error; }
int HcclGetRootInfo(HcclRootInfo *id) { make_id((unsigned char *)id->internal, 4108); return HCCL_SUCCESS; }
int HcclCommInitRootInfo(uint32_t n, const HcclRootInfo *id, uint32_t rank, void **comm) {
    if (injected("HcclCommInitRootInfo")) return HCCL_E_PARA;
    *comm = comm_open((const unsigned char *)id->internal, (int)n, (int)rank);
    return *comm ? HCCL_SUCCESS : HCCL_E_INTERNAL;
}
int HcclCommDestroy(void *c) { comm_close(c, 0); return HCCL_SUCCESS; }
int HcclGetCommAsyncError(void *c, int *e) { *e = ((struct comm *)c)->async_err ? HCCL_E_REMOTE : HCCL_SUCCESS; return HCCL_SUCCESS; }
int HcclGetRankSize(void *c, uint32_t *n) { *n = (uint32_t)((struct comm *)c)->world; return HCCL_SUCCESS; }
int HcclGetRankId(void *c, uint32_t *r) { *r = (uint32_t)((struct comm *)c)->rank; return HCCL_SUCCESS; }
int HcclGroupStart(void) { group_depth++; return HCCL_SUCCESS; }
int HcclGroupEnd(void) { group_end_(); return HCCL_SUCCESS; }

static int hcoll(const char *name, enum coll k, const void *s, void *r, uint64_t n, int t, int op, int root, void *c, void *st) {
    if (injected(name)) return HCCL_E_PARA;
    struct op o = { 0, k, s, r, (size_t)n, hccl_t(t), k == C_ALLGATHER || k == C_BROADCAST ? R_SUM : hccl_op(op), root, c };
    if (o.t == T_BAD || o.r == R_BAD) { set_error("double: a type or operator HCCL does not know"); return HCCL_E_PARA; }
    issue(st, o);
    return HCCL_SUCCESS;
}
int HcclAllReduce(void *s, void *r, uint64_t n, int t, int op, void *c, void *st) { return hcoll("HcclAllReduce", C_ALLREDUCE, s, r, n, t, op, 0, c, st); }
int HcclAllGather(void *s, void *r, uint64_t n, int t, void *c, void *st) { return hcoll("HcclAllGather", C_ALLGATHER, s, r, n, t, 0, 0, c, st); }
int HcclReduceScatter(void *s, void *r, uint64_t n, int t, int op, void *c, void *st) { return hcoll("HcclReduceScatter", C_REDUCESCATTER, s, r, n, t, op, 0, c, st); }
int HcclBroadcast(void *b, uint64_t n, int t, uint32_t root, void *c, void *st) { return hcoll("HcclBroadcast", C_BROADCAST, b, b, n, t, 0, (int)root, c, st); }

const char *aclGetRecentErrMsg(void) { return last_error; }
int aclrtGetVersion(int32_t *a, int32_t *b, int32_t *c) { *a = 8; *b = 0; *c = 0; return 0; }
int aclrtSetDevice(int32_t d) { (void)d; return 0; }
int aclrtGetDeviceCount(uint32_t *n) { *n = 1; return 0; }
int aclrtCreateStream(void **s) { *s = calloc(1, sizeof(struct stream)); return 0; }
int aclrtDestroyStream(void *s) { free(S(s)->ops); free(s); return 0; }
int aclrtSynchronizeStream(void *s) { return run_until(S(s), (size_t)-1) ? 507011 : 0; }
int aclrtMemcpyAsync(void *d, size_t max, const void *s, size_t n, int kind, void *st) {
    (void)kind; if (n > max) { set_error("double: copy larger than its destination"); return 100000; }
    if (injected("aclrtMemcpyAsync")) return 100000;
    struct op o = { 1, 0, s, d, n, T_U8, R_SUM, 0, NULL }; push(S(st), o); return 0;
}
int aclrtMalloc(void **p, size_t n, int policy) { (void)policy; *p = dev_alloc(n); return 0; }
int aclrtFree(void *p) { dev_free(p); return 0; }
int aclrtCreateEvent(void **e) { *e = calloc(1, sizeof(struct event)); return 0; }
int aclrtRecordEvent(void *e, void *s) { struct event *ev = e; ev->s = S(s); ev->mark = S(s)->base + S(s)->len; return 0; }
int aclrtSynchronizeEvent(void *e) { struct event *ev = e; return ev->s && run_until(ev->s, ev->mark) ? 507011 : 0; }
int aclrtDestroyEvent(void *e) { free(e); return 0; }
#endif
