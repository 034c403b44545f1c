/*
 * Listening sockets and TLS contexts (see listener.h). Sockets are plain, bound and listening,
 * handed to a loop thread later; nothing here touches a loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/err.h>
#include <h2o.h>
#include "ratelimitd/error.h"
#include "ratelimitd/listener.h"

/* Fills `ss` with the address and port of `where`. Returns its length, or 0 with a message. */
static socklen_t listen_address(const rl_listen_config_t *where, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, where->address, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(where->port);
        return sizeof(*sin);
    }
    if (inet_pton(AF_INET6, where->address, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(where->port);
        return sizeof(*sin6);
    }
    snprintf(err, errlen, "listen address %s is not an IP address", where->address);
    return 0;
}

/*
 * Binds one socket to `where`; listens on it too unless `probe_only`. A probe is bound without
 * SO_REUSEPORT, so it fails while anything listens on the port. Returns the fd or -1 with a
 * message in err.
 */
static int bind_socket(const rl_listen_config_t *where, bool probe_only, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen = listen_address(where, &ss, err, errlen);
    if (sslen == 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(err, errlen, "socket(): %s", strerror(errno));
        return -1;
    }
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        (!probe_only && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
        (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) != 0) ||
        bind(fd, (struct sockaddr *)&ss, sslen) != 0 || (!probe_only && listen(fd, SOMAXCONN) != 0)) {
        snprintf(err, errlen, "cannot listen on %s:%u: %s", where->address, where->port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The probe is closed before the shared sockets are bound; a second daemon that probes in that
 * microsecond-wide gap is not caught. */
int rl_listener_check_port_free(const rl_listen_config_t *where, char *err, size_t errlen)
{
    int fd = bind_socket(where, true, err, errlen);
    if (fd == -1)
        return RL_ERR_IO;
    close(fd);
    return RL_OK;
}

int rl_listener_open(const rl_listen_config_t *where, char *err, size_t errlen)
{
    return bind_socket(where, false, err, errlen);
}

/* Why OpenSSL's last call failed, and clears its queue. A missing file is a system error, for
 * which OpenSSL 3 has no reason string of its own (it would print as "(null)"). */
static const char *tls_error_reason(void)
{
    unsigned long code = ERR_get_error();
    const char *reason = ERR_SYSTEM_ERROR(code) ? strerror(ERR_GET_REASON(code)) : ERR_reason_error_string(code);
    ERR_clear_error();
    return reason != NULL ? reason : "unknown OpenSSL error";
}

/* h2o's own list adds the drafts h2-14 and h2-16, and leaves out http/1.1, so a client that offers
 * only http/1.1 was told no protocol was negotiated; h2o serves whatever is not h2 as HTTP/1.1. */
static const h2o_iovec_t alpn_protocols[] = {{H2O_STRLIT("h2")}, {H2O_STRLIT("http/1.1")}, {NULL, 0}};

SSL_CTX *rl_listener_create_tls(const rl_listen_config_t *listen, char *err, size_t errlen)
{
    SSL_CTX *ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (ssl_ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* OpenSSL's server-side session cache keeps up to 20,480 TLS 1.2 sessions per listener, memory
     * any client can fill by handshaking without tickets; tickets resume sessions without it. */
    SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx, listen->tls_certificate) != 1) {
        snprintf(err, errlen, "cannot load TLS certificate %s: %s", listen->tls_certificate, tls_error_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx, listen->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl_ctx) != 1) {
        snprintf(err, errlen, "cannot load TLS key %s: %s", listen->tls_key, tls_error_reason());
        goto fail;
    }
    h2o_ssl_register_alpn_protocols(ssl_ctx, alpn_protocols);
    return ssl_ctx;
fail:
    SSL_CTX_free(ssl_ctx);
    return NULL;
}
