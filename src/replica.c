/* replica.c — see include/latentd/replica.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/replica.h"

#include <stdlib.h>
#include <string.h>

#define MAX_PEERS 64
#define URL_MAX 256

struct ld_replica {
    char name[LD_REPLICA_NAME_MAX + 1];
    int n_peers;
    struct {
        char name[LD_REPLICA_NAME_MAX + 1];
        char url[URL_MAX];
    } peers[MAX_PEERS];
};

/* 1..LD_REPLICA_NAME_MAX of [a-z0-9], ending at end. */
static int name_valid(const char *s, const char *end)
{
    if (end <= s || end - s > LD_REPLICA_NAME_MAX)
        return 0;
    for (; s < end; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

static const char *trim(const char *s, const char **end)
{
    while (s < *end && (*s == ' ' || *s == '\t'))
        s++;
    while (*end > s && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
        (*end)--;
    return s;
}

/* One "NAME=URL" entry, [s, end). */
static int add_peer(ld_replica_t *r, const char *s, const char *end, ld_err_t *err)
{
    s = trim(s, &end);
    if (s == end)
        return LD_OK;
    const char *eq = memchr(s, '=', (size_t)(end - s));
    const char *ne = eq;
    if (eq)
        trim(s, &ne);
    if (!eq || !name_valid(s, ne))
        return ld_err_set(err, LD_EINVAL,
                          "peers: '%.*s' is not NAME=URL with NAME of 1 to %d of [a-z0-9]",
                          (int)(end - s), s, LD_REPLICA_NAME_MAX);
    const char *u = eq + 1, *ue = end;
    u = trim(u, &ue);
    while (ue > u && ue[-1] == '/')
        ue--;
    size_t ul = (size_t)(ue - u);
    if ((ul < 8 || strncmp(u, "http://", 7) != 0) && (ul < 9 || strncmp(u, "https://", 8) != 0))
        return ld_err_set(err, LD_EINVAL, "peers: the URL of %.*s must start with http:// or https://",
                          (int)(ne - s), s);
    if (ul >= URL_MAX)
        return ld_err_set(err, LD_EINVAL, "peers: the URL of %.*s is longer than %d characters",
                          (int)(ne - s), s, URL_MAX - 1);
    for (const char *p = u; p < ue; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
            return ld_err_set(err, LD_EINVAL, "peers: the URL of %.*s has a space or a control "
                              "character", (int)(ne - s), s);
    char name[LD_REPLICA_NAME_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)(ne - s), s);
    if (ld_replica_peer_url(r, name) || strcmp(name, r->name) == 0)
        return strcmp(name, r->name) == 0 ? LD_OK /* its own entry: a shared list */
                                          : ld_err_set(err, LD_EINVAL,
                                                       "peers: %s is listed twice", name);
    if (r->n_peers == MAX_PEERS)
        return ld_err_set(err, LD_EINVAL, "peers: more than %d entries", MAX_PEERS);
    memcpy(r->peers[r->n_peers].name, name, sizeof name);
    snprintf(r->peers[r->n_peers].url, URL_MAX, "%.*s", (int)ul, u);
    r->n_peers++;
    return LD_OK;
}

int ld_replica_new(const char *name, const char *peers, ld_replica_t **out, ld_err_t *err)
{
    if (*name && !name_valid(name, name + strlen(name)))
        return ld_err_set(err, LD_EINVAL, "replica: '%.40s' must be 1 to %d of [a-z0-9]", name,
                          LD_REPLICA_NAME_MAX);
    ld_replica_t *r = calloc(1, sizeof *r);
    if (!r)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    snprintf(r->name, sizeof r->name, "%s", name);
    for (const char *s = peers; *s;) {
        const char *comma = strchr(s, ',');
        const char *end = comma ? comma : s + strlen(s);
        int rc = add_peer(r, s, end, err);
        if (rc) {
            free(r);
            return rc;
        }
        s = comma ? comma + 1 : end;
    }
    if (r->n_peers && !*r->name) {
        free(r);
        return ld_err_set(err, LD_EINVAL, "peers needs replica: a replica without a name has "
                                          "no job ids of its own to tell apart");
    }
    *out = r;
    return LD_OK;
}

void ld_replica_free(ld_replica_t *r)
{
    free(r);
}

const char *ld_replica_name(const ld_replica_t *r)
{
    return r ? r->name : "";
}

int ld_replica_job_owner(const ld_replica_t *r, const char *id,
                         char owner[LD_REPLICA_NAME_MAX + 1])
{
    if (!id || strncmp(id, "j-", 2) != 0)
        return 0;
    const char *s = id + 2, *dash = strchr(s, '-');
    if (!dash || !name_valid(s, dash))
        return 0;
    snprintf(owner, LD_REPLICA_NAME_MAX + 1, "%.*s", (int)(dash - s), s);
    return strcmp(owner, ld_replica_name(r)) != 0;
}

const char *ld_replica_peer_url(const ld_replica_t *r, const char *name)
{
    for (int i = 0; r && i < r->n_peers; i++)
        if (strcmp(r->peers[i].name, name) == 0)
            return r->peers[i].url;
    return NULL;
}
