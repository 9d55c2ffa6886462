/* fz_util.c — see fuzz.h: the memfd behind fz_file. */
#define _GNU_SOURCE
#include "fuzz.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

const char *fz_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-input", 0);
        LD_ASSERT(fd >= 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    LD_ASSERT(ftruncate(fd, 0) == 0);
    LD_ASSERT(pwrite(fd, data, size, 0) == (ssize_t)size);
    return path;
}
