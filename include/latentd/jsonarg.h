/* jsonarg.h — validated request arguments: JSON body fields and query-string
 * parameters, with the error reply written for the caller.
 *
 * Every function returns 0 with the value in *out (the default when the field
 * is absent), or -1 after answering the request with an error whose message
 * names the field:
 *   400 invalid_field   wrong JSON type, non-integer where an integer is
 *                       needed, unknown or duplicate field, unparsable query value
 *   422 invalid_value   well-formed but impossible: out of range, NaN or Inf,
 *                       wrong vector length, not one of the allowed words
 * where (may be NULL) prefixes field names in messages, e.g. "from." gives
 * "from.seed".  Keys are matched case-sensitively.
 *
 * Thread-safety: reentrant; the request belongs to the calling handler.
 */
#ifndef LATENTD_JSONARG_H
#define LATENTD_JSONARG_H

#include "latentd/http.h"

#include <cjson/cJSON.h>

/* Largest integer a JSON number carries exactly: seeds are in [0, 2^53). */
#define LD_SEED_MAX 9007199254740991ULL

/* Refuse fields of obj not in allowed (NULL-terminated), and duplicates. */
int ld_arg_fields(ld_req_t *req, const cJSON *obj, const char *where,
                  const char *const *allowed);
int ld_arg_int(ld_req_t *req, const cJSON *obj, const char *where, const char *name,
               long long min, long long max, long long def, long long *out);
int ld_arg_number(ld_req_t *req, const cJSON *obj, const char *where, const char *name,
                  double min, double max, double def, double *out);
/* A string that must be one of choices (NULL-terminated); *out is its index. */
int ld_arg_enum(ld_req_t *req, const cJSON *obj, const char *where, const char *name,
                const char *const *choices, int def, int *out);
/* Any string; *out points into obj (NULL when absent and def is NULL). */
int ld_arg_string(ld_req_t *req, const cJSON *obj, const char *where, const char *name,
                  const char *def, const char **out);
/* An integer seed in [0, LD_SEED_MAX]; *present says whether it was given. */
int ld_arg_seed(ld_req_t *req, const cJSON *obj, const char *where, const char *name,
                int *present, uint64_t *out);
/* item (named what in messages) is an array of rows, each an array of exactly
 * cols numbers in [lo, hi] (finite); with flat_ok a single flat array of cols
 * numbers is one row. 1..max_rows rows. *out is malloc'd (rows, cols). */
int ld_arg_matrix(ld_req_t *req, const cJSON *item, const char *what, int cols, int max_rows,
                  int flat_ok, float lo, float hi, float **out, int *rows);

/* Query-string forms (GET routes). */
int ld_qarg_int(ld_req_t *req, const char *name, long long min, long long max, long long def,
                long long *out);
int ld_qarg_number(ld_req_t *req, const char *name, double min, double max, double def,
                   double *out);
int ld_qarg_seed(ld_req_t *req, const char *name, int *present, uint64_t *out);
/* Refuse query keys not in allowed (NULL-terminated). */
int ld_qarg_fields(ld_req_t *req, const char *const *allowed);

#endif
