/*
 * The connection limit the open-file limit allows. The per-thread and fixed allowances are
 * generous on purpose: running short of descriptors costs a spinning accept loop, while setting
 * a few dozen aside costs nothing.
 */
#include "ratelimitd/fd_budget.h"

/* stdio, config file during a reload, log, OpenSSL's random device (a lookup's DNS socket stands
 * in for the connection of the node it looks up, which is closed meanwhile) */
#define RL_FD_FIXED 64
/* epoll, the multithread queue's pipe, a socket accepted only to be shed, a reconnect's spare */
#define RL_FD_PER_THREAD 8

/* stdio, the config file, the log */
#define RL_FD_MIN_FIXED 16
/* epoll and the multithread queue's pipe */
#define RL_FD_MIN_PER_THREAD 3

/* Each loop thread holds its own listening sockets and its own connection to every node. */
static uint64_t descriptors(uint64_t fixed, uint64_t per_thread, size_t threads, size_t listeners, size_t backend_nodes)
{
    return fixed + (uint64_t)threads * (listeners + backend_nodes + per_thread);
}

uint64_t rl_fd_budget_reserved(size_t threads, size_t listeners, size_t backend_nodes)
{
    return descriptors(RL_FD_FIXED, RL_FD_PER_THREAD, threads, listeners, backend_nodes);
}

uint64_t rl_fd_budget_minimum(size_t threads, size_t listeners, size_t backend_nodes)
{
    return descriptors(RL_FD_MIN_FIXED, RL_FD_MIN_PER_THREAD, threads, listeners, backend_nodes);
}

uint32_t rl_fd_budget_max_connections(uint64_t nofile, uint64_t reserved, uint32_t configured)
{
    if (nofile <= reserved)
        return 1;
    uint64_t room = nofile - reserved;
    return room < configured ? (uint32_t)room : configured;
}
