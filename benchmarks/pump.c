/*
 * The subscribers' read loop of the benchmark clients, in C.
 *
 * The Python client process opens and sets up every connection (WebSocket handshake,
 * connect, subscribe), then hands the sockets to pump_run() in a thread of its own. From then
 * on each chunk read costs one recv() and a few memmem()/memchr() scans, so one client core
 * keeps up with a server core that delivers a million messages per second; the Python loop
 * would need several microseconds per chunk.
 *
 * Per chunk, exactly as clients.py does it in Python (its docstring has the reasoning):
 *   - deliveries: occurrences of the marker "t": (one per publication, in every protocol);
 *   - application heartbeats: occurrences of a fixed byte string (hubbub's ping frame,
 *     Engine.IO's "2"), answered with a fixed pong frame;
 *   - WebSocket pings (0x89, a byte that only frame headers contain since payloads are
 *     ASCII), answered with a pong carrying the same payload;
 *   - latency: on sampled sockets, the publisher's timestamp after each marker subtracted
 *     from CLOCK_MONOTONIC (the clock of Python's time.monotonic_ns()).
 * Patterns may straddle two chunks: the last CARRY bytes of a socket's previous chunk are put
 * in front of the next one, and only occurrences that end in the new bytes are counted.
 *
 * Build: cc -O2 -shared -fPIC -o pump.so pump.c   (benchmarks/setup.sh does it)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CARRY 8
#define BUF (256 * 1024)

struct pump_stats {
    volatile int64_t received;   /* deliveries counted */
    volatile int64_t last_ns;    /* when the last one was read */
    volatile int64_t pongs;      /* heartbeats answered */
    volatile int64_t closed;     /* sockets the server closed */
    volatile int64_t nlat;       /* latencies stored */
    volatile int64_t reset;      /* set by Python: zero the counters, then cleared here */
    volatile int64_t stop;       /* set by Python: return */
};

struct sock {
    int fd;
    int sample;
    int carry;
    unsigned char tail[CARRY];
};

static const unsigned char MARK[] = "\"t\":";
#define MARK_LEN 4

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void send_all(int fd, const unsigned char *data, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return; /* closing: the read side will see it */
        }
        data += n;
        len -= (size_t)n;
    }
}

/* Occurrences of pat in buf[0:len] that end after position `old` (the carried bytes). */
static int64_t count_new(const unsigned char *buf, size_t len, size_t old, const unsigned char *pat,
                         size_t plen) {
    int64_t n = 0;
    size_t from = old >= plen ? old - plen + 1 : 0;
    while (from + plen <= len) {
        const unsigned char *hit = memmem(buf + from, len - from, pat, plen);
        if (hit == NULL) break;
        n++;
        from = (size_t)(hit - buf) + plen;
    }
    return n;
}

static void sample_latencies(const unsigned char *buf, size_t len, size_t old, int64_t now,
                             int64_t *lat, int64_t cap, struct pump_stats *st) {
    size_t from = old >= MARK_LEN ? old - MARK_LEN + 1 : 0;
    while (from + MARK_LEN <= len) {
        const unsigned char *hit = memmem(buf + from, len - from, MARK, MARK_LEN);
        if (hit == NULL) break;
        size_t i = (size_t)(hit - buf) + MARK_LEN;
        int64_t stamp = 0;
        size_t j = i;
        while (j < len && buf[j] >= '0' && buf[j] <= '9') stamp = stamp * 10 + (buf[j++] - '0');
        if (j < len && buf[j] == ',' && j > i && st->nlat < cap) lat[st->nlat++] = now - stamp;
        from = i;
    }
}

/* Pong every complete WebSocket ping frame that ends in the new bytes. */
static void ws_pings(int fd, const unsigned char *buf, size_t len, size_t old, struct pump_stats *st) {
    const unsigned char *p = buf;
    while ((p = memchr(p, 0x89, len - (size_t)(p - buf))) != NULL) {
        size_t i = (size_t)(p - buf);
        p++;
        /* 0x89 one or two bytes after 0x7E is a 16-bit length, not a frame start. */
        if ((i >= 1 && buf[i - 1] == 0x7E) || (i >= 2 && buf[i - 2] == 0x7E)) continue;
        if (i + 2 > len) break;
        size_t size = buf[i + 1] & 0x7F;
        if (size > 125 || i + 2 + size > len) continue;
        if (i + 2 + size <= old) continue; /* answered when it arrived */
        unsigned char pong[2 + 4 + 125];
        pong[0] = 0x8A;
        pong[1] = (unsigned char)(0x80 | size);
        memset(pong + 2, 0, 4); /* a zero mask leaves the payload as it is */
        memcpy(pong + 6, buf + i + 2, size);
        send_all(fd, pong, 6 + size);
        st->pongs++;
    }
}

/*
 * Read every socket until stats->stop is set. beat/pong: the application heartbeat and its
 * answer (beat_len 0: none). lat/cap: where sampled latencies go. Returns 0, or -errno.
 */
int pump_run(const int *fds, const int *samples, int n, const unsigned char *beat, int beat_len,
             const unsigned char *pong, int pong_len, int64_t *lat, int64_t cap,
             struct pump_stats *st, void *scratch) {
    struct sock *socks = scratch;
    static unsigned char buf[CARRY + BUF];
    int ep = epoll_create1(0);
    if (ep < 0) return -errno;
    for (int k = 0; k < n; k++) {
        socks[k].fd = fds[k];
        socks[k].sample = samples[k];
        socks[k].carry = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)k};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[k], &ev) < 0) {
            int err = errno;
            close(ep);
            return -err;
        }
    }
    struct epoll_event events[256];
    while (!st->stop) {
        if (st->reset) {
            st->received = 0;
            st->last_ns = 0;
            st->pongs = 0;
            st->nlat = 0;
            st->reset = 0;
        }
        int ready = epoll_wait(ep, events, 256, 20);
        if (ready < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            close(ep);
            return -err;
        }
        for (int e = 0; e < ready; e++) {
            struct sock *s = &socks[events[e].data.u32];
            size_t old = (size_t)s->carry;
            memcpy(buf, s->tail, old);
            ssize_t got = recv(s->fd, buf + old, BUF, MSG_DONTWAIT);
            if (got <= 0) {
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                st->closed++;
                continue;
            }
            size_t len = old + (size_t)got;
            int64_t delivered = count_new(buf, len, old, MARK, MARK_LEN);
            if (delivered) {
                int64_t t = now_ns();
                st->received += delivered;
                st->last_ns = t;
                if (s->sample) sample_latencies(buf, len, old, t, lat, cap, st);
            }
            if (beat_len) {
                int64_t beats = count_new(buf, len, old, beat, (size_t)beat_len);
                for (int64_t b = 0; b < beats; b++) send_all(s->fd, pong, (size_t)pong_len);
                st->pongs += beats;
            }
            if (memchr(buf + old, 0x89, (size_t)got) != NULL || old) ws_pings(s->fd, buf, len, old, st);
            size_t keep = len < CARRY ? len : CARRY;
            memcpy(s->tail, buf + len - keep, keep);
            s->carry = (int)keep;
        }
    }
    close(ep);
    return 0;
}
