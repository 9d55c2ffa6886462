/* config.h — the daemon's configuration: one struct, one table that describes
 * every key ({name, type, min, max, default, field}), one parser for
 * `key = value` files and for command-line overrides.
 *
 * File syntax (config/latentd.conf is the commented reference):
 *   # a comment line
 *   key = value            # a comment after whitespace
 *   key = "quoted value"   # for values with spaces or '#'; \" and \\ escapes
 *   key =                  # empty string (string keys only)
 * Sizes take an optional unit: 4mb, 64k, 1g (powers of 1024, case-insensitive).
 * Booleans: yes/no, true/false, on/off, 1/0.
 * An unknown key, a bad value, a value out of range or a key given twice is an
 * error whose message names the file and line (or the flag) at fault.
 *
 * Adding a key: a field in ld_config_t, a row in the table in config.c, a
 * commented entry in config/latentd.conf.  Nothing else changes.
 *
 * Thread-safety: load and set before starting threads; afterwards the struct
 * is read-only and may be shared.
 */
#ifndef LATENTD_CONFIG_H
#define LATENTD_CONFIG_H

#include "latentd/common.h"
#include "latentd/log.h"

#define LD_CFG_PATH_MAX 1024
#define LD_CFG_STR_MAX 1024

typedef struct {
    /* network */
    char bind[64];                   /* IPv4 or IPv6 literal */
    int port;                        /* 0 = any free port (logged) */
    int http_threads;                /* 0 = one per online CPU */
    int request_timeout;             /* seconds a connection may stay idle */
    int connection_limit;            /* open connections, total */
    int per_ip_connection_limit;     /* open connections per client IP, 0 = no limit */
    int connection_reserve;          /* last connection slots kept for new client addresses */
    int request_head_timeout;        /* seconds for a complete request head */
    int request_body_timeout;        /* seconds for a complete request body */
    long long connection_memory_limit; /* bytes of header/buffer memory per connection */
    long long max_body_bytes;        /* request body cap (413 above it) */
    long long max_upload_bytes;      /* model upload cap (PUT octet-stream, streamed to disk) */
    long long body_memory_limit;     /* all buffered request bodies together (503 above) */
    int shutdown_timeout;            /* seconds to drain in-flight requests on SIGTERM */
    /* folders */
    char models_dir[LD_CFG_PATH_MAX];
    char state_dir[LD_CFG_PATH_MAX];
    char data_dir[LD_CFG_PATH_MAX];
    /* inference */
    int max_samples;                 /* images per request (sample n, decode rows, steps) */
    int sample_cache_max_age;        /* seconds caches may keep a seeded sample.png */
    /* background jobs */
    int worker_threads;              /* jobs training at once (each on its own thread, SCHED_IDLE) */
    int max_queued_jobs;             /* jobs waiting for a worker (429 above) */
    int training_yield_load;         /* training pauses while requests in flight average >= this/100; 0 = never */
    int checkpoint_every;            /* default steps between checkpoints; 0 = only when stopped */
    int max_epochs;                  /* caps on a job spec; 0 = only the absolute bound */
    int max_batch;
    int max_hidden_width;
    int max_z;
    int max_limit;                   /* training examples per job; 0 = no cap */
    long long max_job_bytes;         /* a job's memory estimate (jobspec.h); 0 = no cap */
    /* jobs with "ranks" > 1 (jobs.h, docs/scaling.md) */
    char mpi_launcher[LD_CFG_STR_MAX];  /* the launcher and its flags, split at spaces */
    char mpi_hostfile[LD_CFG_PATH_MAX]; /* passed as --hostfile; "" = none (this machine) */
    char mpi_binary[LD_CFG_PATH_MAX];   /* latentd built with MPI; "" = latentd-mpi beside this binary */
    /* security */
    char token_file[LD_CFG_PATH_MAX];       /* inference bearer token; "" = open */
    char admin_token_file[LD_CFG_PATH_MAX]; /* admin bearer token; "" = admin routes off */
    char cors_origins[LD_CFG_STR_MAX];      /* comma-separated origins, or "*" */
    /* logging */
    int log_level;                   /* ld_log_level_t */
    int access_log;                  /* one line per request (bool) */
    /* web page */
    char web[LD_CFG_PATH_MAX];       /* "builtin", "off" or a folder of the page's files */
    /* replicas (docs/scaling.md) */
    int rescan_interval;             /* seconds between model folder rescans; 0 = SIGHUP only */
    char replica[16];                /* this replica's name, put into its job ids; "" = none */
    char peers[LD_CFG_STR_MAX];      /* "name=http://host:port,..." for job redirects */
} ld_config_t;

typedef enum {
    LD_CFG_INT,   /* int field, min..max */
    LD_CFG_SIZE,  /* long long field, bytes, min..max, unit suffixes */
    LD_CFG_BOOL,  /* int field, 0/1 */
    LD_CFG_STR,   /* char[] field, any text that fits */
    LD_CFG_ENUM,  /* int field, index into choices */
} ld_cfg_type_t;

typedef struct {
    const char *name;
    ld_cfg_type_t type;
    long long min, max;           /* INT and SIZE */
    const char *def;              /* default, in file syntax (parsed like a file value) */
    size_t offset;                /* of the field in ld_config_t */
    size_t size;                  /* of the field (STR capacity) */
    const char *const *choices;   /* ENUM: NULL-terminated */
    const char *flag;             /* command-line override, or NULL */
} ld_cfg_key_t;

/* The key table; *n receives its length. Static storage. */
const ld_cfg_key_t *ld_config_keys(int *n);
/* Find a key by exact (case-sensitive) name; NULL when unknown. */
const ld_cfg_key_t *ld_config_key(const char *name);

/* Fill every field with its default. */
void ld_config_defaults(ld_config_t *c);
/* Apply `key = value` lines from path on top of c. On error c may be partly
 * updated; the message names path:line. */
int ld_config_load(ld_config_t *c, const char *path, ld_err_t *err);
/* Set one key from text. where prefixes error messages (e.g. "--port" or
 * "latentd.conf:3"); NULL means the key name. */
int ld_config_set(ld_config_t *c, const char *key, const char *value, const char *where,
                  ld_err_t *err);
/* Write every key as a `key = value` line (the effective configuration). The
 * returned string is malloc'd; NULL on allocation failure. */
char *ld_config_dump(const ld_config_t *c);

#endif
