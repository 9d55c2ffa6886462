/* ckpt.c — safetensors checkpoints; see include/latentd/ckpt.h.
 *
 * Parsing copies the data section into one 64-byte-aligned float buffer owned
 * by the checkpoint, because file data (and the caller's buffer) may be
 * unaligned.  Floats are stored little-endian in the file and copied as-is, so
 * the host must be little-endian with IEEE-754 binary32 floats.
 *
 * Serialisation is deterministic: tensors in the caller's order with contiguous
 * offsets from 0, "__metadata__" first when present, compact JSON (the same
 * layout the Python safetensors package writes), the header padded with spaces
 * to a multiple of 8 bytes so the data section starts 8-byte aligned.
 */
#define _POSIX_C_SOURCE 200809L
#include "latentd/ckpt.h"

#include "latentd/fsutil.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <inttypes.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "ckpt.c copies little-endian file floats verbatim");
_Static_assert(sizeof(float) == 4 && FLT_MANT_DIG == 24, "ckpt.c needs IEEE-754 binary32 floats");

#define CKPT_ALIGN 64
#define CKPT_MAX_FILE ((size_t)1 << 34) /* 16 GiB: far above any latentd model */
#define META_KEY "__metadata__"
/* Largest integer a JSON number (a double in cJSON) holds exactly: 2^53. */
#define JSON_INT_MAX ((uint64_t)1 << 53)

/* Owned storage behind ld_ckpt_t.priv. */
typedef struct {
    float *data;   /* aligned copy of the data section */
    char *strings; /* metadata keys and values, NUL-separated */
} ckpt_store_t;

/* One tensor entry of a header, as validated. */
typedef struct {
    const char *name; /* points into the cJSON tree */
    int ndim;
    int64_t shape[LD_CKPT_MAX_DIMS];
    uint64_t numel, begin, end;
    ld_dtype_t dtype;
} entry_t;

/* ---- shared helpers ------------------------------------------------------ */

static size_t elem_size(ld_dtype_t dt)
{
    return dt == LD_DTYPE_I64 ? 8 : 4;
}

size_t ld_tensor_bytes(const ld_tensor_view_t *t)
{
    return t->numel * elem_size(t->dtype);
}

/* numel and byte size (numel * 4, or 8 for I64) of a shape; 0 on overflow. */
static int shape_size(const int64_t *shape, int ndim, ld_dtype_t dt, uint64_t *numel,
                      uint64_t *bytes)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && n > UINT64_MAX / d)
            return 0;
        n *= d;
    }
    if (n > UINT64_MAX / 8 || n * elem_size(dt) > SIZE_MAX)
        return 0;
    *numel = n;
    *bytes = n * elem_size(dt);
    return 1;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first name that occurs twice in names[0..n) (reordered), or NULL. */
static const char *find_duplicate(const char **names, size_t n)
{
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_str_ptr);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            return names[i];
    return NULL;
}

/* ---- parse ----------------------------------------------------------------- */

/* A JSON number that is an integer in [0, 2^53].  cJSON keeps only the double,
 * so 4.0 and 4e0 count as 4. */
static int json_uint(const cJSON *j, uint64_t *v)
{
    if (!cJSON_IsNumber(j))
        return 0;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= (double)JSON_INT_MAX) || (double)(uint64_t)d != d)
        return 0;
    *v = (uint64_t)d;
    return 1;
}

static int parse_entry(const cJSON *j, entry_t *e, ld_err_t *err)
{
    const char *name = j->string;
    e->name = name;
    if (!*name)
        return ld_err_set(err, LD_EFORMAT, "a tensor has an empty name");
    if (strlen(name) >= LD_CKPT_NAME_MAX)
        return ld_err_set(err, LD_EFORMAT, "tensor name %.40s... is longer than %d bytes", name,
                          LD_CKPT_NAME_MAX - 1);
    if (!cJSON_IsObject(j))
        return ld_err_set(err, LD_EFORMAT, "tensor %s: entry is not an object", name);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    if (!dtype)
        return ld_err_set(err, LD_EFORMAT, "tensor %s: missing dtype", name);
    if (!cJSON_IsString(dtype))
        return ld_err_set(err, LD_EFORMAT, "tensor %s: dtype is not a string", name);
    if (strcmp(dtype->valuestring, "F32") && strcmp(dtype->valuestring, "I64"))
        return ld_err_set(err, LD_EFORMAT,
                          "tensor %s has dtype %.32s; latentd reads F32 and I64 only", name,
                          dtype->valuestring);
    e->dtype = strcmp(dtype->valuestring, "I64") ? LD_DTYPE_F32 : LD_DTYPE_I64;

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    if (!cJSON_IsArray(shape))
        return ld_err_set(err, LD_EFORMAT, "tensor %s: shape is missing or not an array", name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > LD_CKPT_MAX_DIMS)
        return ld_err_set(err, LD_EFORMAT, "tensor %s: shape has %d dimensions; at most %d supported",
                          name, ndim, LD_CKPT_MAX_DIMS);
    e->ndim = ndim;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        uint64_t v;
        if (!json_uint(d, &v))
            return ld_err_set(err, LD_EFORMAT,
                              "tensor %s: shape[%d] is not an integer in [0, 2^53]", name, i);
        e->shape[i++] = (int64_t)v;
    }

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return ld_err_set(err, LD_EFORMAT, "tensor %s: data_offsets must be [begin, end]", name);
    if (!json_uint(offs->child, &e->begin) || !json_uint(offs->child->next, &e->end))
        return ld_err_set(err, LD_EFORMAT,
                          "tensor %s: data_offsets are not integers in [0, 2^53]", name);
    if (e->begin > e->end)
        return ld_err_set(err, LD_EFORMAT,
                          "tensor %s: data_offsets begin %" PRIu64 " > end %" PRIu64, name,
                          e->begin, e->end);

    uint64_t bytes;
    if (!shape_size(e->shape, ndim, e->dtype, &e->numel, &bytes))
        return ld_err_set(err, LD_EFORMAT, "tensor %s: shape is too large (element count overflows)",
                          name);
    if (bytes != e->end - e->begin)
        return ld_err_set(err, LD_EFORMAT,
                          "tensor %s: shape needs %" PRIu64 " bytes but data_offsets span %" PRIu64,
                          name, bytes, e->end - e->begin);
    return LD_OK;
}

/* Validate "__metadata__"; sets *n and the bytes its strings need (with NULs). */
static int check_meta(const cJSON *m, int *n, size_t *str_bytes, ld_err_t *err)
{
    if (!cJSON_IsObject(m))
        return ld_err_set(err, LD_EFORMAT, META_KEY " is not an object");
    int count = cJSON_GetArraySize(m);
    const char **keys = ld_calloc((size_t)count, sizeof *keys);
    if (!keys)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    int rc = LD_OK;
    size_t bytes = 0, i = 0;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, m) {
        if (!cJSON_IsString(kv)) {
            rc = ld_err_set(err, LD_EFORMAT, META_KEY " value for key %.128s is not a string",
                            kv->string);
            goto done;
        }
        keys[i++] = kv->string;
        bytes += strlen(kv->string) + strlen(kv->valuestring) + 2;
    }
    const char *dup = find_duplicate(keys, i);
    if (dup) {
        rc = ld_err_set(err, LD_EFORMAT, META_KEY " key %.128s appears twice", dup);
        goto done;
    }
    *n = count;
    *str_bytes = bytes;
done:
    free(keys);
    return rc;
}

static int cmp_entry_offset(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) /* an empty tensor sorts before a non-empty one at the same offset */
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Sort e by offset and check the ranges tile [0, data_len) exactly. */
static int check_ranges(entry_t *e, int n, uint64_t data_len, ld_err_t *err)
{
    if (n > 1)
        qsort(e, (size_t)n, sizeof *e, cmp_entry_offset);
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (e[i].begin > pos && i == 0)
            return ld_err_set(err, LD_EFORMAT,
                              "gap of %" PRIu64 " bytes before tensor %s at the start of the data",
                              e[i].begin, e[i].name);
        if (e[i].begin > pos)
            return ld_err_set(err, LD_EFORMAT,
                              "gap between tensor %s (ends at %" PRIu64 ") and tensor %s (begins at %" PRIu64 ")",
                              e[i - 1].name, pos, e[i].name, e[i].begin);
        if (e[i].begin < pos)
            return ld_err_set(err, LD_EFORMAT,
                              "tensor %s [%" PRIu64 ", %" PRIu64 ") overlaps tensor %s [%" PRIu64 ", %" PRIu64 ")",
                              e[i].name, e[i].begin, e[i].end, e[i - 1].name, e[i - 1].begin,
                              e[i - 1].end);
        pos = e[i].end;
    }
    if (pos < data_len)
        return ld_err_set(err, LD_EFORMAT, "%" PRIu64 " trailing bytes after the last tensor",
                          data_len - pos);
    if (pos > data_len)
        return ld_err_set(err, LD_EFORMAT,
                          "data section is truncated: tensors need %" PRIu64 " bytes, file has %" PRIu64,
                          pos, data_len);
    return LD_OK;
}

/* Build the checkpoint from validated entries (sorted by offset), the
 * metadata object (or NULL) and the data section. */
static int build_ckpt(const entry_t *e, int n, const cJSON *meta, int n_meta, size_t str_bytes,
                      const uint8_t *data, size_t data_len, ld_ckpt_t **out, ld_err_t *err)
{
    ld_ckpt_t *c = calloc(1, sizeof *c);
    ckpt_store_t *s = calloc(1, sizeof *s);
    if (!c || !s) {
        free(s);
        free(c);
        c = NULL;
        goto oom;
    }
    c->priv = s;
    c->tensors = ld_calloc((size_t)n, sizeof *c->tensors);
    c->meta = ld_calloc((size_t)n_meta, sizeof *c->meta);
    s->strings = malloc(str_bytes ? str_bytes : 1);
    /* aligned_alloc wants a size that is a multiple of the alignment */
    s->data = aligned_alloc(CKPT_ALIGN, (data_len + CKPT_ALIGN) & ~(size_t)(CKPT_ALIGN - 1));
    if (!c->tensors || !c->meta || !s->strings || !s->data)
        goto oom;

    if (data_len)
        memcpy(s->data, data, data_len);
    c->n_tensors = n;
    for (int i = 0; i < n; i++) {
        ld_tensor_view_t *t = &c->tensors[i];
        strcpy(t->name, e[i].name); /* length checked in parse_entry */
        t->ndim = e[i].ndim;
        memcpy(t->shape, e[i].shape, sizeof t->shape);
        t->numel = (size_t)e[i].numel;
        t->dtype = e[i].dtype;
        t->data = s->data + e[i].begin / sizeof(float);
    }
    char *p = s->strings;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta) {
        ld_kv_t *m = &c->meta[c->n_meta++];
        size_t kl = strlen(kv->string) + 1, vl = strlen(kv->valuestring) + 1;
        m->key = memcpy(p, kv->string, kl);
        m->value = memcpy(p + kl, kv->valuestring, vl);
        p += kl + vl;
    }
    LD_ASSERT(c->n_meta == n_meta);
    *out = c;
    return LD_OK;
oom:
    ld_ckpt_free(c);
    return ld_err_set(err, LD_ENOMEM, "out of memory loading checkpoint (%zu data bytes)", data_len);
}

/* Validate the parsed header root against a data section of data_len bytes
 * and build the checkpoint. */
static int parse_header(const cJSON *root, const uint8_t *data, size_t data_len, ld_ckpt_t **out,
                        ld_err_t *err)
{
    if (!cJSON_IsObject(root))
        return ld_err_set(err, LD_EFORMAT, "header is not a JSON object");
    int n_keys = cJSON_GetArraySize(root);
    entry_t *e = ld_calloc((size_t)n_keys, sizeof *e);
    const char **keys = ld_calloc((size_t)n_keys, sizeof *keys);
    if (!e || !keys) {
        free(e);
        free(keys);
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    }
    int rc = LD_OK, n = 0, n_meta = 0, k = 0;
    size_t str_bytes = 0;
    const cJSON *j, *meta = NULL;
    /* cJSON keeps duplicate keys; a second copy of a name must not go unnoticed. */
    cJSON_ArrayForEach(j, root)
        keys[k++] = j->string;
    const char *dup = find_duplicate(keys, (size_t)k);
    if (dup) {
        rc = ld_err_set(err, LD_EFORMAT, "key %.128s appears twice in the header", dup);
        goto done;
    }
    cJSON_ArrayForEach(j, root) {
        if (strcmp(j->string, META_KEY) == 0) {
            meta = j;
            rc = check_meta(j, &n_meta, &str_bytes, err);
        } else {
            rc = parse_entry(j, &e[n++], err);
        }
        if (rc != LD_OK)
            goto done;
    }
    rc = check_ranges(e, n, data_len, err);
    if (rc == LD_OK)
        rc = build_ckpt(e, n, meta, n_meta, str_bytes, data, data_len, out, err);
done:
    free(e);
    free(keys);
    return rc;
}

/* Parse and validate the safetensors image buf[0..len) (not retained; the
 * data is copied into aligned storage).  On LD_OK *out is a new checkpoint the
 * caller frees with ld_ckpt_free, tensors ordered by data offset.  Every
 * malformation is LD_EFORMAT with a message naming the tensor or the problem;
 * LD_ENOMEM on allocation failure.  Thread-safe, except that cJSON records a
 * failed parse in a global (never read here).  Memory: the cJSON tree of a
 * hostile header can take ~40x its size (~640 MB at LD_CKPT_MAX_HEADER). */
int ld_ckpt_parse(const void *buf, size_t len, ld_ckpt_t **out, ld_err_t *err)
{
    LD_ASSERT(out);
    *out = NULL;
    const uint8_t *b = buf;
    if (len < 8)
        return ld_err_set(err, LD_EFORMAT, "file is %zu bytes, shorter than 8 bytes", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | b[i];
    /* The length's value stays out of these messages: for a file that is not
     * a checkpoint it is the file's first 8 bytes, which must not be echoed. */
    if (hlen > LD_CKPT_MAX_HEADER)
        return ld_err_set(err, LD_EFORMAT,
                          "header length exceeds the limit of %u bytes (not a safetensors file?)",
                          LD_CKPT_MAX_HEADER);
    if (hlen > len - 8)
        return ld_err_set(err, LD_EFORMAT,
                          "header length runs past the end of the file (%zu bytes)", len);

    /* A NUL-terminated copy keeps cJSON from reading past the header. */
    char *text = malloc((size_t)hlen + 1);
    if (!text)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    memcpy(text, b + 8, (size_t)hlen);
    text[hlen] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &end, 0);
    int rc;
    if (!root) {
        size_t at = end ? (size_t)(end - text) : 0;
        rc = ld_err_set(err, LD_EFORMAT, "header is not valid JSON (error near byte %zu)", at);
    } else if (strspn(end, " \t\r\n") != (size_t)(text + hlen - end)) {
        /* safetensors pads the header with spaces; anything else after the
         * object (a NUL included: strspn stops there) is an error */
        rc = ld_err_set(err, LD_EFORMAT, "unexpected bytes after the JSON header at byte %zu",
                        (size_t)(end - text));
    } else {
        rc = parse_header(root, b + 8 + hlen, len - 8 - (size_t)hlen, out, err);
    }
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* Read path whole and parse it; error messages are prefixed with path.
 * Ownership and errors as ld_ckpt_parse, plus those of ld_read_file
 * (LD_ENOTFOUND, LD_EIO, ...).  Thread-safe. */
int ld_ckpt_read(const char *path, ld_ckpt_t **out, ld_err_t *err)
{
    LD_ASSERT(out);
    *out = NULL;
    uint8_t *buf;
    size_t len;
    int rc = ld_read_file(path, CKPT_MAX_FILE, &buf, &len, err);
    if (rc != LD_OK)
        return rc;
    ld_err_t perr;
    rc = ld_ckpt_parse(buf, len, out, &perr);
    free(buf);
    if (rc != LD_OK)
        return ld_err_set(err, rc, "%s: %s", path, perr.msg);
    return LD_OK;
}

/* Free c and everything it owns (tensor data, metadata strings).  NULL is fine. */
void ld_ckpt_free(ld_ckpt_t *c)
{
    if (!c)
        return;
    ckpt_store_t *s = c->priv;
    if (s) {
        free(s->data);
        free(s->strings);
        free(s);
    }
    free(c->tensors);
    free(c->meta);
    free(c);
}

/* The tensor called name, or NULL.  Linear scan; the pointer lives as long as c. */
const ld_tensor_view_t *ld_ckpt_find(const ld_ckpt_t *c, const char *name)
{
    for (int i = 0; c && name && i < c->n_tensors; i++)
        if (strcmp(c->tensors[i].name, name) == 0)
            return &c->tensors[i];
    return NULL;
}

/* The metadata value for key, or NULL.  The string lives as long as c. */
const char *ld_ckpt_meta(const ld_ckpt_t *c, const char *key)
{
    for (int i = 0; c && key && i < c->n_meta; i++)
        if (strcmp(c->meta[i].key, key) == 0)
            return c->meta[i].value;
    return NULL;
}

/* ---- serialise ------------------------------------------------------------- */

/* A growable byte buffer; on allocation failure it sets oom and stops growing. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf_t;

static void sb_put(sbuf_t *sb, const char *s, size_t n)
{
    if (sb->oom)
        return;
    if (sb->len + n > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->len + n)
            cap *= 2;
        char *p = realloc(sb->p, cap);
        if (!p) {
            sb->oom = 1;
            return;
        }
        sb->p = p;
        sb->cap = cap;
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
}

static void sb_puts(sbuf_t *sb, const char *s)
{
    sb_put(sb, s, strlen(s));
}

static void sb_put_u64(sbuf_t *sb, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    sb_put(sb, tmp, (size_t)n);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped,
 * everything else (UTF-8 included) copied byte for byte. */
static void sb_put_json_str(sbuf_t *sb, const char *s)
{
    sb_puts(sb, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[8];
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            sb_put(sb, esc, 2);
        } else if (ch < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            sb_put(sb, esc, 6);
        } else {
            sb_put(sb, (const char *)&ch, 1);
        }
    }
    sb_puts(sb, "\"");
}

/* Check the caller's tensors and metadata describe a file ld_ckpt_parse
 * accepts; sets *data_len to the data section size. */
static int check_views(const ld_tensor_view_t *t, int n, const ld_kv_t *meta, int n_meta,
                       uint64_t *data_len, ld_err_t *err)
{
    if (n < 0 || n_meta < 0 || (n > 0 && !t) || (n_meta > 0 && !meta))
        return ld_err_set(err, LD_EINVAL, "ckpt_serialize: bad arguments");
    size_t n_names = (size_t)(n > n_meta ? n : n_meta);
    const char **names = ld_calloc(n_names, sizeof *names);
    if (!names)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    int rc = LD_OK;
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        const ld_tensor_view_t *v = &t[i];
        uint64_t numel, bytes;
        if (!memchr(v->name, 0, sizeof v->name) || !v->name[0] || !strcmp(v->name, META_KEY)) {
            rc = ld_err_set(err, LD_EINVAL, "tensor %d: name is empty, unterminated or reserved", i);
            goto done;
        }
        names[i] = v->name;
        int ok = v->ndim >= 0 && v->ndim <= LD_CKPT_MAX_DIMS;
        for (int d = 0; ok && d < v->ndim; d++)
            ok = v->shape[d] >= 0 && (uint64_t)v->shape[d] <= JSON_INT_MAX;
        if (!ok || (v->dtype != LD_DTYPE_F32 && v->dtype != LD_DTYPE_I64) ||
            !shape_size(v->shape, v->ndim, v->dtype, &numel, &bytes) || numel != v->numel) {
            rc = ld_err_set(err, LD_EINVAL, "tensor %s: bad shape or numel %zu does not match it",
                            v->name, v->numel);
            goto done;
        }
        if (bytes && !v->data) {
            rc = ld_err_set(err, LD_EINVAL, "tensor %s: data is NULL", v->name);
            goto done;
        }
        total += bytes;
        if (total > JSON_INT_MAX) {
            rc = ld_err_set(err, LD_EINVAL, "tensor %s: checkpoint too large", v->name);
            goto done;
        }
    }
    const char *dup = find_duplicate(names, (size_t)n);
    if (dup) {
        rc = ld_err_set(err, LD_EINVAL, "tensor %s appears twice", dup);
        goto done;
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value) {
            rc = ld_err_set(err, LD_EINVAL, "metadata entry %d has a NULL key or value", i);
            goto done;
        }
        names[i] = meta[i].key;
    }
    dup = find_duplicate(names, (size_t)n_meta);
    if (dup) {
        rc = ld_err_set(err, LD_EINVAL, "metadata key %.128s appears twice", dup);
        goto done;
    }
    *data_len = total;
done:
    free(names);
    return rc;
}

/* The 8-byte length plus the padded JSON header: a malloc'd *out of *len bytes. */
static int build_header(const ld_tensor_view_t *t, int n, const ld_kv_t *meta, int n_meta,
                        uint8_t **out, size_t *len, uint64_t *data_len, ld_err_t *err)
{
    int rc = check_views(t, n, meta, n_meta, data_len, err);
    if (rc != LD_OK)
        return rc;
    sbuf_t sb = {0};
    sb_put(&sb, "\0\0\0\0\0\0\0\0", 8); /* length, filled in below */
    sb_puts(&sb, "{");
    if (n_meta > 0) {
        sb_puts(&sb, "\"" META_KEY "\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i)
                sb_puts(&sb, ",");
            sb_put_json_str(&sb, meta[i].key);
            sb_puts(&sb, ":");
            sb_put_json_str(&sb, meta[i].value);
        }
        sb_puts(&sb, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (i || n_meta > 0)
            sb_puts(&sb, ",");
        sb_put_json_str(&sb, t[i].name);
        sb_puts(&sb, t[i].dtype == LD_DTYPE_I64 ? ":{\"dtype\":\"I64\",\"shape\":["
                                                : ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            if (d)
                sb_puts(&sb, ",");
            sb_put_u64(&sb, (uint64_t)t[i].shape[d]);
        }
        sb_puts(&sb, "],\"data_offsets\":[");
        sb_put_u64(&sb, off);
        sb_puts(&sb, ",");
        off += (uint64_t)ld_tensor_bytes(&t[i]);
        sb_put_u64(&sb, off);
        sb_puts(&sb, "]}");
    }
    sb_puts(&sb, "}");
    while (sb.len % 8)
        sb_puts(&sb, " ");
    if (sb.oom) {
        free(sb.p);
        return ld_err_set(err, LD_ENOMEM, "out of memory serialising checkpoint header");
    }
    uint64_t hlen = sb.len - 8;
    if (hlen > LD_CKPT_MAX_HEADER) {
        free(sb.p);
        return ld_err_set(err, LD_EINVAL, "checkpoint header is %" PRIu64 " bytes; the limit is %u",
                          hlen, LD_CKPT_MAX_HEADER);
    }
    for (int i = 0; i < 8; i++)
        sb.p[i] = (char)(hlen >> (8 * i));
    *out = (uint8_t *)sb.p;
    *len = sb.len;
    return LD_OK;
}

/* Serialise tensors t[0..n) (in that order, contiguous offsets) and metadata
 * meta[0..n_meta) (in that order) into a safetensors image.  The bytes depend
 * only on the inputs.  On LD_OK *out is malloc'd (caller frees), *len bytes.
 * LD_EINVAL for inputs that would not read back (duplicate or reserved names,
 * shape/numel mismatch, NULL data, ...), LD_ENOMEM.  Thread-safe. */
int ld_ckpt_serialize(const ld_tensor_view_t *t, int n, const ld_kv_t *meta, int n_meta,
                      uint8_t **out, size_t *len, ld_err_t *err)
{
    LD_ASSERT(out && len);
    *out = NULL;
    *len = 0;
    uint8_t *hdr;
    size_t hdr_len;
    uint64_t data_len;
    int rc = build_header(t, n, meta, n_meta, &hdr, &hdr_len, &data_len, err);
    if (rc != LD_OK)
        return rc;
    if (data_len > SIZE_MAX - hdr_len) {
        free(hdr);
        return ld_err_set(err, LD_ENOMEM, "checkpoint too large for memory");
    }
    uint8_t *buf = realloc(hdr, hdr_len + (size_t)data_len);
    if (!buf) {
        free(hdr);
        return ld_err_set(err, LD_ENOMEM, "out of memory serialising checkpoint");
    }
    size_t pos = hdr_len;
    for (int i = 0; i < n; i++) {
        size_t bytes = ld_tensor_bytes(&t[i]);
        if (bytes)
            memcpy(buf + pos, t[i].data, bytes);
        pos += bytes;
    }
    *out = buf;
    *len = pos;
    return LD_OK;
}

/* Serialise as ld_ckpt_serialize and write path atomically (ld_write_atomic_iov:
 * the tensor data is written from the caller's buffers, not copied).  Errors of
 * either; write errors name path.  Thread-safe for distinct or equal paths. */
int ld_ckpt_write(const char *path, const ld_tensor_view_t *t, int n, const ld_kv_t *meta,
                  int n_meta, ld_err_t *err)
{
    uint8_t *hdr;
    size_t hdr_len;
    uint64_t data_len;
    int rc = build_header(t, n, meta, n_meta, &hdr, &hdr_len, &data_len, err);
    if (rc != LD_OK)
        return rc;
    struct iovec *iov = ld_calloc((size_t)n + 1, sizeof *iov);
    if (!iov) {
        free(hdr);
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    }
    iov[0].iov_base = hdr;
    iov[0].iov_len = hdr_len;
    for (int i = 0; i < n; i++) {
        iov[i + 1].iov_base = (void *)t[i].data;
        iov[i + 1].iov_len = ld_tensor_bytes(&t[i]);
    }
    rc = ld_write_atomic_iov(path, iov, n + 1, err);
    free(iov);
    free(hdr);
    return rc;
}
