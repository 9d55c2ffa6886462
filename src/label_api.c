/* label_api.c — the class labels of a request for a conditional model (cgan,
 * cvae), read through the argument layer.  See ld_api_labels in api_impl.h.
 *
 * Threads: the HTTP thread that runs the request.
 */
#define _POSIX_C_SOURCE 200809L
#include "api_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The class named (or numbered) s, or -1 after answering 422. */
static int class_of(ld_req_t *req, const ld_served_t *s, const char *what, const char *name)
{
    int k = ld_model_class_parse(s->model, name);
    if (k < 0) {
        char list[2048];
        ld_model_class_list(s->model, list, sizeof list);
        ld_req_error(req, 422, "invalid_value", "%s: unknown class '%.80s'; model '%s' has "
                     "classes %s", what, name, s->name, list);
    }
    return k;
}

/* One label given as a JSON value (an integer index or a class name). */
static int label_item(ld_req_t *req, const ld_served_t *s, const cJSON *it, const char *what,
                      uint8_t *out)
{
    const ld_model_t *m = s->model;
    if (cJSON_IsNumber(it)) {
        double v = it->valuedouble;
        if (v != (double)(long long)v || v < 0 || v >= m->arch.n_classes) {
            char list[2048];
            ld_model_class_list(m, list, sizeof list);
            ld_req_error(req, 422, "invalid_value", "%s: %g is no class of model '%s' (0..%d: "
                         "%s)", what, v, s->name, m->arch.n_classes - 1, list);
            return -1;
        }
        *out = (uint8_t)v;
        return 0;
    }
    const char *name;
    if (ld_arg_text(req, it, what, &name) != 0)
        return -1;
    int k = class_of(req, s, what, name);
    if (k < 0)
        return -1;
    *out = (uint8_t)k;
    return 0;
}

/* A query string's "labels": class names or numbers separated by commas. */
static int query_labels(ld_req_t *req, const ld_served_t *s, const char *list, int n,
                        uint8_t *out, int *got)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return -1;
    }
    int k = 0, rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save)) {
        int c = k < n ? class_of(req, s, "labels", t) : 0;
        if (c < 0)
            rc = -1;
        else if (k < n)
            out[k] = (uint8_t)c;
        k++;
    }
    free(copy);
    *got = k;
    return rc;
}

int ld_api_labels(ld_req_t *req, const ld_served_t *s, const ld_args_t *a, int n, int single,
                  uint8_t **out)
{
    const ld_model_t *m = s->model;
    const cJSON *one = NULL, *many = NULL;
    const char *qone = NULL, *qmany = NULL;
    *out = NULL;
    if (a->query) {
        if (ld_arg_string(a, "label", NULL, &qone) != 0 ||
            ld_arg_string(a, "labels", NULL, &qmany) != 0)
            return -1;
    } else if (a->obj) {
        one = cJSON_GetObjectItemCaseSensitive(a->obj, "label");
        many = cJSON_GetObjectItemCaseSensitive(a->obj, "labels");
        one = cJSON_IsNull(one) ? NULL : one;
        many = cJSON_IsNull(many) ? NULL : many;
    }
    int has_one = one || qone, has_many = many || qmany;
    if (!m->ops->conditional) {
        if (has_one || has_many) {
            ld_req_error(req, 422, "invalid_value", "model '%s' is %s; it takes no %s (only "
                         "cgan and cvae models are conditioned on a class)", s->name,
                         m->ops->article, has_one ? "label" : "labels");
            return -1;
        }
        return 0;
    }
    if (has_one && has_many) {
        ld_req_error(req, 400, "invalid_field", "give label or labels, not both");
        return -1;
    }
    if (has_one && !single) {
        ld_req_error(req, 400, "invalid_field", "label is not taken here: give labels, one "
                     "per row");
        return -1;
    }
    if (!has_one && !has_many) {
        char list[2048];
        ld_model_class_list(m, list, sizeof list);
        ld_req_error(req, 422, "invalid_value", "model '%s' is %s: give %s (an index or a "
                     "name) of its classes %s", s->name, m->ops->article,
                     single ? "label, or labels one per row," : "labels, one per row", list);
        return -1;
    }
    uint8_t *l = malloc((size_t)(n > 0 ? n : 1));
    if (!l) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return -1;
    }
    int got = n, rc = 0;
    if (has_one) {
        if (one)
            rc = label_item(req, s, one, "label", &l[0]);
        else if ((rc = class_of(req, s, "label", qone)) >= 0)
            l[0] = (uint8_t)rc;
        rc = rc < 0 ? -1 : 0;
        for (int i = 1; !rc && i < n; i++)
            l[i] = l[0];
    } else if (qmany) {
        rc = query_labels(req, s, qmany, n, l, &got);
    } else if (!cJSON_IsArray(many)) {
        ld_req_error(req, 400, "invalid_field", "labels must be an array, one label per row");
        rc = -1;
    } else {
        got = cJSON_GetArraySize(many);
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, many)
        {
            if (i < n && !rc) {
                char what[32];
                snprintf(what, sizeof what, "labels[%d]", i);
                rc = label_item(req, s, it, what, &l[i]);
            }
            i++;
        }
    }
    if (!rc && got != n) {
        ld_req_error(req, 422, "invalid_value", "labels has %d entries for %d rows; give one "
                     "per row", got, n);
        rc = -1;
    }
    if (rc) {
        free(l);
        return -1;
    }
    *out = l;
    return 0;
}
