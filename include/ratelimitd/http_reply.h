/*
 * Small helpers shared by the handlers to send complete answers: JSON bodies with the
 * headers every answer carries, and the SPEC's {"error":"..."} bodies.
 */
#ifndef RATELIMITD_HTTP_REPLY_H
#define RATELIMITD_HTTP_REPLY_H

#include <stddef.h>
#include <h2o.h>

/* Sends `body` (copied) as a complete application/json answer; HEAD gets headers only. */
void rl_reply_json(h2o_req_t *req, int status, const char *reason, const char *body, size_t len);
/* Same, for a body already in the request's pool (not copied). */
void rl_reply_json_pooled(h2o_req_t *req, int status, const char *reason, h2o_iovec_t body);
/* Sends {"error":"<message>"}; `message` is a fixed string without quotes or backslashes. */
void rl_reply_error(h2o_req_t *req, int status, const char *reason, const char *message);
/* 405 with an Allow header listing `allow`. */
void rl_reply_method_not_allowed(h2o_req_t *req, const char *allow);
/* True when the request method is one of "GET", "HEAD" or, if allow_post, "POST". */
int rl_request_method_is(const h2o_req_t *req, int allow_post);
/* True when the request target is in origin form ("/..." as sent) and its normalised path is `path`. */
int rl_request_path_is(const h2o_req_t *req, const char *path, size_t len);
/*
 * The checks of a request's head every endpoint makes: 431 when its header fields exceed
 * `max_header_bytes` or number more than 100, 400 for HTTP/1.1 without Host (RFC 9112, 3.2).
 * Returns 1 when it answered.
 */
int rl_reply_if_bad_head(h2o_req_t *req, size_t max_header_bytes);

#endif
