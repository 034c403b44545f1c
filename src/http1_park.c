/*
 * HTTP/1.1 socket parking while a decision waits for the store; why: see http1_park.h.
 *
 * Correctness rests on three properties of libh2o 2.2.5's evloop: a socket with the "don't
 * read" flag still gets its read callback when it becomes readable, but nothing is read; a
 * read stop and start within one loop turn reaches epoll as no change at all; and after an
 * answer is written, h2o restarts reading with its own callback and parses whatever is
 * already buffered.
 */
#include "ratelimitd/http1_park.h"

/*
 * The client sent more bytes (a pipelined request) or closed while parked. Level-triggered readiness would call this
 * again on every loop turn, so stop polling: h2o starts reading again after the answer and then sees the bytes or the
 * end of the stream through its own path.
 */
static void on_parked_readable(h2o_socket_t *sock, const char *err)
{
    (void)err;
    h2o_socket_read_stop(sock);
}

h2o_socket_t *rl_http1_park(h2o_req_t *req)
{
    if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL)
        return NULL;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    if (sock == NULL || h2o_socket_is_reading(sock))
        return NULL;
    h2o_socket_dont_read(sock, 1);
    h2o_socket_read_start(sock, on_parked_readable);
    return sock;
}

void rl_http1_unpark(h2o_socket_t *sock)
{
    /* Stopping here and h2o's restart after the answer fall in the same loop turn when the
     * answer is written at once, which is again no epoll change. */
    h2o_socket_dont_read(sock, 0);
    h2o_socket_read_stop(sock);
}
