/*
 * The AWS Lambda custom runtime (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html):
 * GET .../invocation/next waits until an event comes; the event is handled
 * as `handle` handles one (ingress_handle_event), and its response POSTed to
 * .../invocation/<request id>/response. Between events Lambda freezes the
 * process, so the loop does nothing else meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "ingress/ingress.h"
#include "ingress/invocation.h"
#include "lib/log.h"

struct runtime {
	const struct ingress *in;
	const char *api; /* host:port of the runtime API */
	struct http_call *call;
	char request_id[128];
	char *response; /* the last event's, sent from here: libcurl reads it until the call ends */
	int status;
};

static void next_event(struct runtime *rt);

static void stop(struct runtime *rt, int status)
{
	rt->status = status;
	event_base_loopbreak(rt->in->base);
}

static void on_posted(void *arg, const struct http_response *resp)
{
	struct runtime *rt = arg;
	rt->call = NULL;
	if (resp->status != 202)
		log_warn("lambda: the runtime API took the response with status %ld%s%s", resp->status,
		         resp->is_transport_error ? ": " : "", resp->is_transport_error ? resp->error : "");
	next_event(rt);
}

static void on_handled(void *arg, int status, const char *text)
{
	struct runtime *rt = arg;
	char url[512];
	char *response = invocation_response(status, text);
	snprintf(url, sizeof url, "http://%s/2018-06-01/runtime/invocation/%s/%s", rt->api, rt->request_id,
	         response ? "response" : "error");
	static const char failure[] = "{\"errorMessage\":\"no response\",\"errorType\":\"Runtime.Failure\"}";
	static const char *const headers[] = {"Content-Type: application/json", NULL};
	struct http_request req = {
	    .method = "POST",
	    .url = url,
	    .headers = headers,
	    .body = response ? response : failure,
	    .body_len = strlen(response ? response : failure),
	    .max_body = 1u << 16,
	    .on_done = on_posted,
	    .arg = rt,
	};
	rt->call = http_start(rt->in->http, &req);
	free(rt->response);
	rt->response = response;
	if (!rt->call) {
		log_error("lambda: cannot answer the runtime API");
		stop(rt, 1);
	}
}

static double seconds_until(long long deadline_ms)
{
	struct timeval now;
	gettimeofday(&now, NULL);
	long long now_ms = (long long)now.tv_sec * 1000 + now.tv_usec / 1000;
	return (double)(deadline_ms - now_ms) / 1000.0;
}

static void on_event(void *arg, const struct http_response *resp)
{
	struct runtime *rt = arg;
	rt->call = NULL;
	const char *id = resp->headers[0], *deadline_ms = resp->headers[1];
	if (resp->status != 200 || !id[0] || strlen(id) >= sizeof rt->request_id) {
		log_error("lambda: no event from the runtime API (status %ld%s%s); stopping", resp->status,
		          resp->is_transport_error ? ": " : "", resp->is_transport_error ? resp->error : "");
		stop(rt, 1);
		return;
	}
	snprintf(rt->request_id, sizeof rt->request_id, "%s", id);
	double deadline = (double)rt->in->cfg->handle_deadline_s;
	long long ms = strtoll(deadline_ms, NULL, 10);
	if (ms > 0 && seconds_until(ms) - 1 < deadline)
		deadline = seconds_until(ms) - 1;
	ingress_handle_event(rt->in, resp->body, resp->body_len, deadline, on_handled, rt);
}

static void next_event(struct runtime *rt)
{
	char url[512];
	static const char *const keep[] = {"Lambda-Runtime-Aws-Request-Id", "Lambda-Runtime-Deadline-Ms",
	                                   NULL};
	snprintf(url, sizeof url, "http://%s/2018-06-01/runtime/invocation/next", rt->api);
	struct http_request req = {
	    .url = url,
	    .max_body = INGRESS_MAX_EVENT,
	    .keep_headers = keep,
	    .on_done = on_event,
	    .arg = rt,
	};
	rt->call = http_start(rt->in->http, &req);
	if (!rt->call) {
		log_error("lambda: cannot ask the runtime API for an event");
		stop(rt, 1);
	}
}

int ingress_lambda_run(const struct ingress *in)
{
	const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
	if (!api || !*api || strlen(api) > 256) {
		log_error("lambda: AWS_LAMBDA_RUNTIME_API is not set: 'tgllm lambda' runs inside AWS Lambda "
		          "(provided.al2023); elsewhere use 'tgllm handle' or 'tgllm serve'");
		return 2;
	}
	struct runtime rt = {.in = in, .api = api};
	next_event(&rt);
	if (!rt.status && event_base_dispatch(in->base) < 0) {
		log_error("lambda: the event loop failed");
		rt.status = 1;
	}
	http_cancel(rt.call);
	free(rt.response);
	return rt.status;
}
