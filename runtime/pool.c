/* pool.c — the pthread pool behind netc_parallel_for (see pool.h for the
 * ABI that generated code relies on).
 *
 * One job at a time: the caller of netc_parallel_for holds `use` for the
 * whole job (a second caller that finds it taken runs its loop serially),
 * publishes the job under `mu`, bumps the generation and wakes the workers.
 * Chunks are claimed with an atomic counter by the workers and the caller
 * alike; the caller then waits until every worker has reported back (so no
 * worker touches fn or ctx after netc_parallel_for returns), and the mutex
 * hand-over makes every write of every chunk visible to it.
 *
 * The worker set is resized lazily: each call compares the wanted thread
 * count with the running workers and restarts them if it changed. */
#define _POSIX_C_SOURCE 200809L
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define POOL_MAX_THREADS 256
#define CHUNKS_PER_THREAD 4   /* a little dynamic balance for uneven iterations */

static pthread_mutex_t use = PTHREAD_MUTEX_INITIALIZER;   /* held for a whole job, or a resize */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;    /* the fields below */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;    /* workers: a new generation or quit */
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;    /* caller: pending reached 0 */

static pthread_t *workers;
static int nworkers;
static bool quit;
static uint64_t gen;
static int pending;   /* workers that have not finished the current job */
static NetcParallelFn job_fn;
static void *job_ctx;
static int64_t job_n, job_chunks;
static atomic_llong next_chunk;

static atomic_int wanted;                     /* netc_set_threads; 0: default */
static _Thread_local bool inside;             /* running a chunk: nested calls are serial */
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Chunk c of [0, n) in `chunks` contiguous pieces (sizes differ by at most 1). */
static void run_chunks(NetcParallelFn fn, void *ctx, int64_t n, int64_t chunks)
{
    int64_t q = n / chunks, r = n % chunks;
    for (;;) {
        int64_t c = (int64_t)atomic_fetch_add_explicit(&next_chunk, 1, memory_order_relaxed);
        if (c >= chunks) return;
        int64_t lo = c * q + (c < r ? c : r);
        int64_t hi = lo + q + (c < r ? 1 : 0);
        fn(ctx, lo, hi);
    }
}

static void *worker(void *arg)
{
    uint64_t seen = *(uint64_t *)arg;
    free(arg);
    inside = true;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (!quit && gen == seen) pthread_cond_wait(&wake, &mu);
        if (quit) break;
        seen = gen;
        NetcParallelFn fn = job_fn;
        void *ctx = job_ctx;
        int64_t n = job_n, chunks = job_chunks;
        pthread_mutex_unlock(&mu);
        run_chunks(fn, ctx, n, chunks);
        pthread_mutex_lock(&mu);
        if (--pending == 0) pthread_cond_signal(&done);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

/* With `use` held (or at exit / in a fresh child). */
static void stop_workers(void)
{
    if (nworkers == 0) return;
    pthread_mutex_lock(&mu);
    quit = true;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
    free(workers);
    workers = NULL;
    nworkers = 0;
    pthread_mutex_lock(&mu);
    quit = false;
    pthread_mutex_unlock(&mu);
}

static void at_exit(void)
{
    /* exit() from inside a job (use held): leave the workers to the exit */
    if (pthread_mutex_trylock(&use) != 0) return;
    stop_workers();
    pthread_mutex_unlock(&use);
}

/* The child of a fork has none of the workers: forget them. */
static void after_fork_child(void)
{
    pthread_mutex_init(&use, NULL);
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&wake, NULL);
    pthread_cond_init(&done, NULL);
    free(workers);
    workers = NULL;
    nworkers = 0;
    quit = false;
    pending = 0;
}

static void register_handlers(void)
{
    atexit(at_exit);
    pthread_atfork(NULL, NULL, after_fork_child);
}

/* With `use` held: exactly k - 1 workers (fewer if threads cannot be made). */
static void ensure_workers(int k)
{
    if (nworkers == k - 1) return;
    stop_workers();
    pthread_once(&once, register_handlers);
    workers = calloc((size_t)(k - 1), sizeof *workers);
    if (!workers) return;
    pthread_mutex_lock(&mu);
    uint64_t g = gen;
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < k - 1; i++) {
        uint64_t *arg = malloc(sizeof *arg);
        if (!arg) break;
        *arg = g;
        if (pthread_create(&workers[nworkers], NULL, worker, arg) != 0) {
            free(arg);
            break;
        }
        nworkers++;
    }
    if (nworkers == 0) {
        free(workers);
        workers = NULL;
    }
}

int netc_threads(void)
{
    int k = atomic_load(&wanted);
    if (k <= 0) {
        const char *e = getenv("NETC_THREADS");
        if (e && *e) {
            char *end;
            long v = strtol(e, &end, 10);
            if (*end == 0 && v > 0) k = v > POOL_MAX_THREADS ? POOL_MAX_THREADS : (int)v;
        }
    }
    if (k <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        k = c < 1 ? 1 : c > POOL_MAX_THREADS ? POOL_MAX_THREADS : (int)c;
    }
    return k > POOL_MAX_THREADS ? POOL_MAX_THREADS : k;
}

void netc_set_threads(int k)
{
    pthread_mutex_lock(&use);   /* not in the middle of a job */
    atomic_store(&wanted, k > 0 ? k : 0);
    pthread_mutex_unlock(&use);
}

void netc_pool_shutdown(void)
{
    pthread_mutex_lock(&use);
    stop_workers();
    pthread_mutex_unlock(&use);
}

void netc_parallel_for(NetcParallelFn fn, void *ctx, int64_t n)
{
    if (n <= 0) return;
    int k;
    if (inside || n < 2 || (k = netc_threads()) <= 1 || pthread_mutex_trylock(&use) != 0) {
        bool was = inside;
        inside = true;
        fn(ctx, 0, n);
        inside = was;
        return;
    }
    ensure_workers(k);
    if (nworkers == 0) {   /* no threads could be made */
        pthread_mutex_unlock(&use);
        inside = true;
        fn(ctx, 0, n);
        inside = false;
        return;
    }
    int64_t chunks = (int64_t)(nworkers + 1) * CHUNKS_PER_THREAD;
    if (chunks > n) chunks = n;
    pthread_mutex_lock(&mu);
    job_fn = fn;
    job_ctx = ctx;
    job_n = n;
    job_chunks = chunks;
    atomic_store_explicit(&next_chunk, 0, memory_order_relaxed);
    pending = nworkers;
    gen++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);

    inside = true;
    run_chunks(fn, ctx, n, chunks);
    inside = false;

    pthread_mutex_lock(&mu);
    while (pending > 0) pthread_cond_wait(&done, &mu);
    pthread_mutex_unlock(&mu);
    pthread_mutex_unlock(&use);
}
