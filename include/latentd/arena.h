/* arena.h — a bump allocator whose memory is given back all at once, and
 * cJSON parse trees built in one.
 *
 * A request's parse tree is one node per JSON value and one string per key:
 * one malloc/free pair each when cJSON allocates them.  Parsed into an arena
 * it is one allocation, sized from the body and dropped with ld_arena_free
 * (docs/benchmarks.md has what that was measured to save).
 *
 * Ownership: the arena owns every block it hands out; ld_arena_free gives
 * them all back (pointers into them die with it).  A tree from
 * ld_arena_parse_json is never passed to cJSON_Delete: it lives exactly as
 * long as its arena.
 * Thread-safety: an arena belongs to one thread at a time.  Parsing sets a
 * thread-local pointer for the duration of the call only, so parses on
 * other threads (arena or not) and cJSON trees built with cJSON_Create*
 * anywhere are unaffected.
 */
#ifndef LATENTD_ARENA_H
#define LATENTD_ARENA_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct ld_arena_block ld_arena_block_t;

typedef struct {
    ld_arena_block_t *head; /* newest block first; NULL until the first allocation */
    size_t first;           /* size of the first block (0: LD_ARENA_MIN) */
    size_t reserved;        /* bytes of all blocks, headers included */
} ld_arena_t;

#define LD_ARENA_MIN 4096

/* An empty arena whose first block will hold about first bytes (the caller's
 * estimate of everything it will allocate; later blocks grow as needed). */
void ld_arena_init(ld_arena_t *a, size_t first);

/* n bytes aligned to 16, or NULL when out of memory. */
void *ld_arena_alloc(ld_arena_t *a, size_t n);

/* Gives back every block; the arena is empty again and may be reused.
 * Accepts NULL. */
void ld_arena_free(ld_arena_t *a);

/* cJSON_ParseWithLengthOpts(text, len, end, 0) with every node and string
 * of the tree allocated in a (see above: never cJSON_Delete it), held to
 * JSON's grammar where cJSON is lenient, and without NUL in any string:
 *  - a number JSON refuses but cJSON reads (01, -01, 1., 1.e5) is a syntax
 *    error, *end pointing at it;
 *  - the escape \u0000 inside a string becomes the six bytes C0 80 C0 80
 *    C0 80 (an overlong NUL, three times: as long as the escape, so offsets
 *    stay those of text): cJSON would end the C string there, and a value
 *    such as "x.safetensors\u0000.txt" would read as "x.safetensors".  Any
 *    check of the string now fails; src/jsonarg.c refuses it by name (422);
 *  - text that is only white space is an empty object, as no body at all.
 * NULL on a syntax error, *end then pointing at it, or when out of memory. */
cJSON *ld_arena_parse_json(ld_arena_t *a, const char *text, size_t len, const char **end);

/* Length of the JSON number (RFC 8259 grammar) at the start of s[0..n), or 0
 * if s does not start with one.  The caller checks what follows it. */
size_t ld_json_number_len(const char *s, size_t n);

#endif
