/*
 * Listening sockets and their TLS contexts. Every loop thread gets its own socket per configured
 * listener, all bound with SO_REUSEPORT, so the kernel spreads new connections over the threads
 * and no accept lock or hand-off exists. Binding happens on the main thread before any loop
 * starts, so a port in use fails start-up with a message instead of leaving a half-running daemon.
 */
#ifndef RATELIMITD_LISTENER_H
#define RATELIMITD_LISTENER_H

#include <stddef.h>
#include <openssl/ssl.h>
#include "ratelimitd/config.h"

/*
 * Fails (RL_ERR_IO, message in err) if anything already listens on `where`, another ratelimitd
 * included: SO_REUSEPORT alone would let a second daemon started by mistake share the port and
 * silently take half of this one's connections. Call it before rl_listener_open for `where`.
 */
int rl_listener_check_port_free(const rl_listen_config_t *where, char *err, size_t errlen);

/* Binds and listens on `where` with SO_REUSEPORT, for one loop thread. Returns the descriptor
 * (the caller owns it) or -1 with a message in err. */
int rl_listener_open(const rl_listen_config_t *where, char *err, size_t errlen);

/*
 * The TLS context of a listener with a certificate: TLS 1.2 and 1.3, ALPN h2 and http/1.1, no
 * server-side session cache. The caller owns it (SSL_CTX_free). NULL with a message naming the
 * file when the certificate or key cannot be loaded.
 */
SSL_CTX *rl_listener_create_tls(const rl_listen_config_t *where, char *err, size_t errlen);

#endif
