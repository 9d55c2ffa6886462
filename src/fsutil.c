/* fsutil.c — crash-safe file writes and whole-file reads; see include/latentd/fsutil.h. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "latentd/fsutil.h"
#include "fsutil_impl.h"

#include "latentd/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Distinguishes temporary files of concurrent writers within one process. */
static atomic_uint_fast64_t tmp_counter;

/* Test hook (fsutil_impl.h): NULL outside tests. */
static _Atomic(ld_write_fault_fn) write_fault;

void ld_fsutil_set_write_fault(ld_write_fault_fn fn)
{
    atomic_store(&write_fault, fn);
}

/* writev batches stay well under IOV_MAX and under the kernel's per-call byte cap. */
enum { WRITE_BATCH_IOV = 64 };
#define WRITE_BATCH_BYTES ((size_t)1 << 30)

/* Write all of iov[0..n) to fd, resuming after short writes and EINTR.
 * Returns 0, or -1 with errno set. */
static int write_all_iov(int fd, const struct iovec *iov, int n)
{
    int i = 0;
    size_t done = 0; /* bytes of iov[i] already written */
    while (i < n) {
        if (done == iov[i].iov_len) {
            i++;
            done = 0;
            continue;
        }
        struct iovec batch[WRITE_BATCH_IOV];
        int k = 0;
        size_t total = 0;
        for (int j = i; j < n && k < WRITE_BATCH_IOV && total < WRITE_BATCH_BYTES; j++) {
            size_t off = j == i ? done : 0;
            size_t take = iov[j].iov_len - off;
            if (take > WRITE_BATCH_BYTES - total)
                take = WRITE_BATCH_BYTES - total;
            batch[k].iov_base = (char *)iov[j].iov_base + off;
            batch[k].iov_len = take;
            total += take;
            k++;
        }
        ssize_t w = writev(fd, batch, k);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) { /* no progress on a regular file: treat as an I/O error, not a spin */
            errno = EIO;
            return -1;
        }
        size_t left = (size_t)w;
        while (left > 0) {
            size_t rest = iov[i].iov_len - done;
            if (left < rest) {
                done += left;
                left = 0;
            } else {
                left -= rest;
                i++;
                done = 0;
            }
        }
    }
    return 0;
}

static int fsync_retry(int fd)
{
    int rc;
    do
        rc = fsync(fd);
    while (rc < 0 && errno == EINTR);
    return rc;
}

/* fsync the folder holding path so that a rename into it is durable. */
static int fsync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (!dir) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -1;
    int rc = fsync_retry(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* Create a fresh "<path>.tmp.<pid>.<n>"; *tmp is malloc'd.  A stale file of
 * that name (left by a crashed process that had our pid) is skipped, not
 * reused; O_NOFOLLOW with O_EXCL: a link planted under that name is never
 * followed. */
static int open_tmp(const char *path, char **tmp)
{
    for (int attempt = 0; attempt < 1000; attempt++) {
        unsigned long long n = (unsigned long long)atomic_fetch_add(&tmp_counter, 1);
        long pid = (long)getpid();
        int need = snprintf(NULL, 0, "%s.tmp.%ld.%llu", path, pid, n);
        char *name = malloc((size_t)need + 1);
        if (!name) {
            errno = ENOMEM;
            return -1;
        }
        snprintf(name, (size_t)need + 1, "%s.tmp.%ld.%llu", path, pid, n);
        int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0) {
            *tmp = name;
            return fd;
        }
        int saved = errno;
        free(name);
        errno = saved;
        if (saved != EEXIST)
            return -1;
    }
    return -1; /* errno is EEXIST */
}

int ld_tmp_create(const char *path, int *fd, char **tmp, ld_err_t *err)
{
    *fd = open_tmp(path, tmp);
    if (*fd < 0)
        return ld_err_set(err, errno == ENOMEM ? LD_ENOMEM : LD_EIO,
                          "cannot create a temporary file for %s: %s", path, strerror(errno));
    return LD_OK;
}

int ld_rename_durable(const char *from, const char *to, ld_err_t *err)
{
    if (rename(from, to) < 0)
        return ld_err_set(err, LD_EIO, "cannot rename %s to %s: %s", from, to, strerror(errno));
    if (fsync_parent_dir(to) < 0)
        return ld_err_set(err, LD_EIO, "wrote %s but could not fsync its folder: %s", to,
                          strerror(errno));
    return LD_OK;
}

/* Atomically replace path with iov[0..n) (see the header comment for the
 * protocol).  iov is only read.  On failure before the rename the temporary
 * file is removed and path is untouched; returns LD_EINVAL for bad arguments,
 * LD_EIO (message names path, the failed step and strerror) otherwise.
 * Thread-safe. */
int ld_write_atomic_iov(const char *path, const struct iovec *iov, int n, ld_err_t *err)
{
    if (!path || !*path || n < 0 || (n > 0 && !iov))
        return ld_err_set(err, LD_EINVAL, "write_atomic: bad arguments");

    char *tmp = NULL;
    int fd;
    int rc = ld_tmp_create(path, &fd, &tmp, err);
    if (rc != LD_OK)
        return rc;

    const char *step = NULL;
    ld_write_fault_fn fault = atomic_load(&write_fault);
    int injected = fault ? fault(path) : 0;
    if (injected) {
        errno = injected;
        step = "write";
    } else if (write_all_iov(fd, iov, n) < 0)
        step = "write";
    else if (fsync_retry(fd) < 0)
        step = "fsync";
    int saved = errno;
    if (close(fd) < 0 && !step) {
        step = "close";
        saved = errno;
    }
    if (step) {
        unlink(tmp);
        free(tmp);
        return ld_err_set(err, LD_EIO, "cannot write %s (%s failed): %s", path, step,
                          strerror(saved));
    }
    rc = ld_rename_durable(tmp, path, err);
    if (rc != LD_OK && access(tmp, F_OK) == 0) /* the rename itself failed */
        unlink(tmp);
    free(tmp);
    return rc;
}

/* Atomically replace path with buf[0..len); as ld_write_atomic_iov. */
int ld_write_atomic(const char *path, const void *buf, size_t len, ld_err_t *err)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return ld_write_atomic_iov(path, &iov, 1, err);
}

/* Read the regular file path whole.  On LD_OK *out is malloc'd (caller frees),
 * holds *len bytes and a NUL at (*out)[*len].  Errors: LD_ENOTFOUND (missing),
 * LD_EINVAL (not a regular file: never blocks on a FIFO), LD_EFORMAT (larger than
 * max_len), LD_ENOMEM, LD_EIO; each message names path.  Thread-safe. */
int ld_read_file(const char *path, size_t max_len, uint8_t **out, size_t *len, ld_err_t *err)
{
    LD_ASSERT(out && len);
    *out = NULL;
    *len = 0;
    if (!path || !*path)
        return ld_err_set(err, LD_EINVAL, "read_file: empty path");

    /* O_NONBLOCK so that opening a FIFO cannot hang before fstat rejects it;
     * it has no effect on reads of regular files. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return ld_err_set(err, LD_ENOTFOUND, "%s: no such file", path);
        return ld_err_set(err, LD_EIO, "cannot open %s: %s", path, strerror(errno));
    }
    int rc = LD_OK;
    uint8_t *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = ld_err_set(err, LD_EIO, "cannot stat %s: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = ld_err_set(err, LD_EINVAL, "%s is not a regular file", path);
        goto done;
    }
    if ((uint64_t)st.st_size > max_len) {
        rc = ld_err_set(err, LD_EFORMAT, "%s is %lld bytes; the limit is %zu", path,
                        (long long)st.st_size, max_len);
        goto done;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size + 1);
    if (!buf) {
        rc = ld_err_set(err, LD_ENOMEM, "out of memory reading %s (%zu bytes)", path, size);
        goto done;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = ld_err_set(err, LD_EIO, "cannot read %s: %s", path, strerror(errno));
            goto done;
        }
        if (r == 0) /* the file shrank since fstat: return what is there */
            break;
        got += (size_t)r;
    }
    buf[got] = 0;
    *out = buf;
    *len = got;
    buf = NULL;
done:
    free(buf);
    close(fd);
    return rc;
}

/* mkdir that succeeds when a folder (not a file) of that name already exists. */
static int mkdir_one(const char *dir, ld_err_t *err)
{
    if (mkdir(dir, 0755) == 0)
        return LD_OK;
    int saved = errno;
    struct stat st;
    if (saved == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        return LD_OK;
    if (saved == EEXIST)
        return ld_err_set(err, LD_EIO, "cannot create folder %s: a file of that name exists",
                          dir);
    return ld_err_set(err, LD_EIO, "cannot create folder %s: %s", dir, strerror(saved));
}

/* Create dir and any missing parents (mode 0755).  Existing folders are fine;
 * a non-folder in the way is LD_EIO.  Thread-safe (races with other creators
 * of the same folders are tolerated). */
int ld_mkdir_p(const char *dir, ld_err_t *err)
{
    if (!dir || !*dir)
        return ld_err_set(err, LD_EINVAL, "mkdir: empty path");
    char *p = strdup(dir);
    if (!p)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    int rc = LD_OK;
    for (char *s = p + 1; *s && rc == LD_OK; s++) {
        if (*s != '/' || s[-1] == '/')
            continue;
        *s = 0;
        rc = mkdir_one(p, err);
        *s = '/';
    }
    if (rc == LD_OK)
        rc = mkdir_one(p, err);
    free(p);
    return rc;
}

/* Resolve dir/name with every symbolic link followed; *real (malloc'd) is
 * the result when it lies strictly inside realpath(dir).  Errors, each
 * naming name: LD_ENOTFOUND (missing, or a dangling link), LD_EINVAL (it
 * resolves outside dir, or to dir itself), LD_EIO.  Thread-safe. */
int ld_resolve_inside(const char *dir, const char *name, char **real, ld_err_t *err)
{
    *real = NULL;
    char joined[PATH_MAX + 80];
    if (snprintf(joined, sizeof joined, "%s/%s", dir, name) >= (int)sizeof joined)
        return ld_err_set(err, LD_EINVAL, "%s: path too long", name);
    char *root = realpath(dir, NULL);
    if (!root)
        return ld_err_set(err, LD_EIO, "%s: the folder %s cannot be resolved: %s", name, dir,
                          strerror(errno));
    int rc = LD_OK;
    char *r = realpath(joined, NULL);
    size_t rl = strlen(root);
    if (rl == 1) /* the folder is "/" */
        rl = 0;
    if (!r)
        rc = ld_err_set(err, errno == ENOENT ? LD_ENOTFOUND : LD_EIO, "%s: %s", name,
                        errno == ENOENT ? "no such file in the folder" : strerror(errno));
    else if (strncmp(r, root, rl) != 0 || r[rl] != '/' || r[rl + 1] == '\0')
        rc = ld_err_set(err, LD_EINVAL,
                        "%s resolves outside the folder (a symbolic link out of it is not "
                        "allowed)",
                        name);
    free(root);
    if (rc != LD_OK)
        free(r);
    else
        *real = r;
    return rc;
}

static int is_alnum_ascii(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* 1 if name matches [A-Za-z0-9][A-Za-z0-9._-]{0,63} (so never "", "." or ".."
 * and never contains '/'), else 0.  NULL gives 0.  Locale-independent. */
int ld_name_is_safe(const char *name)
{
    if (!name || !is_alnum_ascii(name[0]))
        return 0;
    size_t i = 1;
    for (; name[i]; i++) {
        char c = name[i];
        if (i >= 64 || !(is_alnum_ascii(c) || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* The pid in a name of open_tmp's form "<name>.tmp.<pid>.<n>", or -1. */
static long tmp_name_pid(const char *name)
{
    const char *t = NULL;
    for (const char *p = strstr(name, ".tmp."); p; p = strstr(p + 1, ".tmp."))
        t = p;
    if (!t || t == name)
        return -1;
    const char *p = t + 5;
    long pid = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 10; p++, digits++)
        pid = pid * 10 + (*p - '0');
    if (!digits || *p != '.' || pid <= 0 || pid > INT_MAX)
        return -1;
    for (digits = 0, p++; *p >= '0' && *p <= '9'; p++)
        digits++;
    return digits && !*p ? pid : -1;
}

/* 1 unless no process has this pid (one we may not signal is alive too). */
static int pid_alive(long pid)
{
    return kill((pid_t)pid, 0) == 0 || errno != ESRCH;
}

int ld_remove_stale_tmp(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int saved = errno;
        if (fd >= 0)
            close(fd);
        errno = saved;
        return -1;
    }
    int removed = 0;
    long self = (long)getpid();
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        long pid = tmp_name_pid(de->d_name);
        struct stat st;
        if (pid < 0 || pid == self || pid_alive(pid) ||
            fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (unlinkat(fd, de->d_name, 0) == 0) {
            ld_log_info("stale temporary file removed dir=%s file=%.200s (a write by pid %ld "
                        "that did not finish)",
                        dir, de->d_name, pid);
            removed++;
        } else {
            ld_log_warn("stale temporary file not removed dir=%s file=%.200s: %s", dir,
                        de->d_name, strerror(errno));
        }
    }
    closedir(d);
    return removed;
}
