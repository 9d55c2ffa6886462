/* blkcache.c — see include/latentd/blkcache.h.
 *
 * Class c (0..CLASSES-1) holds blocks of (1 KiB << c) bytes or more (by
 * malloc_usable_size); a request for n bytes is served from the class of
 * n rounded up to a power of two, so any block found there is big enough.
 * Blocks allocated here are malloc'ed at exactly that power of two, and so
 * return to the class they came from.
 */
#define _GNU_SOURCE
#include "latentd/blkcache.h"

#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define MIN_SHIFT 10 /* 1 KiB */
#define CLASSES 7    /* 1, 2, 4, ... 64 KiB */
#define PER_CLASS 16
#define MAX_BYTES (512u << 10)

typedef struct {
    void *blk[CLASSES][PER_CLASS]; /* blk[c][0..n[c]-1] */
    size_t size[CLASSES][PER_CLASS]; /* their usable sizes */
    int n[CLASSES];
    size_t bytes;                  /* sum of size[][] */
    int registered;                /* the exit destructor is armed */
} cache_t;

static _Thread_local cache_t tl_cache;
static pthread_key_t exit_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

/* At thread exit: free what the thread still holds.  The key's value is
 * the thread's own cache (its _Thread_local storage is still alive while
 * key destructors run). */
static void drain(void *arg)
{
    cache_t *c = arg;
    for (int k = 0; k < CLASSES; k++)
        for (int i = 0; i < c->n[k]; i++) {
            UNPOISON(c->blk[k][i], c->size[k][i]);
            free(c->blk[k][i]);
        }
    memset(c, 0, sizeof *c);
}

static void make_key(void)
{
    if (pthread_key_create(&exit_key, drain) != 0)
        abort();
}

/* The class whose size is the smallest power of two >= n, or -1 when n is
 * above the largest class */
static int class_up(size_t n)
{
    if (n > ((size_t)1 << (MIN_SHIFT + CLASSES - 1)))
        return -1;
    int s = MIN_SHIFT;
    while (((size_t)1 << s) < n)
        s++;
    return s - MIN_SHIFT;
}

void *ld_blk_alloc(size_t n)
{
    if (n < ((size_t)1 << MIN_SHIFT))
        return malloc(n ? n : 1);
    int k = class_up(n);
    if (k < 0)
        return malloc(n);
    cache_t *c = &tl_cache;
    if (c->n[k] > 0) {
        int i = --c->n[k];
        c->bytes -= c->size[k][i];
        UNPOISON(c->blk[k][i], c->size[k][i]);
        return c->blk[k][i];
    }
    return malloc((size_t)1 << (MIN_SHIFT + k));
}

void *ld_blk_zalloc(size_t n)
{
    if (n < ((size_t)1 << MIN_SHIFT))
        return calloc(1, n ? n : 1);
    void *p = ld_blk_alloc(n);
    if (p)
        memset(p, 0, n);
    return p;
}

void ld_blk_free(void *p)
{
    if (!p)
        return;
    size_t size = malloc_usable_size(p);
    cache_t *c = &tl_cache;
    if (size < ((size_t)1 << MIN_SHIFT) || size >= ((size_t)2 << (MIN_SHIFT + CLASSES - 1)) ||
        c->bytes + size > MAX_BYTES) {
        free(p);
        return;
    }
    /* the largest class whose size the block covers */
    int k = CLASSES - 1;
    while (size < ((size_t)1 << (MIN_SHIFT + k)))
        k--;
    if (c->n[k] == PER_CLASS) {
        free(p);
        return;
    }
    if (!c->registered) {
        pthread_once(&key_once, make_key);
        if (pthread_setspecific(exit_key, c) != 0) {
            free(p);
            return;
        }
        c->registered = 1;
    }
    c->blk[k][c->n[k]] = p;
    c->size[k][c->n[k]] = size;
    c->n[k]++;
    c->bytes += size;
    POISON(p, size);
}

size_t ld_blk_cached_bytes(void)
{
    return tl_cache.bytes;
}
