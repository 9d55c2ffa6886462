/* replica.h — this daemon's place among replicas behind a load balancer
 * (docs/scaling.md): its name, which goes into its job ids, and the URLs of
 * its peers, to which requests for their jobs are redirected.
 *
 * A job id names the replica that runs it: "j-NAME-000001" (a daemon without
 * a name keeps "j-000001").  Jobs never move; their records live in the
 * replica's own state folder.  nginx routes /v1/jobs/j-NAME-... to replica
 * NAME (config/nginx/latentd.conf); a request that reaches another replica
 * anyway is answered 307 with the owner's URL.
 *
 * Ownership: ld_replica_new's result belongs to the caller (ld_replica_free,
 * NULL is fine).  Immutable after creation: every function may be called
 * from any thread.
 */
#ifndef LATENTD_REPLICA_H
#define LATENTD_REPLICA_H

#include "latentd/common.h"

#define LD_REPLICA_NAME_MAX 8 /* characters, [a-z0-9] */

typedef struct ld_replica ld_replica_t;

/* name: "" (a lone daemon) or 1..LD_REPLICA_NAME_MAX of [a-z0-9]; peers:
 * "NAME=http://HOST:PORT" entries separated by commas (spaces allowed), ""
 * for none.  LD_EINVAL with a message naming the bad part. */
int ld_replica_new(const char *name, const char *peers, ld_replica_t **out, ld_err_t *err);
void ld_replica_free(ld_replica_t *r);

/* This replica's name, "" when it has none (r may be NULL). */
const char *ld_replica_name(const ld_replica_t *r);

/* For a job id of another replica: 1 and that replica's name in owner;
 * 0 when id is this replica's (or names no replica). */
int ld_replica_job_owner(const ld_replica_t *r, const char *id,
                         char owner[LD_REPLICA_NAME_MAX + 1]);

/* The base URL (no trailing slash) of peer name, or NULL when not a peer. */
const char *ld_replica_peer_url(const ld_replica_t *r, const char *name);

#endif
