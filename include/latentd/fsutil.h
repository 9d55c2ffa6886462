/* fsutil.h — crash-safe file writes and whole-file reads.
 *
 * ld_write_atomic writes to "<path>.tmp.<pid>.<n>" in the same folder, fsyncs
 * it, renames it over path and fsyncs the folder, so after a crash (even
 * kill -9 or power loss mid-write) path holds either the old bytes or the new
 * ones, never a mixture.  Thread-safe (temporary names are unique per call).
 */
#ifndef LATENTD_FSUTIL_H
#define LATENTD_FSUTIL_H

#include "latentd/common.h"
#include <sys/uio.h>

/* Atomically replace path with the concatenation of iov[0..n). */
int ld_write_atomic_iov(const char *path, const struct iovec *iov, int n, ld_err_t *err);
/* Atomically replace path with buf[0..len). */
int ld_write_atomic(const char *path, const void *buf, size_t len, ld_err_t *err);

/* The first two steps of ld_write_atomic, for a caller that writes the
 * file itself (a streamed upload): create "<path>.tmp.<pid>.<n>" with
 * O_EXCL | O_NOFOLLOW, mode 0644; *fd (open for writing, the caller closes
 * it) and *tmp (malloc'd, the caller frees it and unlinks the file if it is
 * not renamed).  LD_EIO or LD_ENOMEM naming path. */
int ld_tmp_create(const char *path, int *fd, char **tmp, ld_err_t *err);
/* Rename from over to (same folder) and fsync the folder: the last step of
 * ld_write_atomic.  The caller has fsynced from.  LD_EIO naming the step. */
int ld_rename_durable(const char *from, const char *to, ld_err_t *err);
/* Remove from dir the temporary files of ld_write_atomic left by a process
 * that no longer runs (killed mid-write): regular files named
 * "<name>.tmp.<pid>.<n>" whose pid is neither ours nor a live process.
 * Symbolic links (never followed) and every other name are left alone; each
 * removal is logged.  Returns how many were removed, or -1 (errno set) when
 * dir cannot be read.  Thread-safe; the caller picks a moment when no write
 * of its own is under way there (our pid's files are kept regardless). */
int ld_remove_stale_tmp(const char *dir);

/* Read a whole regular file (at most max_len bytes, else LD_EFORMAT).
 * On success *out is malloc'd (caller frees) and NUL-terminated one past *len. */
int ld_read_file(const char *path, size_t max_len, uint8_t **out, size_t *len, ld_err_t *err);

/* Create dir (and parents) with mode 0755 if missing. */
int ld_mkdir_p(const char *dir, ld_err_t *err);

/* dir/name with symbolic links resolved, into *real (malloc'd, caller frees),
 * only when it stays strictly inside dir: LD_EINVAL when a link leads out,
 * LD_ENOTFOUND when nothing is there.  The model and data folders use it so
 * that no link serves a file from elsewhere. */
int ld_resolve_inside(const char *dir, const char *name, char **real, ld_err_t *err);

/* 1 if name is a safe single path component: [A-Za-z0-9][A-Za-z0-9._-]{0,63}. */
int ld_name_is_safe(const char *name);

#endif
