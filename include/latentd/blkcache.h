/* blkcache.h — a per-thread cache of the large blocks a request allocates
 * and frees: its state, its parse tree's arena, its decode job and its
 * reply.
 *
 * glibc's malloc serves blocks of 1 KiB and more from its large bins, and
 * every such malloc first consolidates the arena's fast bins.  A GAN
 * `decode` request allocates four (1.5, 3.6, 9 and 16 KiB), and malloc and
 * free took 5.3% of the daemon's CPU (perf); with this cache, 2.9%.  A
 * thread keeps a few freed blocks of each power-of-two size and hands them
 * out again.
 *
 * Every block is an ordinary malloc block, rounded up to a power of two:
 * free() and realloc() accept it (it is then simply not reused), and
 * ld_blk_free accepts any malloc'ed pointer (kept if its size fits a class
 * and the thread's cache has room, freed otherwise).  So ownership passes
 * freely to code that knows nothing of the cache (MHD frees a reply with
 * the callback it was given; a buffer may be grown with realloc).
 *
 * Limits: blocks of 1 KiB up to 128 KiB are cached (in classes of 1 to
 * 64 KiB), at most 16 blocks per class and 512 KiB per thread; a
 * thread's cached blocks are freed when it exits.
 * Under AddressSanitizer a cached block is poisoned until it is handed out
 * again, so a use after ld_blk_free is still reported.
 *
 * Thread-safety: every function may be called from any thread; a block
 * freed on another thread than the one that allocated it joins the freeing
 * thread's cache (no locks, no sharing between threads).
 */
#ifndef LATENTD_BLKCACHE_H
#define LATENTD_BLKCACHE_H

#include <stddef.h>

/* At least n bytes, 16-aligned, from this thread's cache or malloc; NULL
 * when out of memory.  Owned by the caller: ld_blk_free or free. */
void *ld_blk_alloc(size_t n);

/* As ld_blk_alloc, zero-filled (calloc's contract; n is one element). */
void *ld_blk_zalloc(size_t n);

/* Give p back: kept for reuse by this thread, or freed.  p may be any
 * pointer malloc returned, or NULL. */
void ld_blk_free(void *p);

/* Bytes held in this thread's cache now (tests). */
size_t ld_blk_cached_bytes(void);

#endif
