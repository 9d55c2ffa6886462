/* check_fsutil.c — atomic writes (including kill -9 mid-write), whole-file
 * reads, mkdir -p and safe-name checks. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include "latentd/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *tmpdir;

static void setup(void)
{
    tmpdir = tu_mkdtemp();
}

static void teardown(void)
{
    tu_rmrf(tmpdir);
    free(tmpdir);
}

/* out = dir/name (n bytes of room). */
static void join(char *out, size_t n, const char *dir, const char *name)
{
    int w = snprintf(out, n, "%s/%s", dir, name);
    ck_assert(w > 0 && (size_t)w < n);
}

/* Number of entries in dir (without . and ..) whose names start with prefix. */
static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            strncmp(de->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

static void write_plain(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* Assert path holds exactly want[0..len). */
static void assert_file_is(const char *path, const void *want, size_t len)
{
    uint8_t *got;
    size_t got_len;
    ld_err_t err;
    ck_assert_int_eq(ld_read_file(path, SIZE_MAX, &got, &got_len, &err), LD_OK);
    ck_assert_uint_eq(got_len, len);
    ck_assert(memcmp(got, want, len) == 0);
    free(got);
}

START_TEST(test_write_atomic_replaces)
{
    char path[512];
    join(path, sizeof path, tmpdir, "f.bin");
    ld_err_t err;
    const char *a = "first version, longer than the second";
    ck_assert_int_eq(ld_write_atomic(path, a, strlen(a), &err), LD_OK);
    assert_file_is(path, a, strlen(a));
    ck_assert_int_eq(ld_write_atomic(path, "second", 6, &err), LD_OK);
    assert_file_is(path, "second", 6);
    ck_assert_int_eq(ld_write_atomic(path, "", 0, &err), LD_OK);
    assert_file_is(path, "", 0);
    /* no temporary files left behind */
    ck_assert_int_eq(count_entries(tmpdir, ""), 1);
}
END_TEST

START_TEST(test_write_atomic_many_iov)
{
    /* more pieces than one writev takes, with empty pieces mixed in */
    enum { PIECES = 3001 };
    static struct iovec iov[PIECES];
    static uint8_t data[PIECES * 7];
    size_t total = 0;
    for (int i = 0; i < PIECES; i++) {
        size_t n = (size_t)(i % 8 == 0 ? 0 : i % 7 + 1);
        for (size_t j = 0; j < n; j++)
            data[total + j] = (uint8_t)(i * 31 + (int)j);
        iov[i].iov_base = data + total;
        iov[i].iov_len = n;
        total += n;
    }
    char path[512];
    join(path, sizeof path, tmpdir, "iov.bin");
    ld_err_t err;
    ck_assert_int_eq(ld_write_atomic_iov(path, iov, PIECES, &err), LD_OK);
    assert_file_is(path, data, total);
    ck_assert_int_eq(ld_write_atomic_iov(path, NULL, 0, &err), LD_OK);
    assert_file_is(path, "", 0);
}
END_TEST

START_TEST(test_write_atomic_errors)
{
    ld_err_t err;
    char path[512];
    join(path, sizeof path, tmpdir, "no-such-dir/f.bin");
    ck_assert_int_eq(ld_write_atomic(path, "x", 1, &err), LD_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    ck_assert_ptr_nonnull(strstr(err.msg, strerror(ENOENT)));

    /* the rename onto a folder fails: the temporary file must be removed */
    join(path, sizeof path, tmpdir, "adir");
    ck_assert_int_eq(mkdir(path, 0755), 0);
    ck_assert_int_eq(ld_write_atomic(path, "x", 1, &err), LD_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    ck_assert_ptr_nonnull(strstr(err.msg, "rename"));
    ck_assert_int_eq(count_entries(tmpdir, ""), 1);

    ck_assert_int_eq(ld_write_atomic_iov(path, NULL, 1, &err), LD_EINVAL);
}
END_TEST

/* A file the writer never finished: kill -9 the writer while it streams a
 * large buffer in many pieces; path must hold the old or the new bytes whole. */
START_TEST(test_write_atomic_survives_kill)
{
    enum { PIECE = 64 << 10, PIECES = 512 }; /* 32 MiB */
    const size_t big = (size_t)PIECE * PIECES;
    uint8_t *cur = malloc(big), *next = malloc(big);
    ck_assert(cur && next);
    size_t cur_len = 4096;
    memset(cur, 0xAA, cur_len);
    char path[512];
    join(path, sizeof path, tmpdir, "model.safetensors");
    ld_err_t err;
    ck_assert_int_eq(ld_write_atomic(path, cur, cur_len, &err), LD_OK);

    /* delays (microseconds) after the temporary file appears */
    static const long delay_us[] = {0, 0, 50, 200, 1000, 3000, 10000, 30000, 100000, 300000};
    int killed_mid_write = 0;
    for (size_t it = 0; it < LD_ARRAY_LEN(delay_us); it++) {
        for (size_t i = 0; i < big; i++)
            next[i] = (uint8_t)(i * 7 + it * 13 + (i >> 16));
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            struct iovec iov[PIECES];
            for (int i = 0; i < PIECES; i++) {
                iov[i].iov_base = next + (size_t)i * PIECE;
                iov[i].iov_len = PIECE;
            }
            _exit(ld_write_atomic_iov(path, iov, PIECES, NULL) == LD_OK ? 0 : 1);
        }
        char prefix[64];
        snprintf(prefix, sizeof prefix, "model.safetensors.tmp.%ld.", (long)pid);
        double t0 = ld_now();
        int status = 0, exited = 0;
        while (!count_entries(tmpdir, prefix)) {
            if (waitpid(pid, &status, WNOHANG) == pid) { /* finished before we looked */
                exited = 1;
                break;
            }
            ck_assert_msg(ld_now() - t0 < 20, "writer never created its temporary file");
        }
        if (!exited) {
            struct timespec ts = {0, delay_us[it] * 1000};
            nanosleep(&ts, NULL);
            kill(pid, SIGKILL);
            ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        }

        uint8_t *got;
        size_t got_len;
        ck_assert_int_eq(ld_read_file(path, SIZE_MAX, &got, &got_len, &err), LD_OK);
        int is_old = got_len == cur_len && memcmp(got, cur, cur_len) == 0;
        int is_new = got_len == big && memcmp(got, next, big) == 0;
        free(got);
        ck_assert_msg(is_old || is_new, "iteration %zu: target is neither old nor new (%zu bytes)",
                      it, got_len);
        if (WIFSIGNALED(status) && is_old)
            killed_mid_write++;
        if (is_new) {
            uint8_t *t = cur;
            cur = next;
            next = t;
            cur_len = big;
        }
    }
    /* otherwise the test proved nothing about partial writes */
    ck_assert_int_ge(killed_mid_write, 1);

    /* a normal write still works after the crashes and leftovers */
    ck_assert_int_eq(ld_write_atomic(path, "done", 4, &err), LD_OK);
    assert_file_is(path, "done", 4);
    free(cur);
    free(next);
}
END_TEST

START_TEST(test_read_file)
{
    char path[512];
    join(path, sizeof path, tmpdir, "r.txt");
    write_plain(path, "hello", 5);
    uint8_t *buf;
    size_t len;
    ld_err_t err;
    ck_assert_int_eq(ld_read_file(path, 5, &buf, &len, &err), LD_OK);
    ck_assert_uint_eq(len, 5);
    ck_assert_str_eq((char *)buf, "hello"); /* NUL-terminated */
    free(buf);

    ck_assert_int_eq(ld_read_file(path, 4, &buf, &len, &err), LD_EFORMAT);
    ck_assert_ptr_null(buf);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    ck_assert_ptr_nonnull(strstr(err.msg, "limit is 4"));

    join(path, sizeof path, tmpdir, "empty");
    write_plain(path, "", 0);
    ck_assert_int_eq(ld_read_file(path, 0, &buf, &len, &err), LD_OK);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(buf[0], 0);
    free(buf);
}
END_TEST

START_TEST(test_read_file_rejects)
{
    char path[512];
    uint8_t *buf;
    size_t len;
    ld_err_t err;
    join(path, sizeof path, tmpdir, "missing");
    ck_assert_int_eq(ld_read_file(path, 100, &buf, &len, &err), LD_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(err.msg, path));

    ck_assert_int_eq(ld_read_file(tmpdir, 100, &buf, &len, &err), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a regular file"));

    /* a FIFO with no writer would block a plain open(); it must be refused at once */
    join(path, sizeof path, tmpdir, "fifo");
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    ck_assert_int_eq(ld_read_file(path, 100, &buf, &len, &err), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a regular file"));
}
END_TEST

START_TEST(test_mkdir_p)
{
    char path[512];
    ld_err_t err;
    struct stat st;
    join(path, sizeof path, tmpdir, "a/b//c/");
    ck_assert_int_eq(ld_mkdir_p(path, &err), LD_OK);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_int_eq(ld_mkdir_p(path, &err), LD_OK); /* idempotent */

    join(path, sizeof path, tmpdir, "file");
    write_plain(path, "x", 1);
    join(path, sizeof path, tmpdir, "file/sub");
    ck_assert_int_eq(ld_mkdir_p(path, &err), LD_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "file"));
    join(path, sizeof path, tmpdir, "file");
    ck_assert_int_eq(ld_mkdir_p(path, &err), LD_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "a file of that name exists"));
    ck_assert_int_eq(ld_mkdir_p("", &err), LD_EINVAL);
}
END_TEST

/* ld_resolve_inside: files and links within the folder resolve; links out,
 * '..', the folder itself and dangling links do not. */
START_TEST(test_resolve_inside)
{
    char dir[600], path[700], *real = NULL;
    snprintf(dir, sizeof dir, "%s/folder", tmpdir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/a", dir);
    ck_assert_int_eq(ld_write_atomic(path, "x", 1, NULL), LD_OK);
    snprintf(path, sizeof path, "%s/outside", tmpdir);
    ck_assert_int_eq(ld_write_atomic(path, "y", 1, NULL), LD_OK);
    static const struct {
        const char *name, *target; /* target NULL: no link made */
        int want;
    } cases[] = {
        {"a", NULL, LD_OK},
        {"in", "a", LD_OK},
        {"in-abs", "@/a", LD_OK},
        {"out", "../outside", LD_EINVAL},
        {"out-abs", "/etc/passwd", LD_EINVAL},
        {"self", ".", LD_EINVAL},
        {"dangling", "nowhere", LD_ENOTFOUND},
        {"missing", NULL, LD_ENOTFOUND},
        {"../outside", NULL, LD_EINVAL},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        if (cases[i].target) {
            char target[700], lnk[700];
            if (cases[i].target[0] == '@')
                snprintf(target, sizeof target, "%s%s", dir, cases[i].target + 1);
            else
                snprintf(target, sizeof target, "%s", cases[i].target);
            snprintf(lnk, sizeof lnk, "%s/%s", dir, cases[i].name);
            ck_assert_int_eq(symlink(target, lnk), 0);
        }
        ld_err_t err = {{0}};
        int rc = ld_resolve_inside(dir, cases[i].name, &real, &err);
        ck_assert_msg(rc == cases[i].want, "%s: %d (%s)", cases[i].name, rc, err.msg);
        if (rc == LD_OK) {
            ck_assert_msg(strstr(real, "/folder/a"), "%s -> %s", cases[i].name, real);
            free(real);
        } else {
            ck_assert_ptr_null(real);
            ck_assert_msg(strstr(err.msg, cases[i].name), "%s: %s", cases[i].name, err.msg);
        }
    }
}
END_TEST

START_TEST(test_name_is_safe)
{
    char n64[65], n65[66];
    memset(n64, 'a', 64);
    n64[64] = 0;
    memset(n65, 'a', 65);
    n65[65] = 0;
    static const char *good[] = {"a", "Z", "0", "vae-mnist_v2.1", "a..b", "A-", "9_"};
    static const char *bad[] = {"", ".", "..", ".hidden", "-x", "_x", "a/b", "a b", "a\\b",
                                "caf\xc3\xa9", "a\n", "a:b", "a*"};
    for (size_t i = 0; i < LD_ARRAY_LEN(good); i++)
        ck_assert_msg(ld_name_is_safe(good[i]), "%s should be safe", good[i]);
    for (size_t i = 0; i < LD_ARRAY_LEN(bad); i++)
        ck_assert_msg(!ld_name_is_safe(bad[i]), "%s should be unsafe", bad[i]);
    ck_assert(ld_name_is_safe(n64));
    ck_assert(!ld_name_is_safe(n65));
    ck_assert(!ld_name_is_safe(NULL));
}
END_TEST

Suite *suite_fsutil(void)
{
    Suite *s = suite_create("fsutil");
    TCase *tc = tcase_create("fsutil");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_write_atomic_replaces);
    tcase_add_test(tc, test_write_atomic_many_iov);
    tcase_add_test(tc, test_write_atomic_errors);
    tcase_add_test(tc, test_write_atomic_survives_kill);
    tcase_add_test(tc, test_read_file);
    tcase_add_test(tc, test_read_file_rejects);
    tcase_add_test(tc, test_mkdir_p);
    tcase_add_test(tc, test_name_is_safe);
    tcase_add_test(tc, test_resolve_inside);
    suite_add_tcase(s, tc);
    return s;
}
