/*
 * A loop thread's client connections: accepting them (a bounded batch per wake-up, pausing
 * while descriptors run out instead of spinning on a readable listener), shedding those over
 * the connection limit before any parsing, tracking the open ones so a drain can half-close
 * them, and shutting down those whose peer stops sending and acknowledging (h2o 2.2.5 times out
 * idle connections only). Every function here runs on the worker's own loop thread.
 */
#ifndef RATELIMITD_CONNECTIONS_H
#define RATELIMITD_CONNECTIONS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include "ratelimitd/config.h"

typedef struct st_rl_worker_t rl_worker_t;

/* Client connections open in the whole process against the limit in force; every loop thread
 * shares one per listener role. */
typedef struct st_rl_connection_limit_t {
    _Atomic size_t open;
    uint32_t max; /* API: server.max_connections, lowered to what the open-file limit holds */
} rl_connection_limit_t;

/* Sets up the worker's connection list, accept pause and watchdog; its loop must exist. */
void rl_connections_init(rl_worker_t *worker);
/* Starts accepting on `listener`, a socket of the worker's loop whose data is its h2o_accept_ctx_t. */
void rl_connections_accept(h2o_socket_t *listener);
/* Stops accepting and closes the worker's listeners (the drain's first step). */
void rl_connections_close_listeners(rl_worker_t *worker);
/* Shuts the read side of every open connection: h2o sees EOF at its next read and closes the
 * connection through its own path, while an answer being written is not cut. */
void rl_connections_half_close(rl_worker_t *worker);
/* Closes the listeners and stops the watchdog, before the loop is torn down. */
void rl_connections_stop(rl_worker_t *worker);
/* Frees the timers; only once no connection is left on the loop. */
void rl_connections_dispose(rl_worker_t *worker);

#endif
