/*
 * Host name lookups for memcached nodes given by name, off the loop threads: a loop thread must
 * never block in DNS. Each lookup runs getaddrinfo() on a detached thread of its own and posts
 * the answer to the asking loop thread's queue.
 *
 * Why not h2o_hostinfo_getaddr: h2o 2.2.5 serves lookups from one FIFO on a pool that starts a
 * thread only when none is idle, and counts a thread it has just started as idle before it runs.
 * A burst of lookups (every loop thread re-resolving the same node at once) lands on one thread,
 * and a name whose DNS server takes seconds holds up every lookup queued behind it: another
 * node's reconnect waited 7.7 s behind a 4 s lookup with h2o's default pool of one thread, and
 * still 3.7 s with a pool of 32. Lookups happen only before reconnects, at most one per node and
 * loop thread at a time, so a thread for each costs nothing that matters.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ratelimitd/log.h"
#include "ratelimitd/resolver.h"

struct st_rl_resolver_t {
    h2o_multithread_receiver_t receiver;
    h2o_multithread_queue_t *queue;
    size_t in_flight; /* lookups whose answer has not been received yet (loop thread only) */
    /* lookup threads that may still touch the queue: h2o_multithread_send_message writes to the
     * queue's pipe after it has linked the message, which the loop thread may already have taken */
    _Atomic size_t running;
};

struct st_rl_lookup_t {
    h2o_multithread_message_t super; /* posted to the resolver's receiver once answered */
    rl_resolver_t *resolver;
    /* set and read on the loop thread only; NULL once cancelled */
    rl_lookup_cb cb;
    void *cbdata;
    /* written by the lookup thread before it posts the answer */
    char *host;
    uint16_t port;
    int gai_err;
    struct addrinfo *res;
};

static void free_lookup(rl_lookup_t *lookup)
{
    if (lookup->res != NULL)
        freeaddrinfo(lookup->res);
    free(lookup->host);
    free(lookup);
}

int rl_resolve(const char *host, uint16_t port, struct addrinfo **res)
{
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    return getaddrinfo(host, service, &hints, res);
}

/* Lookup thread. */
static void *lookup_main(void *arg)
{
    rl_lookup_t *lookup = arg;
    /* read before posting: once posted, the loop thread may free the lookup */
    rl_resolver_t *resolver = lookup->resolver;
    lookup->gai_err = rl_resolve(lookup->host, lookup->port, &lookup->res);
    h2o_multithread_send_message(&resolver->receiver, &lookup->super);
    /* the thread's last touch of the resolver: after it, rl_resolver_dispose may free it */
    atomic_fetch_sub_explicit(&resolver->running, 1, memory_order_release);
    return NULL;
}

/* Loop thread: h2o's receiver callback with the answers posted since the last loop turn. */
static void on_answers(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    rl_resolver_t *resolver = H2O_STRUCT_FROM_MEMBER(rl_resolver_t, receiver, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        rl_lookup_t *lookup = H2O_STRUCT_FROM_MEMBER(rl_lookup_t, super.link, messages->next);
        h2o_linklist_unlink(&lookup->super.link);
        --resolver->in_flight;
        if (lookup->cb != NULL) {
            const char *errstr = lookup->gai_err != 0 ? gai_strerror(lookup->gai_err) : NULL;
            lookup->cb(lookup->cbdata, errstr, errstr != NULL ? NULL : lookup->res);
        }
        free_lookup(lookup);
    }
}

rl_resolver_t *rl_resolver_create(h2o_loop_t *loop)
{
    rl_resolver_t *resolver = calloc(1, sizeof(*resolver));
    if (resolver == NULL)
        return NULL;
    resolver->queue = h2o_multithread_create_queue(loop);
    h2o_multithread_register_receiver(resolver->queue, &resolver->receiver, on_answers);
    return resolver;
}

static int start_detached(rl_lookup_t *lookup)
{
    pthread_attr_t attr;
    int ret = pthread_attr_init(&attr);
    if (ret != 0)
        return ret;
    pthread_t tid;
    if ((ret = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED)) == 0)
        ret = pthread_create(&tid, &attr, lookup_main, lookup);
    pthread_attr_destroy(&attr);
    return ret;
}

rl_lookup_t *rl_resolver_lookup(rl_resolver_t *resolver, const char *host, uint16_t port, rl_lookup_cb cb, void *cbdata)
{
    rl_lookup_t *lookup = calloc(1, sizeof(*lookup));
    if (lookup == NULL || (lookup->host = strdup(host)) == NULL) {
        free(lookup);
        errno = ENOMEM;
        return NULL;
    }
    lookup->resolver = resolver;
    lookup->cb = cb;
    lookup->cbdata = cbdata;
    lookup->port = port;
    atomic_fetch_add_explicit(&resolver->running, 1, memory_order_relaxed);
    int ret = start_detached(lookup);
    if (ret != 0) {
        atomic_fetch_sub_explicit(&resolver->running, 1, memory_order_relaxed);
        free_lookup(lookup);
        errno = ret;
        return NULL;
    }
    ++resolver->in_flight;
    return lookup;
}

void rl_lookup_cancel(rl_lookup_t *lookup)
{
    lookup->cb = NULL;
}

void rl_resolver_dispose(rl_resolver_t *resolver)
{
    if (resolver == NULL)
        return;
    if (resolver->in_flight != 0 || atomic_load_explicit(&resolver->running, memory_order_acquire) != 0) {
        rl_log_debug("memcached", "a host name lookup was still in flight: its answer queue is left to the process");
        return;
    }
    h2o_multithread_unregister_receiver(resolver->queue, &resolver->receiver);
    h2o_multithread_destroy_queue(resolver->queue);
    free(resolver);
}
