/* sha256.h — SHA-256 (FIPS 180-4), used to fingerprint checkpoint files and
 * to compare bearer tokens in constant time.
 *
 * Thread-safety: reentrant; a context belongs to one thread at a time.
 */
#ifndef LATENTD_SHA256_H
#define LATENTD_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define LD_SHA256_LEN 32

typedef struct {
    uint32_t h[8];
    uint64_t n_bytes;
    uint8_t block[64];
    size_t fill;
} ld_sha256_t;

void ld_sha256_init(ld_sha256_t *c);
void ld_sha256_update(ld_sha256_t *c, const void *data, size_t len);
void ld_sha256_final(ld_sha256_t *c, uint8_t out[LD_SHA256_LEN]);

/* One-shot digest of data[0..len). */
void ld_sha256(const void *data, size_t len, uint8_t out[LD_SHA256_LEN]);
/* One-shot digest as 64 lowercase hex digits plus NUL into hex[65]. */
void ld_sha256_hex(const void *data, size_t len, char hex[2 * LD_SHA256_LEN + 1]);

#endif
