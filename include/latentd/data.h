/* data.h — training/test data: IDX files (MNIST format, raw or gzip) and
 * folders of same-size 8-bit grayscale PNGs.
 *
 * A data set is n images of h*w pixels, scaled to [0,1] as float32, with an
 * optional label per image.  Errors name the file and what is wrong (bad magic,
 * truncated, dimension mismatch, label count mismatch, wrong PNG size...).
 *
 * Ownership: ld_dataset_t owns x and y.  Read-only after load, so one data set
 * may be shared by several threads.
 */
#ifndef LATENTD_DATA_H
#define LATENTD_DATA_H

#include "latentd/common.h"

#define LD_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct {
    int n, h, w;        /* n images of h rows and w columns */
    int dim;            /* h * w */
    float *x;           /* (n, dim), row-major, in [0,1] */
    uint8_t *y;         /* (n) labels, or NULL when the set has none */
    int n_classes;      /* 1 + max label, 0 without labels */
    char name[128];     /* what was loaded, for records */
    char *classes;      /* PNG class folders: their names as a JSON array; else NULL */
} ld_dataset_t;

typedef enum { LD_SPLIT_TRAIN = 0, LD_SPLIT_TEST = 1 } ld_split_t;

/* spec: "fashion-mnist" (the Debian package's files), or a path:
 *   - a folder holding {train,t10k}-images-idx3-ubyte[.gz] and the labels: IDX
 *   - an IDX image file "...-images-idx3-ubyte[.gz]": labels looked up beside it
 *     by replacing "images-idx3" with "labels-idx1" (optional)
 *   - any other folder: every *.png in it (sorted by name), no labels; split ignored;
 *     a folder without PNGs but with sub-folders of them: one class per
 *     sub-folder (sorted by name, labels 0, 1, ..., the names in classes)
 * limit > 0 keeps only the first limit images. */
int ld_data_load(const char *spec, ld_split_t split, int limit, ld_dataset_t **out, ld_err_t *err);

/* Explicit forms. labels may be NULL. */
int ld_data_load_idx(const char *images, const char *labels, int limit, ld_dataset_t **out,
                     ld_err_t *err);
int ld_data_load_png_dir(const char *dir, int limit, ld_dataset_t **out, ld_err_t *err);

/* Whether ld_data_load(spec, ...) gives labels (1) or not (0), from the file
 * names alone (cheap: for a job's spec check before anything is queued). */
int ld_data_has_labels(const char *spec);

void ld_data_free(ld_dataset_t *d);

/* The name of class k of a data set named data (ld_dataset_t.name) with
 * n_classes classes: Fashion-MNIST's names ("t-shirt/top", ..., "ankle boot"),
 * otherwise the number, written into buf. */
const char *ld_data_class_name(const char *data, int n_classes, int k, char *buf, size_t len);
/* Every class name of d as a JSON array (["t-shirt/top",...] or ["0","1",...])
 * into buf; returns its length, 0 when d has no labels, -1 if len is too small. */
int ld_data_class_names(const ld_dataset_t *d, char *buf, size_t len);

#endif
