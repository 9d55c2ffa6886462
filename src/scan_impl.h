/* scan_impl.h — a cursor over a short header of text read by hand, not by
 * a general parser: the .npy header's dict (image.c) and the common /v2
 * infer head (v2.c).  Blanks are JSON's four (space, tab, newline, carriage
 * return); the .npy format's Python literal uses the same.  The cursor
 * borrows the text; no state beyond it, so any thread may use its own. */
#ifndef LATENTD_SCAN_IMPL_H
#define LATENTD_SCAN_IMPL_H

typedef struct {
    const char *p, *end; /* next byte, one past the last */
} ld_scan_t;

static inline void ld_scan_ws(ld_scan_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

/* Skip blanks, then consume ch if it is next: 1 if it was. */
static inline int ld_scan_eat(ld_scan_t *c, char ch)
{
    ld_scan_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

#endif
