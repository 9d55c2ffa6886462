/* check_blkcache.c — the per-thread block cache: a freed block comes back to
 * the next request of its size class on the same thread, zalloc zeroes a
 * reused block, blocks stay ordinary malloc blocks both ways, the size,
 * count and byte limits hold, and a thread's cache is freed when it exits
 * (heap in use measured before and after). */
#define _GNU_SOURCE
#include "testutil.h"

#include "latentd/blkcache.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
/* from <sanitizer/allocator_interface.h>, which Debian's gcc does not ship */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void) { return __sanitizer_get_current_allocated_bytes(); }
#else
static size_t heap_in_use(void) { return mallinfo2().uordblks; }
#endif

START_TEST(test_blk_reuse)
{
    size_t c0 = ld_blk_cached_bytes();
    unsigned char *p = ld_blk_alloc(3000);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq((uintptr_t)p % 16, 0);
    ck_assert_uint_ge(malloc_usable_size(p), 3000);
    memset(p, 0xab, 3000);
    ld_blk_free(p);
    ck_assert_uint_ge(ld_blk_cached_bytes(), c0 + 4096); /* rounded up to its class */
    /* the same class (2049..4096 bytes) gets it back */
    unsigned char *q = ld_blk_alloc(2500);
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_eq(ld_blk_cached_bytes(), c0);
    /* zalloc zeroes a reused block */
    memset(q, 0xcd, 4096);
    ld_blk_free(q);
    unsigned char *z = ld_blk_zalloc(4000);
    ck_assert_ptr_eq(z, q);
    for (int i = 0; i < 4000; i++)
        ck_assert_uint_eq(z[i], 0);
    /* another class does not get it */
    ld_blk_free(z);
    unsigned char *big = ld_blk_alloc(5000);
    ck_assert_ptr_ne(big, z);
    ld_blk_free(big);
    ld_blk_free(NULL);
}
END_TEST

START_TEST(test_blk_malloc_compatible)
{
    /* a cache block freed with free(), grown with realloc */
    char *a = ld_blk_alloc(2000);
    ck_assert_ptr_nonnull(a);
    strcpy(a, "kept");
    a = realloc(a, 100000);
    ck_assert_str_eq(a, "kept");
    free(a);
    char *b = ld_blk_alloc(1500);
    free(b);
    /* any malloc block is accepted and reused by the class its size covers */
    size_t c0 = ld_blk_cached_bytes();
    char *m = malloc(5000); /* usable >= 5000: the 4 KiB class */
    ld_blk_free(m);
    ck_assert_uint_ge(ld_blk_cached_bytes(), c0 + 5000);
    ck_assert_ptr_eq(ld_blk_alloc(4096), m);
    free(m);
    /* small and huge blocks are never kept */
    c0 = ld_blk_cached_bytes();
    ld_blk_free(malloc(100));
    ld_blk_free(ld_blk_alloc(1000));
    ld_blk_free(malloc(200000));
    ld_blk_free(ld_blk_alloc(140000));
    ck_assert_uint_eq(ld_blk_cached_bytes(), c0);
    void *s = ld_blk_zalloc(0); /* like calloc(1, 0): a pointer to free */
    ck_assert_ptr_nonnull(s);
    ld_blk_free(s);
}
END_TEST

START_TEST(test_blk_limits)
{
    enum { N = 40 };
    void *p[N];
    /* at most 16 blocks of one class */
    for (int i = 0; i < N; i++)
        p[i] = ld_blk_alloc(1024);
    size_t c0 = ld_blk_cached_bytes();
    for (int i = 0; i < N; i++)
        ld_blk_free(p[i]);
    size_t kept = ld_blk_cached_bytes() - c0;
    ck_assert_uint_ge(kept, 16 * 1024);
    ck_assert_uint_lt(kept, 17 * 1024 + 16 * 64); /* usable may exceed 1 KiB a little */
    /* at most 512 KiB in all */
    for (int i = 0; i < N; i++)
        p[i] = ld_blk_alloc(65536);
    for (int i = 0; i < N; i++)
        ld_blk_free(p[i]);
    ck_assert_uint_le(ld_blk_cached_bytes(), 512 * 1024);
    ck_assert_uint_ge(ld_blk_cached_bytes(), 512 * 1024 - 65536 - 16 * 1024);
}
END_TEST

enum { EXIT_BLOCKS = 8, EXIT_SIZE = 60000 };

static void *cache_blocks(void *arg)
{
    void **p = arg;
    for (int i = 0; i < EXIT_BLOCKS; i++)
        ld_blk_free(p[i]); /* into this thread's cache */
    return (void *)(uintptr_t)ld_blk_cached_bytes();
}

START_TEST(test_blk_thread_exit)
{
    /* blocks from the main thread's heap, cached by a thread that exits:
     * its exit must give them back */
    void *p[EXIT_BLOCKS];
    for (int i = 0; i < EXIT_BLOCKS; i++) {
        p[i] = malloc(EXIT_SIZE);
        ck_assert_ptr_nonnull(p[i]);
        memset(p[i], i, EXIT_SIZE);
    }
    size_t before = heap_in_use();
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, cache_blocks, p), 0);
    void *ret;
    ck_assert_int_eq(pthread_join(t, &ret), 0);
    ck_assert_uint_ge((uintptr_t)ret, (size_t)EXIT_BLOCKS * EXIT_SIZE); /* it held them */
    size_t after = heap_in_use();
    ck_assert_msg(after + (size_t)EXIT_BLOCKS * EXIT_SIZE / 2 <= before,
                  "heap in use %zu before the thread, %zu after: its cache was not freed",
                  before, after);
}
END_TEST

Suite *suite_blkcache(void)
{
    Suite *s = suite_create("blkcache");
    TCase *tc = tcase_create("blkcache");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_blk_reuse);
    tcase_add_test(tc, test_blk_malloc_compatible);
    tcase_add_test(tc, test_blk_limits);
    tcase_add_test(tc, test_blk_thread_exit);
    suite_add_tcase(s, tc);
    return s;
}
