/*
 * sseload.c - many concurrent streaming chat completions, one JSON line.
 *
 * A bench tool (contrib/bench/streams.sh drives it; not installed). It
 * opens N HTTP/1.1 connections to one URL, each with "Connection: close",
 * spreading the opens evenly over --ramp-ms so that the server's listen
 * backlog is not what gets measured, POSTs one streaming request on each,
 * and reads every answer incrementally: the head, the chunked framing,
 * then the SSE events. Per stream it records the time to the first
 * `data:` event (from the connect() call, so accept and connect delays
 * count), every gap between consecutive events, whether `data: [DONE]`
 * came and the body ended cleanly (the zero chunk and the end of the
 * trailers, or the whole Content-Length, or EOF for a close-delimited
 * body), and the bytes read. At the end it prints one JSON line: streams
 * ok and failed (by reason), TTFT p50/p99/max, gap p50/p99/max, duration,
 * the client's own CPU time.
 *
 * Design: one thread, libevent raw events (no bufferevents), one event per
 * stream (re-assigned from write to read once the request is out), one
 * shared read buffer; a stream keeps only its parser state and one line of
 * at most LINE_KEEP bytes (longer lines are cut: only their start is
 * looked at), so 5,000 streams cost about 2 MB here plus the gap samples.
 *
 * Stream states, changed in set_state() only:
 *
 *    WAIT --open--> CONNECTING --writable--> SENDING --sent--> HEAD
 *                        |                      |               |
 *                        +------ error ---------+--- error -----+-> FINISHED
 *                                                               |
 *                                     blank line after the head v
 *                                        BODY --clean end / EOF / error--+
 *
 * Invariants:
 *  1. A stream is finished exactly once (finish()), which closes its
 *     socket and frees its event; `active` counts streams opened and not
 *     yet finished.
 *  2. Time stamps are CLOCK_MONOTONIC microseconds taken once per read,
 *     so events that arrive in one read share one time stamp.
 *  3. The loop stops when every stream is opened and finished, or at the
 *     deadline (the unfinished ones fail with "timeout").
 */
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE_KEEP 96
#define MAX_STREAMS 100000
#define MAX_BODY (1 << 20)
#define MAX_HEADERS_OPT 16
#define MAX_HEAD_LINES 200
#define READ_BUF (64 * 1024)

enum st_state { S_WAIT, S_CONNECTING, S_SENDING, S_HEAD, S_BODY, S_FINISHED };
enum body_mode { B_CHUNKED, B_LENGTH, B_CLOSE };
enum ck_state { K_SIZE, K_EXT, K_SIZE_LF, K_DATA, K_DATA_CR, K_DATA_LF,
                K_TRAILER, K_END };

/* why a stream failed; RES_OK first */
enum result { RES_OK, RES_CONNECT, RES_WRITE, RES_READ, RES_STATUS, RES_PROTOCOL, RES_EOF,
              RES_NO_DONE, RES_TIMEOUT, RES_COUNT };
static const char *const result_names[RES_COUNT] = {
    "ok", "connect", "write", "read", "status", "protocol", "eof", "no_done",
    "timeout"};

struct stream {
    int fd;
    struct event *ev; /* owned */
    enum st_state state;
    enum result result;
    int64_t t_open, t_first, t_last; /* µs, monotonic */
    size_t sent;                     /* request bytes written */
    int status;                      /* HTTP status, 0 before the head */
    int head_lines;
    enum body_mode mode;
    enum ck_state ck;
    int ck_digits;
    unsigned long long left; /* chunk bytes or Content-Length left */
    int have_length;
    char line[LINE_KEEP]; /* the current line's first bytes */
    size_t line_len;      /* bytes of it seen (may exceed LINE_KEEP) */
    int in_event;         /* a data: line since the last blank line */
    int event_done;       /* that event's data is [DONE] */
    int done_seen;
    uint32_t events;
    uint64_t bytes;
};

struct u32vec {
    uint32_t *v; /* owned */
    size_t n, cap;
};

/* everything the run shares; one instance, in main() */
struct run {
    struct event_base *base;  /* owned */
    struct event *tick;       /* owned: opens streams along the ramp */
    struct event *deadline;   /* owned */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *request; /* owned: the whole request, head and body */
    size_t request_len;
    struct stream *streams; /* owned: n of them */
    int n, opened, active;
    long ramp_ms;
    int64_t t_start, t_end;
    struct u32vec ttft, gaps;
    uint64_t bytes, events;
    uint32_t events_min, events_max;
    int fails[RES_COUNT];
    char first_error[160];
};

static char readbuf[READ_BUF];

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int vec_push(struct u32vec *v, int64_t x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4096;
        uint32_t *nv = realloc(v->v, cap * sizeof(*nv));
        if (nv == NULL)
            return -1;
        v->v = nv;
        v->cap = cap;
    }
    if (x < 0)
        x = 0;
    v->v[v->n++] = x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* nearest rank on a sorted, non-empty vector, in milliseconds */
static double pct_ms(const struct u32vec *v, double p)
{
    size_t i;

    i = (size_t)(p * (double)v->n + 0.999999);
    if (i > 0)
        i--;
    if (i >= v->n)
        i = v->n - 1;
    return v->v[i] / 1000.0;
}

static void set_state(struct stream *s, enum st_state to)
{
    s->state = to;
}

static void finish(struct run *r, struct stream *s, enum result res,
                   const char *why)
{
    if (s->state == S_FINISHED)
        return;
    if (s->ev) {
        event_free(s->ev);
        s->ev = NULL;
    }
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->result = res;
    set_state(s, S_FINISHED);
    r->fails[res]++;
    if (res != RES_OK && r->first_error[0] == '\0')
        snprintf(r->first_error, sizeof(r->first_error), "stream %d: %s: %s",
                 (int)(s - r->streams), result_names[res], why);
    r->bytes += s->bytes;
    r->events += s->events;
    if (s->events < r->events_min)
        r->events_min = s->events;
    if (s->events > r->events_max)
        r->events_max = s->events;
    r->active--;
    r->t_end = now_us();
    if (r->active == 0 && r->opened == r->n)
        event_base_loopbreak(r->base);
}

/* One complete SSE line (without its end of line) of at least len bytes,
 * of which line[0..min(len, LINE_KEEP)) is kept. */
static void sse_line(struct run *r, struct stream *s, int64_t now)
{
    size_t keep = s->line_len < LINE_KEEP ? s->line_len : LINE_KEEP;
    const char *l = s->line;

    if (s->line_len == 0) { /* blank line: dispatch */
        if (!s->in_event)
            return;
        s->in_event = 0;
        if (s->events == 0) {
            s->t_first = now;
            vec_push(&r->ttft, now - s->t_open);
        } else {
            vec_push(&r->gaps, now - s->t_last);
        }
        s->t_last = now;
        s->events++;
        if (s->event_done)
            s->done_seen = 1;
        s->event_done = 0;
        return;
    }
    if (keep >= 5 && memcmp(l, "data:", 5) == 0) {
        size_t off = 5;
        if (keep > 5 && l[5] == ' ')
            off = 6;
        s->in_event = 1;
        s->event_done = s->line_len - off == 6 && keep >= off + 6 &&
                        memcmp(l + off, "[DONE]", 6) == 0;
    }
}

/* body bytes after the framing is removed: split into lines */
static void sse_feed(struct run *r, struct stream *s, const char *p, size_t n,
                     int64_t now)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        size_t room = s->line_len < LINE_KEEP ? LINE_KEEP - s->line_len : 0;

        memcpy(s->line + s->line_len, p, take < room ? take : room);
        s->line_len += take;
        if (nl == NULL)
            return;
        if (s->line_len > 0 && s->line_len <= LINE_KEEP &&
            s->line[s->line_len - 1] == '\r')
            s->line_len--;
        else if (s->line_len > LINE_KEEP && take > 0 && p[take - 1] == '\r')
            s->line_len--;
        sse_line(r, s, now);
        s->line_len = 0;
        p += take + 1;
        n -= take + 1;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* After a chunk-size line: the last chunk or the next chunk's data. */
static int chunk_size_end(struct stream *s)
{
    if (s->ck_digits == 0)
        return -1;
    if (s->left == 0) {
        s->ck = K_TRAILER;
        s->line_len = 0;
    } else {
        s->ck = K_DATA;
    }
    return 0;
}

/* Chunked framing; returns 1 at the clean end, 0 for more, -1 on error. */
static int chunked_feed(struct run *r, struct stream *s, const char *p,
                        size_t n, int64_t now)
{
    size_t i = 0;

    while (i < n) {
        char c = p[i];
        int h;

        switch (s->ck) {
        case K_SIZE:
            h = hexval(c);
            if (h >= 0) {
                if (s->left >> 56)
                    return -1;
                s->left = s->left * 16 + (unsigned)h;
                s->ck_digits++;
            } else if (c == '\r') {
                s->ck = K_SIZE_LF;
            } else if (c == '\n') {
                if (chunk_size_end(s) < 0)
                    return -1;
            } else if (c == ';' || c == ' ' || c == '\t') {
                s->ck = K_EXT;
            } else {
                return -1;
            }
            i++;
            break;
        case K_EXT:
            if (c == '\n' && chunk_size_end(s) < 0)
                return -1;
            i++;
            break;
        case K_SIZE_LF:
            if (c != '\n' || chunk_size_end(s) < 0)
                return -1;
            i++;
            break;
        case K_DATA: {
            size_t take = n - i;
            if (take > s->left)
                take = (size_t)s->left;
            sse_feed(r, s, p + i, take, now);
            s->left -= take;
            i += take;
            if (s->left == 0)
                s->ck = K_DATA_CR;
            break;
        }
        case K_DATA_CR:
            if (c == '\r')
                s->ck = K_DATA_LF;
            else if (c == '\n')
                s->ck = K_SIZE, s->ck_digits = 0;
            else
                return -1;
            i++;
            break;
        case K_DATA_LF:
            if (c != '\n')
                return -1;
            s->ck = K_SIZE;
            s->ck_digits = 0;
            i++;
            break;
        case K_TRAILER:
            if (c == '\n') {
                if (s->line_len == 0) {
                    s->ck = K_END;
                    return 1;
                }
                s->line_len = 0;
            } else if (c != '\r') {
                s->line_len++;
            }
            i++;
            break;
        case K_END:
            return 1;
        }
    }
    return 0;
}

/* One complete head line (status line first). */
static int head_line(struct stream *s)
{
    size_t keep = s->line_len < LINE_KEEP ? s->line_len : LINE_KEEP;
    char *l = s->line;

    if (++s->head_lines > MAX_HEAD_LINES)
        return -1;
    if (s->head_lines == 1) {
        if (keep < 12 || memcmp(l, "HTTP/1.", 7) != 0 || l[8] != ' ')
            return -1;
        s->status = atoi(l + 9); /* l[9..12) are digits: stops at l[12] */
        return 0;
    }
    if (keep >= 18 && strncasecmp(l, "transfer-encoding:", 18) == 0) {
        l[keep < LINE_KEEP ? keep : LINE_KEEP - 1] = '\0';
        if (strcasestr(l + 18, "chunked"))
            s->mode = B_CHUNKED;
    } else if (keep >= 15 && strncasecmp(l, "content-length:", 15) == 0) {
        char *end;
        l[keep < LINE_KEEP ? keep : LINE_KEEP - 1] = '\0';
        errno = 0;
        s->left = strtoull(l + 15, &end, 10);
        if (errno || end == l + 15)
            return -1;
        if (s->mode != B_CHUNKED)
            s->mode = B_LENGTH;
        s->have_length = 1;
    }
    return 0;
}

/* Bytes read from the socket; returns 1 when the stream is over (finished
 * inside), 0 to read on. */
static int consume(struct run *r, struct stream *s, const char *p, size_t n,
                   int64_t now)
{
    char why[64];
    int rc;

    while (n > 0 && s->state == S_HEAD) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        size_t room = s->line_len < LINE_KEEP ? LINE_KEEP - s->line_len : 0;

        memcpy(s->line + s->line_len, p, take < room ? take : room);
        s->line_len += take;
        if (nl == NULL)
            return 0;
        if (s->line_len > 0 && s->line_len <= LINE_KEEP &&
            s->line[s->line_len - 1] == '\r')
            s->line_len--;
        p += take + 1;
        n -= take + 1;
        if (s->line_len == 0 && s->head_lines > 0) {
            if (s->status / 100 == 1) { /* interim answer: a new head */
                s->head_lines = 0;
                continue;
            }
            if (s->status != 200) {
                snprintf(why, sizeof(why), "HTTP status %d", s->status);
                finish(r, s, RES_STATUS, why);
                return 1;
            }
            if (s->mode == B_CHUNKED)
                s->left = 0;
            s->line_len = 0;
            set_state(s, S_BODY);
            break;
        }
        if (head_line(s) < 0) {
            finish(r, s, RES_PROTOCOL, "malformed response head");
            return 1;
        }
        s->line_len = 0;
    }
    if (n == 0 || s->state != S_BODY)
        return 0;
    switch (s->mode) {
    case B_CHUNKED:
        rc = chunked_feed(r, s, p, n, now);
        if (rc < 0) {
            finish(r, s, RES_PROTOCOL, "bad chunked framing");
            return 1;
        }
        if (rc == 1) {
            if (s->done_seen)
                finish(r, s, RES_OK, "");
            else
                finish(r, s, RES_NO_DONE, "clean end without data: [DONE]");
            return 1;
        }
        return 0;
    case B_LENGTH:
        if (n > s->left)
            n = (size_t)s->left;
        sse_feed(r, s, p, n, now);
        s->left -= n;
        if (s->left == 0) {
            if (s->done_seen)
                finish(r, s, RES_OK, "");
            else
                finish(r, s, RES_NO_DONE, "clean end without data: [DONE]");
            return 1;
        }
        return 0;
    case B_CLOSE:
        sse_feed(r, s, p, n, now);
        return 0;
    }
    return 0;
}

static void on_read(struct run *r, struct stream *s)
{
    int64_t now = now_us();
    ssize_t got;

    for (;;) {
        got = read(s->fd, readbuf, sizeof(readbuf));
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            finish(r, s, RES_READ, strerror(errno));
            return;
        }
        if (got == 0) {
            if (s->state == S_BODY && s->mode == B_CLOSE) {
                /* an event with no blank line after it is dropped, as
                 * an SSE client drops it */
                if (s->done_seen)
                    finish(r, s, RES_OK, "");
                else
                    finish(r, s, RES_NO_DONE, "EOF without data: [DONE]");
            } else {
                finish(r, s, RES_EOF, s->state == S_HEAD
                                        ? "EOF before the end of the head"
                                        : "EOF before the end of the body");
            }
            return;
        }
        s->bytes += (uint64_t)got;
        if (consume(r, s, readbuf, (size_t)got, now))
            return;
        if ((size_t)got < sizeof(readbuf))
            return;
    }
}

static void on_event(evutil_socket_t fd, short what, void *arg);

static void on_write(struct run *r, struct stream *s)
{
    if (s->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            finish(r, s, RES_CONNECT, strerror(err));
            return;
        }
        set_state(s, S_SENDING);
    }
    while (s->sent < r->request_len) {
        ssize_t w = write(s->fd, r->request + s->sent, r->request_len - s->sent);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            finish(r, s, RES_WRITE, strerror(errno));
            return;
        }
        s->sent += (size_t)w;
    }
    /* the request is out: from now on, read */
    event_del(s->ev);
    event_assign(s->ev, r->base, s->fd, EV_READ | EV_PERSIST, on_event, s);
    event_add(s->ev, NULL);
    set_state(s, S_HEAD);
    s->line_len = 0;
}

static struct run *the_run;

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;

    (void)fd;
    if (what & EV_WRITE)
        on_write(the_run, s);
    else if (what & EV_READ)
        on_read(the_run, s);
}

static void open_stream(struct run *r, struct stream *s)
{
    int one = 1, fd;

    r->opened++;
    r->active++;
    s->fd = -1;
    s->t_open = now_us();
    set_state(s, S_CONNECTING);
    fd = socket(r->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0) {
        finish(r, s, RES_CONNECT, strerror(errno));
        return;
    }
    s->fd = fd;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&r->addr, r->addrlen) < 0 &&
        errno != EINPROGRESS) {
        finish(r, s, RES_CONNECT, strerror(errno));
        return;
    }
    s->ev = event_new(r->base, fd, EV_WRITE | EV_PERSIST, on_event, s);
    if (s->ev == NULL || event_add(s->ev, NULL) < 0) {
        finish(r, s, RES_CONNECT, "cannot add the event");
        return;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct run *r = arg;
    int64_t el = now_us() - r->t_start;
    long long due;

    (void)fd;
    (void)what;
    if (r->ramp_ms <= 0 || el >= r->ramp_ms * 1000LL)
        due = r->n;
    else
        due = (long long)r->n * el / (r->ramp_ms * 1000LL) + 1;
    if (due > r->n)
        due = r->n;
    while (r->opened < due)
        open_stream(r, &r->streams[r->opened]);
    if (r->opened == r->n) {
        event_del(r->tick);
        if (r->active == 0)
            event_base_loopbreak(r->base);
    }
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct run *r = arg;
    int i;

    (void)fd;
    (void)what;
    r->opened = r->n; /* no more opens: the loop ends below */
    for (i = 0; i < r->n; i++) {
        struct stream *s = &r->streams[i];
        if (s->state == S_WAIT) {
            s->state = S_FINISHED;
            s->result = RES_TIMEOUT;
            r->fails[RES_TIMEOUT]++;
        } else if (s->state != S_FINISHED) {
            finish(r, s, RES_TIMEOUT, "deadline reached");
        }
    }
    event_base_loopbreak(r->base);
}

static int parse_url(struct run *r, const char *url, char **hostport,
                     char **path)
{
    const char *p, *slash;
    char host[256], port[16];
    struct addrinfo hints, *res = NULL;
    int rc;

    if (strncmp(url, "http://", 7) != 0) {
        fprintf(stderr, "sseload: cannot use url '%s': only http:// urls\n",
                url);
        return -1;
    }
    p = url + 7;
    slash = strchr(p, '/');
    if (slash == NULL)
        slash = p + strlen(p);
    if ((size_t)(slash - p) >= sizeof(host) || slash == p) {
        fprintf(stderr, "sseload: cannot use url '%s': bad host\n", url);
        return -1;
    }
    *hostport = strndup(p, (size_t)(slash - p));
    *path = strdup(*slash ? slash : "/");
    if (*hostport == NULL || *path == NULL)
        return -1;
    if ((*hostport)[0] == '[') {
        const char *e = strchr(*hostport, ']');
        if (e == NULL || (e[1] != ':' && e[1] != '\0'))
            goto bad;
        snprintf(host, sizeof(host), "%.*s", (int)(e - *hostport - 1),
                 *hostport + 1);
        snprintf(port, sizeof(port), "%s", e[1] ? e + 2 : "80");
    } else {
        const char *c = strrchr(*hostport, ':');
        snprintf(host, sizeof(host), "%.*s",
                 (int)(c ? c - *hostport : (long)strlen(*hostport)),
                 *hostport);
        snprintf(port, sizeof(port), "%s", c ? c + 1 : "80");
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "sseload: cannot resolve '%s': %s\n", *hostport,
                gai_strerror(rc));
        return -1;
    }
    memcpy(&r->addr, res->ai_addr, res->ai_addrlen);
    r->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
bad:
    fprintf(stderr, "sseload: cannot use url '%s': bad host\n", url);
    return -1;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "sseload: cannot open '%s': %s\n", path,
                strerror(errno));
        return NULL;
    }
    buf = malloc(MAX_BODY + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }
    n = fread(buf, 1, MAX_BODY + 1, f);
    fclose(f);
    if (n > MAX_BODY) {
        fprintf(stderr, "sseload: cannot use '%s': larger than %d bytes\n",
                path, MAX_BODY);
        free(buf);
        return NULL;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int raise_nofile(int n)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)n + 64;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur >= need)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        fprintf(stderr,
                "sseload: cannot open %d streams: the open files limit is %llu "
                "(raise the hard limit: ulimit -Hn %llu as root, or "
                "/etc/security/limits.conf)\n",
                n, (unsigned long long)rl.rlim_max, (unsigned long long)need);
        return -1;
    }
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        fprintf(stderr, "sseload: cannot raise the open files limit to %llu: %s\n",
                (unsigned long long)need, strerror(errno));
        return -1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: sseload --url URL [-n STREAMS] [--ramp-ms MS] [--timeout-s S]\n"
"               [--model NAME | --body FILE] [-H 'Name: value']...\n"
"\n"
"Opens STREAMS concurrent HTTP/1.1 connections (Connection: close) to URL,\n"
"spread evenly over --ramp-ms, POSTs one streaming chat completion on each,\n"
"reads the SSE answers incrementally and prints one JSON line:\n"
"  streams, ok, failed, fail (count by reason), first_error,\n"
"  ttft_ms {p50,p99,max}   connect() to the first complete data: event\n"
"  gap_ms {p50,p99,max}    between consecutive events of a stream\n"
"  events, events_min/max (per stream), bytes, duration_s (first open to\n"
"  last end), open_s (the ramp as it happened), client_cpu_s.\n"
"A stream is ok when the status is 200, a 'data: [DONE]' event came and the\n"
"body ended cleanly (last chunk and trailers, the whole Content-Length, or\n"
"EOF of a close-delimited body). Exit status: 0 all ok, 1 some failed,\n"
"2 bad usage or setup.\n"
"\n"
"options:\n"
"  --url URL          http://HOST:PORT/PATH (required), e.g.\n"
"                     http://127.0.0.1:8080/v1/chat/completions\n"
"  -n, --streams N    concurrent streams, 1..%d (default 100); the open\n"
"                     files limit is raised to N + 64 if the hard one allows\n"
"  --ramp-ms MS       spread the opens over MS milliseconds (default 1000;\n"
"                     0 opens all at once)\n"
"  --timeout-s S      give up after S seconds, unfinished streams fail as\n"
"                     'timeout' (default 120)\n"
"  --model NAME       model of the built-in body (default gpt-4o-mini):\n"
"                     {\"model\":NAME,\"messages\":[...],\"stream\":true}\n"
"  --body FILE        request body instead (up to 1 MB; it must ask for\n"
"                     \"stream\": true)\n"
"  -H, --header H     extra request header, up to %d\n"
"  -h, --help         this text\n"
"\n"
"example (mockllm streaming 200 tokens 20 ms apart):\n"
"  bin/mockllm --listen 127.0.0.1:8000 --tokens 200 --token-delay-ms 20 &\n"
"  bin/sseload --url http://127.0.0.1:8000/v1/chat/completions -n 1000\n",
            MAX_STREAMS, MAX_HEADERS_OPT);
}

static int build_request(struct run *r, const char *hostport, const char *path,
                         const char *body, size_t body_len,
                         char *const *headers, int n_headers)
{
    size_t cap = strlen(path) + strlen(hostport) + body_len + 512;
    int i, w;

    for (i = 0; i < n_headers; i++)
        cap += strlen(headers[i]) + 2;
    r->request = malloc(cap);
    if (r->request == NULL)
        return -1;
    w = snprintf(r->request, cap,
                 "POST %s HTTP/1.1\r\nHost: %s\r\n"
                 "Content-Type: application/json\r\n"
                 "Accept: text/event-stream\r\nConnection: close\r\n"
                 "Content-Length: %zu\r\n",
                 path, hostport, body_len);
    for (i = 0; i < n_headers; i++)
        w += snprintf(r->request + w, cap - (size_t)w, "%s\r\n", headers[i]);
    w += snprintf(r->request + w, cap - (size_t)w, "\r\n");
    memcpy(r->request + w, body, body_len);
    r->request_len = (size_t)w + body_len;
    return 0;
}

static int valid_header(const char *h)
{
    const char *c = strchr(h, ':');
    const char *p;

    if (c == NULL || c == h || strlen(h) > 4096)
        return 0;
    for (p = h; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t')
            return 0;
    return 1;
}

/* ,"name":{"p50":..,"p99":..,"max":..} in ms, or null with no samples */
static void print_pcts(const char *name, const struct u32vec *v)
{
    if (v->n == 0) {
        printf(",\"%s\":null", name);
        return;
    }
    printf(",\"%s\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}", name,
           pct_ms(v, 0.5), pct_ms(v, 0.99), pct_ms(v, 1.0));
}

static void print_result(struct run *r)
{
    struct rusage ru;
    double cpu = 0;
    int i, ok = r->fails[RES_OK];

    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    if (r->ttft.n > 0)
        qsort(r->ttft.v, r->ttft.n, sizeof(uint32_t), cmp_u32);
    if (r->gaps.n > 0)
        qsort(r->gaps.v, r->gaps.n, sizeof(uint32_t), cmp_u32);
    printf("{\"streams\":%d,\"ok\":%d,\"failed\":%d,\"fail\":{", r->n, ok,
           r->n - ok);
    for (i = 1; i < RES_COUNT; i++)
        printf("%s\"%s\":%d", i > 1 ? "," : "", result_names[i], r->fails[i]);
    printf("},\"first_error\":");
    if (r->first_error[0]) {
        const char *p;
        putchar('"');
        for (p = r->first_error; *p; p++) {
            if (*p == '"' || *p == '\\')
                putchar('\\');
            putchar((unsigned char)*p < 0x20 ? ' ' : *p);
        }
        putchar('"');
    } else {
        printf("null");
    }
    print_pcts("ttft_ms", &r->ttft);
    print_pcts("gap_ms", &r->gaps);
    printf(",\"events\":%llu,\"events_min\":%u,\"events_max\":%u,"
           "\"bytes\":%llu,\"duration_s\":%.3f,\"ramp_ms\":%ld,"
           "\"client_cpu_s\":%.3f}\n",
           (unsigned long long)r->events, r->events_min == UINT32_MAX ? 0
                                                                      : r->events_min,
           r->events_max, (unsigned long long)r->bytes,
           (r->t_end - r->t_start) / 1e6, r->ramp_ms, cpu);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"streams", required_argument, NULL, 'n'},
        {"ramp-ms", required_argument, NULL, 'r'},
        {"timeout-s", required_argument, NULL, 't'},
        {"model", required_argument, NULL, 'm'},
        {"body", required_argument, NULL, 'b'},
        {"header", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct run run;
    struct run *r = &run;
    const char *url = NULL, *model = "gpt-4o-mini", *body_path = NULL;
    char *headers[MAX_HEADERS_OPT];
    char *hostport = NULL, *path = NULL, *body = NULL, *end;
    size_t body_len = 0;
    long timeout_s = 120, v;
    int n_headers = 0, c, rc = 2, i;
    struct timeval tv;

    memset(r, 0, sizeof(*r));
    r->n = 100;
    r->ramp_ms = 1000;
    r->events_min = UINT32_MAX;
    while ((c = getopt_long(argc, argv, "n:H:h", opts, NULL)) != -1) {
        switch (c) {
        case 'u':
            url = optarg;
            break;
        case 'n':
        case 'r':
        case 't':
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || v < 0 ||
                (c == 'n' && (v < 1 || v > MAX_STREAMS)) ||
                (c == 'r' && v > 3600000) ||
                (c == 't' && (v < 1 || v > 86400))) {
                fprintf(stderr, "sseload: bad value '%s' for --%s (see --help)\n",
                        optarg, c == 'n' ? "streams" : c == 'r' ? "ramp-ms"
                                                                : "timeout-s");
                return 2;
            }
            if (c == 'n')
                r->n = (int)v;
            else if (c == 'r')
                r->ramp_ms = v;
            else
                timeout_s = v;
            break;
        case 'm':
            model = optarg;
            if (strlen(model) > 200 || strpbrk(model, "\"\\") ||
                strlen(model) == 0) {
                fprintf(stderr, "sseload: bad model name '%s'\n", model);
                return 2;
            }
            break;
        case 'b':
            body_path = optarg;
            break;
        case 'H':
            if (n_headers == MAX_HEADERS_OPT || !valid_header(optarg)) {
                fprintf(stderr, "sseload: bad header '%s' (Name: value, up to "
                                "%d of them)\n", optarg, MAX_HEADERS_OPT);
                return 2;
            }
            headers[n_headers++] = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (url == NULL || optind != argc) {
        fprintf(stderr, "sseload: %s (see --help)\n",
                url == NULL ? "--url is required" : "unexpected argument");
        return 2;
    }
    if (body_path) {
        body = read_file(body_path, &body_len);
        if (body == NULL)
            return 2;
    } else {
        body = malloc(512);
        if (body == NULL)
            return 2;
        body_len = (size_t)snprintf(
            body, 512,
            "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":"
            "\"Write a long story about a lighthouse.\"}],\"stream\":true}",
            model);
    }
    the_run = r;
    if (parse_url(r, url, &hostport, &path) < 0 || raise_nofile(r->n) < 0 ||
        build_request(r, hostport, path, body, body_len, headers, n_headers) < 0)
        goto out;
    r->streams = calloc((size_t)r->n, sizeof(*r->streams));
    r->base = event_base_new();
    if (r->streams == NULL || r->base == NULL) {
        fprintf(stderr, "sseload: out of memory\n");
        goto out;
    }
    for (i = 0; i < r->n; i++)
        r->streams[i].fd = -1;
    r->tick = event_new(r->base, -1, EV_PERSIST, on_tick, r);
    r->deadline = evtimer_new(r->base, on_deadline, r);
    if (r->tick == NULL || r->deadline == NULL)
        goto out;
    tv.tv_sec = 0;
    tv.tv_usec = 1000;
    event_add(r->tick, &tv);
    tv.tv_sec = timeout_s;
    tv.tv_usec = 0;
    event_add(r->deadline, &tv);
    r->t_start = r->t_end = now_us();
    on_tick(-1, 0, r);
    event_base_dispatch(r->base);
    print_result(r);
    rc = r->fails[RES_OK] == r->n ? 0 : 1;
out:
    if (r->streams)
        for (i = 0; i < r->n; i++) {
            if (r->streams[i].ev)
                event_free(r->streams[i].ev);
            if (r->streams[i].fd >= 0)
                close(r->streams[i].fd);
        }
    if (r->tick)
        event_free(r->tick);
    if (r->deadline)
        event_free(r->deadline);
    if (r->base)
        event_base_free(r->base);
    free(r->streams);
    free(r->request);
    free(r->ttft.v);
    free(r->gaps.v);
    free(body);
    free(hostport);
    free(path);
    return rc;
}
