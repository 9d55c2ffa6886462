/* fsutil_impl.h — test hooks of fsutil.c; not a public header.  Only tests
 * (the Check suites) set them: the daemon and the command line never do.
 *
 * A write fault: while a hook is set, ld_write_atomic_iov (and so every
 * checkpoint, model, job record and state file written through fsutil) calls
 * it with the destination path before writing; a nonzero return is taken as
 * the errno of a failed write (ENOSPC, EIO...): the temporary file is
 * removed, the destination is left as it was, and the caller gets LD_EIO with
 * strerror of it.  The hook may be called from any thread, at once from
 * several: it must be thread-safe.  Set it before the writes it is meant for
 * and clear it (NULL) after. */
#ifndef LATENTD_FSUTIL_IMPL_H
#define LATENTD_FSUTIL_IMPL_H

typedef int (*ld_write_fault_fn)(const char *path);
void ld_fsutil_set_write_fault(ld_write_fault_fn fn);

#endif
