/* web_impl.h — the files of the web page embedded in the binary: the table
 * that scripts/embed-web.sh generates (build/web_files.c) and web.c reads.
 * Not part of the public API.  Static, read-only data: any thread. */
#ifndef LATENTD_WEB_IMPL_H
#define LATENTD_WEB_IMPL_H

typedef struct {
    const char *name;          /* base name, served as /ui/NAME */
    const unsigned char *data; /* the file's bytes, [data, end) */
    const unsigned char *end;
} ld_web_blob_t;

/* The OpenAPI document (docs/openapi.json), embedded with the page's files
 * and served at GET /openapi.json whatever the `web` setting. */
#define LD_WEB_OPENAPI "openapi.json"

extern const ld_web_blob_t ld_web_blobs[];
extern const int ld_web_n_blobs;

#endif
