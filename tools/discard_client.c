/* A keep-alive HTTP/1.1 load generator that discards what it receives.
 *
 * wrk reads every reply into user space 8 KiB at a time (9 reads and 8 FIONREAD
 * ioctls per 64 KiB reply): pinned to one core it costs about as much per
 * 64 KiB reply as the server does, so at that size a wrk run measures wrk. This
 * client reads a reply's head (one recv) and drops its body with
 * recv(MSG_TRUNC), which on TCP consumes the bytes without copying them
 * (tcp(7)), so its own cost per reply is a few syscalls whatever the size.
 *
 *   discard_client PORT PATH CONNECTIONS SECONDS
 *
 * Each connection sends one GET of PATH to 127.0.0.1:PORT, waits for the whole
 * reply (a 200 with Content-Length), sends the next. Prints one line:
 *   requests N seconds S errors E user U sys Y
 * (its own CPU seconds from getrusage). Built by tools/bench_serve.py with cc. */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 8192
#define DISCARD_MAX (1 << 20)

struct conn {
    int fd;
    long long body_left;     /* -1: waiting for the head */
    size_t head_len;         /* bytes of the head read so far */
    char head[HEAD_MAX];
};

static char request[1024];
static size_t request_len;
static char discard[DISCARD_MAX];   /* never read: MSG_TRUNC does not copy into it */
static long long done, errors;
static struct sockaddr_in addr;
static int ep;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_request(struct conn *c) {
    ssize_t n = send(c->fd, request, request_len, MSG_NOSIGNAL);
    c->body_left = -1;
    c->head_len = 0;
    return n == (ssize_t)request_len ? 0 : -1;
}

static int open_conn(struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) { close(c->fd); return -1; }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) { close(c->fd); return -1; }
    return send_request(c);
}

static void restart(struct conn *c) {
    errors++;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (open_conn(c) < 0) { perror("discard_client: reconnect"); exit(1); }
}

/* The head is complete in c->head[0:end]: a 200 with a Content-Length, else -1. */
static long long content_length(struct conn *c, size_t end) {
    if (end < 12 || memcmp(c->head, "HTTP/1.1 200", 12) != 0) return -1;
    for (size_t i = 0; i + 16 < end; i++) {
        if ((c->head[i] == '\n') && strncasecmp(c->head + i + 1, "content-length:", 15) == 0)
            return strtoll(c->head + i + 16, NULL, 10);
    }
    return -1;
}

/* Readable: read the head, drop the body; a whole reply sends the next request. */
static void on_readable(struct conn *c) {
    for (;;) {
        if (c->body_left < 0) {
            ssize_t n = recv(c->fd, c->head + c->head_len, HEAD_MAX - 1 - c->head_len, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            if (n <= 0) { restart(c); return; }
            c->head_len += n;
            c->head[c->head_len] = 0;
            char *end = memmem(c->head, c->head_len, "\r\n\r\n", 4);
            if (!end) {
                if (c->head_len >= HEAD_MAX - 1) { restart(c); return; }
                continue;
            }
            size_t head_end = end - c->head + 4;
            long long length = content_length(c, head_end);
            if (length < 0) { restart(c); return; }
            long long extra = (long long)(c->head_len - head_end);   /* body bytes read with the head */
            if (extra > length) { restart(c); return; }             /* no pipelining here */
            c->body_left = length - extra;
        } else {
            size_t want = c->body_left < DISCARD_MAX ? (size_t)c->body_left : DISCARD_MAX;
            ssize_t n = recv(c->fd, discard, want, MSG_DONTWAIT | MSG_TRUNC);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            if (n <= 0) { restart(c); return; }
            c->body_left -= n;
        }
        if (c->body_left == 0) {
            done++;
            if (send_request(c) < 0) { restart(c); return; }
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: discard_client PORT PATH CONNECTIONS SECONDS\n");
        return 2;
    }
    int port = atoi(argv[1]), conns = atoi(argv[3]);
    double seconds = atof(argv[4]);
    if (port <= 0 || conns <= 0 || seconds <= 0) {
        fprintf(stderr, "discard_client: PORT, CONNECTIONS and SECONDS must be positive\n");
        return 2;
    }
    request_len = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", argv[2]);
    if (request_len >= sizeof request) { fprintf(stderr, "discard_client: PATH too long\n"); return 2; }
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ep = epoll_create1(0);
    struct conn *all = calloc(conns, sizeof *all);
    if (ep < 0 || !all) { perror("discard_client"); return 1; }
    for (int i = 0; i < conns; i++)
        if (open_conn(&all[i]) < 0) { perror("discard_client: connect"); return 1; }
    struct epoll_event events[256];
    double start = now(), stop = start + seconds, t = start;
    while (t < stop) {
        int n = epoll_wait(ep, events, 256, 100);
        if (n < 0 && errno != EINTR) { perror("discard_client: epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) on_readable(events[i].data.ptr);
        t = now();
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("requests %lld seconds %.3f errors %lld user %.3f sys %.3f\n", done, t - start, errors,
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    return 0;
}
