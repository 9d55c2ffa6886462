/* image.h — encoding model outputs: PNG grids and NumPy .npy arrays; decoding
 * uploaded PNGs.  All in memory, reentrant.
 *
 * Ownership: every *out buffer is malloc'd and owned by the caller.
 */
#ifndef LATENTD_IMAGE_H
#define LATENTD_IMAGE_H

#include "latentd/common.h"

/* x (n, h*w) floats in [0,1] (values outside are clamped, NaN -> 0) -> an 8-bit
 * grayscale PNG grid with cols columns, ceil(n/cols) rows and a pad-pixel
 * border between tiles (pad >= 0). cols <= 0 means ceil(sqrt(n)).
 * Layout as torchvision's make_grid: the border also runs round the outside,
 * so the PNG is cols*(w+pad)+pad wide; pad pixels and empty tiles are 0. */
int ld_png_grid(const float *x, int n, int h, int w, int cols, int pad, uint8_t **out,
                size_t *len, ld_err_t *err);

/* Decode any PNG -> x (h*w) gray floats in [0,1]: the stored value over its
 * maximum (16 bits kept), colour through PIL's convert("L") luma, alpha and
 * transparency dropped, no gamma applied (image.c says why).  Rejects images
 * larger than max_pixels. */
int ld_png_decode(const void *buf, size_t len, size_t max_pixels, float **x, int *h, int *w,
                  ld_err_t *err);
/* Same as ld_png_decode, reading the PNG file at path; errors name the file. */
int ld_png_decode_file(const char *path, size_t max_pixels, float **x, int *h, int *w,
                       ld_err_t *err);

/* A NumPy v1.0 .npy file: '<f4', C order, the given shape (ndim <= 4). */
int ld_npy_encode(const float *x, int ndim, const int64_t *shape, uint8_t **out, size_t *len,
                  ld_err_t *err);
/* A NumPy v1.0 .npy of that shape with its header written and its values
 * left for the caller to fill: *data ((prod(shape)) floats, float-aligned)
 * points into *out (*len bytes, malloc'd, owned by the caller), so a
 * producer can write its results straight into the file. */
int ld_npy_alloc(int ndim, const int64_t *shape, uint8_t **out, size_t *len, float **data,
                 ld_err_t *err);
/* Parse a .npy of '<f4' (request bodies, tests, tools): *x malloc'd, shape filled. */
int ld_npy_decode(const void *buf, size_t len, float **x, int *ndim, int64_t shape[4],
                  ld_err_t *err);

/* Standard base64 decode (ignores whitespace; rejects other junk). */
int ld_base64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len, ld_err_t *err);

#endif
