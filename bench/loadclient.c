/*
 * loadclient: the load generator of the txgraphsse benchmark suite.
 *
 * One thread, one epoll set, non-blocking sockets.  It opens N SSE streams
 * (GET <path>) to one server, then (optionally) POSTs a control message that
 * makes the server start a scenario, then reads every stream and counts the
 * events whose data starts with {"t":<ns>, ...}: <ns> is the server's
 * CLOCK_MONOTONIC send time (Python's time.monotonic_ns(), Node's
 * process.hrtime.bigint()), so that send-to-receive latency is measured on
 * one clock.  It parses HTTP/1.1 (chunked, Content-Length or close-delimited)
 * and SSE lines just enough for that, and for the back-channel of the
 * "calls" modes it answers runRequest events with POSTs (server-to-client
 * calls) or loops client-to-server "echo" route calls.
 *
 * It reads the server's CPU time (utime+stime of /proc/<pid>/stat) and RSS
 * (VmRSS of /proc/<pid>/status) itself, at the exact moments a phase starts
 * and ends, and prints one JSON object on stdout.
 *
 * Modes:
 *   stream   connect, POST --control, wait for --expect events (or timeout)
 *   idle     connect, settle, measure RSS; no events expected
 *   s2c      connect, wait for every session id, open one POST connection
 *            per session, POST --control (the server starts calling), answer
 *            every runRequest, count answered calls over --duration seconds,
 *            then POST --control-stop
 *   c2s      as s2c, but each POST connection loops route calls (--batch N:
 *            N calls in each POST, a JSON array, for servers that take them)
 *            {"route":"echo","args":[k],"sessionId":sid} for --duration
 *
 * Build: gcc -O2 -o loadclient loadclient.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_ 512
#define READ_BUF (256 * 1024)

enum { K_STREAM, K_POST, K_CONTROL };
enum {
    H_STATUS,
    H_HEADER,
    H_BODY_LEN,
    H_CHUNK_SIZE,
    H_CHUNK_DATA,
    H_CHUNK_CRLF,
    H_CHUNK_TRAILER,
    H_BODY_CLOSE
};

typedef struct reply {
    struct reply *next;
    size_t len;
    char body[];
} reply;

typedef struct conn {
    int fd;
    uint8_t kind;
    uint8_t connecting; /* waiting for the TCP handshake */
    uint8_t opened;     /* stream: 200 headers seen */
    uint8_t closed;
    uint8_t hstate;
    uint8_t chunked;
    uint8_t have_len;
    uint8_t busy;       /* post: a request is in flight */
    uint8_t cllen;
    int status;
    int64_t remaining;
    uint32_t events;
    uint16_t linelen;
    struct conn *peer;  /* stream <-> its POST connection */
    /* pending output */
    char *wbuf;
    size_t wlen, woff;
    int wown;
    reply *queue, *queue_tail; /* post: replies waiting to be sent */
    uint64_t calls;           /* post: 2xx responses */
    char cl[24];
    char sid[72];
    char line[LINE_MAX_];
} conn;

/* options */
static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static const char *opt_path = "/sse";
static const char *opt_control_path = "/control";
static int opt_pid = 0;
static int opt_streams = 1000;
static const char *opt_mode = "stream";
static const char *opt_control = NULL;
static const char *opt_control_stop = NULL;
static uint64_t opt_expect = 0;
static double opt_timeout = 60.0;
static double opt_settle = 0.5;
static double opt_duration = 5.0;
static double opt_warmup = 1.0;
static int opt_inflight = 1000;
static int opt_batch = 1; /* c2s: calls per POST (>1: a JSON array of them) */
static const char *opt_dump = NULL;
/* stream mode: after a poll round that had work, sleep this long so that
 * each read takes several events (arrival times are the kernel's receive
 * timestamps, so neither throughput nor latency depends on when we read) */
static double opt_nap_ms = 0;
static FILE *dump_file;

/* state */
static int ep;
static conn *streams;
static conn *posts;
static conn *control;
static int n_started, n_inflight, n_opened, n_failed, n_closed, n_sids;
static uint64_t delivered;
static uint64_t t_first_recv, t_last_recv, t_last_read;
/* latency to the client's socket (kernel receive timestamp) and to the
 * client's read, in microseconds */
static uint32_t *lat, *lat_read;
static size_t lat_n, lat_cap;
/* CLOCK_REALTIME - CLOCK_MONOTONIC, to turn SO_TIMESTAMPNS receive
 * timestamps (realtime) into the servers' clock */
static int64_t rt_offset;
/* when the bytes being parsed reached the socket (monotonic ns) */
static uint64_t cur_arrival;
static uint64_t n_stamped, n_unstamped;
static char host_header[64];
static char stream_request[512];
static size_t stream_request_len;
static int control_done, control_status;
static uint64_t calls_total;
static int counting; /* calls modes: responses count only while set */
static uint64_t calls_counted;
static int64_t bad_lines;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_sys_part;
static double cpu_self(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    cpu_sys_part = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + cpu_sys_part;
}

/* utime+stime of a process, in seconds, from /proc/<pid>/stat */
static double proc_cpu(int pid) {
    if (pid <= 0) return -1;
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    p += 2; /* state field */
    /* fields after ')' : 3 state, 4 ppid ... 14 utime, 15 stime */
    unsigned long long utime = 0, stime = 0;
    int field = 3;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++) {
        if (field == 14) utime = strtoull(tok, NULL, 10);
        if (field == 15) {
            stime = strtoull(tok, NULL, 10);
            break;
        }
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Busy CPU seconds of the whole machine (all CPUs), from /proc/stat:
 * everything but idle and iowait. */
static double machine_busy(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    unsigned long long v[10] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 8) return -1;
    /* user nice system idle iowait irq softirq steal (guest is in user) */
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

/* VmRSS of a process, in KiB */
static long proc_rss_kib(int pid) {
    if (pid <= 0) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static uint32_t to_us(uint64_t later, uint64_t earlier) {
    uint64_t d = later > earlier ? (later - earlier) / 1000 : 0;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static void lat_push(uint32_t us, uint32_t read_us) {
    if (lat_n == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 1 << 16;
        lat = realloc(lat, lat_cap * sizeof *lat);
        lat_read = realloc(lat_read, lat_cap * sizeof *lat_read);
        if (!lat || !lat_read) die("realloc");
    }
    lat_read[lat_n] = read_us;
    lat[lat_n++] = us;
}

static int64_t realtime_offset(void) {
    struct timespec a, b, m;
    clock_gettime(CLOCK_REALTIME, &a);
    clock_gettime(CLOCK_MONOTONIC, &m);
    clock_gettime(CLOCK_REALTIME, &b);
    int64_t ra = (int64_t)a.tv_sec * 1000000000ll + a.tv_nsec;
    int64_t rb = (int64_t)b.tv_sec * 1000000000ll + b.tv_nsec;
    int64_t mm = (int64_t)m.tv_sec * 1000000000ll + m.tv_nsec;
    return ra + (rb - ra) / 2 - mm;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- output ---------------------------------------------------------- */

static void set_events(conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
}

static void conn_close(conn *c);

/* Write what is pending; returns 0 when all is out. */
static int flush_out(conn *c) {
    while (c->woff < c->wlen) {
        ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_events(c, EPOLLIN | EPOLLOUT);
                return 1;
            }
            conn_close(c);
            return -1;
        }
        c->woff += (size_t)w;
    }
    if (c->wown) free(c->wbuf);
    c->wbuf = NULL;
    c->wlen = c->woff = 0;
    c->wown = 0;
    return 0;
}

static void send_buf(conn *c, char *buf, size_t len, int own) {
    c->wbuf = buf;
    c->wlen = len;
    c->woff = 0;
    c->wown = own;
    if (!c->connecting) flush_out(c);
}

static char *post_request(const char *path, const char *body, size_t *len, int close_) {
    size_t blen = strlen(body);
    char *buf = malloc(blen + 512);
    if (!buf) die("malloc");
    int n = snprintf(buf, 512,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%s\r\n",
                     path, host_header, blen, close_ ? "Connection: close\r\n" : "");
    memcpy(buf + n, body, blen);
    *len = (size_t)n + blen;
    return buf;
}

/* post connections: send the next queued body if none is in flight */
static void post_pump(conn *c) {
    if (c->busy || c->connecting || c->closed || !c->queue) return;
    reply *r = c->queue;
    c->queue = r->next;
    if (!c->queue) c->queue_tail = NULL;
    size_t len;
    char *req = post_request(opt_path, r->body, &len, 0);
    free(r);
    c->busy = 1;
    send_buf(c, req, len, 1);
}

static void post_enqueue(conn *c, const char *body, size_t blen) {
    reply *r = malloc(sizeof *r + blen + 1);
    if (!r) die("malloc");
    r->next = NULL;
    r->len = blen;
    memcpy(r->body, body, blen);
    r->body[blen] = 0;
    if (c->queue_tail)
        c->queue_tail->next = r;
    else
        c->queue = r;
    c->queue_tail = r;
    post_pump(c);
}

static uint64_t echo_counter;

static void c2s_next(conn *c) {
    char body[160 * 100 + 2];
    size_t n = 0;
    int batch = opt_batch;
    if (batch > 1) body[n++] = '[';
    for (int i = 0; i < batch; i++) {
        if (i) body[n++] = ',';
        n += (size_t)snprintf(body + n, sizeof body - n,
                              "{\"route\":\"echo\",\"args\":[%llu],\"sessionId\":\"%s\"}",
                              (unsigned long long)++echo_counter, c->peer->sid);
    }
    if (batch > 1) body[n++] = ']';
    body[n] = 0;
    post_enqueue(c, body, n);
}

/* ---- connections ----------------------------------------------------- */

static int open_socket(conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* the kernel stamps every received segment: latency is measured to the
     * socket, without the time this client takes to get to it */
    if (c->kind == K_STREAM) setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt_port)};
    inet_pton(AF_INET, opt_host, &sa.sin_addr);
    c->fd = fd;
    c->connecting = 1;
    c->closed = 0;
    c->hstate = H_STATUS;
    c->linelen = 0;
    c->cllen = 0;
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (r < 0 && errno != EINPROGRESS) return -1;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
    return 0;
}

static void conn_close(conn *c) {
    if (c->closed) return;
    c->closed = 1;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    /* RST, no TIME_WAIT left behind */
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd);
    if (c->kind == K_STREAM) {
        if (c->connecting || !c->opened) {
            n_failed++;
            n_inflight--;
        } else {
            n_closed++;
        }
    }
    if (c->kind == K_CONTROL && !control_done) control_done = -1;
}

static void start_stream(int i) {
    conn *c = &streams[i];
    c->kind = K_STREAM;
    if (open_socket(c) < 0) {
        c->closed = 1;
        n_failed++;
        return;
    }
    n_inflight++;
    send_buf(c, stream_request, stream_request_len, 0);
}

static void start_control(const char *body) {
    if (!control) control = calloc(1, sizeof *control);
    else {
        if (!control->closed && control->fd) conn_close(control);
        memset(control, 0, sizeof *control);
    }
    control->kind = K_CONTROL;
    control_done = 0;
    control_status = 0;
    if (open_socket(control) < 0) die("control connect");
    size_t len;
    char *req = post_request(opt_control_path, body, &len, 1);
    send_buf(control, req, len, 1);
}

/* ---- SSE ------------------------------------------------------------- */

/* Copy a JSON string starting at p (after its opening quote) into out. */
static const char *json_string(const char *p, const char *end, char *out, size_t cap) {
    size_t n = 0;
    while (p < end && *p != '"') {
        if (*p == '\\' && p + 1 < end) p++;
        if (n + 1 < cap) out[n++] = *p;
        p++;
    }
    out[n] = 0;
    return p < end ? p + 1 : end;
}

/* Skip one JSON value at p; returns the byte after it. */
static const char *json_skip(const char *p, const char *end) {
    int depth = 0;
    while (p < end) {
        char ch = *p;
        if (ch == '"') {
            p++;
            while (p < end && *p != '"') {
                if (*p == '\\') p++;
                p++;
            }
            p++;
            if (depth == 0) return p;
            continue;
        }
        if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') {
            depth--;
            if (depth == 0) return p + 1;
            if (depth < 0) return p;
        } else if (depth == 0 && (ch == ',')) return p;
        p++;
    }
    return p;
}

/* {"route":"runRequest","args":[M, path, callbackId, sessionId]}: answer it */
static void run_request(conn *c, const char *p, const char *end) {
    const char *a = memmem(p, (size_t)(end - p), "\"args\":[", 8);
    if (!a || !c->peer) {
        bad_lines++;
        return;
    }
    a += 8;
    const char *m = a;
    const char *m_end = json_skip(m, end);
    /* the route's own args inside M, echoed back as the result */
    const char *ra = memmem(m, (size_t)(m_end - m), "\"args\":", 7);
    const char *res = "null";
    size_t res_len = 4;
    if (ra) {
        ra += 7;
        const char *ra_end = json_skip(ra, m_end);
        res = ra;
        res_len = (size_t)(ra_end - ra);
    }
    const char *q = m_end;
    if (q < end && *q == ',') q++;
    q = json_skip(q, end); /* path */
    if (q < end && *q == ',') q++;
    const char *cid = q;
    const char *cid_end = json_skip(q, end);
    char body[LINE_MAX_ + 128];
    int n = snprintf(body, sizeof body, "{\"args\":%.*s,\"callbackId\":%.*s,\"sessionId\":\"%s\"}",
                     (int)res_len, res, (int)(cid_end - cid), cid, c->sid);
    if (n <= 0 || (size_t)n >= sizeof body) {
        bad_lines++;
        return;
    }
    post_enqueue(c->peer, body, (size_t)n);
}

static void sse_line(conn *c, char *line, size_t len, uint64_t now) {
    if (len && line[len - 1] == '\r') len--;
    if (len < 5 || memcmp(line, "data:", 5) != 0) return;
    char *p = line + 5, *end = line + len;
    if (p < end && *p == ' ') p++;
    if (end - p > 5 && memcmp(p, "{\"t\":", 5) == 0) {
        p += 5;
        uint64_t t = 0;
        while (p < end && *p >= '0' && *p <= '9') t = t * 10 + (uint64_t)(*p++ - '0');
        c->events++;
        delivered++;
        uint64_t arrival = cur_arrival ? cur_arrival : now;
        if (!t_first_recv) t_first_recv = arrival;
        if (arrival > t_last_recv) t_last_recv = arrival;
        t_last_read = now;
        lat_push(to_us(arrival, t), to_us(now, t));
        if (dump_file)
            fprintf(dump_file, "%d %llu %llu %llu\n", (int)(c - streams), (unsigned long long)t,
                    (unsigned long long)arrival, (unsigned long long)now);
        return;
    }
    if (memmem(p, (size_t)(end - p), "\"route\":\"setId\"", 15)) {
        const char *a = memmem(p, (size_t)(end - p), "\"args\":\"", 8);
        if (a && !c->sid[0]) {
            json_string(a + 8, end, c->sid, sizeof c->sid);
            n_sids++;
        }
        return;
    }
    if (memmem(p, (size_t)(end - p), "\"route\":\"runRequest\"", 20)) run_request(c, p, end);
}

static void sse_feed(conn *c, const char *buf, size_t n, uint64_t now) {
    while (n) {
        const char *nl = memchr(buf, '\n', n);
        size_t take = nl ? (size_t)(nl - buf) : n;
        size_t room = LINE_MAX_ - 1 - c->linelen;
        size_t copy = take < room ? take : room;
        memcpy(c->line + c->linelen, buf, copy);
        c->linelen += (uint16_t)copy;
        if (!nl) return;
        sse_line(c, c->line, c->linelen, now);
        c->linelen = 0;
        buf = nl + 1;
        n -= take + 1;
    }
}

/* ---- HTTP ------------------------------------------------------------ */

static void response_done(conn *c) {
    if (c->kind == K_POST) {
        c->busy = 0;
        if (c->status >= 200 && c->status < 300) {
            /* a c2s POST carries --batch calls; an s2c reply, one */
            int carried = strcmp(opt_mode, "c2s") ? 1 : opt_batch;
            c->calls += carried;
            calls_total += (uint64_t)carried;
            if (counting) calls_counted += (uint64_t)carried;
        }
        if (!strcmp(opt_mode, "c2s") && counting >= 0) c2s_next(c);
        post_pump(c);
    } else if (c->kind == K_CONTROL) {
        control_done = 1;
        control_status = c->status;
    } else {
        /* a stream that ended */
        conn_close(c);
        return;
    }
    c->hstate = H_STATUS;
    c->linelen = 0;
    c->have_len = 0;
    c->chunked = 0;
}

static void headers_done(conn *c) {
    if (c->kind == K_STREAM && !c->opened) {
        if (c->status == 200) {
            c->opened = 1;
            n_opened++;
            n_inflight--;
        }
    }
    if (c->status == 204 || c->status == 304 || (c->status >= 100 && c->status < 200)) {
        response_done(c);
        return;
    }
    if (c->chunked)
        c->hstate = H_CHUNK_SIZE;
    else if (c->have_len) {
        if (c->remaining == 0) {
            response_done(c);
            return;
        }
        c->hstate = H_BODY_LEN;
    } else
        c->hstate = H_BODY_CLOSE;
}

static void header_line(conn *c, char *line, size_t len) {
    if (len && line[len - 1] == '\r') len--;
    line[len] = 0;
    if (c->hstate == H_STATUS) {
        if (len == 0) return;
        char *sp = strchr(line, ' ');
        c->status = sp ? atoi(sp + 1) : 0;
        c->hstate = H_HEADER;
        c->have_len = 0;
        c->chunked = 0;
        return;
    }
    if (len == 0) {
        headers_done(c);
        return;
    }
    if (strncasecmp(line, "transfer-encoding:", 18) == 0) {
        if (strcasestr(line + 18, "chunked")) c->chunked = 1;
    } else if (strncasecmp(line, "content-length:", 15) == 0) {
        c->have_len = 1;
        c->remaining = strtoll(line + 15, NULL, 10);
    }
}

static void body(conn *c, const char *p, size_t n, uint64_t now) {
    if (c->kind == K_STREAM) sse_feed(c, p, n, now);
}

static void http_feed(conn *c, const char *buf, size_t n, uint64_t now) {
    size_t i = 0;
    while (i < n && !c->closed) {
        switch (c->hstate) {
        case H_STATUS:
        case H_HEADER: {
            const char *nl = memchr(buf + i, '\n', n - i);
            size_t take = nl ? (size_t)(nl - (buf + i)) : n - i;
            size_t room = LINE_MAX_ - 1 - c->linelen;
            size_t copy = take < room ? take : room;
            memcpy(c->line + c->linelen, buf + i, copy);
            c->linelen += (uint16_t)copy;
            i += take;
            if (nl) {
                i++;
                size_t l = c->linelen;
                c->linelen = 0;
                header_line(c, c->line, l);
            }
            break;
        }
        case H_CHUNK_SIZE:
        case H_CHUNK_CRLF:
        case H_CHUNK_TRAILER: {
            char ch = buf[i++];
            if (ch != '\n') {
                if (c->cllen < sizeof c->cl - 1) c->cl[c->cllen++] = ch;
                break;
            }
            c->cl[c->cllen] = 0;
            size_t l = c->cllen;
            if (l && c->cl[l - 1] == '\r') c->cl[--l] = 0;
            c->cllen = 0;
            if (c->hstate == H_CHUNK_CRLF) {
                c->hstate = H_CHUNK_SIZE;
            } else if (c->hstate == H_CHUNK_SIZE) {
                if (l == 0) break; /* tolerate a stray CRLF */
                c->remaining = strtoll(c->cl, NULL, 16);
                c->hstate = c->remaining ? H_CHUNK_DATA : H_CHUNK_TRAILER;
            } else { /* trailer: ends with an empty line */
                if (l == 0) response_done(c);
            }
            break;
        }
        case H_CHUNK_DATA:
        case H_BODY_LEN: {
            size_t m = n - i;
            if ((int64_t)m > c->remaining) m = (size_t)c->remaining;
            body(c, buf + i, m, now);
            i += m;
            c->remaining -= (int64_t)m;
            if (c->remaining == 0) {
                if (c->hstate == H_CHUNK_DATA)
                    c->hstate = H_CHUNK_CRLF;
                else
                    response_done(c);
            }
            break;
        }
        case H_BODY_CLOSE:
            body(c, buf + i, n - i, now);
            i = n;
            break;
        }
    }
}

static char *rbuf;

static void on_event(conn *c, uint32_t events) {
    if (c->closed) return;
    if (c->connecting) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            conn_close(c);
            return;
        }
        c->connecting = 0;
        set_events(c, EPOLLIN);
        if (c->wbuf) flush_out(c);
        if (c->kind == K_POST) post_pump(c);
        return;
    }
    if ((events & EPOLLOUT) && c->wbuf) {
        if (flush_out(c) == 0) set_events(c, EPOLLIN);
        if (c->closed) return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        struct iovec iov = {.iov_base = rbuf, .iov_len = READ_BUF};
        union {
            char buf[CMSG_SPACE(sizeof(struct timespec)) + 64];
            struct cmsghdr align;
        } control_buf;
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = control_buf.buf,
                            .msg_controllen = sizeof control_buf.buf};
        ssize_t r = recvmsg(c->fd, &mh, 0);
        if (r > 0) {
            uint64_t now = now_ns();
            cur_arrival = 0;
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                    int64_t rt = (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
                    if (rt > 0) {
                        uint64_t a = (uint64_t)(rt - rt_offset);
                        cur_arrival = a < now ? a : now;
                    }
                }
            }
            if (c->kind == K_STREAM) {
                if (cur_arrival)
                    n_stamped++;
                else
                    n_unstamped++;
            }
            http_feed(c, rbuf, (size_t)r, now);
            cur_arrival = 0;
        } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            if (c->kind == K_CONTROL && c->hstate == H_BODY_CLOSE) {
                control_done = 1;
                control_status = c->status;
            }
            conn_close(c);
        }
    }
}

static struct epoll_event evs[4096];

/* Service the sockets for at most ms milliseconds. */
static int poll_once(int ms) {
    int n = epoll_wait(ep, evs, 4096, ms);
    if (n < 0) {
        if (errno == EINTR) return 0;
        die("epoll_wait");
    }
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
    return n;
}

static void nap(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000 * (time_t)(ms / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
}

static void serve_for(double seconds) {
    uint64_t until = now_ns() + (uint64_t)(seconds * 1e9);
    for (;;) {
        uint64_t t = now_ns();
        if (t >= until) return;
        int ms = (int)((until - t) / 1000000) + 1;
        poll_once(ms > 50 ? 50 : ms);
    }
}

static int wait_control(double deadline_s) {
    uint64_t until = now_ns() + (uint64_t)(deadline_s * 1e9);
    while (!control_done && now_ns() < until) poll_once(10);
    return control_done;
}

/* ---- main ------------------------------------------------------------ */

static void usage(void) {
    fprintf(stderr,
            "usage: loadclient --port P [--host 127.0.0.1] [--path /sse] [--pid PID]\n"
            "  [--streams N] [--mode stream|idle|s2c|c2s] [--control JSON] [--control-stop JSON]\n"
            "  [--expect EVENTS] [--timeout S] [--settle S] [--duration S] [--warmup S]\n"
            "  [--inflight N] [--control-path /control] [--dump FILE] [--nap-ms MS]\n"
            "  [--batch N]  (c2s: N calls per POST, as a JSON array; 1 to 100)\n"
            "  --dump writes one line per event: stream index, send ns, arrival ns, read ns\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option long_opts[] = {
        {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},         {"path", 1, 0, 'P'},
        {"pid", 1, 0, 'i'},      {"streams", 1, 0, 'n'},      {"mode", 1, 0, 'm'},
        {"control", 1, 0, 'c'},  {"control-stop", 1, 0, 'C'}, {"expect", 1, 0, 'e'},
        {"timeout", 1, 0, 't'},  {"settle", 1, 0, 's'},       {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'w'},   {"inflight", 1, 0, 'f'},     {"control-path", 1, 0, 'x'},
        {"dump", 1, 0, 'D'},     {"nap-ms", 1, 0, 'N'},       {"batch", 1, 0, 'B'},
        {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (o) {
        case 'h': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 'P': opt_path = optarg; break;
        case 'i': opt_pid = atoi(optarg); break;
        case 'n': opt_streams = atoi(optarg); break;
        case 'm': opt_mode = optarg; break;
        case 'c': opt_control = optarg; break;
        case 'C': opt_control_stop = optarg; break;
        case 'e': opt_expect = strtoull(optarg, NULL, 10); break;
        case 't': opt_timeout = atof(optarg); break;
        case 's': opt_settle = atof(optarg); break;
        case 'd': opt_duration = atof(optarg); break;
        case 'w': opt_warmup = atof(optarg); break;
        case 'f': opt_inflight = atoi(optarg); break;
        case 'x': opt_control_path = optarg; break;
        case 'D': opt_dump = optarg; break;
        case 'N': opt_nap_ms = atof(optarg); break;
        case 'B':
            opt_batch = atoi(optarg);
            if (opt_batch < 1 || opt_batch > 100) usage();
            break;
        default: usage();
        }
    }
    if (!opt_port || opt_streams <= 0) usage();
    int calls_mode = !strcmp(opt_mode, "s2c") || !strcmp(opt_mode, "c2s");
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)opt_streams * 2 + 256;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        if (rl.rlim_max < want) {
            rl.rlim_max = want;
            rl.rlim_cur = want;
        }
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }

    if (opt_dump) {
        dump_file = fopen(opt_dump, "w");
        if (!dump_file) die(opt_dump);
    }
    rt_offset = realtime_offset();
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    rbuf = malloc(READ_BUF);
    streams = calloc((size_t)opt_streams, sizeof *streams);
    if (!rbuf || !streams) die("calloc");
    snprintf(host_header, sizeof host_header, "%s:%d", opt_host, opt_port);
    stream_request_len = (size_t)snprintf(
        stream_request, sizeof stream_request,
        "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        opt_path, host_header);

    uint64_t t_start = now_ns();
    uint64_t deadline = t_start + (uint64_t)(opt_timeout * 1e9);
    long rss_before = proc_rss_kib(opt_pid);
    double cpu_before_connect = proc_cpu(opt_pid);
    double mach_before_connect = machine_busy();
    double cli_before_connect = cpu_self();

    /* Phase 1: open every stream, at most --inflight handshakes at a time. */
    while (n_opened + n_failed < opt_streams && now_ns() < deadline) {
        while (n_started < opt_streams && n_inflight < opt_inflight) start_stream(n_started++);
        poll_once(10);
    }
    uint64_t t_all_open = now_ns();
    double cpu_after_connect = proc_cpu(opt_pid);
    double mach_after_connect = machine_busy();
    double cli_after_connect = cpu_self();
    double connect_s = (t_all_open - t_start) / 1e9;

    /* Let the server finish what opening a session costs (and, for the
     * calls modes, let every session id arrive). */
    serve_for(opt_settle);
    if (calls_mode) {
        while (n_sids < n_opened && now_ns() < deadline) poll_once(10);
    }
    long rss_open = proc_rss_kib(opt_pid);

    double srv_cpu0 = 0, srv_cpu1 = 0, cli_cpu0 = 0, cli_cpu1 = 0, cli_sys0 = 0, cli_sys1 = 0;
    double mach0 = 0, mach1 = 0;
    uint64_t t0 = 0, t_end = 0;
    int timed_out = 0;
    long rss_end = -1;

    if (!strcmp(opt_mode, "stream")) {
        srv_cpu0 = proc_cpu(opt_pid);
        mach0 = machine_busy();
        cli_cpu0 = cpu_self();
        cli_sys0 = cpu_sys_part;
        t0 = now_ns();
        if (opt_control) start_control(opt_control);
        while (delivered < opt_expect && now_ns() < deadline && n_closed + n_failed < opt_streams)
            if (poll_once(10) > 0 && opt_nap_ms > 0 && delivered < opt_expect) nap(opt_nap_ms);
        srv_cpu1 = proc_cpu(opt_pid);
        mach1 = machine_busy();
        cli_cpu1 = cpu_self();
        cli_sys1 = cpu_sys_part;
        t_end = t_last_recv ? t_last_recv : now_ns();
        timed_out = delivered < opt_expect;
        wait_control(1.0);
        rss_end = proc_rss_kib(opt_pid);
    } else if (calls_mode) {
        posts = calloc((size_t)opt_streams, sizeof *posts);
        int n_posts = 0;
        for (int i = 0; i < opt_streams; i++) {
            if (!streams[i].opened || streams[i].closed || !streams[i].sid[0]) continue;
            conn *p = &posts[i];
            p->kind = K_POST;
            p->peer = &streams[i];
            streams[i].peer = p;
            if (open_socket(p) < 0) die("post connect");
            n_posts++;
        }
        serve_for(0.2);
        if (opt_control) {
            start_control(opt_control);
            wait_control(5.0);
        }
        if (!strcmp(opt_mode, "c2s"))
            for (int i = 0; i < opt_streams; i++)
                if (posts[i].peer) c2s_next(&posts[i]);
        serve_for(opt_warmup);
        srv_cpu0 = proc_cpu(opt_pid);
        mach0 = machine_busy();
        cli_cpu0 = cpu_self();
        cli_sys0 = cpu_sys_part;
        t0 = now_ns();
        counting = 1;
        serve_for(opt_duration);
        counting = 0;
        t_end = now_ns();
        srv_cpu1 = proc_cpu(opt_pid);
        mach1 = machine_busy();
        cli_cpu1 = cpu_self();
        cli_sys1 = cpu_sys_part;
        counting = -1; /* c2s: stop looping */
        if (opt_control_stop) {
            start_control(opt_control_stop);
            wait_control(5.0);
        }
        delivered = calls_counted;
        (void)n_posts;
    } else { /* idle */
        serve_for(opt_settle);
        rss_end = proc_rss_kib(opt_pid);
    }

    /* report */
    double p50 = -1, p99 = -1, pmax = -1, r50 = -1, r99 = -1;
    if (lat_n) {
        qsort(lat, lat_n, sizeof *lat, cmp_u32);
        qsort(lat_read, lat_n, sizeof *lat_read, cmp_u32);
        p50 = lat[(size_t)(0.50 * (double)(lat_n - 1))] / 1000.0;
        p99 = lat[(size_t)(0.99 * (double)(lat_n - 1))] / 1000.0;
        pmax = lat[lat_n - 1] / 1000.0;
        r50 = lat_read[(size_t)(0.50 * (double)(lat_n - 1))] / 1000.0;
        r99 = lat_read[(size_t)(0.99 * (double)(lat_n - 1))] / 1000.0;
    }
    int64_t drift = realtime_offset() - rt_offset;
    uint32_t min_ev = UINT32_MAX, max_ev = 0;
    for (int i = 0; i < opt_streams; i++) {
        if (!streams[i].opened) continue;
        if (streams[i].events < min_ev) min_ev = streams[i].events;
        if (streams[i].events > max_ev) max_ev = streams[i].events;
    }
    if (min_ev == UINT32_MAX) min_ev = 0;
    double elapsed = t0 ? (t_end > t0 ? (t_end - t0) / 1e9 : 0) : 0;
    printf("{\"mode\":\"%s\",\"streams\":%d,\"opened\":%d,\"failed\":%d,\"closed_early\":%d,"
           "\"connect_s\":%.6f,\"connect_server_cpu_s\":%.3f,\"connect_other_cpu_s\":%.3f,"
           "\"rss_before_kib\":%ld,\"rss_open_kib\":%ld,\"rss_end_kib\":%ld,"
           "\"expected\":%llu,\"delivered\":%llu,\"timed_out\":%s,"
           "\"elapsed_s\":%.6f,\"first_recv_s\":%.6f,"
           "\"server_cpu_s\":%.3f,\"client_cpu_s\":%.3f,\"client_sys_s\":%.3f,\"other_cpu_s\":%.3f,"
           "\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"lat_max_ms\":%.3f,"
           "\"read_lat_p50_ms\":%.3f,\"read_lat_p99_ms\":%.3f,\"elapsed_read_s\":%.6f,"
           "\"stamped_reads\":%llu,\"unstamped_reads\":%llu,\"clock_drift_us\":%.1f,"
           "\"min_events_per_stream\":%u,\"max_events_per_stream\":%u,"
           "\"control_status\":%d,\"calls_total\":%llu,\"bad_lines\":%lld}\n",
           opt_mode, opt_streams, n_opened, n_failed, n_closed, connect_s,
           cpu_after_connect - cpu_before_connect,
           (mach_after_connect - mach_before_connect) - (cpu_after_connect - cpu_before_connect) -
               (cli_after_connect - cli_before_connect),
           rss_before, rss_open, rss_end,
           (unsigned long long)opt_expect, (unsigned long long)delivered,
           timed_out ? "true" : "false", elapsed,
           (t0 && t_first_recv > t0) ? (t_first_recv - t0) / 1e9 : -1.0, srv_cpu1 - srv_cpu0,
           cli_cpu1 - cli_cpu0, cli_sys1 - cli_sys0,
           (mach1 - mach0) - (srv_cpu1 - srv_cpu0) - (cli_cpu1 - cli_cpu0), p50, p99, pmax, r50,
           r99, (t0 && t_last_read > t0) ? (t_last_read - t0) / 1e9 : 0.0,
           (unsigned long long)n_stamped, (unsigned long long)n_unstamped, drift / 1000.0, min_ev, max_ev, control_status,
           (unsigned long long)calls_total, (long long)bad_lines);
    fflush(stdout);
    if (dump_file) fclose(dump_file);
    /* close with RST: nothing lingers in TIME_WAIT between runs */
    for (int i = 0; i < opt_streams; i++)
        if (streams[i].fd && !streams[i].closed) conn_close(&streams[i]);
    if (posts)
        for (int i = 0; i < opt_streams; i++)
            if (posts[i].peer && !posts[i].closed) conn_close(&posts[i]);
    return 0;
}
