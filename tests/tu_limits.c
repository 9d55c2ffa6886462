/* tu_limits.c — see tu_limits.h. */
#define _GNU_SOURCE
#include "tu_limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* The process's virtual size in bytes (/proc/self/statm), 0 if unknown. */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long pages = 0;
    if (f) {
        if (fscanf(f, "%llu", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

int tu_run_limited(int (*fn)(void *ctx), void *ctx, size_t extra)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return 255;
    if (pid == 0) {
        size_t cap = vm_size() + extra;
        struct rlimit rl = {cap, cap};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            _exit(254);
        _exit(fn(ctx) & 0xff);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}
