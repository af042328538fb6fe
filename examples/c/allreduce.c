/*
 * allreduce.c - ferrocoll from C, the way NCCL is used: rank 0 makes a unique id, every
 * rank gets it (here through a file), creates its communicator and runs collectives.
 *
 *   make -C examples/c                                   (after cargo build --release -p ferrocoll-ffi)
 *   for r in 0 1 2; do examples/c/allreduce $r 3 /tmp/fc.id & done; wait
 *
 * Each rank checks its results and prints "rank R/N: ok"; the exit status is 0 on success.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferrocoll.h"
#include "common.h"

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
    int n, me;
    CHECK(fcCommCount(comm, &n));
    CHECK(fcCommUserRank(comm, &me));
    int bad = (n != nranks) || (me != rank);

    /* All-reduce out of place: element i of rank r is i * (r + 1). */
    enum { N = 100003 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) x[i] = (float)i * (float)(rank + 1);
    CHECK(fcAllReduce(x, y, N, fcFloat32, fcSum, comm, NULL));
    float factor = (float)(nranks * (nranks + 1) / 2);
    for (int i = 0; i < N; i++) bad |= y[i] != (float)i * factor;

    /* All-reduce in place, average. */
    CHECK(fcAllReduce(x, x, N, fcFloat32, fcAvg, comm, NULL));
    for (int i = 0; i < N; i++) bad |= x[i] != (float)i * factor / (float)nranks;

    /* All-gather in place: this rank's block sits at recvbuff + rank * count. */
    enum { M = 1000 };
    int *all = malloc((size_t)nranks * M * sizeof *all);
    for (int i = 0; i < M; i++) all[rank * M + i] = rank * 100000 + i;
    CHECK(fcAllGather(all + rank * M, all, M, fcInt32, comm, NULL));
    for (int q = 0; q < nranks; q++)
        for (int i = 0; i < M; i++) bad |= all[q * M + i] != q * 100000 + i;

    /* A ring exchange in one group: send to the next rank, receive from the previous. */
    if (nranks > 1) {
        double out[64], in[64];
        for (int i = 0; i < 64; i++) out[i] = rank + i / 64.0;
        CHECK(fcGroupStart());
        CHECK(fcSend(out, 64, fcFloat64, (rank + 1) % nranks, comm, NULL));
        CHECK(fcRecv(in, 64, fcFloat64, (rank + nranks - 1) % nranks, comm, NULL));
        CHECK(fcGroupEnd());
        for (int i = 0; i < 64; i++) bad |= in[i] != (rank + nranks - 1) % nranks + i / 64.0;
    }

    /* A bad call is an error code, not a crash. */
    bad |= fcAllReduce(x, y, N, 42, fcSum, comm, NULL) != fcInvalidArgument;

    CHECK(fcBarrier(comm, NULL));
    CHECK(fcCommDestroy(comm));
    bad |= fcCommDestroy(comm) != fcInvalidUsage;
    free(x);
    free(y);
    free(all);
    printf("rank %d/%d: %s\n", rank, nranks, bad ? "WRONG RESULTS" : "ok");
    return bad;
}
