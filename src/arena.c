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

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
        b = malloc(sizeof *b + size);
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
        free(b);
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

size_t ld_json_number_len(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    else
        return 0;
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i;
}

/* What cJSON reads as one number: every byte of this set from the first. */
static int number_byte(char c)
{
    return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E';
}

#define NUL_ESCAPE "\\u0000"
#define NUL_MARK "\xC0\x80\xC0\x80\xC0\x80" /* as long as the escape, see arena.h */

/* One pass over text before cJSON sees it: the offset of the first number
 * that JSON's grammar refuses but cJSON would read (01, 1., -.5e), or len
 * when there is none; *nuls counts the \u0000 escapes inside strings; *blank
 * says the text is only white space. */
static size_t prescan(const char *text, size_t len, size_t *nuls, int *blank)
{
    *nuls = 0;
    *blank = 1;
    for (size_t i = 0; i < len;) {
        char c = text[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            i++;
            continue;
        }
        *blank = 0;
        if (c == '"') {
            for (i++; i < len && text[i] != '"'; i++) {
                if (text[i] != '\\')
                    continue;
                if (len - i >= 6 && memcmp(text + i, NUL_ESCAPE, 6) == 0)
                    ++*nuls;
                i++; /* the escaped byte: \" does not end the string */
            }
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t n = ld_json_number_len(text + i, len - i);
            if (n == 0 || (i + n < len && number_byte(text[i + n])))
                return i;
            i += n;
        } else {
            i++;
        }
    }
    return len;
}

cJSON *ld_arena_parse_json(ld_arena_t *a, const char *text, size_t len, const char **end)
{
    size_t nuls;
    int blank;
    size_t bad = prescan(text, len, &nuls, &blank);
    if (bad < len) {
        if (end)
            *end = text + bad;
        return NULL;
    }
    const char *parse = text;
    if (nuls) {
        /* a copy with each \u0000 escape inside a string replaced by as many
         * bytes that cJSON keeps as they are: offsets stay those of text */
        char *copy = ld_arena_alloc(a, len);
        if (!copy)
            return NULL;
        memcpy(copy, text, len);
        int in_str = 0;
        for (size_t i = 0; i < len; i++) {
            if (copy[i] == '"') {
                in_str = !in_str;
            } else if (in_str && copy[i] == '\\') {
                if (len - i >= 6 && memcmp(copy + i, NUL_ESCAPE, 6) == 0)
                    memcpy(copy + i, NUL_MARK, 6);
                i++;
            }
        }
        parse = copy;
    }
    tl_parse_arena = a;
    cJSON *root;
    const char *stop = NULL;
    if (blank) {
        root = cJSON_CreateObject(); /* white space only: as if no body was sent */
        stop = parse + len;
    } else {
        root = cJSON_ParseWithLengthOpts(parse, len, &stop, 0);
    }
    tl_parse_arena = NULL;
    if (end)
        *end = stop ? text + (stop - parse) : NULL;
    return root;
}
