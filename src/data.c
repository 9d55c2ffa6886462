/* data.c — see include/latentd/data.h.
 *
 * IDX (the MNIST format, big-endian): a u32 magic 0x000008DD where DD is the
 * number of dimensions (3 for images, 1 for labels), DD u32 sizes, then the
 * unsigned bytes, nothing after.  Files are read through zlib, which reads
 * gzip and raw files alike.
 *
 * Validation is the same whatever the limit: the whole file is read, so a
 * truncated or over-long file is an error even when only its first images are
 * kept.  Only the kept images are held in memory (as bytes, then floats).
 */
#define _POSIX_C_SOURCE 200809L
#include "latentd/data.h"
#include "latentd/image.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAX_DIMS 3
#define DATA_MAX_SIDE 4096                       /* rows or columns of one image */
#define IDX_MAX_BYTES ((uint64_t)1 << 31)        /* payload a header may announce */
#define PNG_DIR_MAX_PIXELS ((size_t)DATA_MAX_SIDE * DATA_MAX_SIDE)
#define DATA_PATH_MAX 4096
#define GZ_CHUNK (1u << 30)                      /* largest single gzread */
#define IDX_SCRATCH ((size_t)1 << 16)            /* skip buffer for records not kept */
#define IDX_GROW_MIN ((size_t)1 << 20)           /* first size of the kept-records buffer */

/* The kept part of one IDX file. */
typedef struct {
    int ndim;
    uint32_t dims[IDX_MAX_DIMS];  /* dims[0] = records in the file */
    size_t record;                /* bytes per record: product of dims[1..] */
    size_t kept;                  /* records held in data */
    uint8_t *data;                /* (kept, record), malloc'd */
} idx_t;

/* Read up to n bytes; *got says how many came (short only at end of file,
 * including the end of a truncated gzip stream).  Corrupt gzip data is
 * LD_EFORMAT, a failed read() LD_EIO; both name path. */
static int gz_read_upto(gzFile gz, const char *path, void *buf, size_t n, size_t *got,
                        ld_err_t *err)
{
    uint8_t *p = buf;
    *got = 0;
    while (*got < n) {
        size_t want = n - *got < GZ_CHUNK ? n - *got : GZ_CHUNK;
        int r = gzread(gz, p + *got, (unsigned)want);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            return ld_err_set(err, zerr == Z_ERRNO ? LD_EIO : LD_EFORMAT, "%s: read failed: %s",
                              path, zerr == Z_ERRNO ? strerror(errno) : msg);
        }
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return LD_OK;
}

/* Read up to n bytes into a buffer (*out, malloc'd) that grows with what
 * arrives, from IDX_GROW_MIN bytes, doubling: a header that announces more
 * than the file holds costs at most twice the file's real data, not what
 * the header says.  *got as gz_read_upto. */
static int gz_read_grow(gzFile gz, const char *path, size_t n, uint8_t **out, size_t *got,
                        ld_err_t *err)
{
    size_t cap = n < IDX_GROW_MIN ? n : IDX_GROW_MIN, r;
    uint8_t *buf = malloc(cap ? cap : 1);
    int rc = LD_OK;
    *got = 0;
    while (buf && (rc = gz_read_upto(gz, path, buf + *got, cap - *got, &r, err)) == LD_OK) {
        *got += r;
        if (*got < cap || cap == n)
            break; /* end of file, or all of it */
        size_t ncap = cap > n / 2 ? n : 2 * cap;
        uint8_t *nb = realloc(buf, ncap);
        if (!nb)
            free(buf);
        buf = nb;
        cap = ncap;
    }
    if (!buf)
        return ld_err_set(err, LD_ENOMEM, "%s: out of memory after %zu bytes", path, *got);
    if (rc != LD_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    return LD_OK;
}

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Header fields after the magic: check sizes and fill ndim, dims, record. */
static int idx_check_dims(const char *path, idx_t *f, uint64_t *payload, ld_err_t *err)
{
    uint64_t total = 1;
    for (int i = 0; i < f->ndim; i++) {
        if (f->dims[i] == 0)
            return ld_err_set(err, LD_EFORMAT, "%s: zero dimension in header (size %d of %d is 0)",
                              path, i + 1, f->ndim);
        if (i > 0 && f->dims[i] > DATA_MAX_SIDE)
            return ld_err_set(err, LD_EFORMAT,
                              "%s: image side %u in header exceeds the limit of %d", path,
                              f->dims[i], DATA_MAX_SIDE);
        total *= f->dims[i]; /* <= 2^32 * 4096 * 4096: no overflow */
    }
    if (f->dims[0] > INT_MAX || total > IDX_MAX_BYTES)
        return ld_err_set(err, LD_EFORMAT,
                          "%s: header announces %u records, %llu bytes (limit %llu bytes)", path,
                          f->dims[0], (unsigned long long)total,
                          (unsigned long long)IDX_MAX_BYTES);
    f->record = (size_t)(total / f->dims[0]);
    *payload = total;
    return LD_OK;
}

/* Open and read the IDX file at path, whose magic must be magic; keep its first
 * keep records (keep <= 0: all) in f->data.  On error f holds nothing. */
static int idx_read(const char *path, uint32_t magic, int keep, idx_t *f, ld_err_t *err)
{
    memset(f, 0, sizeof *f);
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        int e = errno;
        return ld_err_set(err, e == ENOENT ? LD_ENOTFOUND : LD_EIO, "cannot open %s: %s", path,
                          e ? strerror(e) : "out of memory");
    }
    gzbuffer(gz, 1u << 17);

    uint8_t head[4 + 4 * IDX_MAX_DIMS];
    size_t got, head_len = 4 + 4 * (size_t)(magic & 0xff);
    uint64_t payload = 0;
    uint8_t *data = NULL;
    int rc = gz_read_upto(gz, path, head, 4, &got, err);
    if (rc == LD_OK && got < 4)
        rc = ld_err_set(err, LD_EFORMAT, "%s: truncated header: %zu of 4 magic bytes", path, got);
    if (rc == LD_OK && be32(head) != magic)
        rc = ld_err_set(err, LD_EFORMAT, "%s: bad magic 0x%08x (expected 0x%08x, IDX %s)", path,
                        be32(head), magic, magic == IDX_MAGIC_IMAGES ? "images" : "labels");
    if (rc == LD_OK)
        rc = gz_read_upto(gz, path, head + 4, head_len - 4, &got, err);
    if (rc == LD_OK && got < head_len - 4)
        rc = ld_err_set(err, LD_EFORMAT, "%s: truncated header: %zu of %zu bytes", path, 4 + got,
                        head_len);
    if (rc == LD_OK) {
        f->ndim = (int)(magic & 0xff);
        for (int i = 0; i < f->ndim; i++)
            f->dims[i] = be32(head + 4 + 4 * i);
        rc = idx_check_dims(path, f, &payload, err);
    }
    /* The kept records (memory grows with the data that comes, not with
     * the header's claim), then the rest through a scratch buffer
     * (validated, not kept), then one byte more to prove the file ends
     * where the header says.  A short read means end of file. */
    uint64_t done = 0;
    int eof = 0;
    if (rc == LD_OK) {
        f->kept = keep > 0 && (uint32_t)keep < f->dims[0] ? (size_t)keep : f->dims[0];
        rc = gz_read_grow(gz, path, f->kept * f->record, &data, &got, err);
        done = got;
        eof = got < f->kept * f->record;
    }
    while (rc == LD_OK && !eof && done < payload) {
        uint8_t scratch[IDX_SCRATCH];
        size_t want = payload - done < IDX_SCRATCH ? (size_t)(payload - done) : IDX_SCRATCH;
        rc = gz_read_upto(gz, path, scratch, want, &got, err);
        done += got;
        eof = got < want;
    }
    if (rc == LD_OK && done < payload)
        rc = ld_err_set(err, LD_EFORMAT,
                        "%s: truncated: expected %llu bytes of data after the header, read %llu",
                        path, (unsigned long long)payload, (unsigned long long)done);
    if (rc == LD_OK) {
        uint8_t extra;
        rc = gz_read_upto(gz, path, &extra, 1, &got, err);
        if (rc == LD_OK && got)
            rc = ld_err_set(err, LD_EFORMAT,
                            "%s: trailing bytes after the %llu bytes of data the header announces",
                            path, (unsigned long long)payload);
    }
    gzclose(gz);
    if (rc != LD_OK) {
        free(data);
        memset(f, 0, sizeof *f);
        return rc;
    }
    f->data = data;
    return LD_OK;
}

/* Load an IDX image file and (if labels is not NULL) its labels; name the set. */
static int load_idx(const char *images, const char *labels, int limit, const char *name,
                    ld_dataset_t **out, ld_err_t *err)
{
    idx_t im, lb = {0};
    int rc = idx_read(images, IDX_MAGIC_IMAGES, limit, &im, err);
    if (rc != LD_OK)
        return rc;
    /* All labels are read (they are small) so n_classes describes the whole
     * file, not only the kept prefix. */
    if (labels && (rc = idx_read(labels, IDX_MAGIC_LABELS, 0, &lb, err)) != LD_OK) {
        free(im.data);
        return rc;
    }
    if (labels && lb.dims[0] != im.dims[0]) {
        rc = ld_err_set(err, LD_EFORMAT,
                        "label count mismatch: %s has %u labels but %s has %u images", labels,
                        lb.dims[0], images, im.dims[0]);
        goto done;
    }

    ld_dataset_t *d = ld_calloc(1, sizeof *d);
    float *x = ld_malloc_array(im.kept * im.record, sizeof(float));
    if (!d || !x) {
        free(d);
        free(x);
        rc = ld_err_set(err, LD_ENOMEM, "%s: out of memory for %zu images", images, im.kept);
        goto done;
    }
    d->n = (int)im.kept;
    d->h = (int)im.dims[1];
    d->w = (int)im.dims[2];
    d->dim = d->h * d->w;
    d->x = x;
    for (size_t i = 0; i < im.kept * im.record; i++)
        x[i] = (float)im.data[i] / 255.0f;
    if (labels) {
        uint8_t max = 0;
        for (size_t i = 0; i < lb.kept; i++)
            max = lb.data[i] > max ? lb.data[i] : max;
        d->n_classes = 1 + max;
        /* Keep the label buffer (one byte per label, so values are < 256),
         * trimmed to the kept images; lb.kept == im.dims[0] >= im.kept. */
        uint8_t *y = realloc(lb.data, im.kept);
        d->y = y ? y : lb.data;
        lb.data = NULL;
    }
    snprintf(d->name, sizeof d->name, "%s", name);
    *out = d;
done:
    free(im.data);
    free(lb.data);
    return rc;
}

/* Contract: data.h.  Errors name the file; *out is set only on success. */
int ld_data_load_idx(const char *images, const char *labels, int limit, ld_dataset_t **out,
                     ld_err_t *err)
{
    if (!images || !out)
        return ld_err_set(err, LD_EINVAL, "ld_data_load_idx: images and out are required");
    return load_idx(images, labels, limit, images, out, err);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_png_name(const char *s)
{
    size_t n = strlen(s);
    return s[0] != '.' && n > 4 && strcmp(s + n - 4, ".png") == 0;
}

/* The sorted names of the *.png files in dir: *names (n) malloc'd, each too. */
static int list_pngs(const char *dir, char ***names, size_t *n, ld_err_t *err)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return ld_err_set(err, errno == ENOENT ? LD_ENOTFOUND : LD_EIO, "cannot open folder %s: %s",
                          dir, strerror(errno));
    char **v = NULL;
    size_t len = 0, cap = 0;
    int rc = LD_OK;
    struct dirent *e;
    while (rc == LD_OK && (e = readdir(dp))) {
        if (!is_png_name(e->d_name))
            continue;
        if (len == cap) {
            size_t ncap = cap ? 2 * cap : 64;
            char **nv = realloc(v, ncap * sizeof *v);
            if (!nv) {
                rc = ld_err_set(err, LD_ENOMEM, "%s: out of memory listing files", dir);
                break;
            }
            v = nv;
            cap = ncap;
        }
        if (!(v[len] = strdup(e->d_name)))
            rc = ld_err_set(err, LD_ENOMEM, "%s: out of memory listing files", dir);
        else
            len++;
    }
    closedir(dp);
    if (rc == LD_OK && len == 0)
        rc = ld_err_set(err, LD_ENOTFOUND, "%s: no *.png files in the folder", dir);
    if (rc != LD_OK) {
        for (size_t i = 0; i < len; i++)
            free(v[i]);
        free(v);
        return rc;
    }
    qsort(v, len, sizeof *v, cmp_names);
    *names = v;
    *n = len;
    return LD_OK;
}

static int load_png_classes(const char *dir, int limit, ld_dataset_t **out, ld_err_t *err);

/* Contract: data.h.  Every *.png in dir (names sorted with strcmp, dot-files
 * skipped), converted to gray; all must have the first file's size. */
int ld_data_load_png_dir(const char *dir, int limit, ld_dataset_t **out, ld_err_t *err)
{
    if (!dir || !out)
        return ld_err_set(err, LD_EINVAL, "ld_data_load_png_dir: dir and out are required");
    char **names = NULL;
    size_t count = 0;
    int rc = list_pngs(dir, &names, &count, err);
    if (rc == LD_ENOTFOUND && limit >= 0) { /* no PNGs here: one class per sub-folder? */
        ld_err_t e2;
        if (load_png_classes(dir, limit, out, &e2) == LD_OK)
            return LD_OK;
    }
    if (rc != LD_OK)
        return rc;
    if (count > INT_MAX)
        count = INT_MAX;
    size_t n = limit > 0 && (size_t)limit < count ? (size_t)limit : count;

    ld_dataset_t *d = ld_calloc(1, sizeof *d);
    if (!d)
        rc = ld_err_set(err, LD_ENOMEM, "%s: out of memory", dir);
    char path[DATA_PATH_MAX], first[DATA_PATH_MAX];
    for (size_t i = 0; rc == LD_OK && i < n; i++) {
        float *px;
        int h, w;
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path) {
            rc = ld_err_set(err, LD_EINVAL, "%s/%s: path too long", dir, names[i]);
            break;
        }
        if ((rc = ld_png_decode_file(path, PNG_DIR_MAX_PIXELS, &px, &h, &w, err)) != LD_OK)
            break;
        if (i == 0) {
            memcpy(first, path, sizeof first);
            d->h = h;
            d->w = w;
            d->dim = h * w;
            if (!(d->x = ld_malloc_array(n * (size_t)d->dim, sizeof(float))))
                rc = ld_err_set(err, LD_ENOMEM, "%s: out of memory for %zu images of %dx%d", dir,
                                n, w, h);
        } else if (h != d->h || w != d->w) {
            rc = ld_err_set(err, LD_EFORMAT,
                            "%s is %dx%d but %s is %dx%d: all PNGs in a folder must have the same "
                            "size",
                            path, w, h, first, d->w, d->h);
        }
        if (rc == LD_OK)
            memcpy(d->x + i * (size_t)d->dim, px, (size_t)d->dim * sizeof(float));
        free(px);
    }
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    if (rc != LD_OK) {
        ld_data_free(d);
        return rc;
    }
    d->n = (int)n;
    snprintf(d->name, sizeof d->name, "%s/*.png", dir);
    *out = d;
    return LD_OK;
}

/* Into path: "<dir>/<prefix>-<kind>-ubyte", or the same with ".gz" if only
 * that exists.  Returns 1 if either exists, 0 if neither, -1 if too long. */
static int find_idx_file(const char *dir, const char *prefix, const char *kind, char *path,
                         size_t size)
{
    static const char *const ext[] = {"", ".gz"};
    struct stat st;
    for (size_t i = 0; i < LD_ARRAY_LEN(ext); i++) {
        if (snprintf(path, size, "%s/%s-%s-ubyte%s", dir, prefix, kind, ext[i]) >= (int)size)
            return -1;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            return 1;
    }
    return 0;
}

/* A folder of IDX files: <prefix>-images-idx3-ubyte[.gz] and the labels, both required. */
static int load_idx_dir(const char *dir, const char *prefix, int limit, const char *name,
                        ld_dataset_t **out, ld_err_t *err)
{
    char images[DATA_PATH_MAX], labels[DATA_PATH_MAX];
    int fi = find_idx_file(dir, prefix, "images-idx3", images, sizeof images);
    int fl = find_idx_file(dir, prefix, "labels-idx1", labels, sizeof labels);
    if (fi < 0 || fl < 0)
        return ld_err_set(err, LD_EINVAL, "%s: path too long", dir);
    if (!fi || !fl)
        return ld_err_set(err, LD_ENOTFOUND, "%s: no %s-%s-ubyte[.gz] in the folder", dir, prefix,
                          fi ? "labels-idx1" : "images-idx3");
    return load_idx(images, labels, limit, name, out, err);
}

/* Contract: data.h.  A folder counts as IDX if it holds train or t10k images;
 * then both the images and labels of the requested split must be there. */
int ld_data_load(const char *spec, ld_split_t split, int limit, ld_dataset_t **out, ld_err_t *err)
{
    if (!spec || !out || (split != LD_SPLIT_TRAIN && split != LD_SPLIT_TEST))
        return ld_err_set(err, LD_EINVAL, "ld_data_load: spec, out and a valid split are required");
    const char *prefix = split == LD_SPLIT_TEST ? "t10k" : "train";
    char name[sizeof((ld_dataset_t *)0)->name], probe[DATA_PATH_MAX];
    struct stat st;

    if (strcmp(spec, "fashion-mnist") == 0) {
        snprintf(name, sizeof name, "fashion-mnist/%s", split == LD_SPLIT_TEST ? "test" : "train");
        if (find_idx_file(LD_FASHION_MNIST_DIR, prefix, "images-idx3", probe, sizeof probe) != 1)
            return ld_err_set(err, LD_ENOTFOUND,
                              "Fashion-MNIST not found (%s/%s-images-idx3-ubyte.gz missing): "
                              "install the Debian package dataset-fashion-mnist "
                              "(sudo apt-get install dataset-fashion-mnist)",
                              LD_FASHION_MNIST_DIR, prefix);
        return load_idx_dir(LD_FASHION_MNIST_DIR, prefix, limit, name, out, err);
    }
    if (stat(spec, &st) != 0)
        return ld_err_set(err, errno == ENOENT ? LD_ENOTFOUND : LD_EIO,
                          "data %s: %s (expected \"fashion-mnist\", an IDX file or folder, or a "
                          "folder of PNGs)",
                          spec, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        int train = find_idx_file(spec, "train", "images-idx3", probe, sizeof probe);
        int test = find_idx_file(spec, "t10k", "images-idx3", probe, sizeof probe);
        if (train < 0 || test < 0)
            return ld_err_set(err, LD_EINVAL, "%s: path too long", spec);
        if (!train && !test)
            return ld_data_load_png_dir(spec, limit, out, err);
        snprintf(name, sizeof name, "%s/%s", spec, split == LD_SPLIT_TEST ? "test" : "train");
        return load_idx_dir(spec, prefix, limit, name, out, err);
    }

    /* An IDX image file; labels beside it if the name allows and they exist. */
    const char *base = strrchr(spec, '/');
    base = base ? base + 1 : spec;
    const char *at = strstr(base, "images-idx3");
    int have_labels = 0;
    if (at) {
        size_t pre = (size_t)(at - spec);
        if (snprintf(probe, sizeof probe, "%.*slabels-idx1%s", (int)pre, spec,
                     at + strlen("images-idx3")) >= (int)sizeof probe)
            return ld_err_set(err, LD_EINVAL, "%s: path too long", spec);
        have_labels = stat(probe, &st) == 0 && S_ISREG(st.st_mode);
    }
    return load_idx(spec, have_labels ? probe : NULL, limit, spec, out, err);
}

/* Contract: data.h.  The same choices as ld_data_load, without reading. */
int ld_data_has_labels(const char *spec)
{
    char probe[DATA_PATH_MAX];
    struct stat st;
    if (strcmp(spec, "fashion-mnist") == 0)
        return 1;
    if (stat(spec, &st) != 0)
        return 0;
    if (S_ISDIR(st.st_mode)) /* an IDX folder needs its labels; a PNG folder has none */
        return find_idx_file(spec, "train", "images-idx3", probe, sizeof probe) == 1 ||
               find_idx_file(spec, "t10k", "images-idx3", probe, sizeof probe) == 1;
    const char *base = strrchr(spec, '/');
    const char *at = strstr(base ? base + 1 : spec, "images-idx3");
    return at &&
           snprintf(probe, sizeof probe, "%.*slabels-idx1%s", (int)(at - spec), spec,
                    at + strlen("images-idx3")) < (int)sizeof probe &&
           stat(probe, &st) == 0 && S_ISREG(st.st_mode);
}

/* Contract: data.h.  Accepts NULL. */
void ld_data_free(ld_dataset_t *d)
{
    if (!d)
        return;
    free(d->x);
    free(d->y);
    free(d->classes);
    free(d);
}

/* Each sub-folder of dir (sorted, dot-folders skipped, at most 256) a class
 * of PNGs, labelled by its index and named by its name; limit as
 * ld_data_load_png_dir over all of them. */
static int load_png_classes(const char *dir, int limit, ld_dataset_t **out, ld_err_t *err)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return ld_err_set(err, LD_EIO, "cannot open folder %s", dir);
    char *sub[256];
    int n_sub = 0, rc = LD_OK;
    struct dirent *e;
    char path[DATA_PATH_MAX];
    struct stat st;
    while ((e = readdir(dp)) && n_sub < 256) {
        if (e->d_name[0] == '.' ||
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            stat(path, &st) != 0 || !S_ISDIR(st.st_mode) || strchr(e->d_name, '"') ||
            strchr(e->d_name, '\\') || !(sub[n_sub] = strdup(e->d_name)))
            continue;
        n_sub++;
    }
    closedir(dp);
    qsort(sub, (size_t)n_sub, sizeof *sub, cmp_names);
    ld_dataset_t *d = n_sub > 0 ? ld_calloc(1, sizeof *d) : NULL;
    size_t names_len = 3;
    for (int c = 0; c < n_sub; c++)
        names_len += strlen(sub[c]) + 3;
    if (!d || !(d->classes = malloc(names_len)))
        rc = ld_err_set(err, n_sub ? LD_ENOMEM : LD_ENOTFOUND, "%s: no PNGs or class folders", dir);
    size_t pos = 0;
    for (int c = 0; rc == LD_OK && c < n_sub && (limit <= 0 || d->n < limit); c++) {
        ld_dataset_t *part;
        snprintf(path, sizeof path, "%s/%s", dir, sub[c]);
        /* limit -1: the sub-folder's own PNGs only, no deeper classes */
        if ((rc = ld_data_load_png_dir(path, -1, &part, err)) != LD_OK)
            break;
        int take = limit > 0 && part->n > limit - d->n ? limit - d->n : part->n;
        float *x = d->n && (part->h != d->h || part->w != d->w) ? NULL
                   : realloc(d->x, ((size_t)d->n + (size_t)take) * (size_t)part->dim * sizeof *x);
        uint8_t *y = x ? realloc(d->y, (size_t)d->n + (size_t)take) : NULL;
        if (x)
            d->x = x;
        if (y)
            d->y = y;
        if (!x || !y) {
            rc = ld_err_set(err, x ? LD_ENOMEM : LD_EFORMAT, "%s: class folders of different "
                            "image sizes, or out of memory", path);
        } else {
            d->h = part->h;
            d->w = part->w;
            d->dim = part->dim;
            memcpy(d->x + (size_t)d->n * (size_t)d->dim, part->x,
                   (size_t)take * (size_t)d->dim * sizeof *x);
            memset(d->y + d->n, c, (size_t)take);
            d->n += take;
            d->n_classes = c + 1;
        }
        ld_data_free(part);
    }
    for (int c = 0; c < n_sub; c++) {
        if (rc == LD_OK)
            pos += (size_t)sprintf(d->classes + pos, "%s\"%s\"", c ? "," : "[", sub[c]);
        free(sub[c]);
    }
    if (rc == LD_OK) {
        d->n_classes = n_sub; /* every folder names a class, even one cut by limit */
        strcpy(d->classes + pos, "]");
        snprintf(d->name, sizeof d->name, "%s/*/*.png", dir);
        *out = d;
    } else {
        ld_data_free(d);
    }
    return rc;
}

/* Fashion-MNIST's labels 0..9, as its dataset card names them. */
static const char *const fashion_names[] = {"t-shirt/top", "trouser", "pullover", "dress",
                                            "coat",        "sandal",  "shirt",    "sneaker",
                                            "bag",         "ankle boot"};

const char *ld_data_class_name(const char *data, int n_classes, int k, char *buf, size_t len)
{
    if (n_classes == (int)LD_ARRAY_LEN(fashion_names) && data &&
        strncmp(data, "fashion-mnist", 13) == 0 && k >= 0 && k < n_classes)
        return fashion_names[k];
    snprintf(buf, len, "%d", k);
    return buf;
}

int ld_data_class_names(const ld_dataset_t *d, char *buf, size_t len)
{
    if (!d->y || d->n_classes < 1)
        return 0;
    if (d->classes) /* PNG class folders */
        return snprintf(buf, len, "%s", d->classes) < (int)len ? (int)strlen(buf) : -1;
    size_t pos = 0;
    for (int k = 0; k < d->n_classes; k++) {
        char num[16];
        const char *name = ld_data_class_name(d->name, d->n_classes, k, num, sizeof num);
        int w = snprintf(buf + pos, pos < len ? len - pos : 0, "%s\"%s\"", k ? "," : "[", name);
        pos += w > 0 ? (size_t)w : 0;
        if (pos >= len)
            return -1;
    }
    if (pos + 2 > len)
        return -1;
    memcpy(buf + pos, "]", 2);
    return (int)pos + 1;
}
