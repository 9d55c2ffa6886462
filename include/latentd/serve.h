/* serve.h — `latentd serve`: configuration, start-up, signals, shutdown.
 *
 *   latentd serve [--config FILE] [--bind ADDR] [--port N] [--models DIR]
 *                 [--state DIR] [--data DIR] [--token-file F]
 *                 [--admin-token-file F] [--log-level L] [--set KEY=VALUE]...
 *                 [--check-config] [--print-config]
 *
 * Order of precedence: built-in defaults < config file < flags.
 * Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP rescans the model folder.
 * systemd: READY=1 once serving, STOPPING=1 when draining, RELOADING=1 around
 * a rescan, to $NOTIFY_SOCKET (no libsystemd); WATCHDOG=1 when asked to.
 */
#ifndef LATENTD_SERVE_H
#define LATENTD_SERVE_H

#include "latentd/config.h"

/* Entry point for `latentd serve ...` (argv[0] is "serve"). Returns the
 * process exit status: 0 after a clean shutdown, 1 on a runtime failure,
 * 2 on a usage or configuration error (the message is on stderr). Installs
 * signal handlers; call it once, from the main thread. */
int ld_serve_main(int argc, char **argv);

/* Entry point for `latentd routes`: print the table of routes that `serve`
 * registers (METHOD PATH AUTH a line) and exit; nothing is bound or loaded.
 * Returns the exit status (0, or 1/2 with a message on stderr). */
int ld_serve_routes_main(int argc, char **argv);

/* Build the effective configuration from argv (defaults, --config, flags).
 * *print_only is set for --print-config / --check-config. */
int ld_serve_parse_args(int argc, char **argv, ld_config_t *cfg, int *print_only, int *check_only,
                        ld_err_t *err);

/* Read a bearer token from path: the first line, surrounding blanks trimmed;
 * must be 16..4096 printable characters without spaces. *out is malloc'd. */
int ld_serve_read_token(const char *path, char **out, ld_err_t *err);

/* Send one sd_notify message ("READY=1", ...) to $NOTIFY_SOCKET, if set
 * (path or abstract "@name" AF_UNIX datagram socket). 1 sent, 0 no socket,
 * negative on error. */
int ld_sd_notify(const char *msg);

#endif
