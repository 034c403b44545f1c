/*
 * Listening sockets: every loop thread binds the same port (SO_REUSEPORT), a port that anything
 * already listens on is refused before that, IPv6 listeners leave IPv4 alone, and TLS files that
 * cannot be loaded are named.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include "ratelimitd/error.h"
#include "ratelimitd/listener.h"

static uint16_t port_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    return ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                   : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* A listener on 127.0.0.1 and a port the kernel picks. */
static int open_any_port(rl_listen_config_t *where)
{
    char err[256];
    *where = (rl_listen_config_t){.address = "127.0.0.1", .port = 0};
    int fd = rl_listener_open(where, err, sizeof(err));
    assert_true(fd >= 0);
    where->port = port_of(fd);
    return fd;
}

static void test_every_thread_can_listen_on_one_port(void **state)
{
    (void)state;
    rl_listen_config_t where;
    char err[256] = "";
    int first = open_any_port(&where);
    int second = rl_listener_open(&where, err, sizeof(err));
    assert_true(second >= 0);
    assert_int_equal(port_of(second), where.port);
    close(second);
    close(first);
}

static void test_a_port_in_use_is_refused_before_binding(void **state)
{
    (void)state;
    rl_listen_config_t where;
    char err[256] = "";
    int fd = open_any_port(&where);
    /* another ratelimitd's SO_REUSEPORT sockets would let a second one share the port */
    assert_int_equal(rl_listener_check_port_free(&where, err, sizeof(err)), RL_ERR_IO);
    char expected[64];
    snprintf(expected, sizeof(expected), "cannot listen on 127.0.0.1:%u: ", where.port);
    assert_non_null(strstr(err, expected));
    close(fd);
    assert_int_equal(rl_listener_check_port_free(&where, err, sizeof(err)), RL_OK);
}

static void test_an_ipv6_listener_leaves_ipv4_alone(void **state)
{
    (void)state;
    /* an IPv4 wildcard socket without SO_REUSEPORT: only an IPv6-only socket may share its port */
    int v4 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    assert_int_equal(bind(v4, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(v4, 1), 0);
    rl_listen_config_t where = {.address = "::", .port = port_of(v4)};
    char err[256] = "";
    assert_int_equal(rl_listener_check_port_free(&where, err, sizeof(err)), RL_OK);
    int v6 = rl_listener_open(&where, err, sizeof(err));
    assert_true(v6 >= 0);
    close(v6);
    close(v4);
}

static void test_an_address_must_be_an_ip_literal(void **state)
{
    (void)state;
    rl_listen_config_t where = {.address = "localhost", .port = 8080};
    char err[256] = "";
    assert_int_equal(rl_listener_open(&where, err, sizeof(err)), -1);
    assert_string_equal(err, "listen address localhost is not an IP address");
}

static void test_an_unreadable_certificate_is_named(void **state)
{
    (void)state;
    rl_listen_config_t where = {.address = "127.0.0.1",
                                .port = 8443,
                                .tls_certificate = "/nonexistent/cert.pem",
                                .tls_key = "/nonexistent/key.pem"};
    char err[256] = "";
    assert_null(rl_listener_create_tls(&where, err, sizeof(err)));
    assert_string_equal(err, "cannot load TLS certificate /nonexistent/cert.pem: No such file or directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_thread_can_listen_on_one_port),
        cmocka_unit_test(test_a_port_in_use_is_refused_before_binding),
        cmocka_unit_test(test_an_ipv6_listener_leaves_ipv4_alone),
        cmocka_unit_test(test_an_address_must_be_an_ip_literal),
        cmocka_unit_test(test_an_unreadable_certificate_is_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
