/* check_config.c — the config table and parser: defaults, every value type,
 * quoting and comments, each error naming its line, and the shipped
 * config/latentd.conf (every key present, commented, at its default). */
#define _GNU_SOURCE
#include "testutil.h"

#include "latentd/config.h"

#include <string.h>

static char *g_dir;

static void setup(void)
{
    g_dir = tu_mkdtemp();
}

static void teardown(void)
{
    tu_rmrf(g_dir);
    free(g_dir);
}

static const char *conf_file(const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/t.conf", g_dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

START_TEST(test_defaults)
{
    ld_config_t c;
    ld_config_defaults(&c);
    ck_assert_str_eq(c.bind, "127.0.0.1");
    ck_assert_int_eq(c.port, 8080);
    ck_assert_int_eq(c.max_body_bytes, 4 << 20);
    ck_assert_int_eq(c.max_samples, 256);
    ck_assert_str_eq(c.models_dir, "models");
    ck_assert_str_eq(c.token_file, "");
    ck_assert_int_eq(c.log_level, LD_LOG_INFO);
    ck_assert_int_eq(c.access_log, 1);
    ck_assert_int_gt(c.request_timeout, 0);
}
END_TEST

START_TEST(test_values_and_syntax)
{
    ld_config_t c;
    ld_config_defaults(&c);
    ld_err_t e;
    const char *p = conf_file("# comment\n"
                              "   \n"
                              "port = 9000   # trailing comment\n"
                              "max_body_bytes = 64k\n"
                              "body_memory_limit=2MB\n"
                              "\tbind\t=\t::1\n"
                              "token_file = \"/a path/with # hash\"  # c\n"
                              "cors_origins = \"https://a.example, https://b.example\"\n"
                              "admin_token_file = \"q\\\"uote\\\\\"\n"
                              "log_level = debug\n"
                              "access_log = off\n"
                              "state_dir =\n"
                              "data_dir = dir#notacomment\r\n");
    ck_assert_msg(ld_config_load(&c, p, &e) == LD_OK, "%s", e.msg);
    ck_assert_int_eq(c.port, 9000);
    ck_assert_int_eq(c.max_body_bytes, 64 * 1024);
    ck_assert_int_eq(c.body_memory_limit, 2 * 1024 * 1024);
    ck_assert_str_eq(c.bind, "::1");
    ck_assert_str_eq(c.token_file, "/a path/with # hash");
    ck_assert_str_eq(c.cors_origins, "https://a.example, https://b.example");
    ck_assert_str_eq(c.admin_token_file, "q\"uote\\");
    ck_assert_int_eq(c.log_level, LD_LOG_DEBUG);
    ck_assert_int_eq(c.access_log, 0);
    ck_assert_str_eq(c.state_dir, "");
    ck_assert_str_eq(c.data_dir, "dir#notacomment");
    /* flags: ld_config_set with a where */
    ck_assert_int_eq(ld_config_set(&c, "port", "0", "--port", &e), LD_OK);
    ck_assert_int_eq(c.port, 0);
    ck_assert_int_eq(ld_config_set(&c, "port", "65536", "--port", &e), LD_EINVAL);
    ck_assert_msg(strstr(e.msg, "--port: port = 65536 is out of range [0, 65535]"), "%s", e.msg);
    ck_assert_int_eq(ld_config_set(&c, "nope", "1", "--set", &e), LD_EINVAL);
    ck_assert_msg(strstr(e.msg, "unknown key 'nope'"), "%s", e.msg);
}
END_TEST

START_TEST(test_errors_name_the_line)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"port = 80\nprt = 1\n", "t.conf:2: unknown key 'prt'"},
        {"Port = 80\n", "t.conf:1: unknown key 'Port'"}, /* keys are case-sensitive */
        {"\n\nport = 8o\n", "t.conf:3: port expects an integer, got '8o'"},
        {"port = \n", "t.conf:1: port expects an integer, got ''"},
        {"port = -1\n", "t.conf:1: port = -1 is out of range [0, 65535]"},
        {"port = 99999999999999999999\n", "t.conf:1: port expects an integer"},
        {"max_body_bytes = 4 mb\n", "t.conf:1: max_body_bytes expects a size"},
        {"max_body_bytes = 4tb\n", "t.conf:1: max_body_bytes expects a size"},
        {"max_body_bytes = 2g\n", "t.conf:1: max_body_bytes = 2g is out of range"},
        {"access_log = maybe\n", "t.conf:1: access_log expects yes or no"},
        {"log_level = verbose\n", "t.conf:1: log_level must be one of debug, info, warn, error"},
        {"port 80\n", "t.conf:1: expected '=' after 'port'"},
        {"= 80\n", "t.conf:1: expected 'key = value'"},
        {"bind = \"127.0.0.1\n", "t.conf:1: unterminated quoted value"},
        {"bind = \"127.0.0.1\" extra\n", "t.conf:1: unexpected text after the quoted value"},
        {"bind = \"a\\n\"\n", "t.conf:1: bad escape"},
        {"port = 1\nhttp_threads = 2\nport = 3\n", "t.conf:3: key 'port' is already set on line 1"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        ld_config_t c;
        ld_config_defaults(&c);
        ld_err_t e = {{0}};
        int rc = ld_config_load(&c, conf_file(cases[i].text), &e);
        ck_assert_msg(rc == LD_EINVAL, "case %zu accepted: %s", i, cases[i].text);
        ck_assert_msg(strstr(e.msg, cases[i].want), "case %zu: '%s' lacks '%s'", i, e.msg,
                      cases[i].want);
    }
    /* a long value and a NUL byte */
    ld_config_t c;
    ld_config_defaults(&c);
    ld_err_t e;
    char big[3000];
    memset(big, 'a', sizeof big);
    memcpy(big, "bind = ", 7);
    big[sizeof big - 2] = '\n';
    big[sizeof big - 1] = '\0';
    ck_assert_int_eq(ld_config_load(&c, conf_file(big), &e), LD_EINVAL);
    ck_assert_msg(strstr(e.msg, "t.conf:1: bind is too long"), "%s", e.msg);
    char path[600];
    snprintf(path, sizeof path, "%s/nul.conf", g_dir);
    FILE *f = fopen(path, "w");
    fwrite("port = 1\0\n", 1, 10, f);
    fclose(f);
    ck_assert_int_eq(ld_config_load(&c, path, &e), LD_EINVAL);
    ck_assert_msg(strstr(e.msg, "NUL"), "%s", e.msg);
    ck_assert_int_eq(ld_config_load(&c, "/nonexistent/x.conf", &e), LD_EIO);
    ck_assert_msg(strstr(e.msg, "/nonexistent/x.conf"), "%s", e.msg);
}
END_TEST

START_TEST(test_dump_round_trip)
{
    ld_config_t a, b;
    ld_config_defaults(&a);
    ld_err_t e;
    ck_assert_int_eq(ld_config_set(&a, "token_file", "we \"ird\\ #name", NULL, &e), LD_OK);
    ck_assert_int_eq(ld_config_set(&a, "port", "1234", NULL, &e), LD_OK);
    char *dump = ld_config_dump(&a);
    ck_assert_ptr_nonnull(dump);
    ld_config_defaults(&b);
    ck_assert_msg(ld_config_load(&b, conf_file(dump), &e) == LD_OK, "%s\n%s", e.msg, dump);
    ck_assert_str_eq(b.token_file, a.token_file);
    ck_assert_int_eq(b.port, 1234);
    ck_assert(memcmp(&a, &b, sizeof a) == 0);
    free(dump);
}
END_TEST

/* config/latentd.conf: loads; equals the defaults; every key of the table is
 * set there exactly once, below a comment block that states its default. */
START_TEST(test_shipped_config)
{
    const char *path = "config/latentd.conf";
    ld_config_t c, d;
    ld_err_t e;
    ld_config_defaults(&c);
    ck_assert_msg(ld_config_load(&c, path, &e) == LD_OK, "%s", e.msg);
    ld_config_defaults(&d);
    ck_assert_msg(memcmp(&c, &d, sizeof c) == 0, "config/latentd.conf differs from the defaults");
    int nk;
    const ld_cfg_key_t *keys = ld_config_keys(&nk);
    int seen[64] = {0};
    ck_assert_int_le(nk, 64);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[4096], comments[8192] = "";
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') {
            strncat(comments, line, sizeof comments - strlen(comments) - 1);
            continue;
        }
        if (line[0] == '\n') {
            continue;
        }
        int k = 0;
        while (k < nk && !(strncmp(line, keys[k].name, strlen(keys[k].name)) == 0 &&
                           line[strlen(keys[k].name)] == ' '))
            k++;
        ck_assert_msg(k < nk, "unexpected line in %s: %s", path, line);
        ck_assert_msg(strstr(comments, "Default:"), "key %s has no 'Default:' in its comment",
                      keys[k].name);
        seen[k]++;
        comments[0] = '\0';
    }
    fclose(f);
    for (int k = 0; k < nk; k++)
        ck_assert_msg(seen[k] == 1, "key %s appears %d times in %s", keys[k].name, seen[k], path);
}
END_TEST

Suite *suite_config(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_values_and_syntax);
    tcase_add_test(tc, test_errors_name_the_line);
    tcase_add_test(tc, test_dump_round_trip);
    tcase_add_test(tc, test_shipped_config);
    suite_add_tcase(s, tc);
    return s;
}
