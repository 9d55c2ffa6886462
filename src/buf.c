/* buf.c — see include/latentd/buf.h. */
#include "latentd/buf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ld_buf_init(ld_buf_t *b)
{
    memset(b, 0, sizeof *b);
}

void ld_buf_free(ld_buf_t *b)
{
    if (!b)
        return;
    free(b->data);
    memset(b, 0, sizeof *b);
}

int ld_buf_reserve(ld_buf_t *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (extra >= SIZE_MAX / 2 - b->len) {
        b->failed = 1;
        return -1;
    }
    size_t need = b->len + extra + 1; /* + NUL */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void ld_buf_append(ld_buf_t *b, const void *p, size_t n)
{
    if (ld_buf_reserve(b, n) != 0)
        return;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void ld_buf_puts(ld_buf_t *b, const char *s)
{
    ld_buf_append(b, s, strlen(s));
}

void ld_buf_putc(ld_buf_t *b, char c)
{
    ld_buf_append(b, &c, 1);
}

void ld_buf_printf(ld_buf_t *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        ld_buf_append(b, small, (size_t)n);
        return;
    }
    if (ld_buf_reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *ld_buf_steal(ld_buf_t *b, size_t *len)
{
    char *p = b->failed ? NULL : b->data;
    if (len)
        *len = p ? b->len : 0;
    if (!p)
        free(b->data);
    memset(b, 0, sizeof *b);
    return p;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static int utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    int n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    unsigned cp = c & (0x3Fu >> (n - 1));
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

void ld_buf_json_str(ld_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    ld_buf_putc(b, '"');
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            ld_buf_append(b, e, 2);
            p++;
        } else if (c < 0x20 || c == 0x7F) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            ld_buf_append(b, e, 6);
            p++;
        } else if (c < 0x80) {
            const unsigned char *q = p;
            while (*q >= 0x20 && *q < 0x7F && *q != '"' && *q != '\\')
                q++;
            ld_buf_append(b, p, (size_t)(q - p));
            p = q;
        } else {
            int n = utf8_len(p);
            if (n == 0) {
                ld_buf_puts(b, "\xEF\xBF\xBD"); /* U+FFFD */
                p++;
            } else {
                ld_buf_append(b, p, (size_t)n);
                p += n;
            }
        }
    }
    ld_buf_putc(b, '"');
}

/* Powers of ten 10^0 .. 10^60 as correctly rounded double literals (enough
 * to scale any finite float to 9 digits). */
static const double pow10_lit[61] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14,
    1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28,
    1e29, 1e30, 1e31, 1e32, 1e33, 1e34, 1e35, 1e36, 1e37, 1e38, 1e39, 1e40, 1e41, 1e42,
    1e43, 1e44, 1e45, 1e46, 1e47, 1e48, 1e49, 1e50, 1e51, 1e52, 1e53, 1e54, 1e55, 1e56,
    1e57, 1e58, 1e59, 1e60
};

static double pow10_tab(int k)
{
    return pow10_lit[k];
}

/* m = round(v * 10^(8-e)): the 9 leading decimal digits of v when 10^e <= v < 10^(e+1). */
static uint32_t scale9(double v, int e)
{
    int k = 8 - e;
    double s = k >= 0 ? v * pow10_tab(k) : v / pow10_tab(-k);
    return (uint32_t)(s + 0.5);
}

/* The eight decimal digits of lo (< 10^8) as ASCII, most significant first
 * in memory (a little-endian uint64_t); *tz = how many of them, counted from
 * the last, are '0'.  SWAR: one pass splits 4+4 digits, then 2+2 per half,
 * then 1+1 per pair, each division by a multiply and shift that is exact in
 * its range (y/100 = y*10486 >> 20 for y < 10^4; y/10 = y*103 >> 10 for
 * y < 100). */
static uint64_t digits8(uint32_t lo, int *tz)
{
    uint64_t x = (uint64_t)(lo / 10000u) | ((uint64_t)(lo % 10000u) << 32);
    uint64_t q = ((x * 10486u) >> 20) & 0x0000007F0000007FULL;
    x = q | ((x - q * 100u) << 16);
    q = ((x * 103u) >> 10) & 0x000F000F000F000FULL;
    x = q | ((x - q * 10u) << 8);
    /* byte i is digit i (0 = most significant): trailing zero digits are the
     * zero bytes at the top */
    *tz = x ? __builtin_clzll(x) / 8 : 8;
    return x + 0x3030303030303030ULL;
}

/* Lay out a value from its nine decimal digits at out: first (ASCII), rest
 * (the eight after it, as digits8 gives them), nd significant ones (1..9),
 * decimal exponent e.  Trailing zeros dropped; plain notation for -5 <= e <
 * 9, else d.ddde[-]x.  Returns the length; writes up to 16 bytes past out
 * whatever the length. */
static int layout_digits(char *out, int e, char first, uint64_t rest, int nd)
{
    if (e < 0 && e >= -5) { /* 0.[0000]ddddddddd: the usual case for pixels */
        memcpy(out, "0.000000", 8);
        out[1 - e] = first;
        memcpy(out + 2 - e, &rest, 8); /* always 8 bytes; only nd-1 count */
        return 1 - e + nd;
    }
    if (e >= 1 && e < 9) {
        char dig[16];
        dig[0] = first;
        memcpy(dig + 1, &rest, 8);
        int pos = 0;
        for (int i = 0; i <= e; i++)
            out[pos++] = i < nd ? dig[i] : '0';
        if (nd > e + 1) {
            out[pos++] = '.';
            for (int i = e + 1; i < nd; i++)
                out[pos++] = dig[i];
        }
        return pos;
    }
    /* d[.dddddddd], then e[-]x unless e == 0 */
    out[0] = first;
    out[1] = '.';
    memcpy(out + 2, &rest, 8);
    int pos = nd > 1 ? nd + 1 : 1;
    if (e == 0)
        return pos;
    /* e[-]x as one 4-byte word, without branches: a third of a GAN image's
     * pixels are below 1e-5, with one- and two-digit exponents mixed */
    int neg = e < 0;
    unsigned x = (unsigned)(neg ? -e : e);
    int two = x >= 10;
    unsigned tens = x / 10, units = x % 10;
    uint32_t digits = two ? ('0' + tens) | (('0' + units) << 8) : '0' + units;
    uint32_t tail = neg ? '-' | (digits << 8) : digits;
    uint32_t word = 'e' | (tail << 8);
    memcpy(out + pos, &word, 4);
    return pos + 2 + two + neg;
}

/* Write f into out (at least 24 bytes); returns the length.  Nine significant
 * digits (enough for every float to read back exactly), trailing zeros
 * dropped; plain notation for 1e-5 <= |f| < 1e9, else d.ddde[-]x. */
static int fmt_float(char *out, float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint32_t bexp = (bits >> 23) & 0xFF;
    if (bexp == 0xFF || (bits & 0x7FFFFFFFu) == 0) { /* NaN, Inf (callers check), zero */
        out[0] = '0';
        return 1;
    }
    int pos = 0;
    if (bits >> 31)
        out[pos++] = '-';
    double v = fabs((double)f);
    /* binary exponent: 2^be <= v < 2^(be+1) */
    int be;
    if (bexp) {
        be = (int)bexp - 127;
    } else { /* subnormal */
        frexp(v, &be);
        be -= 1;
    }
    /* e = floor(be * log10(2)) (78913 / 2^18 ~ log10 2; exact over this range,
     * with an arithmetic shift), the decimal exponent or one below it */
    int e = (be * 78913) >> 18;
    uint32_t m = scale9(v, e);
    if (m >= 1000000000u) {
        e++;
        m = scale9(v, e);
    }
    if (m >= 1000000000u) { /* 9.999999995 rounded up to ten digits */
        m /= 10;
        e++;
    }
    if (m < 100000000u) /* cannot happen for finite floats; stay safe */
        return pos + snprintf(out + pos, 24, "%.9g", v);
    /* nine digits: the first, then eight as one word; nd = significant ones */
    int tz;
    char first = (char)('0' + m / 100000000u);
    uint64_t rest = digits8(m % 100000000u, &tz);
    int nd = 9 - tz;
    return pos + layout_digits(out + pos, e, first, rest, nd);
}

int ld_fmt_u64(char *out, unsigned long long v)
{
    char d[24];
    int k = 0;
    do {
        d[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < k; i++)
        out[i] = d[k - 1 - i];
    out[k] = '\0';
    return k;
}

int ld_fmt_i64(char *out, long long v)
{
    if (v >= 0)
        return ld_fmt_u64(out, (unsigned long long)v);
    out[0] = '-';
    return 1 + ld_fmt_u64(out + 1, 0ULL - (unsigned long long)v);
}

void ld_buf_int(ld_buf_t *b, long long v)
{
    char out[24];
    ld_buf_append(b, out, (size_t)ld_fmt_i64(out, v));
}

void ld_buf_json_float(ld_buf_t *b, float f)
{
    char out[40];
    int n = fmt_float(out, f);
    ld_buf_append(b, out, (size_t)n);
}

void ld_buf_json_floats(ld_buf_t *b, const float *v, size_t n)
{
    /* at most 16 bytes per value plus a comma: reserve once, write in place */
    if (n >= SIZE_MAX / 32 || ld_buf_reserve(b, n * 17 + 2) != 0)
        return;
    char *p = b->data + b->len;
    *p++ = '[';
    for (size_t i = 0; i < n; i++) {
        p += fmt_float(p, v[i]);
        if (i + 1 < n)
            *p++ = ',';
    }
    *p++ = ']';
    *p = '\0';
    b->len = (size_t)(p - b->data);
}

void ld_buf_json_matrix(ld_buf_t *b, const float *v, size_t rows, size_t cols)
{
    ld_buf_putc(b, '[');
    for (size_t r = 0; r < rows; r++) {
        if (r)
            ld_buf_putc(b, ',');
        ld_buf_json_floats(b, v + r * cols, cols);
    }
    ld_buf_putc(b, ']');
}
