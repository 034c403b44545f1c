/*
 * Keeps an HTTP/1.1 client socket in the loop's poll set while its request waits for the
 * store, without reading from it.
 *
 * libh2o 2.2.5 stops reading an HTTP/1.1 socket while a request is processed and starts again
 * once the answer is written. When the answer comes one loop turn later (a memcached round
 * trip), its epoll backend sees the change and removes the socket from the epoll set, then
 * adds it back: two epoll_ctl system calls per decision, about a seventh of a decision's CPU
 * time in bench/run. Parking leaves the socket registered with h2o's "don't read" flag set, so
 * nothing is read into the request's buffer (h2o's parsed request points into it) while the
 * request is in flight.
 */
#ifndef RATELIMITD_HTTP1_PARK_H
#define RATELIMITD_HTTP1_PARK_H

#include <h2o.h>

/* Parks the socket of an HTTP/1.x request that h2o has stopped reading. Returns the socket
 * to pass to rl_http1_unpark, or NULL when there is nothing to park (HTTP/2, or h2o is still
 * reading the socket). */
h2o_socket_t *rl_http1_park(h2o_req_t *req);

/* Gives the socket back to h2o as it left it (not reading); call before answering the
 * parked request. */
void rl_http1_unpark(h2o_socket_t *sock);

#endif
