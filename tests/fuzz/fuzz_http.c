/*
 * fuzz_http.c - libFuzzer target: client bytes through the HTTP/1.1 server
 * of gateway/http.c (request line, header fields, Content-Length and
 * chunked framing, pipelining, Expect, keep-alive, error answers, linger).
 *
 * http.c is compiled into this file, so that a connection can be handed
 * the server end of a socketpair through its own accept_cb (no listener,
 * no TCP). The input is written to the other end, which is then shut for
 * writing; the loop runs until the server has closed the connection,
 * reading what it answers. Limits are small (1 KiB heads, 2 KiB bodies)
 * so that the 431 and 413 paths are in reach.
 *
 * The handler answers by the path: /stream streams the body back in
 * chunks, /hold never answers (the client's end must reach on_close
 * exactly once), anything else echoes the body and copies the x-echo
 * header into a response header. Checked: every request reaches the
 * handler with a path and a body within the limit; the connection is
 * closed once the client is gone (no dependence on a timer); every answer
 * starts with a status line; on_close runs exactly once for a held request.
 */
#include "gateway/http.c"

#include <fcntl.h>
#include <stdint.h>

#define MAX_HEAD 1024 /* under libFuzzer's 4 KiB inputs: 431 in reach */
#define MAX_BODY 2048
#define MAX_ROUNDS 100000 /* loop passes before calling it a hang */

static struct event_base *base;
static struct gw_http_server *srv;
static int held, closed;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_http: %s\n", what);
    abort();
}

static void on_held_close(struct gw_http_req *req, void *arg)
{
    (void)req, (void)arg;
    closed++;
}

static void handler(struct gw_http_req *req, void *arg)
{
    size_t len = req->body ? evbuffer_get_length(req->body) : 0;
    const char *echo;

    (void)arg;
    if (req->path == NULL || req->method == NULL || req->path[0] != '/')
        die("a request without method or path");
    if (len > MAX_BODY)
        die("a body over max_body_bytes reached the handler");
    if (strcmp(req->path, "/hold") == 0) {
        held++;
        gw_http_req_set_callbacks(req, on_held_close, NULL, NULL);
        return;
    }
    if (strcmp(req->path, "/stream") == 0) {
        gw_http_reply_start(req, 200, "text/event-stream");
        if (len)
            gw_http_reply_chunk(req, evbuffer_pullup(req->body, -1), len);
        gw_http_reply_chunk(req, "data: [DONE]\n\n", 14);
        gw_http_reply_end(req);
        return;
    }
    echo = gw_http_req_header(req, "x-echo");
    if (echo && gw_http_add_header(req, "X-Echo", echo) < 0 &&
        value_ok(echo))
        die("gw_http_add_header refused a clean value");
    gw_http_reply(req, 200, "application/octet-stream",
                  len ? evbuffer_pullup(req->body, -1) : NULL, len);
}

static void setup(void)
{
    struct gw_http_limits lim = {MAX_HEAD, MAX_BODY, 10000, 10000, 10000};

    if ((base = event_base_new()) == NULL ||
        (srv = gw_http_server_new(base, handler, NULL)) == NULL)
        die("cannot start the server");
    gw_http_server_set_limits(srv, &lim);
}

/* What came back: each answer opens with a status line. */
static void check_output(const char *out, size_t n)
{
    if (n > 0 && (n < 12 || memcmp(out, "HTTP/1.", 7) != 0))
        die("output does not start with a status line");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char out[1 << 20];
    size_t off = 0, got = 0, rounds;
    int sv[2], eof = 0, shut = 0;

    if (base == NULL)
        setup();
    if (size > 256 * 1024)
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        die("socketpair");
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    held = closed = 0;
    accept_cb(NULL, sv[0], NULL, 0, srv);
    if (srv->conns == NULL)
        die("accept_cb made no connection");

    for (rounds = 0; srv->conns != NULL || !eof; rounds++) {
        ssize_t n;
        if (rounds == MAX_ROUNDS)
            die("the connection is not closed after the client left");
        if (off < size) {
            n = write(sv[1], data + off, size - off);
            if (n > 0)
                off += (size_t)n;
        } else if (!shut) {
            shutdown(sv[1], SHUT_WR);
            shut = 1;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        while ((n = read(sv[1], out + (got < sizeof(out) ? got : 0),
                         got < sizeof(out) ? sizeof(out) - got
                                           : sizeof(out))) > 0)
            got += (size_t)n;
        if (n == 0)
            eof = 1;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            eof = 1; /* reset: the server closed with input unread */
    }
    check_output(out, got < sizeof(out) ? got : sizeof(out));
    if (closed != held)
        die("on_close did not run once for each held request");
    if (srv->busy != 0)
        die("busy count not back to 0");
    close(sv[1]);
    return 0;
}
