/*
 * The webhook server: Telegram POSTs each Update to WEBHOOK_PATH
 * (https://core.telegram.org/bots/api#setwebhook). The answer is 200 once
 * the update is journaled (the job goes on after it), 500 when the journal
 * cannot take it, so that Telegram delivers it again; a redelivered update
 * id is acknowledged without a second answer. With WEBHOOK_SECRET, a request
 * without the matching X-Telegram-Bot-Api-Secret-Token header gets 401 and
 * is not looked at.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "ingress/ingress.h"
#include "ingress/webhook.h"
#include "lib/log.h"

#define MAX_BODY          (1u << 20) /* Telegram's updates are far smaller */
#define MAX_HEADERS       (16u << 10)
#define REQUEST_TIMEOUT_S 10 /* per read/write: a slow client cannot hold a connection */

struct server {
	const struct ingress *in;
	struct daemon daemon;
	struct evhttp *http;
	struct evhttp_bound_socket *listener;
	SSL_CTX *tls;
};

static void reply(struct evhttp_request *req, int code, const char *reason, const char *body)
{
	struct evbuffer *out = evbuffer_new();
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; charset=utf-8");
	if (out && body)
		evbuffer_add_printf(out, "%s\n", body);
	evhttp_send_reply(req, code, reason, out);
	if (out)
		evbuffer_free(out);
}

/*
 * The gate has journaled the update, or could not. The request waits for
 * this: should its client be gone meanwhile, libevent keeps the request for
 * the reply, which then only frees it.
 */
static void on_accepted(void *arg, int64_t update_id, bool is_journaled)
{
	struct evhttp_request *req = arg;
	if (is_journaled)
		reply(req, 200, "OK", "ok");
	else
		reply(req, 500, "Internal Server Error", "not journaled: deliver it again");
	(void)update_id;
}

static void on_update_request(struct server *s, struct evhttp_request *req)
{
	const char *secret =
	    evhttp_find_header(evhttp_request_get_input_headers(req), "X-Telegram-Bot-Api-Secret-Token");
	if (!webhook_secret_matches(s->in->cfg->webhook_secret, secret)) {
		log_warn("serve: a request without the right secret token was refused");
		reply(req, 401, "Unauthorized", "unauthorized");
		return;
	}
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *body = (const char *)evbuffer_pullup(in, -1);
	struct tg_update u;
	char *mended = NULL;
	switch (body ? ingress_read(body, len, &u, &mended) : INGRESS_NOT_UPDATE) {
	case INGRESS_NOT_UPDATE:
		log_warn("serve: a POST that is not an Update was refused");
		reply(req, 400, "Bad Request", "not a Telegram Update");
		return;
	case INGRESS_BROKEN:
		reply(req, 200, "OK", "skipped");
		return;
	case INGRESS_UPDATE:
		break;
	}
	int rc = gate_receive(s->in->gate, &u, mended ? mended : body, mended ? strlen(mended) : len,
	                      on_accepted, req);
	free(mended);
	if (rc != 0)
		reply(req, 500, "Internal Server Error", "out of memory");
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct server *s = arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	if (!path)
		path = "/";
	if (strcmp(path, "/healthz") == 0 && strcmp(s->in->cfg->webhook_path, "/healthz") != 0) {
		if (method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD)
			reply(req, 200, "OK", s->daemon.is_stopping ? "stopping" : "ok");
		else
			reply(req, 405, "Method Not Allowed", "use GET");
		return;
	}
	if (strcmp(path, s->in->cfg->webhook_path) != 0) {
		reply(req, 404, "Not Found", "not found");
		return;
	}
	if (method != EVHTTP_REQ_POST) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
		reply(req, 405, "Method Not Allowed", "use POST");
		return;
	}
	if (s->daemon.is_stopping) {
		/* Telegram will deliver it again, to whoever runs next. */
		reply(req, 503, "Service Unavailable", "stopping");
		return;
	}
	on_update_request(s, req);
}

static struct bufferevent *make_tls_connection(struct event_base *base, void *arg)
{
	SSL *ssl = SSL_new(arg);
	if (!ssl)
		return NULL;
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
	                                      BEV_OPT_CLOSE_ON_FREE);
}

static int setup_tls(struct server *s)
{
	const struct config *cfg = s->in->cfg;
	s->tls = SSL_CTX_new(TLS_server_method());
	if (!s->tls || SSL_CTX_set_min_proto_version(s->tls, TLS1_2_VERSION) != 1)
		goto fail;
	if (SSL_CTX_use_certificate_chain_file(s->tls, cfg->tls_cert) != 1) {
		log_error("serve: cannot use TLS_CERT %s: %s", cfg->tls_cert,
		          ERR_reason_error_string(ERR_get_error()));
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(s->tls, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(s->tls) != 1) {
		log_error("serve: cannot use TLS_KEY %s: %s", cfg->tls_key,
		          ERR_reason_error_string(ERR_get_error()));
		return -1;
	}
	evhttp_set_bevcb(s->http, make_tls_connection, s->tls);
	return 0;
fail:
	log_error("serve: cannot set up TLS: %s", ERR_reason_error_string(ERR_get_error()));
	return -1;
}

static void stop_taking(void *arg)
{
	struct server *s = arg;
	if (s->listener) {
		evhttp_del_accept_socket(s->http, s->listener);
		s->listener = NULL;
	}
}

static void on_identified(void *arg, int status)
{
	struct server *s = arg;
	const struct config *cfg = s->in->cfg;
	if (status != 0) {
		daemon_fail(&s->daemon, 1);
		return;
	}
	const char *host = cfg->listen_host ? cfg->listen_host : "0.0.0.0";
	s->listener = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)cfg->listen_port);
	if (!s->listener) {
		log_error(
		    "serve: cannot listen on %s:%d (is the port taken, or the address not this host's?)",
		    host, cfg->listen_port);
		daemon_fail(&s->daemon, 1);
		return;
	}
	log_info("serve: listening on %s://%s:%d%s%s", s->tls ? "https" : "http", host, cfg->listen_port,
	         cfg->webhook_path, cfg->webhook_secret ? " (secret token required)" : "");
	if (!cfg->webhook_secret)
		log_warn("serve: WEBHOOK_SECRET is not set: anyone who finds this URL can post updates");
	gate_resume(s->in->gate);
}

int ingress_serve_run(const struct ingress *in)
{
	struct server s = {.in = in};
	int status = 1;
	s.http = evhttp_new(in->base);
	if (!s.http) {
		log_error("serve: cannot create the HTTP server");
		return 1;
	}
	evhttp_set_max_body_size(s.http, MAX_BODY);
	evhttp_set_max_headers_size(s.http, MAX_HEADERS);
	evhttp_set_timeout(s.http, REQUEST_TIMEOUT_S);
	evhttp_set_allowed_methods(s.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                       EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
	                                       EVHTTP_REQ_PATCH);
	evhttp_set_gencb(s.http, on_request, &s);
	if (in->cfg->tls_cert && setup_tls(&s) != 0)
		goto out;
	if (daemon_init(&s.daemon, in, stop_taking, &s) != 0)
		goto out;
	if (gate_identify(in->gate, false, on_identified, &s) == 0)
		status = daemon_run(&s.daemon);
	daemon_free(&s.daemon);
out:
	evhttp_free(s.http);
	SSL_CTX_free(s.tls);
	return status;
}
