/* model_file_api.h — a model's checkpoint over HTTP, registered in api.c
 * with the ld_api_t as ctx (admin token on both):
 *
 *   PUT /v1/models/{name} with Content-Type application/octet-stream: the
 *     body (a safetensors checkpoint, at most max_upload bytes: 413 for a
 *     larger Content-Length before any byte is read, and as soon as a
 *     chunked body passes it) streams to a temporary file in the model
 *     folder (ld_tmp_create: O_EXCL | O_NOFOLLOW, "NAME.safetensors.tmp.*",
 *     which no rescan picks up), is fsynced, then installed with
 *     ld_registry_install (parsed and checked in full, the kind-change rule
 *     of the JSON PUT with ?allow_kind_change=true|false, renamed over
 *     NAME.safetensors, the folder fsynced, served).  Answers as the JSON
 *     PUT does: 201/200 {"replaced","model"}, 409 kind_change, 422
 *     bad_checkpoint.  Whatever fails — a bad body, a client gone mid-body, a
 *     full disk (507) — the temporary file is removed (when the request
 *     ends, ld_body_sink_t.close) and the old model keeps serving.  Two
 *     uploads to one name both complete, one after the other (the
 *     registry's load_lock): the file is one of the two, whole.
 *   GET /v1/models/{name}/file: the served checkpoint's bytes, ETag its
 *     sha256 (quoted), If-None-Match answered 304; 409 file_changed when the
 *     file on disk is no longer the one loaded (edited in place: rescan).
 *
 * Threads: HTTP threads, and for each upload's install (fsync, read, hash,
 * parse: seconds for the largest) a detached thread of its own while the
 * request waits suspended (ld_req_await), holding the registry's load_lock,
 * not its table lock: other requests, on the same HTTP thread too, keep
 * being served.
 */
#ifndef LATENTD_MODEL_FILE_API_H
#define LATENTD_MODEL_FILE_API_H

#include "latentd/http.h"

/* The ld_stream_t of PUT /v1/models/{name} (ctx: the ld_api_t). */
ld_stream_t ld_model_upload_stream(size_t max_upload);
/* GET /v1/models/{name}/file (ctx: the ld_api_t). */
void ld_model_file_handler(ld_req_t *req, void *ctx);

#endif
