/*
 * The webhook server: Telegram POSTs each Update to WEBHOOK_PATH
 * (https://core.telegram.org/bots/api#setwebhook). The answer is 200 once
 * the update is journaled (the job goes on after it), 500 when the journal
 * cannot take it, so that Telegram delivers it again; a redelivered update
 * id is acknowledged without a second answer. With WEBHOOK_SECRET, a request
 * without the matching X-Telegram-Bot-Api-Secret-Token header gets 401 and
 * is not looked at. GET /healthz and /metrics (ingress.h) are answered
 * beside the webhook.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ingress/httpd.h"
#include "ingress/ingress.h"
#include "ingress/webhook.h"
#include "lib/log.h"

#define MAX_BODY    (1u << 20) /* Telegram's updates are far smaller */
#define MAX_HEAD    (16u << 10)
#define DEADLINE_S  5.0 /* for a whole request, however slowly it trickles */
#define FD_RESERVE  64  /* kept for the store, the model, Telegram and the log */
#define MAX_CLIENTS 1024
#define FLUSH_S     1.0 /* for the last replies to go out at the end */

struct server {
	const struct ingress *in;
	struct daemon daemon;
	struct httpd *http;
	SSL_CTX *tls;
};

/*
 * The gate has journaled the update, or could not. The request waits for
 * this: should its client be gone meanwhile, the reply only frees it.
 */
static void on_accepted(void *arg, int64_t update_id, bool is_journaled)
{
	struct httpd_request *req = arg;
	if (is_journaled)
		httpd_reply(req, 200, "ok", NULL);
	else
		httpd_reply(req, 500, "not journaled: deliver it again", NULL);
	(void)update_id;
}

static void on_update_request(struct server *s, struct httpd_request *req)
{
	const char *secret = httpd_header(req, "X-Telegram-Bot-Api-Secret-Token");
	if (!webhook_secret_matches(s->in->cfg->webhook_secret, secret)) {
		log_warn("serve: a request without the right secret token was refused");
		httpd_reply(req, 401, "unauthorized", NULL);
		return;
	}
	size_t len;
	const char *body = httpd_body(req, &len);
	struct tg_update u;
	char *mended = NULL;
	switch (ingress_read(body, len, &u, &mended)) {
	case INGRESS_NOT_UPDATE:
		log_warn("serve: a POST that is not an Update was refused");
		httpd_reply(req, 400, "not a Telegram Update", NULL);
		return;
	case INGRESS_BROKEN:
		httpd_reply(req, 200, "skipped", NULL);
		return;
	case INGRESS_UPDATE:
		break;
	}
	int rc = gate_receive(s->in->gate, &u, mended ? mended : body, mended ? strlen(mended) : len,
	                      on_accepted, req);
	free(mended);
	if (rc != 0)
		httpd_reply(req, 500, "out of memory", NULL);
}

static void on_request(void *arg, struct httpd_request *req)
{
	struct server *s = arg;
	const char *path = httpd_path(req);
	const char *method = httpd_method(req);
	/* With METRICS_LISTEN, /metrics is only there; /healthz stays here too, for load balancers. */
	if (strcmp(path, s->in->cfg->webhook_path) != 0 &&
	    daemon_answer_probe(&s->daemon, req, !s->in->cfg->metrics_port))
		return;
	if (strcmp(path, s->in->cfg->webhook_path) != 0) {
		httpd_reply(req, 404, "not found", NULL);
		return;
	}
	if (strcmp(method, "POST") != 0) {
		httpd_reply(req, 405, "use POST", "POST");
		return;
	}
	if (s->daemon.is_stopping) {
		/* Telegram will deliver it again, to whoever runs next. */
		httpd_reply(req, 503, "stopping", NULL);
		return;
	}
	if (chats_are_full(s->in->chats)) {
		log_warn("serve: %d updates in progress, the most taken at once: 503 for Telegram to deliver "
		         "it again",
		         CHATS_MAX_BUSY);
		httpd_reply(req, 503, "busy: deliver it again later", NULL);
		return;
	}
	on_update_request(s, req);
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
	return 0;
fail:
	log_error("serve: cannot set up TLS: %s", ERR_reason_error_string(ERR_get_error()));
	return -1;
}

static void stop_taking(void *arg)
{
	struct server *s = arg;
	if (s->http)
		httpd_stop_listening(s->http);
}

/* Connections served at once: below the file limit, so that accepting never starves the rest. */
static size_t max_clients(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return MAX_CLIENTS;
	size_t fds = (size_t)rl.rlim_cur;
	size_t n = fds > 2 * FD_RESERVE ? fds - FD_RESERVE : fds / 2;
	return n < MAX_CLIENTS ? n : MAX_CLIENTS;
}

static void on_identified(void *arg, int status)
{
	struct server *s = arg;
	const struct config *cfg = s->in->cfg;
	if (status != 0) {
		daemon_fail(&s->daemon, 1);
		return;
	}
	struct httpd_options o = {
	    .host = cfg->listen_host ? cfg->listen_host : "0.0.0.0",
	    .port = cfg->listen_port,
	    .tls = s->tls,
	    .max_head = MAX_HEAD,
	    .max_body = MAX_BODY,
	    .deadline_s = DEADLINE_S,
	    .max_connections = max_clients(),
	};
	s->http = httpd_new(s->in->base, &o, on_request, s);
	if (!s->http) {
		log_error(
		    "serve: cannot listen on %s:%d (is the port taken, or the address not this host's?)",
		    o.host, o.port);
		daemon_fail(&s->daemon, 1);
		return;
	}
	bool is_loopback = false;
	httpd_port(s->http, &is_loopback);
	log_info("serve: listening on %s://%s:%d%s%s (at most %zu connections)", s->tls ? "https" : "http",
	         o.host, o.port, cfg->webhook_path, cfg->webhook_secret ? " (secret token required)" : "",
	         o.max_connections);
	if (!cfg->webhook_secret && !is_loopback)
		log_warn("serve: WARNING: WEBHOOK_SECRET is not set and %s is reachable from other machines: "
		         "anyone who finds this URL can post updates in any user's name and make the bot "
		         "spend your model budget. Set WEBHOOK_SECRET (and set-webhook again), or listen on "
		         "127.0.0.1 behind a proxy that checks it.",
		         o.host);
	else if (!cfg->webhook_secret)
		log_info("serve: WEBHOOK_SECRET is not set: whatever forwards to %s must check who posts",
		         o.host);
	daemon_identified(&s->daemon);
	gate_resume(s->in->gate);
}

int ingress_serve_run(const struct ingress *in)
{
	struct server s = {.in = in};
	int status = 1;
	if (in->cfg->tls_cert && setup_tls(&s) != 0)
		goto out;
	if (daemon_init(&s.daemon, in, stop_taking, &s) != 0)
		goto out;
	if (gate_identify(in->gate, false, on_identified, &s) == 0) {
		status = daemon_run(&s.daemon);
		httpd_flush(s.http, FLUSH_S);
	}
	daemon_free(&s.daemon);
out:
	httpd_free(s.http);
	SSL_CTX_free(s.tls);
	return status;
}
