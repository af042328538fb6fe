/*
 * common.h - what the C examples share: CHECK, which reports a failed ferrocoll call with its
 * message and exits, and share_id, which hands rank 0's unique id to the others through a
 * file.
 */
#ifndef FERROCOLL_EXAMPLES_COMMON_H
#define FERROCOLL_EXAMPLES_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ferrocoll.h"

#define CHECK(call)                                                                    \
    do {                                                                               \
        fcResult_t r_ = (call);                                                        \
        if (r_ != fcSuccess) {                                                         \
            fprintf(stderr, "%s:%d %s: %s (%s)\n", __FILE__, __LINE__, #call,          \
                    fcGetErrorString(r_), fcGetLastError(NULL));                       \
            exit(2);                                                                   \
        }                                                                              \
    } while (0)

/* Rank 0 writes the id atomically (write, then rename); the others wait for the file. */
static void share_id(fcUniqueId *id, int rank, const char *path) {
    if (rank == 0) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "wb");
        if (!f || fwrite(id, sizeof *id, 1, f) != 1 || fclose(f) != 0 || rename(tmp, path) != 0) {
            perror("writing the unique id");
            exit(2);
        }
        return;
    }
    for (int tries = 0; tries < 3000; tries++) {
        FILE *f = fopen(path, "rb");
        if (f) {
            size_t n = fread(id, sizeof *id, 1, f);
            fclose(f);
            if (n == 1) return;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "rank %d: no unique id in %s after 30 s\n", rank, path);
    exit(2);
}

#endif
