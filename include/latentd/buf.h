/* buf.h — a growable byte buffer with printf and JSON-writing helpers, used to
 * build response bodies, the metrics exposition and log lines.
 *
 * Errors are sticky: after a failed allocation every later append is a no-op
 * and ld_buf_failed() reports it, so a writer can append freely and check once.
 *
 * Ownership: the buffer owns data until ld_buf_steal() hands it to the caller.
 * Thread-safety: none; one buffer per thread or request.
 */
#ifndef LATENTD_BUF_H
#define LATENTD_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data;  /* NUL-terminated while not failed */
    size_t len;
    size_t cap;
    int failed;  /* an allocation failed; contents are incomplete */
} ld_buf_t;

/* Zero-initialised ld_buf_t is a valid empty buffer; ld_buf_init just does that. */
void ld_buf_init(ld_buf_t *b);
void ld_buf_free(ld_buf_t *b);
/* Make room for extra more bytes; 0 or -1 (and the buffer is marked failed). */
int ld_buf_reserve(ld_buf_t *b, size_t extra);
void ld_buf_append(ld_buf_t *b, const void *p, size_t n);
void ld_buf_puts(ld_buf_t *b, const char *s);
void ld_buf_putc(ld_buf_t *b, char c);
void ld_buf_printf(ld_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int ld_buf_failed(const ld_buf_t *b) { return b->failed; }
/* Hand the malloc'd bytes to the caller (NULL if failed) and reset b. */
char *ld_buf_steal(ld_buf_t *b, size_t *len);

/* ---- JSON writing: the caller places commas; these write one value each ---- */
/* A JSON string literal with every control character, quote and backslash escaped.
 * Invalid UTF-8 bytes are replaced by U+FFFD so the output is always valid JSON. */
void ld_buf_json_str(ld_buf_t *b, const char *s);
/* A finite float in the shortest "%.9g"-class form that reads back to the same
 * float; non-finite values are written as 0 (callers check finiteness first —
 * JSON has no NaN). */
void ld_buf_json_float(ld_buf_t *b, float v);
/* v in decimal into out (at least 21 bytes), NUL-terminated; returns the
 * length.  printf's "%llu" without printf: once libquadmath (loaded with
 * OpenBLAS) registers a printf type, glibc sends every printf in the
 * process down its slow positional path. */
int ld_fmt_u64(char *out, unsigned long long v);
/* The same for a signed value ("%lld"; at least 22 bytes). */
int ld_fmt_i64(char *out, long long v);
/* Append v in decimal ("%lld"). */
void ld_buf_int(ld_buf_t *b, long long v);
/* [v0,v1,...] */
void ld_buf_json_floats(ld_buf_t *b, const float *v, size_t n);
/* [[row0...],[row1...]]: rows of cols values each */
void ld_buf_json_matrix(ld_buf_t *b, const float *v, size_t rows, size_t cols);

#endif
