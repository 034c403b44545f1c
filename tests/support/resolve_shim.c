/*
 * LD_PRELOAD shim for integration tests (never linked into ratelimitd): lets a test move a
 * memcached node to another address without touching DNS. getaddrinfo() for one fake host name
 * answers the IP literal written on the first line of a file; the test rewrites the file to "move"
 * the host, or empties it to make the name fail like NXDOMAIN (EAI_NONAME). An optional second
 * line is a delay in milliseconds before the answer, to play a slow DNS server.
 *
 *   RL_TEST_RESOLVE_FILE  the file (required for the shim to answer anything)
 *   RL_TEST_RESOLVE_NAME  the fake name, default "mc-moves.test"
 *
 * Every other name, and any AI_NUMERICHOST query, goes to the next getaddrinfo (libc's, or an
 * ASan interceptor's), which also builds the answer, so libc's freeaddrinfo() frees it.
 *
 * It can also make thread creation fail, as a container's pids limit does:
 *
 *   RL_TEST_FAIL_PTHREAD_CREATE_AT  N: the Nth pthread_create() of the process fails with EAGAIN
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

static getaddrinfo_fn next_getaddrinfo(void)
{
    return (getaddrinfo_fn)dlsym(RTLD_NEXT, "getaddrinfo");
}

static int is_fake_name(const char *node, const struct addrinfo *hints)
{
    const char *name = getenv("RL_TEST_RESOLVE_NAME");
    if (name == NULL || name[0] == '\0')
        name = "mc-moves.test";
    if (node == NULL || getenv("RL_TEST_RESOLVE_FILE") == NULL)
        return 0;
    /* a numeric-only query must still say "not a number", as it would for a real name */
    if (hints != NULL && (hints->ai_flags & AI_NUMERICHOST) != 0)
        return 0;
    return strcasecmp(node, name) == 0;
}

static void trim(char *buf)
{
    size_t len = strlen(buf);
    while (len != 0 && isspace((unsigned char)buf[len - 1]))
        buf[--len] = '\0';
}

/* The first line of the file, trimmed ("" when the file is missing or empty), and the delay. */
static void read_answer(char *buf, size_t cap, long *delay_ms)
{
    char line[32];
    buf[0] = '\0';
    *delay_ms = 0;
    FILE *f = fopen(getenv("RL_TEST_RESOLVE_FILE"), "r");
    if (f == NULL)
        return;
    if (fgets(buf, (int)cap, f) == NULL)
        buf[0] = '\0';
    if (fgets(line, sizeof(line), f) != NULL)
        *delay_ms = strtol(line, NULL, 10);
    fclose(f);
    trim(buf);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (ms > 0 && nanosleep(&ts, &ts) != 0)
        ;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    getaddrinfo_fn next = next_getaddrinfo();
    if (next == NULL)
        return EAI_SYSTEM;
    if (!is_fake_name(node, hints))
        return next(node, service, hints, res);
    char answer[128];
    long delay_ms;
    read_answer(answer, sizeof(answer), &delay_ms);
    sleep_ms(delay_ms);
    if (answer[0] == '\0')
        return EAI_NONAME;
    struct addrinfo numeric = {0};
    if (hints != NULL)
        numeric = *hints;
    numeric.ai_flags |= AI_NUMERICHOST;
    numeric.ai_addrlen = 0;
    numeric.ai_addr = NULL;
    numeric.ai_canonname = NULL;
    numeric.ai_next = NULL;
    return next(answer, service, &numeric, res);
}

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *), void *arg)
{
    static int calls; /* only the main thread creates threads in ratelimitd's start-up */
    const char *at = getenv("RL_TEST_FAIL_PTHREAD_CREATE_AT");
    if (at != NULL && ++calls == atoi(at))
        return EAGAIN;
    pthread_create_fn next = (pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
    return next(thread, attr, start, arg);
}
