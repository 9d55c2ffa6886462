/* arena.c — see include/latentd/arena.h.
 *
 * cJSON allocates through one process-wide pair of hooks.  They are set once,
 * before main (so before any thread), to json_malloc/json_free below: with
 * no arena active on the calling thread they are plain malloc and free, so
 * every other cJSON user in the process sees no difference; during
 * ld_arena_parse_json they allocate from the arena and ignore frees (cJSON
 * frees only what it allocated in the same call, when it gives up on a
 * syntax error).  One side effect: with custom hooks cJSON's printer grows
 * its buffer by malloc and copy instead of realloc.
 */
#include "latentd/arena.h"

#include "latentd/blkcache.h"

#include <stdint.h>
#include <stdlib.h>

struct ld_arena_block {
    ld_arena_block_t *next;
    size_t size, used; /* bytes of data[] */
    _Alignas(16) unsigned char data[];
};

void ld_arena_init(ld_arena_t *a, size_t first)
{
    a->head = NULL;
    a->first = first;
    a->reserved = 0;
}

void *ld_arena_alloc(ld_arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    ld_arena_block_t *b = a->head;
    if (!b || b->size - b->used < n) {
        /* the first block as estimated, then each at least double the last */
        size_t size = b ? 2 * b->size : (a->first ? a->first : LD_ARENA_MIN);
        if (size < LD_ARENA_MIN)
            size = LD_ARENA_MIN;
        if (size < n)
            size = n;
        size = (size + 15) & ~(size_t)15;
        if (size > SIZE_MAX - sizeof *b)
            return NULL;
        b = ld_blk_alloc(sizeof *b + size);
        if (!b)
            return NULL;
        b->next = a->head;
        b->size = size;
        b->used = 0;
        a->head = b;
        a->reserved += sizeof *b + size;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

void ld_arena_free(ld_arena_t *a)
{
    if (!a)
        return;
    for (ld_arena_block_t *b = a->head, *next; b; b = next) {
        next = b->next;
        ld_blk_free(b);
    }
    a->head = NULL;
    a->reserved = 0;
}

/* --------------------------------------------------------- cJSON hooks */

static _Thread_local ld_arena_t *tl_parse_arena;

static void *json_malloc(size_t n)
{
    ld_arena_t *a = tl_parse_arena;
    return a ? ld_arena_alloc(a, n) : malloc(n);
}

static void json_free(void *p)
{
    if (!tl_parse_arena)
        free(p);
}

__attribute__((constructor)) static void install_json_hooks(void)
{
    cJSON_Hooks hooks = {json_malloc, json_free};
    cJSON_InitHooks(&hooks);
}

cJSON *ld_arena_parse_json(ld_arena_t *a, const char *text, size_t len, const char **end)
{
    tl_parse_arena = a;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, end, 0);
    tl_parse_arena = NULL;
    return root;
}
