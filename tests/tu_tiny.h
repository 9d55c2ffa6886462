/* tu_tiny.h — the smallest useful model of a kind, for tests and fuzz targets
 * that need one to load, serve or train at once: 4x4 images, z 2, one hidden
 * layer of 8 on each side, weights from seed 1.  Header only, so the fuzz
 * targets (which do not link Check) can use it too.  The caller frees the
 * model (ld_model_free). */
#ifndef LATENTD_TU_TINY_H
#define LATENTD_TU_TINY_H

#include "latentd/model.h"
#include "latentd/train.h"

static inline ld_model_t *tu_tiny_model(ld_kind_t kind)
{
    ld_arch_t a;
    ld_arch_default(kind, &a);
    a.img_h = a.img_w = 4;
    a.x_dim = 16;
    a.z_dim = 2;
    a.enc.n = a.dec.n = 1;
    a.enc.size[0] = a.dec.size[0] = 8;
    ld_model_t *m = NULL;
    ld_err_t e;
    int rc = ld_model_new(&a, 1, &m, &e);
    LD_ASSERT(rc == LD_OK);
    return m;
}

/* A model of a named recipe (ld_train_recipe: "default", "dcgan", "resmlp",
 * ...) from seed, and the recipe's options into *o. */
static inline ld_model_t *tu_recipe_model(ld_kind_t kind, const char *recipe, uint64_t seed,
                                          ld_train_opts_t *o)
{
    ld_arch_t a;
    ld_model_t *m = NULL;
    ld_err_t e;
    LD_ASSERT(ld_train_recipe(kind, recipe, &a, o, &e) == LD_OK);
    LD_ASSERT(ld_model_new(&a, seed, &m, &e) == LD_OK);
    return m;
}

#endif
