/*
 * Host name lookups off the loop threads, each on a short-lived thread of its own, answered on
 * the loop thread that asked. See src/resolver.c for why not h2o's resolver.
 */
#ifndef RATELIMITD_RESOLVER_H
#define RATELIMITD_RESOLVER_H

#include <netdb.h>
#include <stdint.h>
#include <h2o.h>

typedef struct st_rl_resolver_t rl_resolver_t;
typedef struct st_rl_lookup_t rl_lookup_t;

/* Loop thread. `errstr` is NULL on success; `res` (getaddrinfo's list, in its order of preference)
 * is freed when the callback returns. */
typedef void (*rl_lookup_cb)(void *cbdata, const char *errstr, const struct addrinfo *res);

/*
 * Blocking: getaddrinfo() for a memcached node (TCP, any family, numeric port), its error code or
 * 0. Start-up and the lookup threads both resolve through it, so they agree on which address comes
 * first.
 */
int rl_resolve(const char *host, uint16_t port, struct addrinfo **res);
/* Loop thread: a resolver answering on `loop`; NULL when out of memory. */
rl_resolver_t *rl_resolver_create(h2o_loop_t *loop);
/*
 * Loop thread: looks `host` up (TCP, any family) on a new thread and calls `cb` on this loop with
 * the answer. Returns NULL, with errno set, when the thread cannot be started (nothing is called
 * back then).
 */
rl_lookup_t *rl_resolver_lookup(rl_resolver_t *resolver, const char *host, uint16_t port, rl_lookup_cb cb,
                                void *cbdata);
/* Loop thread: the lookup's callback is never called; its thread finishes on its own. */
void rl_lookup_cancel(rl_lookup_t *lookup);
/*
 * Loop thread. A lookup still running will post its answer into the resolver's queue: the queue
 * must outlive that thread, so while any is in flight, or has posted but not yet returned from
 * posting, the resolver is left to the process (at exit, a few hundred bytes) instead of freed.
 */
void rl_resolver_dispose(rl_resolver_t *resolver);

#endif
