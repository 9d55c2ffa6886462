/* check_registry.c — the model registry: load, replace, unload, refcounts
 * that keep a replaced model alive for its readers, folder scans (new,
 * changed, removed, bad files), names that could leave the folder, and many
 * readers racing a writer (run it under the sanitizers). */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"
#include "tu_tiny.h"

#include "latentd/registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *g_dir;

static void save(const char *file, int z, uint64_t seed)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_VAE, &a);
    a.enc.n = 1;
    a.enc.size[0] = 16;
    a.dec.n = 1;
    a.dec.size[0] = 16;
    a.z_dim = z;
    ld_model_t *m;
    ld_err_t e;
    ck_assert_msg(ld_model_new(&a, seed, &m, &e) == LD_OK, "%s", e.msg);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_dir, file);
    ck_assert_msg(ld_model_save(m, path, &e) == LD_OK, "%s", e.msg);
    ld_model_free(m);
}

static void setup(void)
{
    g_dir = tu_mkdtemp();
}

static void teardown(void)
{
    tu_rmrf(g_dir);
    free(g_dir);
}

/* Symbolic links in the model folder: one to another file in the folder is
 * served, one leading out of it is refused without quoting the target. */
START_TEST(test_symlinks)
{
    char outside[1024], lnk[1024], path[1024];
    char *other = tu_mkdtemp();
    save("real.safetensors", 4, 1);
    snprintf(outside, sizeof outside, "%s/elsewhere.safetensors", other);
    snprintf(path, sizeof path, "%s/real.safetensors", g_dir);
    ck_assert_int_eq(link(path, outside), 0); /* a good checkpoint, outside the folder */

    snprintf(lnk, sizeof lnk, "%s/passwd.safetensors", g_dir);
    ck_assert_int_eq(symlink("/etc/passwd", lnk), 0);
    snprintf(lnk, sizeof lnk, "%s/away.safetensors", g_dir);
    ck_assert_int_eq(symlink(outside, lnk), 0);
    snprintf(lnk, sizeof lnk, "%s/dotdot.safetensors", g_dir);
    snprintf(path, sizeof path, "../%s/elsewhere.safetensors", strrchr(other, '/') + 1);
    ck_assert_int_eq(symlink(path, lnk), 0);
    snprintf(lnk, sizeof lnk, "%s/alias.safetensors", g_dir);
    ck_assert_int_eq(symlink("real.safetensors", lnk), 0);

    ld_registry_t *r;
    ld_err_t e;
    ck_assert_int_eq(ld_registry_new(g_dir, &r, &e), LD_OK);
    const char *out_names[] = {"passwd", "away", "dotdot"};
    for (size_t i = 0; i < LD_ARRAY_LEN(out_names); i++) {
        memset(&e, 0, sizeof e);
        ck_assert_msg(ld_registry_load(r, out_names[i], NULL, NULL, NULL, &e) == LD_EINVAL,
                      "%s: %s", out_names[i], e.msg);
        ck_assert_msg(strstr(e.msg, "outside the folder"), "%s: %s", out_names[i], e.msg);
        ck_assert_msg(!strstr(e.msg, "header length") && !strstr(e.msg, "root"), "%s: %s",
                      out_names[i], e.msg);
    }
    ck_assert_msg(ld_registry_load(r, "alias", NULL, NULL, NULL, &e) == LD_OK, "%s", e.msg);
    ld_registry_free(r);

    /* a scan serves real and alias and skips the three links out */
    ck_assert_int_eq(ld_registry_new(g_dir, &r, &e), LD_OK);
    int loaded, failed, unloaded;
    ck_assert_int_eq(ld_registry_scan(r, &loaded, &failed, &unloaded, &e), LD_OK);
    ck_assert_int_eq(loaded, 2);
    ck_assert_int_eq(failed, 3);
    ld_served_t *away = ld_registry_get(r, "away");
    ck_assert_ptr_null(away);
    ld_registry_free(r);
    tu_rmrf(other);
    free(other);
}
END_TEST

/* The same through the real daemon: PUT of a link to /etc/passwd or to a
 * checkpoint outside the folder is 422 without the target's bytes, and the
 * start-up scan serves neither. */
START_TEST(test_daemon_refuses_links_out)
{
    tu_daemon_t d;
    tu_daemon_dirs(&d, 3.0);
    ld_model_t *m = tu_tiny_model(LD_KIND_VAE);
    char path[1200], lnk[1200], adm[1200], conf[4096];
    ld_err_t e;
    snprintf(path, sizeof path, "%s/outside.safetensors", d.dir);
    ck_assert_msg(ld_model_save(m, path, &e) == LD_OK, "%s", e.msg);
    snprintf(lnk, sizeof lnk, "%s/good.safetensors", d.models);
    ck_assert_msg(ld_model_save(m, lnk, &e) == LD_OK, "%s", e.msg);
    ld_model_free(m);
    snprintf(lnk, sizeof lnk, "%s/away.safetensors", d.models);
    ck_assert_int_eq(symlink(path, lnk), 0);
    snprintf(lnk, sizeof lnk, "%s/passwd.safetensors", d.models);
    ck_assert_int_eq(symlink("/etc/passwd", lnk), 0);
    snprintf(adm, sizeof adm, "%s/admin", d.dir);
    tu_write_file(adm, "admin-secret-0123456789\n");
    snprintf(conf, sizeof conf,
             "bind = 127.0.0.1\nport = 0\nmodels_dir = %s\nstate_dir = %s\n"
             "admin_token_file = %s\n",
             d.models, d.state, adm);
    tu_write_file(d.conf, conf);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_start(&d, NULL);
    tu_req_t q = {.token = "admin-secret-0123456789", .port = d.port};
    const char *names[] = {"passwd", "away"};
    for (size_t i = 0; i < LD_ARRAY_LEN(names); i++) {
        tu_resp_t r = {0};
        snprintf(path, sizeof path, "/v1/models/%s", names[i]);
        tu_http_once(&r, "PUT", path, NULL, 0, &q);
        tu_expect_error(&r, 422, "invalid_value", "outside the folder", names[i], 0);
        ck_assert_msg(!strstr(r.body.data, "header length") && !strstr(r.body.data, "root"),
                      "%s: %s", names[i], r.body.data);
        tu_resp_free(&r);
    }
    tu_resp_t r = {0};
    ck_assert_int_eq(tu_http_once(&r, "GET", "/v1/models", NULL, 0, &q), 200);
    ck_assert_msg(strstr(r.body.data, "\"good\"") && !strstr(r.body.data, "\"away\"") &&
                      !strstr(r.body.data, "\"passwd\""),
                  "%s", r.body.data);
    tu_resp_free(&r);
    tu_daemon_stop_ok(&d, 30);
    curl_global_cleanup();
}
END_TEST

START_TEST(test_names)
{
    /* the name rule itself is ld_name_is_safe's (check_fsutil.c) */
    ld_registry_t *r;
    ld_err_t e;
    ck_assert_int_eq(ld_registry_new(g_dir, &r, &e), LD_OK);
    const char *bad_files[] = {"../x.safetensors", "/etc/passwd", "x.bin", ".safetensors",
                               "a/b.safetensors", "x.safetensors/"};
    for (size_t i = 0; i < LD_ARRAY_LEN(bad_files); i++) {
        ck_assert_int_eq(ld_registry_load(r, "m", bad_files[i], NULL, NULL, &e), LD_EINVAL);
        ck_assert_msg(strstr(e.msg, "inside the model folder"), "%s", e.msg);
    }
    ck_assert_int_eq(ld_registry_load(r, "../m", NULL, NULL, NULL, &e), LD_EINVAL);
    ck_assert_int_eq(ld_registry_load(r, "m", NULL, NULL, NULL, &e), LD_ENOTFOUND);
    ck_assert_msg(strstr(e.msg, "m.safetensors"), "%s", e.msg);
    ld_registry_free(r);
}
END_TEST

START_TEST(test_replace_keeps_readers_alive)
{
    save("a.safetensors", 4, 1);
    save("b.safetensors", 6, 2);
    ld_registry_t *r;
    ld_err_t e;
    ck_assert_int_eq(ld_registry_new(g_dir, &r, &e), LD_OK);
    int replaced = -1;
    ld_served_t *s1 = NULL;
    ck_assert_int_eq(ld_registry_load(r, "m", "a.safetensors", &replaced, &s1, &e), LD_OK);
    ck_assert_int_eq(replaced, 0);
    ck_assert_int_eq(s1->model->arch.z_dim, 4);
    ld_served_t *reader = ld_registry_get(r, "m");
    ck_assert_ptr_eq(reader, s1);
    ck_assert_int_eq(ld_registry_load(r, "m", "b.safetensors", &replaced, NULL, &e), LD_OK);
    ck_assert_int_eq(replaced, 1);
    /* the old version still works for its holders */
    float z[4] = {0}, x[784];
    ck_assert_int_eq(ld_model_decode(reader->model, 1, z, x, &e), LD_OK);
    ld_served_t *now = ld_registry_get(r, "m");
    ck_assert_int_eq(now->model->arch.z_dim, 6);
    ck_assert(now->version > s1->version);
    ck_assert_str_ne(now->sha256, s1->sha256);
    ck_assert_str_eq(now->file, "b.safetensors");
    ld_served_release(reader);
    ld_served_release(s1); /* the last reference: freed here (ASan checks) */
    ld_served_release(now);
    /* a bad file does not replace */
    char path[1024];
    snprintf(path, sizeof path, "%s/bad.safetensors", g_dir);
    FILE *f = fopen(path, "w");
    fputs("garbage", f);
    fclose(f);
    ck_assert_int_eq(ld_registry_load(r, "m", "bad.safetensors", NULL, NULL, &e), LD_EFORMAT);
    ck_assert_msg(strstr(e.msg, "bad.safetensors"), "%s", e.msg);
    now = ld_registry_get(r, "m");
    ck_assert_str_eq(now->file, "b.safetensors");
    ld_served_release(now);
    ck_assert_int_eq(ld_registry_unload(r, "m", &e), LD_OK);
    ck_assert_ptr_null(ld_registry_get(r, "m"));
    ck_assert_int_eq(ld_registry_unload(r, "m", &e), LD_ENOTFOUND);
    ld_registry_free(r);
}
END_TEST

START_TEST(test_scan)
{
    save("one.safetensors", 4, 1);
    save("two.safetensors", 4, 2);
    char path[1024];
    snprintf(path, sizeof path, "%s/junk.safetensors", g_dir);
    FILE *f = fopen(path, "w");
    fputs("junk", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/notes.txt", g_dir);
    f = fopen(path, "w");
    fputs("ignored", f);
    fclose(f);
    ld_registry_t *r;
    ld_err_t e;
    ck_assert_int_eq(ld_registry_new(g_dir, &r, &e), LD_OK);
    int nl, nf, nu;
    ck_assert_int_eq(ld_registry_scan(r, &nl, &nf, &nu, &e), LD_OK);
    ck_assert_int_eq(nl, 2);
    ck_assert_int_eq(nf, 1);
    ck_assert_int_eq(nu, 0);
    ck_assert_int_eq(ld_registry_count(r), 2);
    ld_served_t *one = ld_registry_get(r, "one");
    uint64_t v1 = one->version;
    /* unchanged: nothing happens */
    ck_assert_int_eq(ld_registry_scan(r, &nl, &nf, &nu, &e), LD_OK);
    ck_assert_int_eq(nl, 0);
    ld_served_t *again = ld_registry_get(r, "one");
    ck_assert_ptr_eq(again, one);
    ld_served_release(again);
    /* changed file: reloaded; removed file: unloaded; new file: loaded */
    save("one.safetensors", 5, 9);
    snprintf(path, sizeof path, "%s/two.safetensors", g_dir);
    unlink(path);
    save("three.safetensors", 4, 3);
    ck_assert_int_eq(ld_registry_scan(r, &nl, &nf, &nu, &e), LD_OK);
    ck_assert_int_eq(nl, 2);
    ck_assert_int_eq(nu, 1);
    ld_served_t *one2 = ld_registry_get(r, "one");
    ck_assert(one2->version > v1);
    ck_assert_int_eq(one2->model->arch.z_dim, 5);
    ck_assert_ptr_null(ld_registry_get(r, "two"));
    ld_served_t **list;
    int n;
    ck_assert_int_eq(ld_registry_list(r, &list, &n), LD_OK);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(list[0]->name, "one");
    ck_assert_str_eq(list[1]->name, "three");
    ld_registry_list_free(list, n);
    ld_served_release(one);
    ld_served_release(one2);
    /* a missing folder is an error */
    ld_registry_t *r2;
    ck_assert_int_eq(ld_registry_new("/nonexistent/models", &r2, &e), LD_OK);
    ck_assert_int_eq(ld_registry_scan(r2, NULL, NULL, NULL, &e), LD_EIO);
    ck_assert_msg(strstr(e.msg, "/nonexistent/models"), "%s", e.msg);
    ld_registry_free(r2);
    /* metrics */
    ld_buf_t b = {0};
    ld_registry_collect(&b, r);
    ck_assert(strstr(b.data, "latentd_models_loaded 2\n"));
    ck_assert(strstr(b.data, "latentd_model_info{model=\"one\",kind=\"vae\""));
    ld_buf_free(&b);
    ld_registry_free(r);
}
END_TEST

typedef struct {
    ld_registry_t *r;
    atomic_int *stop;
    long uses;
    int missing;
} reader_t;

static void *reader(void *p)
{
    reader_t *a = p;
    float z[8] = {0}, x[784];
    ld_err_t e;
    while (!atomic_load(a->stop)) {
        ld_served_t *s = ld_registry_get(a->r, "hot");
        if (!s) {
            a->missing++;
            continue;
        }
        if (ld_model_decode(s->model, 1, z, x, &e) == LD_OK)
            a->uses++;
        ld_served_release(s);
    }
    return NULL;
}

START_TEST(test_readers_race_writer)
{
    save("a.safetensors", 4, 1);
    save("b.safetensors", 8, 2);
    ld_registry_t *r;
    ld_err_t e;
    ck_assert_int_eq(ld_registry_new(g_dir, &r, &e), LD_OK);
    ck_assert_int_eq(ld_registry_load(r, "hot", "a.safetensors", NULL, NULL, &e), LD_OK);
    atomic_int stop = 0;
    enum { T = 4 };
    pthread_t th[T];
    reader_t args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (reader_t){r, &stop, 0, 0};
        pthread_create(&th[i], NULL, reader, &args[i]);
    }
    for (int i = 0; i < 60; i++)
        ck_assert_int_eq(ld_registry_load(r, "hot", i % 2 ? "a.safetensors" : "b.safetensors",
                                          NULL, NULL, &e),
                         LD_OK);
    atomic_store(&stop, 1);
    long uses = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(args[i].missing, 0);
        uses += args[i].uses;
    }
    ck_assert_int_gt(uses, 0);
    ld_registry_free(r);
}
END_TEST

Suite *suite_registry(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("registry");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_symlinks);
    tcase_add_test(tc, test_daemon_refuses_links_out);
    tcase_add_test(tc, test_replace_keeps_readers_alive);
    tcase_add_test(tc, test_scan);
    tcase_add_test(tc, test_readers_race_writer);
    suite_add_tcase(s, tc);
    return s;
}
