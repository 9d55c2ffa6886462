/* image.c — see include/latentd/image.h.
 *
 * PNG decoding through libpng's full API (see "PNG reader" for what a pixel
 * reads as); corrupt input comes back as an error message, never a crash.
 * PNG grids are written here with zlib (see "PNG writer").  Everything is reentrant; the only shared state is the key of
 * the per-thread deflate streams.
 */
#include "latentd/image.h"

#include "latentd/buf.h"
#include "scan_impl.h"

#include <errno.h>
#include <png.h>
#include <pthread.h>
#include <setjmp.h>
#include <string.h>
#include <zlib.h>

#define GRID_MAX_SIDE 1000000               /* libpng's default read limit per side */
#define GRID_MAX_PIXELS ((int64_t)1 << 30)  /* 1 GiB of 8-bit pixels */

/* [0,1] -> 0..255, rounding half up; outside values clamp, NaN -> 0. */
static uint8_t quantize(float v)
{
    if (!(v > 0.0f)) /* also NaN */
        return 0;
    if (v >= 1.0f)
        return 255;
    return (uint8_t)(v * 255.0f + 0.5f);
}

/* ---- PNG writer ------------------------------------------------------------
 *
 * The grids are written here rather than with libpng: the simplified API
 * initialises a deflate stream (256 KiB of state, zeroed) for every image and
 * tries every filter on every row, which for a 32x32 grid cost more than the
 * model that made it.  The file is the minimal valid PNG: signature, IHDR
 * (8-bit grayscale), sRGB (what libpng wrote too), one IDAT, IEND.
 *
 * Compression, by measurement on the default models' grids:
 *  - up to PNG_STORE_MAX bytes of scanlines (one 28x28 tile with its border)
 *    the rows are unfiltered and the zlib stream holds one stored block,
 *    written by hand: deflate's fixed cost (dynamic Huffman trees) is ~15 us
 *    for a 1 KiB image — a third of a whole request — to save ~700 bytes;
 *  - above, every row uses the Paeth filter and deflate runs at level 1 with
 *    the Z_RLE strategy: the filtered rows are mostly runs of small values,
 *    and this is within 1-3% of libpng's size (adaptive filters, level 6) at
 *    2-4x its speed (n=256 VAE grid: 109.5 kB in ~5 ms against 108.9 kB in
 *    14 ms; no filter would be 30% larger, level-1 hashing slower and larger
 *    than RLE).  Each thread keeps one stream and resets it per image
 *    (deflateReset keeps the allocations; libpng re-created 256 KiB of state
 *    each time). */

#define PNG_STORE_MAX 1536

typedef struct {
    z_stream zs;
    int ok;
} png_deflater_t;

static pthread_key_t png_key;
static int png_key_ok;
static pthread_once_t png_once = PTHREAD_ONCE_INIT;

static void png_deflater_free(void *p)
{
    png_deflater_t *d = p;
    if (d && d->ok)
        deflateEnd(&d->zs);
    free(d);
}

static void png_key_init(void)
{
    png_key_ok = pthread_key_create(&png_key, png_deflater_free) == 0;
}

static int png_deflater_init(png_deflater_t *d)
{
    memset(d, 0, sizeof *d);
    d->ok = deflateInit2(&d->zs, 1, Z_DEFLATED, 15, 8, Z_RLE) == Z_OK;
    return d->ok;
}

/* This thread's deflate stream, reset; NULL if none can be had (then the
 * caller uses a stream of its own for this image). */
static z_stream *png_thread_stream(void)
{
    pthread_once(&png_once, png_key_init);
    if (!png_key_ok)
        return NULL;
    png_deflater_t *d = pthread_getspecific(png_key);
    if (!d) {
        d = malloc(sizeof *d);
        if (!d || !png_deflater_init(d) || pthread_setspecific(png_key, d) != 0) {
            png_deflater_free(d);
            return NULL;
        }
    }
    if (deflateReset(&d->zs) != Z_OK)
        return NULL;
    return &d->zs;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Chunk at p: length, type, len data bytes already in place at p + 8; writes
 * the CRC after them.  Returns the chunk's total size. */
static size_t png_chunk_seal(uint8_t *p, const char type[4], size_t len)
{
    put_be32(p, (uint32_t)len);
    memcpy(p + 4, type, 4);
    put_be32(p + 8 + len, (uint32_t)crc32(crc32(0L, Z_NULL, 0), p + 4, (uInt)(len + 4)));
    return 12 + len;
}

/* A zlib stream of stored blocks holding raw (raw_len <= PNG_STORE_MAX) at
 * p; returns its size (raw_len + 11). */
static size_t zlib_stored(const uint8_t *raw, size_t raw_len, uint8_t *p)
{
    p[0] = 0x78; /* deflate, 32 KiB window */
    p[1] = 0x01; /* fastest; (0x78 << 8 | 0x01) % 31 == 0 */
    p[2] = 1;    /* the final block, stored */
    p[3] = (uint8_t)raw_len;
    p[4] = (uint8_t)(raw_len >> 8);
    p[5] = (uint8_t)~raw_len;
    p[6] = (uint8_t)(~raw_len >> 8);
    memcpy(p + 7, raw, raw_len);
    put_be32(p + 7 + raw_len, (uint32_t)adler32(adler32(0L, Z_NULL, 0), raw, (uInt)raw_len));
    return raw_len + 11;
}

/* raw (H rows of 1 + W bytes, filter bytes 0) -> a complete PNG in *out. */
static int png_write(const uint8_t *raw, size_t raw_len, uint32_t W, uint32_t H, uint8_t **out,
                     size_t *len, ld_err_t *err)
{
    png_deflater_t own;
    z_stream *zs = NULL;
    int own_used = 0;
    size_t bound = raw_len + 11;
    if (raw_len > PNG_STORE_MAX) {
        zs = png_thread_stream();
        if (!zs) {
            if (!png_deflater_init(&own))
                return ld_err_set(err, LD_ENOMEM, "png grid: cannot start deflate");
            zs = &own.zs;
            own_used = 1;
        }
        bound = deflateBound(zs, (uLong)raw_len);
    }
    /* signature 8, IHDR 25, sRGB 13, IDAT 12 + data, IEND 12 */
    size_t cap = 8 + 25 + 13 + 12 + bound + 12;
    uint8_t *png = malloc(cap);
    int rc = LD_OK;
    if (!png) {
        rc = ld_err_set(err, LD_ENOMEM, "png grid: out of memory for %zu bytes", cap);
        goto done;
    }
    uint8_t *p = png;
    memcpy(p, "\x89PNG\r\n\x1a\n", 8);
    p += 8;
    put_be32(p + 8, W);
    put_be32(p + 12, H);
    memcpy(p + 16, "\x08\x00\x00\x00\x00", 5); /* depth 8, gray, deflate, filter 0, no interlace */
    p += png_chunk_seal(p, "IHDR", 13);
    p[8] = 0; /* rendering intent: perceptual */
    p += png_chunk_seal(p, "sRGB", 1);
    size_t zlen;
    if (!zs) {
        zlen = zlib_stored(raw, raw_len, p + 8);
    } else {
        /* raw_len and the bound fit uInt: the grid is at most GRID_MAX_PIXELS */
        zs->next_in = (Bytef *)(uintptr_t)raw;
        zs->avail_in = (uInt)raw_len;
        zs->next_out = p + 8;
        zs->avail_out = (uInt)bound;
        if (deflate(zs, Z_FINISH) != Z_STREAM_END) {
            rc = ld_err_set(err, LD_EIO, "png grid: deflate failed: %s", zs->msg ? zs->msg : "?");
            goto done;
        }
        zlen = zs->total_out;
    }
    p += png_chunk_seal(p, "IDAT", zlen);
    p += png_chunk_seal(p, "IEND", 0);
    *len = (size_t)(p - png);
    uint8_t *shrunk = *len < cap / 2 ? realloc(png, *len) : NULL;
    *out = shrunk ? shrunk : png;
    png = NULL;
done:
    free(png);
    if (own_used)
        deflateEnd(&own.zs);
    return rc;
}

/* PNG's Paeth predictor of a pixel from its left (a), upper (b) and
 * upper-left (c) neighbours. */
static uint8_t paeth(uint8_t a, uint8_t b, uint8_t c)
{
    int p = (int)a + (int)b - (int)c;
    int pa = abs(p - (int)a), pb = abs(p - (int)b), pc = abs(p - (int)c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* raw (H rows of 1 + W bytes, filter bytes 0) -> every row Paeth-filtered
 * (type 4), in place: bottom row first and right to left, so the neighbours
 * a pixel is predicted from are still unfiltered when it is. */
static void png_filter_paeth(uint8_t *raw, size_t W, size_t H)
{
    size_t stride = W + 1;
    for (size_t y = H; y-- > 0;) {
        uint8_t *row = raw + y * stride + 1;
        const uint8_t *up = y ? row - stride : NULL;
        for (size_t c = W; c-- > 1;)
            row[c] = (uint8_t)(row[c] - paeth(row[c - 1], up ? up[c] : 0, up ? up[c - 1] : 0));
        row[0] = (uint8_t)(row[0] - (up ? up[0] : 0)); /* a = c = 0: predicts b */
        row[-1] = 4;
    }
}

/* Contract: image.h.  *out (len bytes) is malloc'd, owned by the caller.
 * Errors: LD_EINVAL for bad sizes or a grid too large, LD_ENOMEM, LD_EIO if
 * deflate fails. */
int ld_png_grid(const float *x, int n, int h, int w, int cols, int pad, uint8_t **out,
                size_t *len, ld_err_t *err)
{
    if (!x || !out || !len || n < 1 || h < 1 || w < 1 || pad < 0)
        return ld_err_set(err, LD_EINVAL,
                          "png grid: need x, n, h, w >= 1 and pad >= 0 (got %d, %d, %d, %d)", n,
                          h, w, pad);
    if (cols <= 0)
        for (cols = 1; (int64_t)cols * cols < n; cols++)
            ;
    if (cols > n)
        cols = n;
    int rows = (n - 1) / cols + 1;
    int64_t tile_w = (int64_t)w + pad, tile_h = (int64_t)h + pad;
    int64_t W = tile_w > GRID_MAX_SIDE ? tile_w : cols * tile_w + pad;
    int64_t H = tile_h > GRID_MAX_SIDE ? tile_h : rows * tile_h + pad;
    if (W > GRID_MAX_SIDE || H > GRID_MAX_SIDE || W * H > GRID_MAX_PIXELS)
        return ld_err_set(err, LD_EINVAL, "png grid: %d images of %dx%d make a grid too large "
                          "(limit %d per side, %lld pixels)", n, w, h, GRID_MAX_SIDE,
                          (long long)GRID_MAX_PIXELS);

    /* raw (H, 1 + W): each row's filter byte (0, None) then its pixels; pad
     * pixels and empty tiles stay 0 */
    size_t stride = (size_t)W + 1;
    uint8_t *raw = ld_calloc((size_t)H, stride);
    if (!raw)
        return ld_err_set(err, LD_ENOMEM, "png grid: out of memory for %lldx%lld pixels",
                          (long long)W, (long long)H);
    for (int i = 0; i < n; i++) {
        const float *tile = x + (size_t)i * h * w; /* (h, w) */
        uint8_t *dst = raw + (size_t)(pad + i / cols * tile_h) * stride + 1 + pad +
                       (size_t)(i % cols * tile_w);
        for (int r = 0; r < h; r++)
            for (int c = 0; c < w; c++)
                dst[(size_t)r * stride + c] = quantize(tile[(size_t)r * w + c]);
    }
    if ((size_t)H * stride > PNG_STORE_MAX)
        png_filter_paeth(raw, (size_t)W, (size_t)H);
    int rc = png_write(raw, (size_t)H * stride, (uint32_t)W, (uint32_t)H, out, len, err);
    free(raw);
    return rc;
}

/* ---- PNG reader ------------------------------------------------------------
 *
 * libpng's full API, with no gamma or colour-space handling at all, so a
 * pixel's value is what the file stores, as PIL (Image.open(f).convert("L"))
 * and torchvision read it:
 *  - gray of any depth: the stored value / (2^depth - 1); 16 bits are kept
 *    (a stored 32896 is 32896/65535), 1, 2 and 4 bits are expanded;
 *  - RGB and palette images: PIL's luma, (19595 R + 38470 G + 7471 B +
 *    0x8000) >> 16 on the stored values (ITU-R 601-2), / 255 or / 65535;
 *  - alpha channels and tRNS transparency are dropped, as convert("L") drops
 *    them: a transparent pixel reads as its colour;
 *  - gAMA, cHRM, sRGB and iCCP chunks change nothing.
 * (libpng's simplified API treats 16-bit data as linear light and applies a
 * file's gAMA, so 32896 and 8-bit 128 with gAMA 1.0 both read as 0.729.)
 * libpng reports errors by longjmp to the setjmp in png_read_gray; its
 * warnings are dropped, since a daemon's log is no place for them. */

typedef struct {
    jmp_buf jmp;
    char msg[160];
    const uint8_t *buf; /* memory source, or NULL with fp set */
    size_t len, pos;
    FILE *fp;
} png_src_t;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_src_t *src = png_get_error_ptr(png);
    snprintf(src->msg, sizeof src->msg, "%s", msg);
    longjmp(src->jmp, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep out, size_t n)
{
    png_src_t *src = png_get_io_ptr(png);
    if (n > src->len - src->pos)
        png_error(png, "truncated PNG data");
    memcpy(out, src->buf + src->pos, n);
    src->pos += n;
}

/* One decoded row (w pixels of ch channels, 1 or 2 bytes each, 16-bit
 * big-endian) -> gray in [0,1] as described above. */
static void png_gray_row(const uint8_t *row, uint32_t w, int ch, int two, float *out)
{
    const float max = two ? 65535.0f : 255.0f;
    for (uint32_t i = 0; i < w; i++) {
        uint32_t v[3];
        for (int c = 0; c < (ch >= 3 ? 3 : 1); c++) {
            const uint8_t *p = row + ((size_t)i * (size_t)ch + (size_t)c) * (two ? 2u : 1u);
            v[c] = two ? (uint32_t)p[0] << 8 | p[1] : p[0];
        }
        uint32_t g = ch >= 3 ? (uint32_t)(((uint64_t)v[0] * 19595 + (uint64_t)v[1] * 38470 +
                                           (uint64_t)v[2] * 7471 + 0x8000) >> 16)
                             : v[0];
        out[i] = (float)g / max; /* a division, so 128 reads exactly as 128.0f / 255.0f */
    }
}

/* Decode the PNG of src -> x (h*w) gray floats; what names it in messages. */
static int png_read_gray(png_src_t *src, const char *what, size_t max_pixels, float **x, int *h,
                         int *w, ld_err_t *err)
{
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, src, png_on_error,
                                             png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return ld_err_set(err, LD_ENOMEM, "%s: out of memory", what);
    }
    /* set after setjmp and freed on its error path, hence volatile */
    float *volatile f = NULL;
    uint8_t *volatile rows = NULL;
    int rc = LD_OK;
    if (setjmp(src->jmp)) {
        rc = ld_err_set(err, LD_EFORMAT, "%s: %s", what, src->msg);
        goto done;
    }
    if (src->fp)
        png_init_io(png, src->fp);
    else
        png_set_read_fn(png, src, png_read_mem);
    png_read_info(png, info);
    png_uint_32 width, height;
    int depth, color;
    png_get_IHDR(png, info, &width, &height, &depth, &color, NULL, NULL, NULL);
    uint64_t pixels = (uint64_t)width * height;
    if (pixels > max_pixels) {
        rc = ld_err_set(err, LD_EINVAL, "%s: %ux%u is %llu pixels, more than the limit of %zu",
                        what, width, height, (unsigned long long)pixels, max_pixels);
        goto done;
    }
    if (color == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png); /* tRNS is not expanded: transparency is dropped */
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info), two = png_get_bit_depth(png, info) == 16;
    size_t rowbytes = png_get_rowbytes(png, info);
    /* an interlaced image is read whole (each pass fills in rows already
     * begun); otherwise one row at a time */
    size_t held = passes > 1 ? (size_t)height : 1;
    rows = ld_malloc_array(held, rowbytes);
    f = ld_malloc_array((size_t)pixels, sizeof(float));
    if (!rows || !f) {
        rc = ld_err_set(err, LD_ENOMEM, "%s: out of memory for %ux%u pixels", what, width,
                        height);
        goto done;
    }
    for (int pass = 0; pass < passes; pass++)
        for (png_uint_32 y = 0; y < height; y++) {
            uint8_t *row = rows + (passes > 1 ? (size_t)y * rowbytes : 0);
            png_read_row(png, row, NULL);
            if (pass == passes - 1)
                png_gray_row(row, width, ch, two, f + (size_t)y * width);
        }
    *x = f;
    f = NULL;
    *h = (int)height;
    *w = (int)width;
done:
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    free(f);
    return rc;
}

/* Contract: image.h.  *x (h*w) malloc'd, owned by the caller; set only on
 * success.  Errors: LD_EFORMAT (not a PNG, corrupt, truncated), LD_EINVAL
 * (more than max_pixels), LD_ENOMEM. */
int ld_png_decode(const void *buf, size_t len, size_t max_pixels, float **x, int *h, int *w,
                  ld_err_t *err)
{
    if (!buf || !x || !h || !w)
        return ld_err_set(err, LD_EINVAL, "png decode: NULL argument");
    png_src_t src = {.buf = buf, .len = len};
    return png_read_gray(&src, "PNG", max_pixels, x, h, w, err);
}

/* Contract: image.h.  As ld_png_decode; a file that cannot be opened is
 * LD_EIO.  Messages start with path. */
int ld_png_decode_file(const char *path, size_t max_pixels, float **x, int *h, int *w,
                       ld_err_t *err)
{
    if (!path || !x || !h || !w)
        return ld_err_set(err, LD_EINVAL, "png decode: NULL argument");
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return ld_err_set(err, LD_EIO, "cannot open %s: %s", path, strerror(errno));
    png_src_t src = {.fp = fp};
    int rc = png_read_gray(&src, path, max_pixels, x, h, w, err);
    fclose(fp);
    return rc;
}

/* ---- .npy ---------------------------------------------------------------- */

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64
#define NPY_MAX_DIMS 4
#define NPY_MAX_ELEMS ((uint64_t)1 << 40)

/* '<f4' data is written as the host's floats: every host we build for is
 * little-endian (the /v2 binary extension assumes it too). */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the .npy writer needs a little-endian host");

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Element count of shape (ndim), or an error if a size is negative or the
 * product exceeds NPY_MAX_ELEMS. */
static int npy_count(int ndim, const int64_t *shape, uint64_t *count, ld_err_t *err)
{
    uint64_t c = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return ld_err_set(err, LD_EINVAL, "npy: shape[%d] = %lld is negative", i,
                              (long long)shape[i]);
        if (shape[i] && c > NPY_MAX_ELEMS / (uint64_t)shape[i])
            return ld_err_set(err, LD_EINVAL, "npy: shape has more than %llu elements",
                              (unsigned long long)NPY_MAX_ELEMS);
        c *= (uint64_t)shape[i];
    }
    *count = c;
    return LD_OK;
}

/* The header of a .npy of shape (ndim) into p (NPY_HEADER_MAX bytes: four
 * 19-digit sizes fit); returns its length, a multiple of NPY_ALIGN.  Byte-for-byte what
 * numpy < 1.24 writes: Python's repr of the dict with sorted keys (a 1-tuple
 * keeps its comma), then numpy's own _wrap_header padding.  Written without
 * printf, which glibc sends down its slow positional path in this process
 * (see ld_fmt_u64). */
#define NPY_HEADER_MAX 256
static size_t npy_header(uint8_t *p, int ndim, const int64_t *shape)
{
    static const char dict_open[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
    char *d = (char *)p + NPY_MAGIC_LEN + 4;
    size_t dl = sizeof dict_open - 1;
    memcpy(d, dict_open, dl);
    for (int i = 0; i < ndim; i++) {
        if (i) {
            memcpy(d + dl, ", ", 2);
            dl += 2;
        }
        dl += (size_t)ld_fmt_i64(d + dl, (long long)shape[i]);
    }
    if (ndim == 1)
        d[dl++] = ',';
    memcpy(d + dl, "), }", 4);
    dl += 4;
    /* numpy: padlen = ALIGN - ((MAGIC_LEN + 4 + hlen) % ALIGN), hlen counting
     * the final '\n'; so the padding is 1..64 spaces. */
    size_t hlen = dl + 1;
    size_t padlen = NPY_ALIGN - (NPY_MAGIC_LEN + 4 + hlen) % NPY_ALIGN;
    size_t header = NPY_MAGIC_LEN + 4 + hlen + padlen;
    memcpy(p, NPY_MAGIC, NPY_MAGIC_LEN);
    p[6] = 1; /* version 1.0 */
    p[7] = 0;
    p[8] = (uint8_t)((hlen + padlen) & 0xff);
    p[9] = (uint8_t)((hlen + padlen) >> 8);
    memset(d + dl, ' ', padlen);
    p[header - 1] = '\n';
    return header;
}

/* Contract: image.h.  *out (*len bytes) malloc'd, owned by the caller;
 * *data points into it, float-aligned. */
int ld_npy_alloc(int ndim, const int64_t *shape, uint8_t **out, size_t *len, float **data,
                 ld_err_t *err)
{
    if (ndim < 1 || ndim > NPY_MAX_DIMS || !shape || !out || !len || !data)
        return ld_err_set(err, LD_EINVAL, "npy: need 1 <= ndim <= %d (got %d), shape and out",
                          NPY_MAX_DIMS, ndim);
    uint64_t count;
    int rc = npy_count(ndim, shape, &count, err);
    if (rc != LD_OK)
        return rc;
    uint8_t head[NPY_HEADER_MAX];
    size_t header = npy_header(head, ndim, shape);
    size_t total = header + (size_t)count * 4;
    uint8_t *p = malloc(total);
    if (!p)
        return ld_err_set(err, LD_ENOMEM, "npy: out of memory for %zu bytes", total);
    memcpy(p, head, header);
    *out = p;
    *len = total;
    *data = (float *)(void *)(p + header); /* header: a multiple of 64 bytes */
    return LD_OK;
}

/* Contract: image.h.  ndim in 1..4, shape (ndim) sizes >= 0, x (prod(shape)).
 * *out (len bytes) malloc'd, owned by the caller. */
int ld_npy_encode(const float *x, int ndim, const int64_t *shape, uint8_t **out, size_t *len,
                  ld_err_t *err)
{
    float *data;
    int rc = ld_npy_alloc(ndim, shape, out, len, &data, err);
    if (rc != LD_OK)
        return rc;
    size_t count = (*len - (size_t)((uint8_t *)data - *out)) / 4;
    if (count && !x) {
        free(*out);
        *out = NULL;
        return ld_err_set(err, LD_EINVAL, "npy: x is NULL");
    }
    if (count)
        memcpy(data, x, count * 4); /* '<f4': the host's order (image.h) */
    return LD_OK;
}

/* A quoted string without escapes into s (size n). */
static int npy_string(ld_scan_t *c, char *s, size_t n)
{
    ld_scan_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return 0;
    char q = *c->p++;
    size_t k = 0;
    while (c->p < c->end && *c->p != q && *c->p != '\\' && k + 1 < n)
        s[k++] = *c->p++;
    s[k] = 0;
    if (c->p >= c->end || *c->p != q)
        return 0; /* unterminated, escaped or too long */
    c->p++;
    return 1;
}

/* A tuple of non-negative ints: "()", "(3,)", "(2, 3)", trailing comma allowed.
 * 1 if parsed, 0 if malformed, -1 if more than NPY_MAX_DIMS sizes. */
static int npy_shape(ld_scan_t *c, int *ndim, int64_t shape[NPY_MAX_DIMS])
{
    if (!ld_scan_eat(c, '('))
        return 0;
    *ndim = 0;
    while (!ld_scan_eat(c, ')')) {
        ld_scan_ws(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return 0;
        if (*ndim == NPY_MAX_DIMS)
            return -1;
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9' && v <= (INT64_MAX - 9) / 10)
            v = v * 10 + (*c->p++ - '0');
        shape[(*ndim)++] = v;
        if (!ld_scan_eat(c, ',')) {
            if (!ld_scan_eat(c, ')'))
                return 0;
            break;
        }
    }
    return 1;
}

/* Parse numpy's header dict: exactly the keys descr, fortran_order, shape. */
static int npy_parse_header(const char *h, size_t n, int *ndim, int64_t shape[NPY_MAX_DIMS],
                            ld_err_t *err)
{
    ld_scan_t c = {h, h + n};
    char key[32], descr[32] = "";
    int seen = 0, fortran = 0;
    if (!ld_scan_eat(&c, '{'))
        goto bad;
    while (!ld_scan_eat(&c, '}')) {
        if (!npy_string(&c, key, sizeof key) || !ld_scan_eat(&c, ':'))
            goto bad;
        ld_scan_ws(&c);
        if (strcmp(key, "descr") == 0 && !(seen & 1)) {
            if (!npy_string(&c, descr, sizeof descr))
                goto bad;
            seen |= 1;
        } else if (strcmp(key, "fortran_order") == 0 && !(seen & 2)) {
            if ((size_t)(c.end - c.p) >= 4 && memcmp(c.p, "True", 4) == 0) {
                fortran = 1;
                c.p += 4;
            } else if ((size_t)(c.end - c.p) >= 5 && memcmp(c.p, "False", 5) == 0) {
                c.p += 5;
            } else {
                goto bad;
            }
            seen |= 2;
        } else if (strcmp(key, "shape") == 0 && !(seen & 4)) {
            int ok = npy_shape(&c, ndim, shape);
            if (ok < 0)
                return ld_err_set(err, LD_EUNSUPPORTED, "npy: shape has more than %d dimensions",
                                  NPY_MAX_DIMS);
            if (!ok)
                goto bad;
            seen |= 4;
        } else {
            return ld_err_set(err, LD_EFORMAT, "npy: unexpected or repeated key '%s' in header",
                              key);
        }
        if (!ld_scan_eat(&c, ',')) {
            if (!ld_scan_eat(&c, '}'))
                goto bad;
            break;
        }
    }
    ld_scan_ws(&c);
    if (c.p != c.end || seen != 7)
        goto bad;
    if (strcmp(descr, "<f4") != 0)
        return ld_err_set(err, LD_EUNSUPPORTED, "npy: dtype '%s' is not supported (only '<f4')",
                          descr);
    if (fortran)
        return ld_err_set(err, LD_EUNSUPPORTED, "npy: fortran_order True is not supported");
    return LD_OK;
bad:
    return ld_err_set(err, LD_EFORMAT,
                      "npy: cannot parse header dict near offset %zu (want descr, fortran_order, "
                      "shape)",
                      (size_t)(c.p - h));
}

/* Contract: image.h.  Reads versions 1.0, 2.0 and 3.0; the data must be
 * exactly prod(shape) little-endian float32 values.  *x malloc'd, owned by
 * the caller; set only on success.  Errors: LD_EFORMAT, LD_EUNSUPPORTED
 * (other dtype, Fortran order, ndim > 4), LD_ENOMEM. */
int ld_npy_decode(const void *buf, size_t len, float **x, int *ndim, int64_t shape[4],
                  ld_err_t *err)
{
    const uint8_t *b = buf;
    if (!buf || !x || !ndim || !shape)
        return ld_err_set(err, LD_EINVAL, "npy decode: NULL argument");
    if (len < 10 || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        return ld_err_set(err, LD_EFORMAT, "npy: not a .npy file (bad magic)");
    size_t hoff, hlen;
    if (b[6] == 1) {
        hoff = 10;
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
    } else if (b[6] == 2 || b[6] == 3) {
        if (len < 12)
            return ld_err_set(err, LD_EFORMAT, "npy: truncated header length");
        hoff = 12;
        hlen = get_le32(b + 8);
    } else {
        return ld_err_set(err, LD_EUNSUPPORTED, "npy: version %d.%d is not supported", b[6], b[7]);
    }
    if (hlen > len - hoff)
        return ld_err_set(err, LD_EFORMAT, "npy: header of %zu bytes but only %zu follow", hlen,
                          len - hoff);
    int nd = 0;
    int64_t sh[NPY_MAX_DIMS];
    int rc = npy_parse_header((const char *)b + hoff, hlen, &nd, sh, err);
    uint64_t count = 0;
    if (rc == LD_OK)
        rc = npy_count(nd, sh, &count, err);
    if (rc != LD_OK)
        return rc;
    size_t data = hoff + hlen;
    if (len - data != count * 4)
        return ld_err_set(err, LD_EFORMAT, "npy: expected %llu bytes of data, found %zu",
                          (unsigned long long)(count * 4), len - data);
    float *f = ld_malloc_array((size_t)count, sizeof(float));
    if (!f)
        return ld_err_set(err, LD_ENOMEM, "npy: out of memory for %llu values",
                          (unsigned long long)count);
    for (size_t i = 0; i < count; i++) {
        uint32_t bits = get_le32(b + data + 4 * i);
        memcpy(&f[i], &bits, 4);
    }
    *x = f;
    *ndim = nd;
    memcpy(shape, sh, (size_t)nd * sizeof *sh);
    return LD_OK;
}

/* ---- base64 -------------------------------------------------------------- */

/* 0..63 for a base64 alphabet character, -1 otherwise. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Contract: image.h.  in (len) is standard base64 (RFC 4648 section 4) with
 * '=' padding; ASCII whitespace anywhere is skipped.  *out (*out_len bytes)
 * malloc'd, owned by the caller, set only on success.  Errors (LD_EFORMAT)
 * give the offset into in of the first bad character. */
int ld_base64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len, ld_err_t *err)
{
    if ((!in && len) || !out || !out_len)
        return ld_err_set(err, LD_EINVAL, "base64: NULL argument");
    uint8_t *o = malloc(len / 4 * 3 + 3);
    if (!o)
        return ld_err_set(err, LD_ENOMEM, "base64: out of memory for %zu bytes", len);
    size_t n = 0;
    int quad[4], q = 0, pads = 0, ended = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v')
            continue;
        const char *why = NULL;
        if (ended)
            why = "data after '=' padding";
        else if (c == '=' && q < 2)
            why = "misplaced '='";
        else if (c != '=' && pads)
            why = "data after '=' padding";
        else if (c != '=' && b64_value(c) < 0)
            why = "invalid character";
        if (why) {
            free(o);
            return ld_err_set(err, LD_EFORMAT, "base64: %s (0x%02x) at offset %zu", why, c, i);
        }
        pads += c == '=';
        quad[q++] = c == '=' ? 0 : b64_value(c);
        if (q == 4) {
            uint8_t bytes[3] = {(uint8_t)(quad[0] << 2 | quad[1] >> 4),
                                (uint8_t)(quad[1] << 4 | quad[2] >> 2),
                                (uint8_t)(quad[2] << 6 | quad[3])};
            memcpy(o + n, bytes, (size_t)(3 - pads));
            n += (size_t)(3 - pads);
            q = 0;
            ended = pads > 0;
        }
    }
    if (q) {
        free(o);
        return ld_err_set(err, LD_EFORMAT,
                          "base64: input ends mid-group (%d of 4 characters; missing '=' padding?)",
                          q);
    }
    *out = o;
    *out_len = n;
    return LD_OK;
}
