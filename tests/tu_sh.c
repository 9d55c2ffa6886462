/* tu_sh.c — see tu_sh.h. */
#include "tu_sh.h"

#include "testutil.h"

#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>

int tu_sh(char **out, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd - 8, fmt, ap);
    va_end(ap);
    ck_assert_msg(n >= 0 && n < (int)sizeof cmd - 8, "command line too long");
    strcat(cmd, " 2>&1");
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    while ((got = fread(buf + len, 1, cap - 1 - len, p)) > 0)
        len += got;
    buf[len] = 0;
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}
