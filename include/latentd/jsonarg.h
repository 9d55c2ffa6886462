/* jsonarg.h — validated request arguments, with the error reply written for
 * the caller: one rule set whether an argument comes from a JSON body or
 * from the query string.
 *
 * An ld_args_t names where arguments are read: a JSON object (a body, or an
 * object inside one) or the request's query string.  Every ld_arg_* function
 * returns 0 with the value in *out (the default when the argument is absent
 * or JSON null), or -1 after answering the request with an error whose
 * message names the argument:
 *   400 invalid_field   wrong type, non-integer where an integer is needed,
 *                       unknown or repeated name, a query value that is not
 *                       a JSON number where a number is needed, a query key
 *                       without a value
 *   422 invalid_value   well-formed but impossible: out of range, NaN or Inf,
 *                       wrong vector length, not one of the allowed words, a
 *                       string holding a NUL character
 * The same rules for both sources: names are matched case-sensitively; a
 * name given twice is refused (JSON bodies and query strings alike); numbers
 * follow JSON's grammar (no leading zeros, "+", hexadecimal, "inf" or "nan";
 * src/arena.c holds JSON bodies to it, ld_json_number_len does the query);
 * integers are numbers without a fraction (1e3 is 1000); a string may not
 * contain NUL (a body's "\u0000" reaches here as the two bytes C0 80, see
 * arena.h, so that nothing downstream ever sees a truncated string).
 *
 * Thread-safety: reentrant; the request belongs to the calling handler.
 */
#ifndef LATENTD_JSONARG_H
#define LATENTD_JSONARG_H

#include "latentd/http.h"

#include <cjson/cJSON.h>

/* Largest integer a JSON number carries exactly: seeds are in [0, 2^53). */
#define LD_SEED_MAX 9007199254740991ULL

/* Where arguments are read from (a small value; build with the two below). */
typedef struct {
    ld_req_t *req;
    const cJSON *obj;  /* the JSON object, or NULL (nothing given: defaults) */
    int query;         /* 1: the query string instead of obj */
    const char *where; /* prefix of names in messages ("from." gives "from.seed"), or NULL */
} ld_args_t;

/* Arguments from JSON object obj (NULL: none given); where may be NULL. */
ld_args_t ld_args_json(ld_req_t *req, const cJSON *obj, const char *where);
/* Arguments from the query string of req. */
ld_args_t ld_args_query(ld_req_t *req);

/* Refuse names not in allowed (NULL-terminated; NULL: no argument allowed)
 * and names given twice.  Call first: the functions below assume it. */
int ld_arg_fields(const ld_args_t *a, const char *const *allowed);
int ld_arg_int(const ld_args_t *a, const char *name, long long min, long long max, long long def,
               long long *out);
int ld_arg_number(const ld_args_t *a, const char *name, double min, double max, double def,
                  double *out);
/* A string that must be one of choices (NULL-terminated); *out is its index. */
int ld_arg_enum(const ld_args_t *a, const char *name, const char *const *choices, int def,
                int *out);
/* Any string without NUL; *out points into the request (NULL when absent and
 * def is NULL). */
int ld_arg_string(const ld_args_t *a, const char *name, const char *def, const char **out);
/* An integer seed in [0, LD_SEED_MAX]; *present says whether it was given. */
int ld_arg_seed(const ld_args_t *a, const char *name, int *present, uint64_t *out);

/* JSON value item (named what in messages) as a string without NUL: 0 with
 * *out pointing into item, or -1 answered (400 not a string, 422 NUL). */
int ld_arg_text(ld_req_t *req, const cJSON *item, const char *what, const char **out);
/* item (named what in messages) is an array of rows, each an array of exactly
 * cols numbers in [lo, hi] (finite); with flat_ok a single flat array of cols
 * numbers is one row. 1..max_rows rows. *out is malloc'd (rows, cols). */
int ld_arg_matrix(ld_req_t *req, const cJSON *item, const char *what, int cols, int max_rows,
                  int flat_ok, float lo, float hi, float **out, int *rows);

#endif
