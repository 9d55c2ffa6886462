/* check_ckpt.c — safetensors round trips, exact bytes, every validation rule,
 * truncation at every length and header fuzzing. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include "latentd/ckpt.h"

#include <float.h>
#include <stdint.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------- */

/* A safetensors image: u64 LE header length, json padded with spaces to a
 * multiple of 8 (as the Python package writes it), then data (NULL: zeros). */
static uint8_t *make_file(const char *json, const void *data, size_t dlen, size_t *len)
{
    size_t jl = strlen(json), hl = (jl + 7) / 8 * 8;
    uint8_t *b = calloc(1, 8 + hl + dlen + 1);
    ck_assert_ptr_nonnull(b);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, jl);
    memset(b + 8 + jl, ' ', hl - jl);
    if (data)
        memcpy(b + 8 + hl, data, dlen);
    *len = 8 + hl + dlen;
    return b;
}

static uint64_t header_len(const uint8_t *b)
{
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | b[i];
    return h;
}

/* Parse b[0..len) from an exact-size heap copy (so ASan sees any overread). */
static int parse_exact(const uint8_t *b, size_t len, ld_ckpt_t **c, ld_err_t *err)
{
    uint8_t *copy = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(copy);
    if (len)
        memcpy(copy, b, len);
    int rc = ld_ckpt_parse(len ? copy : NULL, len, c, err);
    free(copy);
    return rc;
}

static void expect_reject_buf(const uint8_t *b, size_t len, const char *want, const char *what)
{
    ld_ckpt_t *c = (ld_ckpt_t *)&c; /* poison: must be reset to NULL */
    ld_err_t err = {{0}};
    int rc = parse_exact(b, len, &c, &err);
    ck_assert_msg(rc == LD_EFORMAT, "%s: accepted (rc %d)", what, rc);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err.msg, want), "%s: message \"%s\" lacks \"%s\"", what, err.msg, want);
}

static void expect_reject(const char *json, size_t dlen, const char *want)
{
    size_t len;
    uint8_t *b = make_file(json, NULL, dlen, &len);
    expect_reject_buf(b, len, want, json);
    free(b);
}

static ld_tensor_view_t view(const char *name, int ndim, const int64_t *shape, const float *data)
{
    ld_tensor_view_t t = {.ndim = ndim, .data = data, .numel = 1};
    snprintf(t.name, sizeof t.name, "%s", name);
    for (int i = 0; i < ndim; i++) {
        t.shape[i] = shape[i];
        t.numel *= (size_t)shape[i];
    }
    return t;
}

static void assert_same_tensor(const ld_tensor_view_t *a, const ld_tensor_view_t *b)
{
    ck_assert_str_eq(a->name, b->name);
    ck_assert_int_eq(a->ndim, b->ndim);
    for (int i = 0; i < a->ndim; i++)
        ck_assert_int_eq(a->shape[i], b->shape[i]);
    ck_assert_uint_eq(a->numel, b->numel);
    /* bit-exact: -0.0, denormals, infinities and NaN compare as bytes */
    ck_assert_msg(a->numel == 0 || memcmp(a->data, b->data, a->numel * sizeof(float)) == 0,
                  "tensor %s: data differs", a->name);
}

static uint8_t *serialize_ok(const ld_tensor_view_t *t, int n, const ld_kv_t *m, int nm,
                             size_t *len)
{
    uint8_t *out;
    ld_err_t err;
    int rc = ld_ckpt_serialize(t, n, m, nm, &out, len, &err);
    ck_assert_msg(rc == LD_OK, "serialize: %s", err.msg);
    return out;
}

static ld_ckpt_t *parse_ok(const uint8_t *b, size_t len)
{
    ld_ckpt_t *c;
    ld_err_t err;
    int rc = parse_exact(b, len, &c, &err);
    ck_assert_msg(rc == LD_OK, "parse: %s", err.msg);
    return c;
}

/* A small checkpoint used by several tests. */
static const float fw[6] = {1, 2, 3, 4, 5, 6}, fb[3] = {-1, 0.5f, 0.25f};
static const int64_t shw[2] = {2, 3}, shb[1] = {3};
static uint8_t *small_file(size_t *len)
{
    ld_tensor_view_t t[2] = {view("a.bias", 1, shb, fb), view("a.weight", 2, shw, fw)};
    ld_kv_t meta[1] = {{"format", "pt"}};
    return serialize_ok(t, 2, meta, 1, len);
}

/* ---- round trips and exact bytes ------------------------------------------ */

START_TEST(test_round_trip_bit_exact)
{
    float special[12] = {-0.0f, 0.0f, FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-40f, FLT_MIN,
                         FLT_MAX, -FLT_MAX, INFINITY, -INFINITY, NAN, 1.0f / 3.0f};
    float scalar = -0.0f, deep[4] = {1e-45f, -2.5f, 3e38f, -7e-39f};
    int64_t s_special[2] = {3, 4}, s_empty[2] = {0, 5}, s_deep[4] = {1, 2, 1, 2};
    ld_tensor_view_t t[4] = {
        view("enc.w", 2, s_special, special),
        view("scalar", 0, NULL, &scalar),
        view("empty", 2, s_empty, NULL),
        view("we\"ird\\name\n\xc3\xa9/\x01", 4, s_deep, deep),
    };
    size_t len1, len2, len3;
    uint8_t *b1 = serialize_ok(t, 4, NULL, 0, &len1);
    uint8_t *b2 = serialize_ok(t, 4, NULL, 0, &len2);
    ck_assert(len1 == len2 && memcmp(b1, b2, len1) == 0); /* deterministic */

    /* parse from an odd address: the data must still come out aligned */
    uint8_t *odd = malloc(len1 + 1);
    memcpy(odd + 1, b1, len1);
    ld_ckpt_t *c;
    ld_err_t err;
    ck_assert_int_eq(ld_ckpt_parse(odd + 1, len1, &c, &err), LD_OK);
    free(odd);
    ck_assert_int_eq(c->n_tensors, 4);
    ck_assert_int_eq(c->n_meta, 0);
    for (int i = 0; i < 4; i++) {
        assert_same_tensor(&c->tensors[i], &t[i]);
        ck_assert_uint_eq((uintptr_t)c->tensors[i].data % sizeof(float), 0);
        ck_assert_ptr_eq(ld_ckpt_find(c, t[i].name), &c->tensors[i]);
    }
    ck_assert_uint_eq((uintptr_t)c->tensors[0].data % 64, 0);
    ck_assert_ptr_null(ld_ckpt_find(c, "enc"));

    /* serialize(parse(x)) == x */
    uint8_t *b3 = serialize_ok(c->tensors, c->n_tensors, c->meta, c->n_meta, &len3);
    ck_assert_uint_eq(len3, len1);
    ck_assert(memcmp(b1, b3, len1) == 0);

    /* header padded with spaces to a multiple of 8 */
    uint64_t hl = header_len(b1);
    ck_assert_uint_eq(hl % 8, 0);
    ck_assert_uint_eq(len1, 8 + hl + sizeof special + sizeof scalar + sizeof deep);
    size_t spaces = 0;
    while (b1[8 + hl - 1 - spaces] == ' ')
        spaces++;
    ck_assert_uint_lt(spaces, 8);
    ck_assert_int_eq(b1[8 + hl - 1 - spaces], '}');
    ld_ckpt_free(c);
    free(b1);
    free(b2);
    free(b3);
}
END_TEST

START_TEST(test_metadata_round_trip)
{
    float x[2] = {1, 2};
    int64_t s[1] = {2};
    ld_tensor_view_t t[1] = {view("x", 1, s, x)};
    ld_kv_t meta[3] = {{"format", "pt"}, {"note", "quote \" backslash \\ tab\t caf\xc3\xa9"}, {"empty", ""}};
    size_t len, len2;
    uint8_t *b = serialize_ok(t, 1, meta, 3, &len);
    ck_assert(memcmp(b + 8, "{\"__metadata__\":{", 17) == 0); /* metadata first */
    ld_ckpt_t *c = parse_ok(b, len);
    ck_assert_int_eq(c->n_meta, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_str_eq(c->meta[i].key, meta[i].key);
        ck_assert_str_eq(c->meta[i].value, meta[i].value);
        ck_assert_str_eq(ld_ckpt_meta(c, meta[i].key), meta[i].value);
    }
    ck_assert_ptr_null(ld_ckpt_meta(c, "absent"));
    ck_assert_ptr_null(ld_ckpt_meta(c, "Format")); /* case-sensitive */
    uint8_t *b2 = serialize_ok(c->tensors, c->n_tensors, c->meta, c->n_meta, &len2);
    ck_assert(len == len2 && memcmp(b, b2, len) == 0);
    free(b2);
    ld_ckpt_free(c);
    free(b);

    /* no metadata: no "__metadata__" key at all */
    b = serialize_ok(t, 1, NULL, 0, &len);
    ck_assert(memcmp(b + 8, "{\"x\":", 5) == 0);
    free(b);
}
END_TEST

/* Exactly what the Python safetensors package writes for
 * save_file({"a.weight": torch.ones(2,3), "a.bias": ...}, metadata={"format":"pt"}):
 * compact JSON, metadata first, tensors sorted by name, spaces to 8 bytes. */
#define TORCH_HEADER                                                                 \
    "{\"__metadata__\":{\"format\":\"pt\"},"                                         \
    "\"a.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"          \
    "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[12,36]}}"

START_TEST(test_pytorch_file_parses)
{
    float data[9];
    memcpy(data, fb, sizeof fb);
    memcpy(data + 3, fw, sizeof fw);
    size_t len;
    uint8_t *b = make_file(TORCH_HEADER, data, sizeof data, &len);
    ck_assert_uint_eq(header_len(b) % 8, 0);
    ck_assert_uint_gt(header_len(b), strlen(TORCH_HEADER)); /* padding is exercised */
    ld_ckpt_t *c = parse_ok(b, len);
    ck_assert_int_eq(c->n_tensors, 2);
    ck_assert_str_eq(ld_ckpt_meta(c, "format"), "pt");
    const ld_tensor_view_t *w = ld_ckpt_find(c, "a.weight"), *bias = ld_ckpt_find(c, "a.bias");
    ck_assert_ptr_nonnull(w);
    ck_assert_ptr_nonnull(bias);
    ck_assert_int_eq(w->ndim, 2);
    ck_assert_int_eq(w->shape[0], 2);
    ck_assert_int_eq(w->shape[1], 3);
    ck_assert_uint_eq(w->numel, 6);
    ck_assert(memcmp(w->data, fw, sizeof fw) == 0);
    ck_assert(memcmp(bias->data, fb, sizeof fb) == 0);
    ld_ckpt_free(c);

    /* and our writer produces those very bytes */
    size_t len2;
    uint8_t *ours = small_file(&len2);
    ck_assert_uint_eq(len2, len);
    ck_assert(memcmp(ours, b, len) == 0);
    free(ours);
    free(b);
}
END_TEST

START_TEST(test_tensors_ordered_by_offset)
{
    /* JSON order differs from data order; an empty tensor sits between two others */
    const char *json =
        "{\"z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"m\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
        "\"e\":{\"dtype\":\"F32\",\"shape\":[0,7],\"data_offsets\":[4,4]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[12,16]}}";
    float data[4] = {10, 20, 21, 30};
    size_t len;
    uint8_t *b = make_file(json, data, sizeof data, &len);
    ld_ckpt_t *c = parse_ok(b, len);
    ck_assert_int_eq(c->n_tensors, 4);
    static const char *order[] = {"z", "e", "m", "a"};
    for (int i = 0; i < 4; i++)
        ck_assert_str_eq(c->tensors[i].name, order[i]);
    ck_assert_uint_eq(c->tensors[1].numel, 0);
    ck_assert_int_eq(c->tensors[3].ndim, 0);
    ck_assert_uint_eq(c->tensors[3].numel, 1);
    ck_assert(c->tensors[2].data[1] == 21 && c->tensors[3].data[0] == 30);
    ld_ckpt_free(c);
    free(b);

    /* an empty checkpoint is valid, with or without padding */
    const uint8_t bare[10] = {2, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    c = parse_ok(bare, sizeof bare);
    ck_assert_int_eq(c->n_tensors, 0);
    ld_ckpt_free(c);
}
END_TEST

/* ---- rejection ------------------------------------------------------------- */

#define T(body) "{\"x\":{" body "}}"
static const struct {
    const char *json;
    size_t dlen;
    const char *want;
} malformed[] = {
    {"[]", 0, "header is not a JSON object"},
    {"\"x\"", 0, "header is not a JSON object"},
    {"{\"a\":", 0, "header is not valid JSON"},
    {"{} x", 0, "unexpected bytes after the JSON header"},
    {"{\"x\":5}", 0, "tensor x: entry is not an object"},
    {"{\"x\":[]}", 0, "tensor x: entry is not an object"},
    {T("\"shape\":[1],\"data_offsets\":[0,4]"), 4, "tensor x: missing dtype"},
    {T("\"Dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]"), 4, "tensor x: missing dtype"},
    {T("\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]"), 4, "tensor x: dtype is not a string"},
    {T("\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]"), 4,
     "tensor x has dtype BF16; latentd reads F32 and I64 only"},
    {T("\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]"), 4, "tensor x has dtype f32"},
    {T("\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]"), 8, "tensor x has dtype F64"},
    {T("\"dtype\":\"F32\",\"data_offsets\":[0,4]"), 4, "tensor x: shape is missing or not an array"},
    {T("\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]"), 4,
     "tensor x: shape is missing or not an array"},
    {T("\"dtype\":\"F32\",\"shape\":[1,-1],\"data_offsets\":[0,4]"), 4,
     "tensor x: shape[1] is not an integer"},
    {T("\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]"), 4,
     "tensor x: shape[0] is not an integer"},
    {T("\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]"), 4,
     "tensor x: shape[0] is not an integer"},
    {T("\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]"), 4,
     "tensor x: shape has 5 dimensions; at most 4"},
    {T("\"dtype\":\"F32\",\"shape\":[1]"), 4, "tensor x: data_offsets must be [begin, end]"},
    {T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]"), 4,
     "tensor x: data_offsets must be [begin, end]"},
    {T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]"), 8,
     "tensor x: data_offsets must be [begin, end]"},
    {T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"a\":0,\"b\":4}"), 4,
     "tensor x: data_offsets must be [begin, end]"},
    {T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]"), 4,
     "tensor x: data_offsets are not integers"},
    {T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]"), 4,
     "tensor x: data_offsets are not integers"},
    {T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]"), 4,
     "tensor x: data_offsets are not integers"},
    {T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]"), 8,
     "tensor x: data_offsets begin 8 > end 4"},
    /* 2^32 cubed overflows the element count; 2^62 elements overflow the bytes */
    {T("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]"),
     4, "tensor x: shape is too large"},
    {T("\"dtype\":\"F32\",\"shape\":[4611686018427388,1000],\"data_offsets\":[0,4]"), 4,
     "tensor x: shape is too large"},
    {T("\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]"), 20,
     "tensor x: shape needs 24 bytes but data_offsets span 20"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     12, "gap between tensor a (ends at 4) and tensor b (begins at 8)"},
    {"{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
     "gap of 4 bytes before tensor b"},
    {"{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     12, "tensor b [4, 12) overlaps tensor a [0, 8)"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
     4, "tensor b [0, 4) overlaps tensor a [0, 4)"},
    {T("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]"), 8,
     "4 trailing bytes after the last tensor"},
    {T("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]"), 4,
     "data section is truncated: tensors need 8 bytes, file has 4"},
    {T("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]"), 0,
     "data section is truncated: tensors need 8 bytes, file has 0"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "key a appears twice in the header"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "key __metadata__ appears twice"},
    {"{\"__metadata__\":\"pt\"}", 0, "__metadata__ is not an object"},
    {"{\"__metadata__\":{\"format\":1}}", 0, "__metadata__ value for key format is not a string"},
    {"{\"__metadata__\":{\"format\":\"pt\",\"format\":\"np\"}}", 0,
     "__metadata__ key format appears twice"},
    {"{\"\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, "empty name"},
};
#undef T

START_TEST(test_rejects_malformed)
{
    expect_reject(malformed[_i].json, malformed[_i].dlen, malformed[_i].want);
}
END_TEST

START_TEST(test_rejects_bad_framing)
{
    uint8_t b[64] = {0};
    expect_reject_buf(b, 0, "shorter than 8 bytes", "empty file");
    expect_reject_buf(b, 7, "shorter than 8 bytes", "7 bytes");

    uint64_t big = (uint64_t)LD_CKPT_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(big >> (8 * i));
    expect_reject_buf(b, sizeof b, "exceeds the limit", "header over the cap");
    memset(b, 0xff, 8);
    expect_reject_buf(b, sizeof b, "exceeds the limit", "header length 2^64-1");

    memset(b, 0, 8);
    b[0] = 57; /* one more than the 56 bytes that follow */
    memset(b + 8, ' ', 56);
    b[8] = '{';
    b[9] = '}';
    expect_reject_buf(b, sizeof b, "runs past the end of the file", "header past the end");

    /* a text file (a symbolic link to /etc/passwd, say): its first 8 bytes
     * are the length, and their value must not appear in the message */
    static const char *const texts[] = {"root:x:0:0:root:/root:/bin/bash\n", "ab\0\0\0\0\0\0{}"};
    for (size_t i = 0; i < LD_ARRAY_LEN(texts); i++) {
        const uint8_t *t = (const uint8_t *)texts[i];
        size_t tl = i ? 10 : strlen(texts[i]);
        char value[32];
        snprintf(value, sizeof value, "%llu", (unsigned long long)header_len(t));
        ld_ckpt_t *c = NULL;
        ld_err_t err = {{0}};
        ck_assert_int_eq(parse_exact(t, tl, &c, &err), LD_EFORMAT);
        ck_assert_msg(!strstr(err.msg, value) && !strstr(err.msg, "root"),
                      "the message quotes the file: %s", err.msg);
    }

    /* a NUL after the JSON is not padding */
    b[0] = 8;
    b[10] = 0;
    expect_reject_buf(b, 16, "unexpected bytes after the JSON header", "NUL in padding");
    b[10] = ' ';
    ld_ckpt_t *c = parse_ok(b, 16); /* control: the same file with a space parses */
    ld_ckpt_free(c);

    /* a zero-length header is not JSON */
    b[0] = 0;
    expect_reject_buf(b, 8, "header is not valid JSON", "empty header");
}
END_TEST

START_TEST(test_rejects_long_name)
{
    char name[LD_CKPT_NAME_MAX + 1], json[512];
    memset(name, 'n', sizeof name - 1);
    name[LD_CKPT_NAME_MAX] = 0; /* 128 bytes: one too many */
    snprintf(json, sizeof json, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             name);
    expect_reject(json, 4, "is longer than 127 bytes");

    name[LD_CKPT_NAME_MAX - 1] = 0; /* 127 bytes fit */
    snprintf(json, sizeof json, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             name);
    size_t len;
    uint8_t *b = make_file(json, NULL, 4, &len);
    ld_ckpt_t *c = parse_ok(b, len);
    ck_assert_ptr_nonnull(ld_ckpt_find(c, name));
    ld_ckpt_free(c);
    free(b);
}
END_TEST

START_TEST(test_truncated_at_every_length)
{
    size_t len;
    uint8_t *b = small_file(&len);
    ld_ckpt_free(parse_ok(b, len)); /* control */
    for (size_t n = 0; n < len; n++) {
        ld_ckpt_t *c = NULL;
        ld_err_t err;
        int rc = parse_exact(b, n, &c, &err);
        ck_assert_msg(rc == LD_EFORMAT, "prefix of %zu/%zu bytes accepted", n, len);
        ck_assert_ptr_null(c);
    }
    free(b);
}
END_TEST

static uint64_t xorshift64(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

START_TEST(test_fuzz_header)
{
    size_t len;
    uint8_t *orig = small_file(&len);
    size_t head = 8 + (size_t)header_len(orig);
    uint8_t *b = malloc(len);
    uint64_t seed = 0x9E3779B97F4A7C15u;
    int accepted = 0, rejected = 0;
    for (int it = 0; it < 2000; it++) {
        memcpy(b, orig, len);
        int flips = 1 + (int)(xorshift64(&seed) % 4);
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t)(xorshift64(&seed) % head);
            b[at] ^= (uint8_t)(1 + xorshift64(&seed) % 255);
        }
        ld_ckpt_t *c = NULL;
        ld_err_t err;
        if (parse_exact(b, len, &c, &err) != LD_OK) {
            ck_assert_ptr_null(c);
            ck_assert_msg(err.msg[0] != 0, "iteration %d: rejected without a message", it);
            rejected++;
            continue;
        }
        /* anything accepted must be self-consistent */
        size_t bytes = 0;
        for (int i = 0; i < c->n_tensors; i++) {
            const ld_tensor_view_t *t = &c->tensors[i];
            ck_assert_int_le(t->ndim, LD_CKPT_MAX_DIMS);
            ck_assert_uint_lt(strlen(t->name), LD_CKPT_NAME_MAX);
            volatile float sink = t->numel ? t->data[t->numel - 1] : 0; /* ASan checks bounds */
            (void)sink;
            bytes += t->numel * sizeof(float);
        }
        ck_assert_uint_eq(bytes, len - (8 + header_len(b)));
        ld_ckpt_free(c);
        accepted++;
    }
    /* both paths were exercised */
    ck_assert_int_gt(rejected, 0);
    ck_assert_int_gt(accepted, 0);
    free(b);
    free(orig);
}
END_TEST

/* ---- serialise errors, file I/O ------------------------------------------ */

START_TEST(test_serialize_rejects_bad_views)
{
    float x[6] = {0};
    int64_t s2[2] = {2, 3}, s5[5] = {1, 1, 1, 1, 1}, neg[1] = {-1};
    uint8_t *out;
    size_t len;
    ld_err_t err;
    ld_tensor_view_t t[2] = {view("a", 2, s2, x), view("a", 2, s2, x)};
    ck_assert_int_eq(ld_ckpt_serialize(t, 2, NULL, 0, &out, &len, &err), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "tensor a appears twice"));

    t[1] = view("__metadata__", 2, s2, x);
    ck_assert_int_eq(ld_ckpt_serialize(t, 2, NULL, 0, &out, &len, &err), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "reserved"));

    t[1] = view("b", 2, s2, x);
    t[1].numel = 5;
    ck_assert_int_eq(ld_ckpt_serialize(t, 2, NULL, 0, &out, &len, &err), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "tensor b: bad shape"));

    t[1] = view("b", 1, neg, x);
    ck_assert_int_eq(ld_ckpt_serialize(t, 2, NULL, 0, &out, &len, &err), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "tensor b: bad shape"));

    t[1] = view("b", 4, s5, x);
    t[1].ndim = 5;
    ck_assert_int_eq(ld_ckpt_serialize(t, 2, NULL, 0, &out, &len, &err), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "tensor b: bad shape"));

    t[1] = view("b", 2, s2, NULL);
    ck_assert_int_eq(ld_ckpt_serialize(t, 2, NULL, 0, &out, &len, &err), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "tensor b: data is NULL"));

    ld_kv_t meta[2] = {{"k", "v"}, {"k", "w"}};
    ck_assert_int_eq(ld_ckpt_serialize(t, 1, meta, 2, &out, &len, &err), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "metadata key k appears twice"));
    meta[1].key = "j";
    meta[1].value = NULL;
    ck_assert_int_eq(ld_ckpt_serialize(t, 1, meta, 2, &out, &len, &err), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "NULL key or value"));
}
END_TEST

START_TEST(test_write_and_read)
{
    char *dir = tu_mkdtemp(), path[512];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    ld_tensor_view_t t[2] = {view("a.bias", 1, shb, fb), view("a.weight", 2, shw, fw)};
    ld_kv_t meta[1] = {{"format", "pt"}};
    ld_err_t err;
    ck_assert_int_eq(ld_ckpt_write(path, t, 2, meta, 1, &err), LD_OK);
    ld_ckpt_t *c;
    ck_assert_int_eq(ld_ckpt_read(path, &c, &err), LD_OK);
    ck_assert_int_eq(c->n_tensors, 2);
    assert_same_tensor(&c->tensors[0], &t[0]);
    assert_same_tensor(&c->tensors[1], &t[1]);
    ck_assert_str_eq(ld_ckpt_meta(c, "format"), "pt");
    ld_ckpt_free(c);

    /* the file holds exactly the serialised bytes */
    size_t len;
    uint8_t *want = small_file(&len);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    uint8_t *got = malloc(len + 1);
    ck_assert_uint_eq(fread(got, 1, len + 1, f), len);
    fclose(f);
    ck_assert(memcmp(got, want, len) == 0);

    /* a damaged file: the message names the file, then the problem */
    f = fopen(path, "wb");
    ck_assert_uint_eq(fwrite(want, 1, len - 1, f), len - 1);
    fclose(f);
    ck_assert_int_eq(ld_ckpt_read(path, &c, &err), LD_EFORMAT);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(strncmp(err.msg, path, strlen(path)), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, ": data section is truncated"));

    snprintf(path, sizeof path, "%s/missing.safetensors", dir);
    ck_assert_int_eq(ld_ckpt_read(path, &c, &err), LD_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    snprintf(path, sizeof path, "%s/no/such/dir.safetensors", dir);
    ck_assert_int_eq(ld_ckpt_write(path, t, 2, meta, 1, &err), LD_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, path));

    ld_ckpt_free(NULL);
    free(got);
    free(want);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

Suite *suite_ckpt(void)
{
    Suite *s = suite_create("ckpt");
    TCase *tc = tcase_create("ckpt");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_round_trip_bit_exact);
    tcase_add_test(tc, test_metadata_round_trip);
    tcase_add_test(tc, test_pytorch_file_parses);
    tcase_add_test(tc, test_tensors_ordered_by_offset);
    tcase_add_loop_test(tc, test_rejects_malformed, 0, (int)LD_ARRAY_LEN(malformed));
    tcase_add_test(tc, test_rejects_bad_framing);
    tcase_add_test(tc, test_rejects_long_name);
    tcase_add_test(tc, test_truncated_at_every_length);
    tcase_add_test(tc, test_fuzz_header);
    tcase_add_test(tc, test_serialize_rejects_bad_views);
    tcase_add_test(tc, test_write_and_read);
    suite_add_tcase(s, tc);
    return s;
}
