/* A small persistent thread pool for the kernels.
 *
 * Why not OpenMP: torch ships its own libgomp, and two OpenMP runtimes in one process
 * oversubscribe the cores while each spins. This pool spins briefly after a call (the
 * next kernel call usually follows at once), then sleeps on a condition variable, so it
 * leaves the cores to torch's threads between calls. The caller is thread 0. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "lowbit.h"

#define LB_MAX_THREADS 256
#include <time.h>

/* How long an idle worker spins before it sleeps. Long enough to bridge back-to-back kernel
 * calls (a Python call's overhead is a few microseconds), short enough not to steal a core
 * from torch's OpenMP threads when the next operation is torch's (measured: a 0.35 ms spin
 * halved torch._int_mm's speed when calls alternated). */
#ifndef LB_SPIN_NS
#define LB_SPIN_NS 50000
#endif

static struct {
    pthread_mutex_t mu;      /* guards sleeping and the condition variable */
    pthread_cond_t cv;
    pthread_mutex_t call_mu; /* one parallel call at a time */
    atomic_uint gen;         /* bumped to start a call */
    atomic_int done;         /* workers finished with the current call */
    int sleepers;
    int started;             /* workers created (tid 1..started) */
    int active;              /* threads used per call, caller included */
    lb_task_fn fn;
    void *ctx;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .call_mu = PTHREAD_MUTEX_INITIALIZER};

static inline void cpu_relax(void) { __builtin_ia32_pause(); }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Generation each worker was created in: read there, not in the new thread, which may
 * start only after the call that created it has already bumped the generation. */
static unsigned start_gen[LB_MAX_THREADS];

static void *worker_main(void *arg) {
    int tid = (int)(intptr_t)arg;
    unsigned seen = start_gen[tid];
    for (;;) {
        unsigned g;
        unsigned spins = 0;
        int64_t deadline = 0;
        while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen) {
            if (++spins & 63) { /* read the clock once every 64 pauses */
                cpu_relax();
                continue;
            }
            if (!deadline) deadline = now_ns() + LB_SPIN_NS;
            if (now_ns() < deadline) continue;
            pthread_mutex_lock(&pool.mu);
            pool.sleepers++;
            while (atomic_load_explicit(&pool.gen, memory_order_acquire) == seen)
                pthread_cond_wait(&pool.cv, &pool.mu);
            pool.sleepers--;
            pthread_mutex_unlock(&pool.mu);
        }
        seen = g;
        if (tid < pool.active) pool.fn(pool.ctx, tid);
        atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
    }
    return NULL;
}

static int default_threads(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n < LB_MAX_THREADS ? n : LB_MAX_THREADS;
    }
    return 1;
}

/* After fork only the forking thread exists: forget the workers; they are re-created. */
static void after_fork_child(void) {
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.cv, NULL);
    pthread_mutex_init(&pool.call_mu, NULL);
    pool.sleepers = 0;
    pool.started = 0;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void init_once(void) {
    pthread_atfork(NULL, NULL, after_fork_child);
    if (!pool.active) pool.active = default_threads();
}

int lb_set_num_threads(int n) {
    pthread_once(&once, init_once);
    if (n < 1) n = 1;
    if (n > LB_MAX_THREADS) n = LB_MAX_THREADS;
    pthread_mutex_lock(&pool.call_mu);
    pool.active = n;
    pthread_mutex_unlock(&pool.call_mu);
    return n;
}

int lb_get_num_threads(void) {
    pthread_once(&once, init_once);
    return pool.active;
}

/* Called with call_mu held: make sure tids 1..active-1 exist. Returns threads available. */
static int ensure_workers(void) {
    while (pool.started < pool.active - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        start_gen[pool.started + 1] = atomic_load_explicit(&pool.gen, memory_order_relaxed);
        int rc = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)(pool.started + 1));
        pthread_attr_destroy(&attr);
        if (rc) break;
        pool.started++;
    }
    return pool.started + 1;
}

void lb_parallel(lb_task_fn fn, void *ctx) {
    pthread_once(&once, init_once);
    if (pool.active <= 1 || pthread_mutex_trylock(&pool.call_mu) != 0) {
        fn(ctx, 0);
        return;
    }
    int avail = ensure_workers();
    int saved_active = pool.active;
    if (avail < pool.active) pool.active = avail;
    pool.fn = fn;
    pool.ctx = ctx;
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    pthread_mutex_lock(&pool.mu);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
    if (pool.sleepers) pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    fn(ctx, 0);
    while (atomic_load_explicit(&pool.done, memory_order_acquire) < pool.started) cpu_relax();
    pool.active = saved_active;
    pthread_mutex_unlock(&pool.call_mu);
}
