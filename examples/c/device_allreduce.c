/*
 * device_allreduce.c - ferrocoll from C on device memory, as NCCL is called: buffers from
 * cudaMalloc, a cudaStream_t, the collectives queued on it, then cudaStreamSynchronize;
 * all-reduce, all-gather, broadcast, reduce, a group of sends and receives, gather, the default
 * stream, and host buffers beside them.
 * Run with FERROCOLL_DEVICE=cuda (NCCL inside the host, ferrocoll between hosts):
 *
 *   cc -I ffi/include examples/c/device_allreduce.c -L target/release -lferrocoll -lcudart -o dev
 *   for r in 0 1; do FERROCOLL_DEVICE=cuda ./dev $r 2 /tmp/fc.id & done; wait
 *
 * The CUDA calls are declared here (no CUDA headers needed); the program links against the
 * CUDA runtime (ffi/tests/c_example.rs links it against the TEST DOUBLE of NCCL + CUDA,
 * tests/doubles/vendor_double.c). Each rank checks its results and prints "rank R/N: ok".
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferrocoll.h"
#include "common.h"

typedef void *cudaStream_t;
int cudaSetDevice(int device);
int cudaStreamCreate(cudaStream_t *stream);
int cudaStreamSynchronize(cudaStream_t stream);
int cudaStreamDestroy(cudaStream_t stream);
int cudaMalloc(void **ptr, size_t bytes);
int cudaFree(void *ptr);
int cudaMemcpyAsync(void *dst, const void *src, size_t bytes, int kind, cudaStream_t stream);
enum { H2D = 1, D2H = 2 };

#define CUDA(call)                                                                     \
    do {                                                                               \
        if ((call) != 0) {                                                             \
            fprintf(stderr, "%s:%d %s failed\n", __FILE__, __LINE__, #call);            \
            exit(2);                                                                   \
        }                                                                              \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s RANK NRANKS ID_FILE\n", argv[0]);
        return 2;
    }
    int rank = atoi(argv[1]), nranks = atoi(argv[2]);
    fcUniqueId id;
    if (rank == 0) CHECK(fcGetUniqueId(&id));
    share_id(&id, rank, argv[3]);
    fcComm_t comm;
    CHECK(fcCommInitRank(&comm, nranks, id, rank));
    CUDA(cudaSetDevice(0));
    cudaStream_t s;
    CUDA(cudaStreamCreate(&s));
    int bad = 0;

    /* All-reduce out of place on device buffers: element i of rank r is i % 7 + r. */
    enum { N = 4096 };
    float host[N], want[N];
    for (int i = 0; i < N; i++) {
        host[i] = (float)(i % 7 + rank);
        want[i] = (float)((i % 7) * nranks + nranks * (nranks - 1) / 2);
    }
    void *x, *y;
    CUDA(cudaMalloc(&x, sizeof host));
    CUDA(cudaMalloc(&y, sizeof host));
    CUDA(cudaMemcpyAsync(x, host, sizeof host, H2D, s));
    CHECK(fcAllReduce(x, y, N, fcFloat32, fcSum, comm, s));
    CUDA(cudaMemcpyAsync(host, y, sizeof host, D2H, s));
    CUDA(cudaStreamSynchronize(s));
    for (int i = 0; i < N; i++) bad |= host[i] != want[i];

    /* All-gather in place: this rank's block at recvbuff + rank * count. */
    enum { M = 256 };
    int *all = malloc((size_t)nranks * M * sizeof *all), *dev_all;
    for (int i = 0; i < M; i++) all[rank * M + i] = rank * 1000 + i;
    CUDA(cudaMalloc((void **)&dev_all, (size_t)nranks * M * sizeof *all));
    CUDA(cudaMemcpyAsync(dev_all + rank * M, all + rank * M, M * sizeof *all, H2D, s));
    CHECK(fcAllGather(dev_all + rank * M, dev_all, M, fcInt32, comm, s));
    CUDA(cudaMemcpyAsync(all, dev_all, (size_t)nranks * M * sizeof *all, D2H, s));
    CUDA(cudaStreamSynchronize(s));
    for (int q = 0; q < nranks; q++)
        for (int i = 0; i < M; i++) bad |= all[q * M + i] != q * 1000 + i;

    /* Broadcast from the last rank, out of place: every y becomes its x. */
    int root = nranks - 1;
    CHECK(fcBroadcast(x, y, N, fcFloat32, root, comm, s));
    CUDA(cudaMemcpyAsync(host, y, sizeof host, D2H, s));
    CUDA(cudaStreamSynchronize(s));
    for (int i = 0; i < N; i++) bad |= host[i] != (float)(i % 7 + root);

    /* Reduce to rank 0 (max); the other ranks' y is not written. */
    CHECK(fcReduce(x, y, N, fcFloat32, fcMax, 0, comm, s));
    CUDA(cudaMemcpyAsync(host, y, sizeof host, D2H, s));
    CUDA(cudaStreamSynchronize(s));
    for (int i = 0; i < N; i++)
        bad |= host[i] != (float)(i % 7 + (rank == 0 ? nranks - 1 : root));

    /* All-to-all as NCCL users write it: a group of sends and receives, one pair per peer.
     * Block q of this rank's `src` goes to rank q, which keeps it as its block `rank`. */
    int *src = malloc((size_t)nranks * M * sizeof *src), *out = malloc((size_t)nranks * M * sizeof *out);
    int *dev_src, *dev_out;
    for (int q = 0; q < nranks; q++)
        for (int i = 0; i < M; i++) src[q * M + i] = rank * 100000 + q * 1000 + i;
    CUDA(cudaMalloc((void **)&dev_src, (size_t)nranks * M * sizeof *src));
    CUDA(cudaMalloc((void **)&dev_out, (size_t)nranks * M * sizeof *out));
    CUDA(cudaMemcpyAsync(dev_src, src, (size_t)nranks * M * sizeof *src, H2D, s));
    CHECK(fcGroupStart());
    for (int q = 0; q < nranks; q++) {
        if (q == rank) continue;
        CHECK(fcSend(dev_src + q * M, M, fcInt32, q, comm, s));
        CHECK(fcRecv(dev_out + q * M, M, fcInt32, q, comm, s));
    }
    CHECK(fcGroupEnd());
    CUDA(cudaMemcpyAsync(out, dev_out, (size_t)nranks * M * sizeof *out, D2H, s));
    CUDA(cudaStreamSynchronize(s));
    for (int q = 0; q < nranks; q++)
        for (int i = 0; q != rank && i < M; i++) bad |= out[q * M + i] != q * 100000 + rank * 1000 + i;

    /* Gather to the last rank: its dev_out becomes every rank's block `root` of src. */
    CHECK(fcGather(dev_src + root * M, dev_out, M, fcInt32, root, comm, s));
    if (rank == root) {
        CUDA(cudaMemcpyAsync(out, dev_out, (size_t)nranks * M * sizeof *out, D2H, s));
        CUDA(cudaStreamSynchronize(s));
        for (int q = 0; q < nranks; q++)
            for (int i = 0; i < M; i++) bad |= out[q * M + i] != q * 100000 + root * 1000 + i;
    }

    /* A NULL stream on device buffers: the runtime tells device memory, the default stream
     * runs the call. */
    CHECK(fcAllReduce(x, y, N, fcFloat32, fcSum, comm, NULL));
    CUDA(cudaMemcpyAsync(host, y, sizeof host, D2H, NULL));
    CUDA(cudaStreamSynchronize(NULL));
    for (int i = 0; i < N; i++) bad |= host[i] != want[i];

    /* Host buffers with a NULL stream run on the host, unchanged. */
    float h_in[4] = {1, 2, 3, (float)rank}, h_out[4];
    CHECK(fcAllReduce(h_in, h_out, 4, fcFloat32, fcSum, comm, NULL));
    bad |= h_out[0] != (float)nranks || h_out[3] != (float)(nranks * (nranks - 1) / 2);

    /* Host memory with a stream: refused as an invalid argument, before anything runs. */
    bad |= fcAllReduce(h_in, h_out, 4, fcFloat32, fcSum, comm, s) != fcInvalidArgument;

    CUDA(cudaFree(x));
    CUDA(cudaFree(y));
    CUDA(cudaFree(dev_all));
    CUDA(cudaFree(dev_src));
    CUDA(cudaFree(dev_out));
    free(src);
    free(out);
    CUDA(cudaStreamDestroy(s));
    free(all);
    CHECK(fcCommDestroy(comm));
    printf("rank %d/%d: %s\n", rank, nranks, bad ? "WRONG RESULTS" : "ok");
    return bad;
}
