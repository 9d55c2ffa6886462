/* check_image.c — PNG grids and decoding, .npy, base64 (src/image.c). */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include "latentd/image.h"

#include <float.h>
#include <png.h>
#include <setjmp.h>
#include <string.h>

#define ASSERT_OK(rc, err) ck_assert_msg((rc) == LD_OK, "%s: %s", ld_status_name(rc), (err).msg)
/* A failure with the expected code and a message holding sub. */
#define ASSERT_ERR(rc, err, code, sub)                                                          \
    do {                                                                                        \
        ck_assert_msg((rc) == (code), "got %s, want %s (%s)", ld_status_name(rc),               \
                      ld_status_name(code), (err).msg);                                         \
        ck_assert_msg(strstr((err).msg, (sub)), "message \"%s\" lacks \"%s\"", (err).msg, (sub)); \
    } while (0)

/* The 8-bit value the grid must hold for v: round(clamp(v, 0, 1) * 255), NaN -> 0. */
static int expect_q(float v)
{
    if (isnan(v) || v <= 0.0f)
        return 0;
    if (v >= 1.0f)
        return 255;
    return (int)floor((double)v * 255.0 + 0.5);
}

/* Encode x (n, h*w) as a grid and decode it again; *gh, *gw the PNG's size. */
static float *grid_roundtrip(const float *x, int n, int h, int w, int cols, int pad, int *gh,
                             int *gw)
{
    uint8_t *png;
    size_t len;
    ld_err_t err = {""};
    int rc = ld_png_grid(x, n, h, w, cols, pad, &png, &len, &err);
    ASSERT_OK(rc, err);
    ck_assert_mem_eq(png, "\x89PNG\r\n\x1a\n", 8);
    float *g;
    rc = ld_png_decode(png, len, SIZE_MAX, &g, gh, gw, &err);
    ASSERT_OK(rc, err);
    free(png);
    return g;
}

/* ---- PNG grid -------------------------------------------------------------- */

START_TEST(test_grid_roundtrip)
{
    enum { N = 5, H = 3, W = 4, COLS = 3, PAD = 2 };
    float x[N * H * W];
    for (int k = 0; k < N * H * W; k++) /* k/255 nudged both ways: must round to nearest */
        x[k] = ((float)((k * 37) % 256) + (k % 2 ? 0.3f : -0.3f)) / 255.0f;
    x[0] = NAN;
    x[1] = -0.5f;
    x[2] = 1.5f;
    x[3] = INFINITY;
    x[4] = -INFINITY;
    x[5] = 0.5f; /* 127.5 -> 128 */
    x[6] = 1.0f;
    x[7] = 0.0f;
    int gh, gw;
    float *g = grid_roundtrip(x, N, H, W, COLS, PAD, &gh, &gw);
    /* 3 columns, 2 rows, a 2-pixel border all round. */
    ck_assert_int_eq(gw, COLS * (W + PAD) + PAD);
    ck_assert_int_eq(gh, 2 * (H + PAD) + PAD);
    ck_assert_int_eq(expect_q(0.5f), 128);

    int covered = 0;
    for (int r = 0; r < gh; r++)
        for (int c = 0; c < gw; c++) {
            int tr = (r - PAD) / (H + PAD), tc = (c - PAD) / (W + PAD);
            int ir = (r - PAD) % (H + PAD), ic = (c - PAD) % (W + PAD);
            int i = tr * COLS + tc;
            int want = 0; /* border, or the empty sixth tile */
            if (r >= PAD && c >= PAD && ir < H && ic < W && i < N) {
                want = expect_q(x[(i * H + ir) * W + ic]);
                covered++;
            }
            ck_assert_msg(g[r * gw + c] == (float)want / 255.0f, "grid (%d, %d) = %g, want %d/255",
                          r, c, g[r * gw + c] * 255, want);
        }
    ck_assert_int_eq(covered, N * H * W);
    free(g);
}
END_TEST

START_TEST(test_grid_shapes)
{
    static const struct {
        int n, cols, pad, want_cols, want_rows;
    } cases[] = {
        {1, 0, 2, 1, 1},  {4, 0, 2, 2, 2},  {5, 0, 2, 3, 2}, {10, -1, 1, 4, 3},
        {64, 0, 2, 8, 8}, {2, 5, 2, 2, 1},  {7, 2, 0, 2, 4}, {3, 1, 3, 1, 3},
    };
    float x[64 * 6] = {0};
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        int gh, gw;
        float *g = grid_roundtrip(x, cases[i].n, 2, 3, cases[i].cols, cases[i].pad, &gh, &gw);
        ck_assert_msg(gw == cases[i].want_cols * (3 + cases[i].pad) + cases[i].pad &&
                          gh == cases[i].want_rows * (2 + cases[i].pad) + cases[i].pad,
                      "case %zu: %dx%d", i, gw, gh);
        free(g);
    }
}
END_TEST

START_TEST(test_grid_bad_args)
{
    float x[4] = {0};
    uint8_t *png = NULL;
    size_t len;
    ld_err_t err = {""};
    ck_assert_int_eq(ld_png_grid(x, 0, 2, 2, 0, 2, &png, &len, &err), LD_EINVAL);
    ck_assert_int_eq(ld_png_grid(x, 1, 0, 2, 0, 2, &png, &len, &err), LD_EINVAL);
    ck_assert_int_eq(ld_png_grid(x, 1, 2, -1, 0, 2, &png, &len, &err), LD_EINVAL);
    ck_assert_int_eq(ld_png_grid(x, 1, 2, 2, 0, -1, &png, &len, &err), LD_EINVAL);
    ck_assert_int_eq(ld_png_grid(NULL, 1, 2, 2, 0, 2, &png, &len, &err), LD_EINVAL);
    /* Too large is refused before x is read. */
    int rc = ld_png_grid(x, 1, 2000000, 1, 0, 0, &png, &len, &err);
    ASSERT_ERR(rc, err, LD_EINVAL, "too large");
    rc = ld_png_grid(x, 1, 1, 2, 0, INT32_MAX, &png, &len, &err);
    ASSERT_ERR(rc, err, LD_EINVAL, "too large");
    rc = ld_png_grid(x, INT32_MAX, 100, 100, 0, 2, &png, &len, &err);
    ASSERT_ERR(rc, err, LD_EINVAL, "too large");
    ck_assert_ptr_null(png);
}
END_TEST

/* ---- PNG decode ------------------------------------------------------------- */

/* A PNG of w x h pixels in a libpng simplified format, from px. */
static uint8_t *write_png_mem(png_uint_32 format, int w, int h, const void *px, size_t *len)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = format;
    png_alloc_size_t cap = PNG_IMAGE_PNG_SIZE_MAX(img);
    uint8_t *buf = malloc(cap);
    ck_assert_msg(png_image_write_to_memory(&img, buf, &cap, 0, px, 0, NULL), "%s", img.message);
    *len = cap;
    return buf;
}

START_TEST(test_png_decode_color)
{
    /* RGB: white, black, mid gray, red. */
    const uint8_t rgb[4 * 3] = {255, 255, 255, 0, 0, 0, 128, 128, 128, 255, 0, 0};
    size_t len;
    uint8_t *png = write_png_mem(PNG_FORMAT_RGB, 2, 2, rgb, &len);
    float *x;
    int h, w;
    ld_err_t err = {""};
    int rc = ld_png_decode(png, len, 4, &x, &h, &w, &err);
    ASSERT_OK(rc, err);
    ck_assert_int_eq(h, 2);
    ck_assert_int_eq(w, 2);
    ck_assert_float_eq(x[0], 1.0f);
    ck_assert_float_eq(x[1], 0.0f);
    ck_assert_float_eq_tol(x[2], 128.0f / 255.0f, 1.01f / 255.0f);
    ck_assert(x[3] > 0.2f && x[3] < 0.8f); /* red is a mid gray */
    free(x);

    /* The limit: 4 pixels pass at 4, fail at 3. */
    rc = ld_png_decode(png, len, 3, &x, &h, &w, &err);
    ASSERT_ERR(rc, err, LD_EINVAL, "2x2 is 4 pixels, more than the limit of 3");
    free(png);

    /* Gray + alpha: alpha is dropped, as PIL's convert("L") drops it. */
    const uint8_t ga[3 * 2] = {200, 255, 200, 0, 255, 128};
    png = write_png_mem(PNG_FORMAT_GA, 3, 1, ga, &len);
    rc = ld_png_decode(png, len, 100, &x, &h, &w, &err);
    ASSERT_OK(rc, err);
    ck_assert_int_eq(w, 3);
    ck_assert_int_eq(h, 1);
    ck_assert_float_eq(x[0], 200.0f / 255.0f);
    ck_assert_float_eq(x[1], 200.0f / 255.0f);
    ck_assert_float_eq(x[2], 1.0f);
    free(x);
    free(png);
}
END_TEST

/* A PNG written with libpng's full API: w x h pixels of the given colour
 * type and depth from rows packed as PNG stores them (16 bits big-endian),
 * with an optional gAMA chunk (gamma > 0), palette or tRNS, interlaced on
 * request. */
typedef struct {
    int color, depth, interlace;
    double gamma;
    const png_color *palette;
    int n_palette;
    const png_byte *trns;
    int n_trns;
} png_spec_t;

typedef struct {
    uint8_t *p;
    size_t len, cap;
} mem_out_t;

static void mem_write(png_structp png, png_bytep data, size_t n)
{
    mem_out_t *o = png_get_io_ptr(png);
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->p = realloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, data, n);
    o->len += n;
}

static void mem_flush(png_structp png) { (void)png; }

static uint8_t *write_png_full(const png_spec_t *sp, int w, int h, const uint8_t *px, size_t *len)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    ck_assert_ptr_nonnull(info);
    mem_out_t o = {0};
    ck_assert_int_eq(setjmp(png_jmpbuf(png)), 0);
    png_set_write_fn(png, &o, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, sp->depth, sp->color,
                 sp->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (sp->gamma > 0)
        png_set_gAMA(png, info, sp->gamma);
    if (sp->palette)
        png_set_PLTE(png, info, sp->palette, sp->n_palette);
    if (sp->trns)
        png_set_tRNS(png, info, sp->trns, sp->n_trns, NULL);
    png_write_info(png, info);
    int channels = sp->color == PNG_COLOR_TYPE_RGB_ALPHA ? 4 : sp->color == PNG_COLOR_TYPE_RGB ? 3
                   : sp->color == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
    size_t stride = ((size_t)w * (size_t)channels * (size_t)sp->depth + 7) / 8;
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    for (int y = 0; y < h; y++)
        rows[y] = (png_bytep)(px + (size_t)y * stride);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    *len = o.len;
    return o.p;
}

/* Decode a PNG of w x h and compare every pixel with want (exact). */
static void expect_pixels(const char *what, const uint8_t *png, size_t len, int w, int h,
                          const float *want)
{
    float *x = NULL;
    int gh, gw;
    ld_err_t err = {""};
    int rc = ld_png_decode(png, len, 1000, &x, &gh, &gw, &err);
    ck_assert_msg(rc == LD_OK, "%s: %s", what, err.msg);
    ck_assert_msg(gh == h && gw == w, "%s: %dx%d", what, gw, gh);
    for (int i = 0; i < w * h; i++)
        ck_assert_msg(x[i] == want[i], "%s: pixel %d is %.6f, want %.6f", what, i, (double)x[i],
                      (double)want[i]);
    free(x);
}

/* Stored values come back as stored / (2^depth - 1) whatever the depth and
 * whatever gAMA says; colour as PIL's convert("L"); alpha and tRNS dropped. */
START_TEST(test_png_decode_stored_values)
{
    size_t len;
    uint8_t *png;

    /* 16-bit gray: 32896 is 0.50196, not the 0.729 of a linear-light reading */
    const uint8_t g16[4] = {0x80, 0x80, 0xff, 0xff};
    png = write_png_full(&(png_spec_t){.color = PNG_COLOR_TYPE_GRAY, .depth = 16}, 2, 1, g16, &len);
    expect_pixels("16-bit gray", png, len, 2, 1, (float[]){32896.0f / 65535.0f, 1.0f});
    free(png);

    /* 8-bit gray with gAMA 1.0 (and 0.3): 128 stays 128/255 */
    const uint8_t g8[3] = {0, 128, 255};
    const double gammas[] = {1.0, 0.3, 1.0 / 2.2};
    for (size_t i = 0; i < LD_ARRAY_LEN(gammas); i++) {
        png = write_png_full(&(png_spec_t){.color = PNG_COLOR_TYPE_GRAY, .depth = 8,
                                           .gamma = gammas[i]},
                             3, 1, g8, &len);
        expect_pixels("gray with gAMA", png, len, 3, 1, (float[]){0, 128.0f / 255.0f, 1});
        free(png);
    }

    /* RGB, 8 and 16 bits, with gAMA: PIL's luma of the stored values */
    const uint8_t rgb[9] = {255, 0, 0, 0, 255, 0, 10, 20, 30};
    png = write_png_full(&(png_spec_t){.color = PNG_COLOR_TYPE_RGB, .depth = 8, .gamma = 1.0}, 3,
                         1, rgb, &len);
    expect_pixels("RGB", png, len, 3, 1,
                  (float[]){76.0f / 255.0f, 150.0f / 255.0f, 18.0f / 255.0f});
    free(png);
    const uint8_t rgb16[6] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80}; /* gray 32896 */
    png = write_png_full(&(png_spec_t){.color = PNG_COLOR_TYPE_RGB, .depth = 16}, 1, 1, rgb16,
                         &len);
    expect_pixels("16-bit RGB", png, len, 1, 1, (float[]){32896.0f / 65535.0f});
    free(png);

    /* RGBA: a fully transparent pixel reads as its colour */
    const uint8_t rgba[8] = {100, 100, 100, 0, 200, 200, 200, 255};
    png = write_png_full(&(png_spec_t){.color = PNG_COLOR_TYPE_RGB_ALPHA, .depth = 8}, 2, 1, rgba,
                         &len);
    expect_pixels("RGBA", png, len, 2, 1, (float[]){100.0f / 255.0f, 200.0f / 255.0f});
    free(png);

    /* 16-bit gray + alpha */
    const uint8_t ga16[4] = {0x40, 0x00, 0x00, 0x00};
    png = write_png_full(&(png_spec_t){.color = PNG_COLOR_TYPE_GRAY_ALPHA, .depth = 16}, 1, 1,
                         ga16, &len);
    expect_pixels("16-bit gray+alpha", png, len, 1, 1, (float[]){16384.0f / 65535.0f});
    free(png);

    /* a 2-bit palette with tRNS: entries through the luma, transparency dropped */
    const png_color pal[4] = {{0, 0, 0}, {255, 255, 255}, {255, 0, 0}, {60, 60, 60}};
    const png_byte trns[4] = {0, 0, 0, 0};
    const uint8_t idx[1] = {0x1b}; /* indices 0, 1, 2, 3 */
    png = write_png_full(&(png_spec_t){.color = PNG_COLOR_TYPE_PALETTE, .depth = 2,
                                       .palette = pal, .n_palette = 4, .trns = trns, .n_trns = 4},
                         4, 1, idx, &len);
    expect_pixels("palette", png, len, 4, 1, (float[]){0, 1, 76.0f / 255.0f, 60.0f / 255.0f});
    free(png);

    /* 1-bit gray: 0 and 1 */
    const uint8_t bits[1] = {0xa0}; /* 1, 0, 1 */
    png = write_png_full(&(png_spec_t){.color = PNG_COLOR_TYPE_GRAY, .depth = 1}, 3, 1, bits,
                         &len);
    expect_pixels("1-bit gray", png, len, 3, 1, (float[]){1, 0, 1});
    free(png);

    /* interlaced (Adam7) 8-bit gray, 5x5: every pixel in place */
    uint8_t ramp[25];
    float want[25];
    for (int i = 0; i < 25; i++) {
        ramp[i] = (uint8_t)(i * 10);
        want[i] = (float)(i * 10) / 255.0f;
    }
    png = write_png_full(&(png_spec_t){.color = PNG_COLOR_TYPE_GRAY, .depth = 8, .interlace = 1},
                         5, 5, ramp, &len);
    expect_pixels("interlaced", png, len, 5, 5, want);
    free(png);
}
END_TEST

START_TEST(test_png_decode_garbage)
{
    float x0[12];
    for (int k = 0; k < 12; k++)
        x0[k] = (float)(k * 20) / 255.0f;
    uint8_t *png;
    size_t len;
    ld_err_t err = {""};
    int rc = ld_png_grid(x0, 1, 3, 4, 1, 0, &png, &len, &err);
    ASSERT_OK(rc, err);

    float *x = NULL;
    int h, w;
    rc = ld_png_decode("hello, world", 12, 100, &x, &h, &w, &err);
    ck_assert_int_eq(rc, LD_EFORMAT);
    ck_assert_str_ne(err.msg, "");
    rc = ld_png_decode(png, 0, 100, &x, &h, &w, &err);
    ck_assert_int_eq(rc, LD_EFORMAT);

    /* Every cut through the header and pixel data fails; a cut that only
     * loses the IEND trailer (12 bytes) may be accepted, but then with the
     * right pixels.  No cut may crash (the sanitizer build checks reads). */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *part = malloc(cut ? cut : 1);
        memcpy(part, png, cut);
        err.msg[0] = 0;
        rc = ld_png_decode(part, cut, 100, &x, &h, &w, &err);
        if (cut < len - 12)
            ck_assert_msg(rc == LD_EFORMAT && err.msg[0], "cut at %zu of %zu: %s", cut, len,
                          ld_status_name(rc));
        if (rc == LD_OK) {
            for (int k = 0; k < 12; k++)
                ck_assert_float_eq(x[k], x0[k]);
            free(x);
        }
        free(part);
    }

    /* A flipped byte in each position: an error (CRC) or, in an ancillary
     * chunk, a success; never a crash. */
    int failures = 0;
    for (size_t i = 8; i < len; i++) {
        png[i] ^= 0x5a;
        rc = ld_png_decode(png, len, 100, &x, &h, &w, &err);
        if (rc == LD_OK)
            free(x);
        else
            failures++;
        png[i] ^= 0x5a;
    }
    ck_assert_int_gt(failures, (int)(len - 8) / 2);
    free(png);
}
END_TEST

START_TEST(test_png_decode_file)
{
    char *dir = tu_mkdtemp(), path[512];
    float x0[6] = {0, 0.2f, 0.4f, 0.6f, 0.8f, 1};
    uint8_t *png;
    size_t len;
    ld_err_t err = {""};
    int rc = ld_png_grid(x0, 1, 2, 3, 1, 0, &png, &len, &err);
    ASSERT_OK(rc, err);
    snprintf(path, sizeof path, "%s/a.png", dir);
    FILE *f = fopen(path, "wb");
    ck_assert_uint_eq(fwrite(png, 1, len, f), len);
    fclose(f);
    float *x;
    int h, w;
    rc = ld_png_decode_file(path, 6, &x, &h, &w, &err);
    ASSERT_OK(rc, err);
    ck_assert_int_eq(h, 2);
    ck_assert_int_eq(w, 3);
    for (int k = 0; k < 6; k++)
        ck_assert_float_eq(x[k], (float)expect_q(x0[k]) / 255.0f);
    free(x);
    rc = ld_png_decode_file(path, 5, &x, &h, &w, &err);
    ASSERT_ERR(rc, err, LD_EINVAL, path);

    f = fopen(path, "wb");
    fwrite(png, 1, len / 2, f);
    fclose(f);
    rc = ld_png_decode_file(path, 100, &x, &h, &w, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, path);

    snprintf(path, sizeof path, "%s/missing.png", dir);
    rc = ld_png_decode_file(path, 100, &x, &h, &w, &err);
    ASSERT_ERR(rc, err, LD_EIO, "missing.png");
    free(png);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- .npy ------------------------------------------------------------------- */

/* The 128-byte header numpy writes for a '<f4' C-order array of this shape text. */
static void numpy_header(char out[129], const char *shape)
{
    char dict[128];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }",
                     shape);
    memcpy(out, "\x93NUMPY\x01\x00\x76\x00", 10); /* v1.0, header length 118 */
    memcpy(out + 10, dict, (size_t)n);
    memset(out + 10 + n, ' ', (size_t)(128 - 10 - n));
    out[127] = '\n';
    out[128] = 0;
}

START_TEST(test_npy_header)
{
    static const struct {
        int ndim;
        int64_t shape[4];
        const char *text;
    } cases[] = {
        {2, {2, 3}, "(2, 3)"},
        {1, {5}, "(5,)"},
        {2, {1000, 784}, "(1000, 784)"},
        {4, {1, 2, 3, 4}, "(1, 2, 3, 4)"},
        {2, {0, 784}, "(0, 784)"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        size_t count = 1;
        for (int d = 0; d < cases[i].ndim; d++)
            count *= (size_t)cases[i].shape[d];
        float *x = calloc(count ? count : 1, sizeof *x);
        uint8_t *out;
        size_t len;
        ld_err_t err = {""};
        int rc = ld_npy_encode(x, cases[i].ndim, cases[i].shape, &out, &len, &err);
        free(x);
        ASSERT_OK(rc, err);
        char want[129];
        numpy_header(want, cases[i].text);
        ck_assert_uint_eq(len, 128 + 4 * count);
        ck_assert_msg(memcmp(out, want, 128) == 0, "header for %s:\n%.128s\nwant\n%.128s",
                      cases[i].text, (const char *)out + 10, want + 10);
        /* What numpy's reader checks: magic, version, 64-byte aligned data. */
        ck_assert_mem_eq(out, "\x93NUMPY", 6);
        ck_assert_int_eq(out[6], 1);
        ck_assert_int_eq(out[7], 0);
        ck_assert_int_eq((10 + out[8] + 256 * out[9]) % 64, 0);
        ck_assert_int_eq(out[127], '\n');
        free(out);
    }
}
END_TEST

START_TEST(test_npy_roundtrip)
{
    const uint32_t specials[] = {0x7fc00000u, 0x7fc12345u, 0xffc00001u, 0x80000000u,
                                 0x7f800000u, 0xff800000u, 0x00000001u, 0x007fffffu,
                                 0x7f7fffffu, 0x3f800000u};
    enum { N = 2 * 3 * 4 * 5 };
    float x[N];
    for (int k = 0; k < N; k++)
        x[k] = (float)(k - 60) * 0.123f;
    memcpy(x, specials, sizeof specials);
    static const struct {
        int ndim;
        int64_t shape[4];
    } shapes[] = {{1, {N}}, {2, {12, 10}}, {3, {2, 3, 20}}, {4, {2, 3, 4, 5}}};
    for (size_t s = 0; s < LD_ARRAY_LEN(shapes); s++) {
        uint8_t *buf;
        size_t len;
        ld_err_t err = {""};
        int rc = ld_npy_encode(x, shapes[s].ndim, shapes[s].shape, &buf, &len, &err);
        ASSERT_OK(rc, err);
        /* Little-endian data right after the header. */
        ck_assert_mem_eq(buf + 128, "\x00\x00\xc0\x7f", 4);
        float *y;
        int ndim;
        int64_t shape[4];
        rc = ld_npy_decode(buf, len, &y, &ndim, shape, &err);
        ASSERT_OK(rc, err);
        ck_assert_int_eq(ndim, shapes[s].ndim);
        for (int d = 0; d < ndim; d++)
            ck_assert_int_eq(shape[d], shapes[s].shape[d]);
        ck_assert_mem_eq(y, x, sizeof x);
        free(y);
        free(buf);
    }
}
END_TEST

/* ld_npy_alloc: the header ld_npy_encode writes, the values left to the
 * caller at an aligned pointer right after it; and the longest header (four
 * 19-digit sizes, allowed when one of them is 0) still whole. */
START_TEST(test_npy_alloc)
{
    const int64_t shape[3] = {2, 28, 28};
    uint8_t *out, *enc;
    size_t len, elen;
    float *data;
    ld_err_t err = {""};
    int rc = ld_npy_alloc(3, shape, &out, &len, &data, &err);
    ASSERT_OK(rc, err);
    ck_assert_uint_eq(len, 128 + 4 * 2 * 28 * 28);
    ck_assert_ptr_eq((uint8_t *)data, out + 128);
    ck_assert_uint_eq((uintptr_t)data % sizeof(float), 0);
    for (int i = 0; i < 2 * 28 * 28; i++)
        data[i] = (float)i * 0.5f;
    float *x = malloc(2 * 28 * 28 * sizeof *x);
    memcpy(x, data, 2 * 28 * 28 * sizeof *x);
    rc = ld_npy_encode(x, 3, shape, &enc, &elen, &err);
    ASSERT_OK(rc, err);
    ck_assert_uint_eq(elen, len);
    ck_assert_mem_eq(enc, out, len);
    free(enc);
    free(out);
    free(x);

    const int64_t wide[4] = {0, INT64_MAX, INT64_MAX, INT64_MAX};
    rc = ld_npy_alloc(4, wide, &out, &len, &data, &err);
    ASSERT_OK(rc, err);
    const char *want = "{'descr': '<f4', 'fortran_order': False, 'shape': (0, "
                       "9223372036854775807, 9223372036854775807, 9223372036854775807), }";
    size_t header = 10 + (size_t)out[8] + 256 * (size_t)out[9];
    ck_assert_uint_eq(len, header);
    ck_assert_uint_eq(header % 64, 0);
    ck_assert_mem_eq(out + 10, want, strlen(want));
    ck_assert_int_eq(out[header - 1], '\n');
    for (size_t i = 10 + strlen(want); i < header - 1; i++)
        ck_assert_int_eq(out[i], ' ');
    free(out);
}
END_TEST

START_TEST(test_npy_encode_errors)
{
    float x[4] = {0};
    uint8_t *out;
    size_t len;
    ld_err_t err = {""};
    const int64_t five[5] = {1, 1, 1, 1, 4}, neg[2] = {2, -2}, huge[2] = {INT64_MAX, 4};
    ck_assert_int_eq(ld_npy_encode(x, 5, five, &out, &len, &err), LD_EINVAL);
    ck_assert_int_eq(ld_npy_encode(x, 0, five, &out, &len, &err), LD_EINVAL);
    int rc = ld_npy_encode(x, 2, neg, &out, &len, &err);
    ASSERT_ERR(rc, err, LD_EINVAL, "negative");
    rc = ld_npy_encode(x, 2, huge, &out, &len, &err);
    ASSERT_ERR(rc, err, LD_EINVAL, "elements");
    ck_assert_int_eq(ld_npy_encode(NULL, 1, five, &out, &len, &err), LD_EINVAL);
}
END_TEST

/* A hand-made v1.0 .npy: header text (padded here), then nbytes of data. */
static uint8_t *make_npy(const char *dict, int major, size_t nbytes, size_t *len)
{
    size_t hl = strlen(dict), pre = major == 1 ? 10 : 12;
    uint8_t *b = calloc(pre + hl + nbytes + 1, 1);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (uint8_t)major;
    b[8] = (uint8_t)hl;
    b[9] = (uint8_t)(hl >> 8);
    memcpy(b + pre, dict, hl);
    *len = pre + hl + nbytes;
    return b;
}

START_TEST(test_npy_decode_variants)
{
    static const struct {
        const char *dict;
        int major;
        size_t nbytes;
        int code;
        const char *want; /* message part, or the shape text for success */
    } cases[] = {
/* The usual start of a '<f4' C-order header. */
#define F4 "{'descr': '<f4', 'fortran_order': False, "
        {"{'shape': (3,), 'fortran_order': False, 'descr': '<f4'}\n", 1, 12, LD_OK, "3"},
        {"{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3)}   \n", 1, 24, LD_OK,
         "2,3"},
        {F4 "'shape': (), }\n", 1, 4, LD_OK, ""},
        {F4 "'shape': (2, 3), }\n", 2, 24, LD_OK, "2,3"},
        {F4 "'shape': (4,), }\n", 3, 16, LD_OK, "4"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n", 1, 24, LD_EUNSUPPORTED,
         "'<f8'"},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }\n", 1, 12, LD_EUNSUPPORTED,
         "'>f4'"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }\n", 1, 12, LD_EUNSUPPORTED,
         "fortran"},
        {F4 "'shape': (1,1,1,1,1), }\n", 1, 4, LD_EUNSUPPORTED, "more than 4 dimensions"},
        {F4 "'shape': (3,), }\n", 1, 8, LD_EFORMAT, "expected 12 bytes of data, found 8"},
        {F4 "'shape': (3,), }\n", 1, 16, LD_EFORMAT, "expected 12 bytes of data, found 16"},
        {"{'descr': '<f4', 'fortran_order': False}\n", 1, 0, LD_EFORMAT, "parse"},
        {F4 "'shape': (3,), 'x': 1}\n", 1, 12, LD_EFORMAT, "'x'"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,)}\n", 1, 12,
         LD_EFORMAT, "repeated"},
        {"{'descr': '<f4' 'fortran_order': False, 'shape': (3,)}\n", 1, 12, LD_EFORMAT, "parse"},
        {F4 "'shape': (-3,)}\n", 1, 12, LD_EFORMAT, "parse"},
        {F4 "'shape': (3,)} x\n", 1, 12, LD_EFORMAT, "parse"},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (3,)}\n", 1, 12, LD_EFORMAT, "parse"},
        {F4 "'shape': (99999999999999999999,)}\n", 1, 12, LD_EFORMAT, "parse"},
        {F4 "'shape': (3,)}\n", 4, 12, LD_EUNSUPPORTED, "version 4.0"},
#undef F4
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        size_t len;
        uint8_t *b = make_npy(cases[i].dict, cases[i].major, cases[i].nbytes, &len);
        float *x = NULL;
        int ndim = -1;
        int64_t shape[4];
        ld_err_t err = {""};
        int rc = ld_npy_decode(b, len, &x, &ndim, shape, &err);
        ck_assert_msg(rc == cases[i].code, "case %zu: got %s, want %s (%s)", i, ld_status_name(rc),
                      ld_status_name(cases[i].code), err.msg);
        if (rc == LD_OK) {
            char text[64] = "";
            for (int d = 0; d < ndim; d++)
                snprintf(text + strlen(text), sizeof text - strlen(text), "%s%lld", d ? "," : "",
                         (long long)shape[d]);
            ck_assert_str_eq(text, cases[i].want);
            free(x);
        } else {
            ck_assert_msg(strstr(err.msg, cases[i].want), "case %zu: \"%s\" lacks \"%s\"", i,
                          err.msg, cases[i].want);
        }
        free(b);
    }
}
END_TEST

START_TEST(test_npy_decode_cuts)
{
    float x[6] = {1, 2, 3, 4, 5, 6};
    const int64_t shape[2] = {2, 3};
    uint8_t *buf;
    size_t len;
    ld_err_t err = {""};
    int rc = ld_npy_encode(x, 2, shape, &buf, &len, &err);
    ASSERT_OK(rc, err);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *part = malloc(cut ? cut : 1);
        memcpy(part, buf, cut);
        float *y;
        int ndim;
        int64_t sh[4];
        rc = ld_npy_decode(part, cut, &y, &ndim, sh, &err);
        ck_assert_msg(rc == LD_EFORMAT, "cut at %zu: %s", cut, ld_status_name(rc));
        free(part);
    }
    buf[0] = 'N';
    float *y;
    int ndim;
    int64_t sh[4];
    rc = ld_npy_decode(buf, len, &y, &ndim, sh, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "magic");
    free(buf);
}
END_TEST

/* ---- base64 ----------------------------------------------------------------- */

/* Test-side encoder, with a line break every 76 characters (as MIME does). */
static char *b64_encode(const uint8_t *in, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(n / 3 * 5 + 16), *o = out;
    int col = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        *o++ = abc[v >> 18];
        *o++ = abc[v >> 12 & 63];
        *o++ = i + 1 < n ? abc[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? abc[v & 63] : '=';
        if ((col += 4) == 76) {
            *o++ = '\n';
            col = 0;
        }
    }
    *o = 0;
    return out;
}

static void check_b64(const char *in, const char *want)
{
    uint8_t *out = NULL;
    size_t len = 99;
    ld_err_t err = {""};
    int rc = ld_base64_decode(in, strlen(in), &out, &len, &err);
    ASSERT_OK(rc, err);
    ck_assert_uint_eq(len, strlen(want));
    ck_assert_mem_eq(out, want, len);
    free(out);
}

START_TEST(test_base64_rfc4648)
{
    /* RFC 4648 section 10. */
    check_b64("", "");
    check_b64("Zg==", "f");
    check_b64("Zm8=", "fo");
    check_b64("Zm9v", "foo");
    check_b64("Zm9vYg==", "foob");
    check_b64("Zm9vYmE=", "fooba");
    check_b64("Zm9vYmFy", "foobar");
    /* Whitespace anywhere is skipped. */
    check_b64(" Zm9v\r\nYm\tFy\n", "foobar");
    check_b64("Zm9vYg=\n=\n", "foob");
    check_b64("+/+/", "\xfb\xff\xbf");
}
END_TEST

START_TEST(test_base64_errors)
{
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"Zm9v!mFy", "invalid character (0x21) at offset 4"},
        {"Zm9v-mFy", "invalid character (0x2d) at offset 4"}, /* URL-safe alphabet */
        {"\xffZg==", "invalid character (0xff) at offset 0"},
        {"Zg", "ends mid-group (2 of 4"},
        {"Zm9vY", "ends mid-group (1 of 4"},
        {"Zg=", "ends mid-group (3 of 4"},
        {"Zg==Zg==", "data after '=' padding (0x5a) at offset 4"},
        {"Zm=v", "data after '=' padding (0x76) at offset 3"},
        {"Z===", "misplaced '=' (0x3d) at offset 1"},
        {"====", "misplaced '=' (0x3d) at offset 0"},
        {"Zg===", "data after '=' padding (0x3d) at offset 4"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        uint8_t *out = NULL;
        size_t len;
        ld_err_t err = {""};
        int rc = ld_base64_decode(cases[i].in, strlen(cases[i].in), &out, &len, &err);
        ASSERT_ERR(rc, err, LD_EFORMAT, cases[i].want);
        ck_assert_ptr_null(out);
    }
    /* An embedded NUL is junk too: the length, not the terminator, counts. */
    uint8_t *out;
    size_t len;
    ld_err_t err = {""};
    int rc = ld_base64_decode("Zm9v\0mFy", 8, &out, &len, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "offset 4");
}
END_TEST

START_TEST(test_base64_roundtrip)
{
    uint8_t in[300];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)(i * 167 + 13);
    for (size_t n = 0; n <= sizeof in; n++) {
        char *text = b64_encode(in, n);
        uint8_t *out;
        size_t len;
        ld_err_t err = {""};
        int rc = ld_base64_decode(text, strlen(text), &out, &len, &err);
        ASSERT_OK(rc, err);
        ck_assert_uint_eq(len, n);
        ck_assert_mem_eq(out, in, n);
        free(out);
        free(text);
    }
}
END_TEST

Suite *suite_image(void)
{
    Suite *s = suite_create("image");
    TCase *tc = tcase_create("png");
    tcase_add_test(tc, test_grid_roundtrip);
    tcase_add_test(tc, test_grid_shapes);
    tcase_add_test(tc, test_grid_bad_args);
    tcase_add_test(tc, test_png_decode_color);
    tcase_add_test(tc, test_png_decode_stored_values);
    tcase_add_test(tc, test_png_decode_garbage);
    tcase_add_test(tc, test_png_decode_file);
    suite_add_tcase(s, tc);

    tc = tcase_create("npy");
    tcase_add_test(tc, test_npy_header);
    tcase_add_test(tc, test_npy_roundtrip);
    tcase_add_test(tc, test_npy_alloc);
    tcase_add_test(tc, test_npy_encode_errors);
    tcase_add_test(tc, test_npy_decode_variants);
    tcase_add_test(tc, test_npy_decode_cuts);
    suite_add_tcase(s, tc);

    tc = tcase_create("base64");
    tcase_add_test(tc, test_base64_rfc4648);
    tcase_add_test(tc, test_base64_errors);
    tcase_add_test(tc, test_base64_roundtrip);
    suite_add_tcase(s, tc);
    return s;
}
