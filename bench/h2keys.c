/*
 * bench/h2keys: HTTP/2 load (cleartext h2c, prior knowledge) whose API key changes with every
 * request, for bench/run's h2-keys scenario.
 *
 * h2load sends one fixed header set, so over HTTP/2 it can only measure a single hot key; the
 * many-keys load, where every decision reaches memcached, needed its own client. This one does
 * what h2load -t1 does (one thread, C connections, M concurrent streams on each, a new request
 * as soon as one completes) and takes the key header's value from a rotation over N keys,
 * "k0" .. "k<N-1>", shared by all connections in send order, as bench/lib/keys.lua does for
 * wrk. nghttp2 does the framing and HPACK; the key is sent as a never-indexed literal so that
 * every request carries its key bytes, as a gateway's would, instead of a 1-byte table index.
 *
 * It prints one line that bench/run parses, in the shape of bench/lib/status.lua's:
 *   BENCH_JSON {"requests":N,"duration_us":N,"p50_us":N,"p90_us":N,"p99_us":N,"max_us":N,
 *               "errors":{...},"status":{"200":N,...}}
 * `requests` counts streams completed with a status before the deadline; streams still open at
 * the deadline are dropped uncounted, as wrk drops its in-flight requests.
 *
 * Usage: h2keys [-c CONNS] [-m STREAMS] [-d SECONDS] [-k KEYS] [-H HEADER] [-p PATH] HOST PORT
 * Exit status: 0 when at least one request completed and no connection failed, 1 otherwise,
 * 2 on bad usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define H2K_MAX_STREAMS 1000
#define H2K_HIST_US 1000000 /* 1 µs buckets up to 1 s; slower answers go to one overflow bucket */
#define H2K_READ_CHUNK 65536
#define H2K_TIMEOUT_US 5000000 /* like bench/run's wrk --timeout 5s */
#define H2K_MAX_STATUS 600

struct h2k_options {
    const char *host;
    const char *port;
    const char *path;
    const char *header;
    int conns;
    int streams;
    double seconds;
    unsigned keys;
};

struct h2k_errors {
    uint64_t connect, read, write, protocol, reset, timeout;
};

struct h2k_stats {
    uint32_t *hist; /* H2K_HIST_US + 1 buckets, the last one for >= 1 s */
    uint64_t requests, max_us;
    uint64_t status[H2K_MAX_STATUS];
    uint64_t other_status;
    struct h2k_errors errors;
};

/* One request in flight: the stream's user data in nghttp2. */
struct h2k_slot {
    int64_t started_us;
    int status;
    bool in_use;
};

struct h2k_loadgen;

struct h2k_conn {
    struct h2k_loadgen *lg;
    int fd; /* -1 when never opened, failed or closed */
    nghttp2_session *session;
    /* bytes nghttp2 produced that the socket has not taken yet */
    uint8_t *out;
    size_t out_len, out_cap, out_off;
    bool want_out; /* EPOLLOUT armed */
    struct h2k_slot slots[H2K_MAX_STREAMS];
};

struct h2k_loadgen {
    struct h2k_options opt;
    int epfd;
    struct h2k_conn *conns;
    unsigned next_key;
    bool measuring;
    int64_t deadline_us;
    struct h2k_stats stats;
    char authority[300];
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void usage(void)
{
    fprintf(stderr, "usage: h2keys [-c CONNS] [-m STREAMS] [-d SECONDS] [-k KEYS] [-H HEADER] [-p PATH] HOST PORT\n");
}

static int parse_options(int argc, char **argv, struct h2k_options *opt)
{
    *opt = (struct h2k_options){
        .path = "/limit", .header = "x-api-key", .conns = 64, .streams = 10, .seconds = 10, .keys = 100000};
    int c;
    while ((c = getopt(argc, argv, "c:m:d:k:H:p:")) != -1) {
        char *end = NULL;
        switch (c) {
        case 'c':
            opt->conns = (int)strtol(optarg, &end, 10);
            break;
        case 'm':
            opt->streams = (int)strtol(optarg, &end, 10);
            break;
        case 'd':
            opt->seconds = strtod(optarg, &end);
            break;
        case 'k':
            opt->keys = (unsigned)strtoul(optarg, &end, 10);
            break;
        case 'H':
            /* HTTP/2 field names are lowercase (RFC 9113, 8.2.1): a peer rejects any other */
            for (char *p = optarg; *p != '\0'; ++p)
                *p = (char)tolower((unsigned char)*p);
            opt->header = optarg;
            break;
        case 'p':
            opt->path = optarg;
            break;
        default:
            return -1;
        }
        if (end != NULL && (*end != '\0' || end == optarg))
            return -1;
    }
    if (argc - optind != 2)
        return -1;
    opt->host = argv[optind];
    opt->port = argv[optind + 1];
    if (opt->conns < 1 || opt->conns > 10000 || opt->streams < 1 || opt->streams > H2K_MAX_STREAMS ||
        !(opt->seconds > 0) || opt->keys < 1)
        return -1;
    return 0;
}

/* ---- statistics ---- */

static void record(struct h2k_stats *st, int status, int64_t latency_us)
{
    uint64_t us = latency_us < 0 ? 0 : (uint64_t)latency_us;
    st->hist[us < H2K_HIST_US ? us : H2K_HIST_US]++;
    if (us > st->max_us)
        st->max_us = us;
    if (status > 0 && status < H2K_MAX_STATUS)
        st->status[status]++;
    else
        st->other_status++;
    st->requests++;
}

static uint64_t percentile(const struct h2k_stats *st, double q)
{
    if (st->requests == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)st->requests), seen = 0;
    if (rank >= st->requests)
        rank = st->requests - 1;
    for (uint64_t us = 0; us <= H2K_HIST_US; us++) {
        seen += st->hist[us];
        if (seen > rank)
            return us < H2K_HIST_US ? us : st->max_us;
    }
    return st->max_us;
}

static void print_result(const struct h2k_stats *st, int64_t duration_us)
{
    const struct h2k_errors *e = &st->errors;
    printf("BENCH_JSON {\"requests\":%" PRIu64 ",\"duration_us\":%" PRId64 ",\"p50_us\":%" PRIu64 ",\"p90_us\":%" PRIu64
           ",\"p99_us\":%" PRIu64 ",\"max_us\":%" PRIu64 ",\"errors\":{\"connect\":%" PRIu64 ",\"read\":%" PRIu64
           ",\"write\":%" PRIu64 ",\"protocol\":%" PRIu64 ",\"reset\":%" PRIu64 ",\"timeout\":%" PRIu64
           "},\"status\":{",
           st->requests, duration_us, percentile(st, 0.50), percentile(st, 0.90), percentile(st, 0.99), st->max_us,
           e->connect, e->read, e->write, e->protocol, e->reset, e->timeout);
    const char *sep = "";
    for (int s = 0; s < H2K_MAX_STATUS; s++) {
        if (st->status[s] != 0) {
            printf("%s\"%d\":%" PRIu64, sep, s, st->status[s]);
            sep = ",";
        }
    }
    if (st->other_status != 0)
        printf("%s\"0\":%" PRIu64, sep, st->other_status);
    printf("}}\n");
    fflush(stdout);
}

/* ---- requests ---- */

static struct h2k_slot *free_slot(struct h2k_conn *c)
{
    for (int i = 0; i < c->lg->opt.streams; i++)
        if (!c->slots[i].in_use)
            return &c->slots[i];
    return NULL;
}

static int submit_one(struct h2k_conn *c)
{
    struct h2k_loadgen *lg = c->lg;
    struct h2k_slot *slot = free_slot(c);
    if (slot == NULL)
        return 0;
    char key[16];
    int keylen = snprintf(key, sizeof(key), "k%u", lg->next_key);
    lg->next_key = lg->next_key + 1 == lg->opt.keys ? 0 : lg->next_key + 1;
#define H2K_NV(n, v, vl, fl)                                                                                           \
    {                                                                                                                  \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), (vl), (fl)                                                          \
    }
    const nghttp2_nv nv[] = {
        H2K_NV(":method", "GET", 3, NGHTTP2_NV_FLAG_NONE),
        H2K_NV(":scheme", "http", 4, NGHTTP2_NV_FLAG_NONE),
        H2K_NV(":authority", lg->authority, strlen(lg->authority), NGHTTP2_NV_FLAG_NONE),
        H2K_NV(":path", lg->opt.path, strlen(lg->opt.path), NGHTTP2_NV_FLAG_NONE),
        H2K_NV(lg->opt.header, key, (size_t)keylen, NGHTTP2_NV_FLAG_NO_INDEX),
    };
#undef H2K_NV
    *slot = (struct h2k_slot){.started_us = now_us(), .status = 0, .in_use = true};
    int32_t id = nghttp2_submit_request(c->session, NULL, nv, sizeof(nv) / sizeof(nv[0]), NULL, slot);
    if (id < 0) {
        fprintf(stderr, "h2keys: nghttp2_submit_request: %s\n", nghttp2_strerror(id));
        slot->in_use = false;
        return -1;
    }
    return 0;
}

/* ---- nghttp2 callbacks ---- */

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || namelen != 7 || memcmp(name, ":status", 7) != 0)
        return 0;
    struct h2k_slot *slot = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (slot == NULL)
        return 0;
    int status = valuelen == 3 ? 0 : -1; /* -1: not a 3-digit status, counted apart */
    for (size_t i = 0; i < valuelen && status >= 0; i++)
        status = isdigit(value[i]) ? status * 10 + (value[i] - '0') : -1;
    slot->status = status;
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    struct h2k_conn *c = user_data;
    struct h2k_slot *slot = nghttp2_session_get_stream_user_data(session, stream_id);
    if (slot == NULL)
        return 0;
    struct h2k_loadgen *lg = c->lg;
    if (lg->measuring) {
        if (error_code != NGHTTP2_NO_ERROR || slot->status == 0)
            lg->stats.errors.reset++;
        else
            record(&lg->stats, slot->status, now_us() - slot->started_us);
    }
    slot->in_use = false;
    /* after a GOAWAY the session refuses new streams: the connection then winds down */
    if (lg->measuring && nghttp2_session_check_request_allowed(session) && submit_one(c) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static nghttp2_session *new_session(struct h2k_conn *c)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session *session = NULL;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    /* bodies are not looked at: nghttp2 consumes them and returns the flow-control window itself */
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rv = nghttp2_session_client_new(&session, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0)
        return NULL;
    /* a large connection window, so a slow reader never throttles the server's answers */
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}, {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24}};
    if (nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, 1 << 30) != 0) {
        nghttp2_session_del(session);
        return NULL;
    }
    return session;
}

/* ---- sockets ---- */

static void conn_close(struct h2k_conn *c)
{
    if (c->fd < 0)
        return;
    epoll_ctl(c->lg->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static int set_events(struct h2k_conn *c, bool want_out)
{
    if (c->want_out == want_out)
        return 0;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(c->lg->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        return -1;
    c->want_out = want_out;
    return 0;
}

static int append_out(struct h2k_conn *c, const uint8_t *data, size_t len)
{
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 16384;
        while (cap < c->out_len + len)
            cap *= 2;
        uint8_t *p = realloc(c->out, cap);
        if (p == NULL)
            return -1;
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return 0;
}

/* Everything nghttp2 has to send goes out in one write, as h2load does, until the socket is full. */
static int conn_flush(struct h2k_conn *c)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            c->lg->stats.errors.protocol++;
            return -1;
        }
        if (n == 0)
            break;
        if (append_out(c, data, (size_t)n) != 0)
            return -1;
    }
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return set_events(c, true);
            c->lg->stats.errors.write++;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return set_events(c, false);
}

static int conn_read(struct h2k_conn *c)
{
    uint8_t buf[H2K_READ_CHUNK];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            c->lg->stats.errors.read++;
            return -1;
        }
        if (n == 0) {
            c->lg->stats.errors.read++; /* the server closed: a lost connection */
            return -1;
        }
        ssize_t used = nghttp2_session_mem_recv(c->session, buf, (size_t)n);
        if (used < 0) {
            fprintf(stderr, "h2keys: %s\n", nghttp2_strerror((int)used));
            c->lg->stats.errors.protocol++;
            return -1;
        }
        if ((size_t)n < sizeof(buf))
            return 0;
    }
}

/* A connection that could not be opened: reported, counted, and never polled. */
static int conn_open_failed(struct h2k_conn *c, const char *what)
{
    fprintf(stderr, "h2keys: %s %s:%s: %s\n", what, c->lg->opt.host, c->lg->opt.port, strerror(errno));
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->lg->stats.errors.connect++;
    return -1;
}

/* Blocking connect (loopback: immediate), then non-blocking I/O with the preface and first streams queued. */
static int conn_open(struct h2k_loadgen *lg, struct h2k_conn *c, const struct addrinfo *ai)
{
    c->lg = lg;
    c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0)
        return conn_open_failed(c, "connect to");
    int one = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) != 0 ||
        epoll_ctl(lg->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0 || (c->session = new_session(c)) == NULL)
        return conn_open_failed(c, "setting up a connection to");
    return 0;
}

static int resolve(const struct h2k_options *opt, struct addrinfo **res)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rv = getaddrinfo(opt->host, opt->port, &hints, res);
    if (rv != 0) {
        fprintf(stderr, "h2keys: %s:%s: %s\n", opt->host, opt->port, gai_strerror(rv));
        return -1;
    }
    return 0;
}

/* ---- the run ---- */

static void on_event(struct h2k_conn *c, uint32_t events)
{
    if (c->fd < 0)
        return;
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0 && conn_read(c) != 0) {
        conn_close(c);
        return;
    }
    if (conn_flush(c) != 0 || (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session))) {
        if (!nghttp2_session_want_read(c->session))
            c->lg->stats.errors.read++; /* the server ended the connection (GOAWAY) */
        conn_close(c);
    }
}

/* Streams still unanswered at the deadline are counted as timeouts only when older than wrk's 5 s;
 * those of a lost connection are already counted as its read or write error. */
static void count_timeouts(struct h2k_loadgen *lg, int64_t at_us)
{
    for (int i = 0; i < lg->opt.conns; i++)
        for (int j = 0; j < lg->opt.streams && lg->conns[i].fd >= 0; j++) {
            const struct h2k_slot *s = &lg->conns[i].slots[j];
            if (s->in_use && at_us - s->started_us >= H2K_TIMEOUT_US)
                lg->stats.errors.timeout++;
        }
}

static int start(struct h2k_loadgen *lg)
{
    struct addrinfo *ai;
    if (resolve(&lg->opt, &ai) != 0)
        return -1;
    snprintf(lg->authority, sizeof(lg->authority), "%s:%s", lg->opt.host, lg->opt.port);
    lg->measuring = true;
    int live = 0;
    for (int i = 0; i < lg->opt.conns; i++) {
        struct h2k_conn *c = &lg->conns[i];
        if (conn_open(lg, c, ai) != 0)
            continue;
        for (int j = 0; j < lg->opt.streams; j++)
            if (submit_one(c) != 0)
                break;
        if (conn_flush(c) != 0)
            conn_close(c);
        else
            live++;
    }
    freeaddrinfo(ai);
    return live > 0 ? 0 : -1;
}

static int64_t run(struct h2k_loadgen *lg)
{
    int64_t started = now_us();
    lg->deadline_us = started + (int64_t)(lg->opt.seconds * 1e6);
    struct epoll_event evs[256];
    for (;;) {
        int64_t left = lg->deadline_us - now_us();
        if (left <= 0)
            break;
        int n = epoll_wait(lg->epfd, evs, 256, (int)(left / 1000) + 1);
        if (n < 0 && errno != EINTR) {
            perror("h2keys: epoll_wait");
            break;
        }
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events);
    }
    int64_t ended = now_us();
    lg->measuring = false;
    count_timeouts(lg, ended);
    return ended - started;
}

static void teardown(struct h2k_loadgen *lg)
{
    for (int i = 0; i < lg->opt.conns; i++) {
        struct h2k_conn *c = &lg->conns[i];
        conn_close(c);
        nghttp2_session_del(c->session);
        free(c->out);
    }
    free(lg->conns);
    free(lg->stats.hist);
    close(lg->epfd);
}

int main(int argc, char **argv)
{
    struct h2k_loadgen lg = {.epfd = -1};
    if (parse_options(argc, argv, &lg.opt) != 0) {
        usage();
        return 2;
    }
    lg.conns = calloc((size_t)lg.opt.conns, sizeof(*lg.conns));
    lg.stats.hist = calloc(H2K_HIST_US + 1, sizeof(*lg.stats.hist));
    lg.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (lg.conns == NULL || lg.stats.hist == NULL || lg.epfd < 0) {
        perror("h2keys: setting up");
        return 1;
    }
    for (int i = 0; i < lg.opt.conns; i++)
        lg.conns[i].fd = -1;
    int64_t duration_us = 0;
    if (start(&lg) == 0)
        duration_us = run(&lg);
    print_result(&lg.stats, duration_us);
    const struct h2k_errors *e = &lg.stats.errors;
    int failed = lg.stats.requests == 0 || e->connect + e->read + e->write + e->protocol != 0;
    teardown(&lg);
    return failed ? 1 : 0;
}
