/* web.h — the browser page of `latentd serve`:
 *
 *   GET /            index.html                 open (no token)
 *   GET /ui/{file}   the page's other files     open (no token)
 *   GET /openapi.json  the API's OpenAPI 3.1 document (docs/openapi.json),
 *                      open, served also when the page is off
 *
 * The files come from web/ in the source tree plus Debian's Chart.js, embedded
 * in the binary at build time (scripts/embed-web.sh), or, for development,
 * from a folder read at each request (files missing there still come from the
 * embedded set, so Chart.js keeps working).  Every answer carries its content
 * type, an ETag (If-None-Match gets 304), Cache-Control: no-cache (the browser
 * revalidates, so a new binary's page is seen at once), gzip when the client
 * accepts it (embedded files are compressed once, at start), and a
 * Content-Security-Policy that allows only this origin's scripts and styles
 * (images also from blob: URLs, which the page makes from API answers).
 * The page's API calls carry their own tokens; the files need none.
 *
 * Threads: ld_web_new/ld_web_register/ld_web_free on the control thread
 * (before the server starts / after it stopped); the handlers run on any HTTP
 * thread and share only read-only state.
 */
#ifndef LATENTD_WEB_H
#define LATENTD_WEB_H

#include "latentd/http.h"

typedef struct ld_web ld_web_t;

/* source: "builtin" (the embedded files), "off" (no page: / answers 404) or
 * a folder.  LD_EINVAL names a folder that is not one; LD_ENOMEM.  *out is
 * owned by the caller; free it after the server (ld_http_free). */
int ld_web_new(const char *source, ld_web_t **out, ld_err_t *err);
/* Add the routes above to h (only /openapi.json when off), before ld_http_start.  w is
 * borrowed and must outlive the server. */
int ld_web_register(ld_web_t *w, ld_http_t *h, ld_err_t *err);
/* NULL is fine. */
void ld_web_free(ld_web_t *w);

#endif
