/*
 * How many client connections the open-file limit leaves room for. Every client connection is a
 * descriptor, and so is everything else the process keeps open; if clients take the last one,
 * accept() fails with EMFILE while the listener stays readable, and a level-triggered loop spins
 * on it. So the connection limit in force is server.max_connections, lowered to what
 * RLIMIT_NOFILE allows after the process's own descriptors are set aside.
 */
#ifndef RATELIMITD_FD_BUDGET_H
#define RATELIMITD_FD_BUDGET_H

#include <stddef.h>
#include <stdint.h>

/*
 * Descriptors the process needs besides client connections: standard streams, config and log
 * files, resolver sockets, and per loop thread its listeners, memcached connections, event-loop
 * and queue descriptors, and one for a connection accepted only to be shed.
 */
uint64_t rl_fd_budget_reserved(size_t threads, size_t listeners, size_t backend_nodes);

/*
 * Descriptors the process cannot start without: standard streams and a few files, and per loop
 * thread its epoll and queue descriptors, listeners and memcached connections. Below this h2o
 * aborts while creating a loop, so start-up refuses such a limit with a message instead.
 */
uint64_t rl_fd_budget_minimum(size_t threads, size_t listeners, size_t backend_nodes);

/* min(configured, nofile - reserved), and at least 1 so a tiny limit still serves someone. */
uint32_t rl_fd_budget_max_connections(uint64_t nofile, uint64_t reserved, uint32_t configured);

#endif
