/* check_arena.c — the bump arena, and cJSON parse trees built in it: the same
 * tree and the same error position as cJSON's own parse, nothing leaked or
 * freed twice (the sanitizer build checks), and cJSON trees built the usual
 * way on other threads at the same time unaffected. */
#define _GNU_SOURCE
#include "testutil.h"

#include "latentd/arena.h"
#include "latentd/common.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

START_TEST(test_arena_alloc)
{
    ld_arena_t a;
    ld_arena_init(&a, 100); /* below the minimum: a block of LD_ARENA_MIN */
    unsigned char *prev = NULL;
    size_t total = 0;
    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)(i % 37) + 1;
        unsigned char *p = ld_arena_alloc(&a, n);
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq((uintptr_t)p % 16, 0);
        memset(p, i & 0xff, n); /* writable to its end (ASan: inside a block) */
        if (prev)
            ck_assert(p != prev);
        prev = p;
        total += n;
    }
    ck_assert_uint_ge(a.reserved, total);
    /* one request larger than any block so far gets a block of its own */
    unsigned char *big = ld_arena_alloc(&a, 1 << 20);
    ck_assert_ptr_nonnull(big);
    memset(big, 1, 1 << 20);
    ld_arena_free(&a);
    ck_assert_ptr_null(a.head);
    ck_assert_uint_eq(a.reserved, 0);
    /* reusable after free, and free of an empty arena or NULL is fine */
    ck_assert_ptr_nonnull(ld_arena_alloc(&a, 1));
    ld_arena_free(&a);
    ld_arena_free(&a);
    ld_arena_free(NULL);
}
END_TEST

/* The first block as estimated holds everything that fits in it. */
START_TEST(test_arena_first_block)
{
    ld_arena_t a;
    ld_arena_init(&a, 64 * 1024);
    for (int i = 0; i < 4096; i++)
        ck_assert_ptr_nonnull(ld_arena_alloc(&a, 16));
    ck_assert_ptr_nonnull(a.head);
    ck_assert_uint_le(a.reserved, 64 * 1024 + 64); /* one block and its header */
    ck_assert_ptr_nonnull(ld_arena_alloc(&a, 16));
    ck_assert_uint_gt(a.reserved, 64 * 1024 + 64); /* then a second */
    ld_arena_free(&a);
}
END_TEST

static const char *const docs[] = {
    "{\"z\":[[0.5,-1.25e-3,3],[1,2,3]],\"format\":\"json\",\"seed\":7}",
    "{\"from\":{\"seed\":1},\"to\":{\"z\":[0.1,0.2]},\"steps\":8,\"method\":\"slerp\"}",
    "{\"s\":\"esc \\\" \\\\ \\u00e9 \\ud83d\\ude00\",\"t\":true,\"f\":false,\"n\":null}",
    "[]",
    "{}",
    "  {\"deep\":[[[[[[[[[[1]]]]]]]]]]}  ",
};

START_TEST(test_arena_parse_same_tree)
{
    for (size_t i = 0; i < LD_ARRAY_LEN(docs); i++) {
        const char *d = docs[i];
        size_t len = strlen(d);
        const char *end_ref = NULL, *end = NULL;
        cJSON *ref = cJSON_ParseWithLengthOpts(d, len, &end_ref, 0);
        ck_assert_ptr_nonnull(ref);
        ld_arena_t a;
        ld_arena_init(&a, 0);
        cJSON *t = ld_arena_parse_json(&a, d, len, &end);
        ck_assert_msg(t != NULL, "doc %zu", i);
        ck_assert_ptr_eq(end, end_ref);
        ck_assert_msg(cJSON_Compare(ref, t, 1), "doc %zu: trees differ", i);
        char *p_ref = cJSON_PrintUnformatted(ref), *p = cJSON_PrintUnformatted(t);
        ck_assert_str_eq(p, p_ref);
        free(p_ref);
        free(p);
        ck_assert_uint_gt(a.reserved, 0); /* the nodes are in the arena */
        cJSON_Delete(ref);
        ld_arena_free(&a); /* t: never cJSON_Delete'd */
    }
}
END_TEST

START_TEST(test_arena_parse_errors)
{
    static const char *const bad[] = {
        "{\"z\":[1,2,",     "{\"a\":tru}",  "{\"s\":\"unterminated}",
        "{\"a\":1,}",       "[1 2]",        "{\"a\":[{\"b\":[1,{\"c\":}]}]}",
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(bad); i++) {
        const char *d = bad[i];
        size_t len = strlen(d);
        const char *end_ref = NULL, *end = NULL;
        ck_assert_ptr_null(cJSON_ParseWithLengthOpts(d, len, &end_ref, 0));
        ld_arena_t a;
        ld_arena_init(&a, 0);
        /* cJSON frees its partial tree: those frees must be no-ops here */
        ck_assert_ptr_null(ld_arena_parse_json(&a, d, len, &end));
        ck_assert_msg(end == end_ref, "doc %zu: error at %td, cJSON says %td", i, end - d,
                      end_ref - d);
        ld_arena_free(&a);
    }
}
END_TEST

/* Where cJSON is lenient the arena parse holds to JSON's grammar; a \u0000
 * escape inside a string keeps the string whole (as overlong NULs, at the
 * same offsets); a blank text is an empty object. */
START_TEST(test_arena_parse_strict)
{
    static const struct {
        const char *doc;
        int at; /* offset of the refused number; -1: accepted */
    } cases[] = {
        {"{\"n\":01}", 5},       {"{\"n\":-01}", 5},    {"{\"n\":1.}", 5},
        {"{\"n\":1.e5}", 5},     {"{\"n\":[1,00]}", 8}, {"{\"n\":-}", 5},
        {"{\"n\":0}", -1},       {"{\"n\":-0.5e-3}", -1}, {"{\"n\":10E+2}", -1},
        {"{\"s\":\"01 1. \\\"01\"}", -1}, {"{\"a\":[0,1,2.5,-3]}", -1},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        ld_arena_t a;
        ld_arena_init(&a, 0);
        const char *end = NULL, *d = cases[i].doc;
        cJSON *j = ld_arena_parse_json(&a, d, strlen(d), &end);
        if (cases[i].at < 0)
            ck_assert_msg(j != NULL, "doc %zu (%s) refused at %td", i, d, end - d);
        else
            ck_assert_msg(!j && end == d + cases[i].at, "doc %zu (%s): %s at %td", i, d,
                          j ? "accepted" : "refused", end ? end - d : -1);
        ld_arena_free(&a);
    }
    /* NUL: kept visible, never truncating; an escaped backslash is not one */
    static const char nul[] = "{\"f\":\"x.st\\u0000.txt\",\"g\":\"\\\\u0000\",\"k\\u0000\":1} ";
    ld_arena_t a;
    ld_arena_init(&a, 0);
    const char *end = NULL;
    cJSON *j = ld_arena_parse_json(&a, nul, strlen(nul), &end);
    ck_assert_ptr_nonnull(j);
    ck_assert_ptr_eq(end, nul + strlen(nul) - 1);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "f")->valuestring,
                     "x.st\xC0\x80\xC0\x80\xC0\x80.txt");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "g")->valuestring, "\\u0000");
    ck_assert_str_eq(j->child->next->next->string, "k\xC0\x80\xC0\x80\xC0\x80");
    ld_arena_free(&a);
    /* blank: an empty object */
    ld_arena_init(&a, 0);
    j = ld_arena_parse_json(&a, " \r\n\t", 4, &end);
    ck_assert(cJSON_IsObject(j) && !j->child);
    ld_arena_free(&a);
}
END_TEST

/* While one thread parses into arenas, another builds and deletes cJSON trees
 * the usual way: the hooks are per thread, so neither sees the other's
 * memory (ASan would report a free of arena memory or a leak). */
static void *build_trees(void *arg)
{
    int rounds = *(int *)arg;
    for (int i = 0; i < rounds; i++) {
        cJSON *o = cJSON_CreateObject();
        ck_assert_ptr_nonnull(o);
        ck_assert_ptr_nonnull(cJSON_AddStringToObject(o, "name", "value"));
        ck_assert_ptr_nonnull(cJSON_AddNumberToObject(o, "i", i));
        char *s = cJSON_PrintUnformatted(o);
        ck_assert_ptr_nonnull(s);
        cJSON *back = cJSON_Parse(s);
        ck_assert(cJSON_Compare(o, back, 1));
        cJSON_free(s);
        cJSON_Delete(back);
        cJSON_Delete(o);
    }
    return NULL;
}

START_TEST(test_arena_other_threads)
{
    int rounds = 20000;
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, build_trees, &rounds), 0);
    const char *d = docs[0];
    for (int i = 0; i < rounds; i++) {
        ld_arena_t a;
        ld_arena_init(&a, 256);
        cJSON *t = ld_arena_parse_json(&a, d, strlen(d), NULL);
        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(t, "seed")->valueint, 7);
        ld_arena_free(&a);
    }
    pthread_join(th, NULL);
}
END_TEST

Suite *suite_arena(void)
{
    Suite *s = suite_create("arena");
    TCase *tc = tcase_create("arena");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_arena_alloc);
    tcase_add_test(tc, test_arena_first_block);
    tcase_add_test(tc, test_arena_parse_same_tree);
    tcase_add_test(tc, test_arena_parse_errors);
    tcase_add_test(tc, test_arena_parse_strict);
    tcase_add_test(tc, test_arena_other_threads);
    suite_add_tcase(s, tc);
    return s;
}
