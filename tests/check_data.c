/* check_data.c — IDX and PNG-folder loading (src/data.c).
 *
 * The Fashion-MNIST tests read the Debian package's files (dataset-fashion-mnist,
 * installed by `make deps`) and compare against the bytes read independently
 * with zlib here.  Everything else runs on tiny files written to a temp folder. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"
#include "tu_limits.h"

#include "latentd/data.h"
#include "latentd/image.h"

#include <string.h>
#include <zlib.h>

#define ASSERT_OK(rc, err) ck_assert_msg((rc) == LD_OK, "%s: %s", ld_status_name(rc), (err).msg)
/* A failure with the expected code and a message holding sub. */
#define ASSERT_ERR(rc, err, code, sub)                                                          \
    do {                                                                                        \
        ck_assert_msg((rc) == (code), "got %s, want %s (%s)", ld_status_name(rc),               \
                      ld_status_name(code), (err).msg);                                         \
        ck_assert_msg(strstr((err).msg, (sub)), "message \"%s\" lacks \"%s\"", (err).msg, (sub)); \
    } while (0)

/* ---- helpers ---------------------------------------------------------------- */

/* The whole decompressed content of a gzip (or raw) file; *len its size. */
static uint8_t *slurp_gz(const char *path, size_t *len)
{
    gzFile gz = gzopen(path, "rb");
    ck_assert_msg(gz != NULL, "cannot open %s", path);
    size_t cap = 1 << 20, n = 0;
    uint8_t *b = malloc(cap);
    int r;
    while ((r = gzread(gz, b + n, (unsigned)(cap - n))) > 0) {
        n += (size_t)r;
        if (n == cap) {
            uint8_t *nb = realloc(b, cap *= 2);
            ck_assert_ptr_nonnull(nb);
            b = nb;
        }
    }
    ck_assert_int_eq(r, 0);
    gzclose(gz);
    *len = n;
    return b;
}

static void write_file(const char *path, const void *b, size_t n, int gzip)
{
    if (gzip) {
        gzFile gz = gzopen(path, "wb");
        ck_assert_ptr_nonnull(gz);
        ck_assert_int_eq(gzwrite(gz, b, (unsigned)n), (int)n);
        ck_assert_int_eq(gzclose(gz), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(b, 1, n, f), n);
        ck_assert_int_eq(fclose(f), 0);
    }
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An IDX file: magic, ndim sizes, then plen payload bytes (may disagree with
 * the sizes, to make broken files).  Returns the length written to buf. */
static size_t make_idx(uint8_t *buf, uint32_t magic, int ndim, const uint32_t *dims,
                       const uint8_t *payload, size_t plen)
{
    put_be32(buf, magic);
    for (int i = 0; i < ndim; i++)
        put_be32(buf + 4 + 4 * i, dims[i]);
    memcpy(buf + 4 + 4 * ndim, payload, plen);
    return 4 + 4 * (size_t)ndim + plen;
}

/* The tiny set: 3 images of 2 rows x 3 columns, pixel k = 15 * k (0..255),
 * labels 0, 2, 1. */
enum { TN = 3, TH = 2, TW = 3, TDIM = TH * TW };
static const uint8_t tiny_labels[TN] = {0, 2, 1};

static uint8_t tiny_pixel(int k)
{
    return (uint8_t)(15 * k);
}

/* Write the tiny images (payload of plen bytes, extra makes it longer) and
 * return the path dir/name in out. */
static void write_tiny_images(char *out, size_t size, const char *dir, const char *name, int gzip,
                              size_t plen)
{
    uint8_t px[TN * TDIM + 8] = {0}, buf[64] = {0};
    for (int k = 0; k < TN * TDIM; k++)
        px[k] = tiny_pixel(k);
    const uint32_t dims[3] = {TN, TH, TW};
    snprintf(out, size, "%s/%s", dir, name);
    write_file(out, buf, make_idx(buf, 0x803, 3, dims, px, plen), gzip);
}

static void write_tiny_labels(char *out, size_t size, const char *dir, const char *name, int gzip,
                              uint32_t count)
{
    uint8_t buf[64] = {0};
    snprintf(out, size, "%s/%s", dir, name);
    write_file(out, buf, make_idx(buf, 0x801, 1, &count, tiny_labels, count), gzip);
}

static void check_tiny(const ld_dataset_t *d, int n, int with_labels)
{
    ck_assert_int_eq(d->n, n);
    ck_assert_int_eq(d->h, TH);
    ck_assert_int_eq(d->w, TW);
    ck_assert_int_eq(d->dim, TDIM);
    for (int k = 0; k < n * TDIM; k++)
        ck_assert_msg(d->x[k] == (float)tiny_pixel(k) / 255.0f, "x[%d] = %g, want %d/255", k,
                      d->x[k], tiny_pixel(k));
    if (with_labels) {
        ck_assert_ptr_nonnull(d->y);
        ck_assert_mem_eq(d->y, tiny_labels, (size_t)n);
        ck_assert_int_eq(d->n_classes, 3);
    } else {
        ck_assert_ptr_null(d->y);
        ck_assert_int_eq(d->n_classes, 0);
    }
}

/* ---- Fashion-MNIST ------------------------------------------------------- */

/* Load a whole split and compare every label and the first and last images
 * with the raw files; each class appears n/10 times (the published split). */
static void check_fashion(ld_split_t split, int want_n)
{
    const char *prefix = split == LD_SPLIT_TEST ? "t10k" : "train";
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    double t0 = ld_now();
    int rc = ld_data_load("fashion-mnist", split, 0, &d, &err);
    double secs = ld_now() - t0;
    ASSERT_OK(rc, err);
    fprintf(stderr, "fashion-mnist/%s: %d images loaded in %.2f s\n", prefix, d->n, secs);
    ck_assert_msg(secs < 10.0, "loading took %.1f s", secs);
    ck_assert_int_eq(d->n, want_n);
    ck_assert_int_eq(d->h, 28);
    ck_assert_int_eq(d->w, 28);
    ck_assert_int_eq(d->dim, 784);
    ck_assert_int_eq(d->n_classes, 10);
    ck_assert_str_eq(d->name,
                     split == LD_SPLIT_TEST ? "fashion-mnist/test" : "fashion-mnist/train");
    ck_assert_int_eq(d->y[0], 9); /* published: the first image of both splits is an ankle boot */

    char path[256];
    size_t len;
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", LD_FASHION_MNIST_DIR, prefix);
    uint8_t *raw = slurp_gz(path, &len);
    ck_assert_uint_eq(len, 8 + (size_t)want_n);
    ck_assert_mem_eq(d->y, raw + 8, (size_t)want_n);
    free(raw);
    int per_class[10] = {0};
    for (int i = 0; i < d->n; i++)
        per_class[d->y[i]]++;
    for (int c = 0; c < 10; c++)
        ck_assert_int_eq(per_class[c], want_n / 10);

    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", LD_FASHION_MNIST_DIR, prefix);
    raw = slurp_gz(path, &len);
    ck_assert_uint_eq(len, 16 + (size_t)want_n * 784);
    size_t last = (size_t)(want_n - 1) * 784;
    for (size_t k = 0; k < 784; k++) {
        ck_assert_float_eq(d->x[k], (float)raw[16 + k] / 255.0f);
        ck_assert_float_eq(d->x[last + k], (float)raw[16 + last + k] / 255.0f);
    }
    free(raw);
    /* One assertion, not one per pixel (each ck_assert talks to the runner). */
    size_t outside = 0;
    for (size_t k = 0; k < (size_t)d->n * 784; k++)
        outside += !(d->x[k] >= 0.0f && d->x[k] <= 1.0f);
    ck_assert_uint_eq(outside, 0);
    ld_data_free(d);
}

START_TEST(test_fashion_train)
{
    check_fashion(LD_SPLIT_TRAIN, 60000);
}
END_TEST

START_TEST(test_fashion_test)
{
    check_fashion(LD_SPLIT_TEST, 10000);
}
END_TEST

/* limit, and the folder and image-file spellings of the same files. */
START_TEST(test_fashion_forms)
{
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    int rc = ld_data_load("fashion-mnist", LD_SPLIT_TRAIN, 100, &d, &err);
    ASSERT_OK(rc, err);
    ck_assert_int_eq(d->n, 100);
    ck_assert_int_eq(d->n_classes, 10);
    ck_assert_int_eq(d->y[0], 9);
    ld_data_free(d);

    rc = ld_data_load(LD_FASHION_MNIST_DIR, LD_SPLIT_TEST, 5, &d, &err);
    ASSERT_OK(rc, err);
    ck_assert_int_eq(d->n, 5);
    ck_assert_int_eq(d->y[0], 9);
    ck_assert_str_eq(d->name, LD_FASHION_MNIST_DIR "/test");
    ld_data_free(d);

    /* The split is ignored for a file; labels are found beside it. */
    const char *file = LD_FASHION_MNIST_DIR "/t10k-images-idx3-ubyte.gz";
    rc = ld_data_load(file, LD_SPLIT_TRAIN, 3, &d, &err);
    ASSERT_OK(rc, err);
    ck_assert_int_eq(d->n, 3);
    ck_assert_ptr_nonnull(d->y);
    ck_assert_int_eq(d->y[0], 9);
    ck_assert_int_eq(d->n_classes, 10); /* from the whole labels file */
    ck_assert_str_eq(d->name, file);
    ld_data_free(d);
}
END_TEST

/* ---- tiny IDX files ------------------------------------------------------ */

START_TEST(test_idx_raw_and_gzip)
{
    char *dir = tu_mkdtemp(), im[512], lb[512];
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    for (int gzip = 0; gzip < 2; gzip++) {
        const char *gz = gzip ? ".gz" : "";
        char iname[64], lname[64];
        snprintf(iname, sizeof iname, "a-images-idx3-ubyte%s", gz);
        snprintf(lname, sizeof lname, "a-labels-idx1-ubyte%s", gz);
        write_tiny_images(im, sizeof im, dir, iname, gzip, TN * TDIM);
        write_tiny_labels(lb, sizeof lb, dir, lname, gzip, TN);
        int rc = ld_data_load_idx(im, lb, 0, &d, &err);
        ASSERT_OK(rc, err);
        check_tiny(d, TN, 1);
        ck_assert_str_eq(d->name, im);
        ld_data_free(d);

        rc = ld_data_load_idx(im, lb, 2, &d, &err);
        ASSERT_OK(rc, err);
        check_tiny(d, 2, 1);
        ld_data_free(d);

        rc = ld_data_load_idx(im, NULL, 10, &d, &err);
        ASSERT_OK(rc, err);
        check_tiny(d, TN, 0);
        ld_data_free(d);

        rc = ld_data_load(im, LD_SPLIT_TEST, 0, &d, &err); /* labels found beside */
        ASSERT_OK(rc, err);
        check_tiny(d, TN, 1);
        ld_data_free(d);
    }
    /* An image file whose labels are not beside it: loaded without labels. */
    write_tiny_images(im, sizeof im, dir, "b-images-idx3-ubyte", 0, TN * TDIM);
    int rc = ld_data_load(im, LD_SPLIT_TRAIN, 0, &d, &err);
    ASSERT_OK(rc, err);
    check_tiny(d, TN, 0);
    ld_data_free(d);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_idx_folder)
{
    char *dir = tu_mkdtemp(), p[512];
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    write_tiny_images(p, sizeof p, dir, "train-images-idx3-ubyte", 0, TN * TDIM);
    write_tiny_labels(p, sizeof p, dir, "train-labels-idx1-ubyte.gz", 1, TN);
    int rc = ld_data_load(dir, LD_SPLIT_TRAIN, 0, &d, &err);
    ASSERT_OK(rc, err);
    check_tiny(d, TN, 1);
    char want[600];
    snprintf(want, sizeof want, "%s/train", dir);
    ck_assert_str_eq(d->name, want);
    ld_data_free(d);

    rc = ld_data_load(dir, LD_SPLIT_TEST, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_ENOTFOUND, "t10k-images-idx3-ubyte");

    /* A folder of IDX files needs the labels too. */
    write_tiny_images(p, sizeof p, dir, "t10k-images-idx3-ubyte.gz", 1, TN * TDIM);
    rc = ld_data_load(dir, LD_SPLIT_TEST, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_ENOTFOUND, "no t10k-labels-idx1-ubyte[.gz] in the folder");
    tu_rmrf(dir);
    free(dir);

    /* Test files alone still make an IDX folder (not a PNG one). */
    dir = tu_mkdtemp();
    write_tiny_images(p, sizeof p, dir, "t10k-images-idx3-ubyte.gz", 1, TN * TDIM);
    write_tiny_labels(p, sizeof p, dir, "t10k-labels-idx1-ubyte", 0, TN);
    rc = ld_data_load(dir, LD_SPLIT_TEST, 2, &d, &err);
    ASSERT_OK(rc, err);
    check_tiny(d, 2, 1);
    ld_data_free(d);
    rc = ld_data_load(dir, LD_SPLIT_TRAIN, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_ENOTFOUND, "no train-images-idx3-ubyte[.gz] in the folder");
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_idx_bad_magic)
{
    char *dir = tu_mkdtemp(), im[512], lb[512];
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    uint8_t buf[64] = {0}, px[TN * TDIM] = {0};
    const uint32_t dims[3] = {TN, TH, TW};
    snprintf(im, sizeof im, "%s/bad-images", dir);
    write_file(im, buf, make_idx(buf, 0x804, 3, dims, px, sizeof px), 1);
    int rc = ld_data_load_idx(im, NULL, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "bad magic 0x00000804");
    ck_assert_ptr_nonnull(strstr(err.msg, im));

    /* Images and labels swapped. */
    write_tiny_labels(lb, sizeof lb, dir, "l", 0, TN);
    rc = ld_data_load_idx(lb, NULL, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "bad magic 0x00000801");
    write_tiny_images(im, sizeof im, dir, "i", 0, TN * TDIM);
    rc = ld_data_load_idx(im, im, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "bad magic 0x00000803 (expected 0x00000801");

    /* Not IDX at all. */
    snprintf(im, sizeof im, "%s/text", dir);
    write_file(im, "hello, world\n", 13, 0);
    rc = ld_data_load_idx(im, NULL, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "bad magic");
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_idx_truncated)
{
    char *dir = tu_mkdtemp(), im[512];
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    for (int gzip = 0; gzip < 2; gzip++) {
        write_tiny_images(im, sizeof im, dir, "short", gzip, TN * TDIM - 1);
        int rc = ld_data_load_idx(im, NULL, 0, &d, &err);
        ASSERT_ERR(rc, err, LD_EFORMAT,
                   "truncated: expected 18 bytes of data after the header, read 17");
        ck_assert_ptr_nonnull(strstr(err.msg, im));
        /* Checked whatever the limit. */
        rc = ld_data_load_idx(im, NULL, 1, &d, &err);
        ASSERT_ERR(rc, err, LD_EFORMAT, "truncated");
    }
    /* A header cut short. */
    uint8_t buf[64] = {0};
    const uint32_t dims[3] = {TN, TH, TW};
    snprintf(im, sizeof im, "%s/head", dir);
    write_file(im, buf, make_idx(buf, 0x803, 3, dims, buf, 0) - 2, 0);
    int rc = ld_data_load_idx(im, NULL, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "truncated header: 14 of 16 bytes");
    write_file(im, buf, 2, 0);
    rc = ld_data_load_idx(im, NULL, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "truncated header: 2 of 4 magic bytes");

    /* A gzip stream cut in the middle: the compressed bytes of a larger set. */
    enum { BIG = 4000 };
    uint8_t *big = malloc(16 + BIG * 784), *gz;
    for (size_t k = 0; k < (size_t)BIG * 784; k++)
        big[16 + k] = (uint8_t)(k * 2654435761u >> 24);
    const uint32_t bdims[3] = {BIG, 28, 28};
    make_idx(big, 0x803, 3, bdims, big + 16, 0);
    write_file(im, big, 16 + BIG * 784, 1);
    size_t glen;
    FILE *f = fopen(im, "rb");
    gz = malloc(16 + BIG * 784 + 1024);
    glen = fread(gz, 1, 16 + BIG * 784 + 1024, f);
    fclose(f);
    write_file(im, gz, glen / 2, 0);
    rc = ld_data_load_idx(im, NULL, 0, &d, &err);
    ck_assert_msg(rc == LD_EFORMAT, "%s: %s", ld_status_name(rc), err.msg);
    ck_assert_ptr_nonnull(strstr(err.msg, im));
    /* Corrupt the middle of the gzip stream instead. */
    memset(gz + glen / 2, 0x55, 64);
    write_file(im, gz, glen, 0);
    rc = ld_data_load_idx(im, NULL, 0, &d, &err);
    ck_assert_msg(rc == LD_EFORMAT, "%s: %s", ld_status_name(rc), err.msg);
    free(big);
    free(gz);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_idx_trailing)
{
    char *dir = tu_mkdtemp(), im[512], lb[512];
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    for (int gzip = 0; gzip < 2; gzip++) {
        write_tiny_images(im, sizeof im, dir, "long", gzip, TN * TDIM + 1);
        int rc = ld_data_load_idx(im, NULL, 0, &d, &err);
        ASSERT_ERR(rc, err, LD_EFORMAT, "trailing bytes after the 18 bytes");
        rc = ld_data_load_idx(im, NULL, 1, &d, &err);
        ASSERT_ERR(rc, err, LD_EFORMAT, "trailing bytes");
    }
    write_tiny_images(im, sizeof im, dir, "ok", 0, TN * TDIM);
    uint8_t buf[64] = {0};
    uint32_t count = TN;
    snprintf(lb, sizeof lb, "%s/labels", dir);
    uint8_t labels[TN + 1] = {0, 2, 1, 7};
    write_file(lb, buf, make_idx(buf, 0x801, 1, &count, labels, TN + 1), 0);
    int rc = ld_data_load_idx(im, lb, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "trailing bytes");
    ck_assert_ptr_nonnull(strstr(err.msg, lb));
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_idx_label_mismatch)
{
    char *dir = tu_mkdtemp(), im[512], lb[512];
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    write_tiny_images(im, sizeof im, dir, "i", 0, TN * TDIM);
    write_tiny_labels(lb, sizeof lb, dir, "l", 0, TN - 1);
    int rc = ld_data_load_idx(im, lb, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "label count mismatch");
    ck_assert_ptr_nonnull(strstr(err.msg, "has 2 labels but"));
    ck_assert_ptr_nonnull(strstr(err.msg, "has 3 images"));
    /* The limit does not hide it. */
    rc = ld_data_load_idx(im, lb, 2, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "label count mismatch");
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A 16-byte IDX header announcing 2 GiB of images (the most it may) and no
 * data, raw and gzipped: refused as truncated, under a 256 MiB address-space
 * cap (memory follows the data read, not the header). */
static char g_big_idx[2][600];

static int load_big_idx(void *ctx)
{
    const char *path = ctx;
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    int rc = ld_data_load_idx(path, NULL, 0, &d, &err);
    ld_data_free(d);
    if (rc == LD_EFORMAT && strstr(err.msg, "truncated"))
        return 0;
    fprintf(stderr, "load_big_idx: %s: %s\n", ld_status_name(rc), err.msg);
    return rc == LD_ENOMEM ? 1 : 2;
}

START_TEST(test_idx_header_claims_2gib)
{
    char *dir = tu_mkdtemp();
    uint8_t buf[16];
    const uint32_t dims[3] = {32768, 256, 256}; /* 2^31 bytes */
    for (int gz = 0; gz < 2; gz++) {
        snprintf(g_big_idx[gz], sizeof g_big_idx[gz], "%s/big%s", dir, gz ? ".gz" : "");
        write_file(g_big_idx[gz], buf, make_idx(buf, 0x803, 3, dims, buf, 0), gz);
        int rc = tu_run_limited(load_big_idx, g_big_idx[gz], (size_t)256 << 20);
        ck_assert_msg(rc == 0, "%s under a 256 MiB cap: %d (1: out of memory, >= 128: killed)",
                      g_big_idx[gz], rc);
    }
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_idx_bad_dims)
{
    char *dir = tu_mkdtemp(), im[512];
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    uint8_t buf[64] = {0};
    static const struct {
        uint32_t dims[3];
        const char *want;
    } cases[] = {
        {{0, 2, 3}, "zero dimension in header (size 1 of 3 is 0)"},
        {{3, 0, 3}, "zero dimension in header (size 2 of 3 is 0)"},
        {{3, 2, 0}, "zero dimension in header (size 3 of 3 is 0)"},
        {{3, 4097, 3}, "image side 4097 in header exceeds the limit of 4096"},
        {{3, 2, 100000}, "image side 100000 in header exceeds the limit"},
        {{0x80000000u, 2, 3}, "header announces 2147483648 records"},
        {{1000000, 4096, 4096}, "limit 2147483648 bytes"},
    };
    snprintf(im, sizeof im, "%s/dims", dir);
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        write_file(im, buf, make_idx(buf, 0x803, 3, cases[i].dims, buf, 0), 0);
        int rc = ld_data_load_idx(im, NULL, 0, &d, &err);
        ASSERT_ERR(rc, err, LD_EFORMAT, cases[i].want);
    }
    uint32_t zero = 0;
    char lb[512];
    write_tiny_images(im, sizeof im, dir, "i", 0, TN * TDIM);
    snprintf(lb, sizeof lb, "%s/l", dir);
    write_file(lb, buf, make_idx(buf, 0x801, 1, &zero, buf, 0), 0);
    int rc = ld_data_load_idx(im, lb, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "zero dimension");
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_idx_missing)
{
    char *dir = tu_mkdtemp(), p[512], lb[512];
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    snprintf(p, sizeof p, "%s/nope-images-idx3-ubyte.gz", dir);
    int rc = ld_data_load_idx(p, NULL, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_ENOTFOUND, "No such file");
    ck_assert_ptr_nonnull(strstr(err.msg, p));
    rc = ld_data_load(p, LD_SPLIT_TRAIN, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_ENOTFOUND, "nope-images-idx3-ubyte.gz");
    /* Images there, an explicit labels file not. */
    write_tiny_images(p, sizeof p, dir, "i", 0, TN * TDIM);
    snprintf(lb, sizeof lb, "%s/missing-labels", dir);
    rc = ld_data_load_idx(p, lb, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_ENOTFOUND, "missing-labels");
    rc = ld_data_load(NULL, LD_SPLIT_TRAIN, 0, &d, &err);
    ck_assert_int_eq(rc, LD_EINVAL);
    rc = ld_data_load("fashion-mnist", (ld_split_t)7, 0, &d, &err);
    ck_assert_int_eq(rc, LD_EINVAL);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- PNG folders ---------------------------------------------------------- */

/* A w x h gray PNG of the given bytes at dir/name (through ld_png_grid: one
 * tile, no border, values k/255 quantize back to k). */
static void write_png(const char *dir, const char *name, int h, int w, const uint8_t *px)
{
    float *x = malloc((size_t)h * w * sizeof *x);
    for (int k = 0; k < h * w; k++)
        x[k] = (float)px[k] / 255.0f;
    uint8_t *png;
    size_t len;
    ld_err_t err = {""};
    int rc = ld_png_grid(x, 1, h, w, 1, 0, &png, &len, &err);
    ASSERT_OK(rc, err);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_file(path, png, len, 0);
    free(png);
    free(x);
}

START_TEST(test_png_dir)
{
    char *dir = tu_mkdtemp();
    uint8_t px[3][TDIM];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < TDIM; k++)
            px[i][k] = (uint8_t)(100 * i + 30 * k);
    /* Written out of order; sorted by name on load. */
    write_png(dir, "b.png", TH, TW, px[1]);
    write_png(dir, "c.png", TH, TW, px[2]);
    write_png(dir, "a.png", TH, TW, px[0]);
    char p[512];
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    write_file(p, "not an image", 12, 0);
    uint8_t odd[4] = {1, 2, 3, 4};
    write_png(dir, ".hidden.png", 2, 2, odd); /* another size: must be skipped */

    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    int rc = ld_data_load(dir, LD_SPLIT_TEST, 0, &d, &err);
    ASSERT_OK(rc, err);
    ck_assert_int_eq(d->n, 3);
    ck_assert_int_eq(d->h, TH);
    ck_assert_int_eq(d->w, TW);
    ck_assert_int_eq(d->dim, TDIM);
    ck_assert_ptr_null(d->y);
    ck_assert_int_eq(d->n_classes, 0);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < TDIM; k++)
            ck_assert_msg(d->x[i * TDIM + k] == (float)px[i][k] / 255.0f,
                          "image %d pixel %d = %g, want %d/255", i, k, d->x[i * TDIM + k],
                          px[i][k]);
    char want[600];
    snprintf(want, sizeof want, "%s/*.png", dir);
    ck_assert_str_eq(d->name, want);
    ld_data_free(d);

    rc = ld_data_load_png_dir(dir, 2, &d, &err);
    ASSERT_OK(rc, err);
    ck_assert_int_eq(d->n, 2);
    ck_assert_float_eq(d->x[TDIM + 1], (float)px[1][1] / 255.0f);
    ld_data_free(d);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_png_dir_errors)
{
    char *dir = tu_mkdtemp(), p[512];
    ld_dataset_t *d = NULL;
    ld_err_t err = {""};
    int rc = ld_data_load(dir, LD_SPLIT_TRAIN, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_ENOTFOUND, "no *.png files");
    ck_assert_ptr_nonnull(strstr(err.msg, dir));

    uint8_t px[3 * 4] = {0};
    write_png(dir, "a.png", 2, 3, px);
    write_png(dir, "b.png", 2, 3, px);
    write_png(dir, "c.png", 4, 3, px);
    write_png(dir, "d.png", 2, 2, px);
    rc = ld_data_load_png_dir(dir, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_EFORMAT, "same size");
    snprintf(p, sizeof p, "%s/c.png is 3x4 but %s/a.png is 3x2", dir, dir);
    ck_assert_msg(strstr(err.msg, p), "message \"%s\" lacks \"%s\"", err.msg, p);
    /* The limit stops before the odd one. */
    rc = ld_data_load_png_dir(dir, 2, &d, &err);
    ASSERT_OK(rc, err);
    ck_assert_int_eq(d->n, 2);
    ld_data_free(d);

    snprintf(p, sizeof p, "%s/0-broken.png", dir);
    write_file(p, "\x89PNG\r\n\x1a\n garbage", 17, 0);
    rc = ld_data_load_png_dir(dir, 0, &d, &err);
    ck_assert_msg(rc == LD_EFORMAT, "%s: %s", ld_status_name(rc), err.msg);
    ck_assert_msg(strstr(err.msg, p), "message \"%s\" lacks \"%s\"", err.msg, p);

    snprintf(p, sizeof p, "%s/missing", dir);
    rc = ld_data_load_png_dir(p, 0, &d, &err);
    ASSERT_ERR(rc, err, LD_ENOTFOUND, "missing");
    tu_rmrf(dir);
    free(dir);
}
END_TEST

Suite *suite_data(void)
{
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("fashion-mnist");
    tcase_set_timeout(tc, 60); /* whole splits, also under the sanitizers */
    tcase_add_test(tc, test_fashion_train);
    tcase_add_test(tc, test_fashion_test);
    tcase_add_test(tc, test_fashion_forms);
    suite_add_tcase(s, tc);

    tc = tcase_create("idx");
    tcase_add_test(tc, test_idx_raw_and_gzip);
    tcase_add_test(tc, test_idx_folder);
    tcase_add_test(tc, test_idx_bad_magic);
    tcase_add_test(tc, test_idx_truncated);
    tcase_add_test(tc, test_idx_trailing);
    tcase_add_test(tc, test_idx_label_mismatch);
    tcase_add_test(tc, test_idx_bad_dims);
    tcase_add_test(tc, test_idx_header_claims_2gib);
    tcase_add_test(tc, test_idx_missing);
    suite_add_tcase(s, tc);

    tc = tcase_create("png-dir");
    tcase_add_test(tc, test_png_dir);
    tcase_add_test(tc, test_png_dir_errors);
    suite_add_tcase(s, tc);
    return s;
}
