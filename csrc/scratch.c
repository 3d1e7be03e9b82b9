/* One cached scratch buffer for per-call packing; see lb_scratch_acquire in lowbit.h. */
#include <pthread.h>

#include "lowbit.h"

static pthread_mutex_t scratch_mu = PTHREAD_MUTEX_INITIALIZER;
static void *scratch;
static size_t scratch_bytes;
static int scratch_busy;

void *lb_scratch_acquire(size_t bytes) {
    void *p = NULL;
    pthread_mutex_lock(&scratch_mu);
    if (!scratch_busy) {
        if (scratch_bytes < bytes) {
            lb_aligned_free(scratch);
            scratch = lb_aligned_alloc(bytes);
            scratch_bytes = scratch ? bytes : 0;
        }
        if (scratch) {
            scratch_busy = 1;
            p = scratch;
        }
    }
    pthread_mutex_unlock(&scratch_mu);
    return p ? p : lb_aligned_alloc(bytes);
}

void lb_scratch_release(void *p) {
    if (!p) return;
    pthread_mutex_lock(&scratch_mu);
    int mine = scratch_busy && p == scratch;
    if (mine) scratch_busy = 0;
    pthread_mutex_unlock(&scratch_mu);
    if (!mine) lb_aligned_free(p);
}
