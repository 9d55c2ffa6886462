/* ckpt.h — safetensors checkpoints: parse, validate, write atomically.
 *
 * File format (https://github.com/huggingface/safetensors):
 *   u64 little-endian N | N bytes of JSON header | data bytes
 * The header maps tensor name -> {"dtype","shape","data_offsets":[begin,end]}
 * (offsets relative to the start of the data section) plus an optional
 * "__metadata__" object of string -> string.  latentd reads and writes F32, and
 * I64 for integer buffers (batch norm's num_batches_tracked, as PyTorch writes
 * it); an I64 element is 8 bytes and spans two floats of a view's data.
 *
 * Validation on read (each with its own error message naming the tensor):
 *   header length <= LD_CKPT_MAX_HEADER and <= file length - 8; header is a JSON
 *   object; every tensor has dtype "F32" or "I64", an integer shape, and data_offsets with
 *   begin <= end; shape product * 4 (8 for I64) == end - begin (overflow-checked); the
 *   ranges sorted by begin are contiguous from 0 with no gap or overlap; the last
 *   end equals the data section length exactly; metadata values are strings.
 * Messages never quote the file's bytes before its header is known to be
 * JSON (a file that is not a checkpoint is not echoed back).
 *
 * Ownership: an ld_ckpt_t owns its buffer; tensor views point into it and die
 * with ld_ckpt_free.  Thread-safety: a parsed ld_ckpt_t is read-only.
 */
#ifndef LATENTD_CKPT_H
#define LATENTD_CKPT_H

#include "latentd/common.h"

#define LD_CKPT_MAX_HEADER (16u << 20) /* 16 MiB, a hard cap against hostile files */
#define LD_CKPT_MAX_DIMS 4
#define LD_CKPT_NAME_MAX 128

/* Element types a checkpoint holds. */
typedef enum { LD_DTYPE_F32 = 0, LD_DTYPE_I64 = 1 } ld_dtype_t;

typedef struct {
    char name[LD_CKPT_NAME_MAX];
    int ndim;
    int64_t shape[LD_CKPT_MAX_DIMS];
    size_t numel;        /* product of shape */
    const float *data;   /* numel elements: floats, or for I64 little-endian int64s
                            each in two floats (copy them with memcpy) */
    ld_dtype_t dtype;    /* zeroed = F32 */
} ld_tensor_view_t;

/* Bytes of t's data: numel * 4, or numel * 8 for I64. */
size_t ld_tensor_bytes(const ld_tensor_view_t *t);

typedef struct {
    const char *key;
    const char *value;
} ld_kv_t;

typedef struct ld_ckpt {
    int n_tensors;
    ld_tensor_view_t *tensors; /* n_tensors, in file order of data offsets */
    int n_meta;
    ld_kv_t *meta;             /* n_meta, strings owned by the ckpt */
    void *priv;                /* owned storage */
} ld_ckpt_t;

/* Parse and validate buf[0..len) (not retained; data is copied). *out owned by caller. */
int ld_ckpt_parse(const void *buf, size_t len, ld_ckpt_t **out, ld_err_t *err);
/* Read path and parse it. Errors name the file. */
int ld_ckpt_read(const char *path, ld_ckpt_t **out, ld_err_t *err);
void ld_ckpt_free(ld_ckpt_t *c);

/* NULL when absent. */
const ld_tensor_view_t *ld_ckpt_find(const ld_ckpt_t *c, const char *name);
const char *ld_ckpt_meta(const ld_ckpt_t *c, const char *key);

/* Serialise tensors (in the given order) and metadata into a malloc'd buffer. */
int ld_ckpt_serialize(const ld_tensor_view_t *t, int n, const ld_kv_t *meta, int n_meta,
                      uint8_t **out, size_t *len, ld_err_t *err);
/* Serialise and write atomically (see fsutil.h). */
int ld_ckpt_write(const char *path, const ld_tensor_view_t *t, int n, const ld_kv_t *meta,
                  int n_meta, ld_err_t *err);

#endif
