/* A Diameter server with no logic at all, for comparing CPU per CCR (issue 16's target:
 * ocsd's CPU per CCR against a stub that only answers 2001, under the same client).
 *
 * One thread, epoll, non-blocking TCP on a loopback address. Per connection: frames the
 * byte stream into messages (20-octet header, 24-bit length), answers every request read in
 * one go with one write: CER -> CEA, DWR -> DWA, DPR -> DPA, CCR -> CCA; answers are ignored.
 * A CCA carries Session-Id (copied), Result-Code 2001, Origin-Host, Origin-Realm,
 * Auth-Application-Id 4, CC-Request-Type and CC-Request-Number (copied); the AVPs of the
 * request are walked once to find those three. No allow-list, no state machine, no
 * duplicate detection, no validation: what ocsd does on top of this is its own cost.
 *
 *   gcc -O2 -o /tmp/diameter_stub bench/diameter_stub.c
 *   /tmp/diameter_stub 127.0.0.1 3868 [seconds]     # stops after `seconds` (default 600)
 *   .venv/bin/python bench/diameter_load.py --port 3868 --users 10000 --server-pid PID
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 64
#define BUF_SIZE (256 * 1024)
#define MAX_CONN 1024

static const char ORIGIN_HOST[] = "stub.localdomain";
static const char ORIGIN_REALM[] = "localdomain";

struct conn {
    int fd;
    size_t have;
    unsigned char in[BUF_SIZE];
    unsigned char out[BUF_SIZE];
};

static struct conn *conns[MAX_CONN];

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* Appends an AVP (no vendor) with `len` octets of data; returns the new offset. */
static size_t avp(unsigned char *out, size_t at, uint32_t code, const void *data, uint32_t len) {
    uint32_t total = 8 + len;
    put32(out + at, code);
    put32(out + at + 4, (0x40u << 24) | total);
    memcpy(out + at + 8, data, len);
    at += total;
    while (at % 4) out[at++] = 0;
    return at;
}

static size_t avp32(unsigned char *out, size_t at, uint32_t code, uint32_t value) {
    unsigned char v[4];
    put32(v, value);
    return avp(out, at, code, v, 4);
}

/* The answer to one request at `req` (length `len`) written at `out`; returns its length. */
static size_t answer(const unsigned char *req, uint32_t len, unsigned char *out) {
    uint32_t command = be32(req + 4) & 0xFFFFFF;
    size_t at = 20;
    const unsigned char *session = NULL;
    uint32_t session_len = 0, request_type = 0, request_number = 0;
    int has_type = 0, has_number = 0;
    for (uint32_t pos = 20; pos + 8 <= len;) {
        uint32_t code = be32(req + pos), word = be32(req + pos + 4);
        uint32_t avp_len = word & 0xFFFFFF, header = (word >> 24) & 0x80 ? 12 : 8;
        if (avp_len < header || pos + avp_len > len) break;
        const unsigned char *data = req + pos + header;
        if (code == 263) { session = data; session_len = avp_len - header; }
        else if (code == 416 && avp_len - header == 4) { request_type = be32(data); has_type = 1; }
        else if (code == 415 && avp_len - header == 4) { request_number = be32(data); has_number = 1; }
        pos += (avp_len + 3) & ~3u;
    }
    if (session) at = avp(out, at, 263, session, session_len);
    at = avp32(out, at, 268, 2001);
    at = avp(out, at, 264, ORIGIN_HOST, sizeof ORIGIN_HOST - 1);
    at = avp(out, at, 296, ORIGIN_REALM, sizeof ORIGIN_REALM - 1);
    if (command == 257) {  /* CEA */
        unsigned char address[6] = {0, 1, 127, 0, 0, 1};
        at = avp(out, at, 257, address, 6);
        at = avp32(out, at, 266, 0);
        at = avp(out, at, 269, "stub", 4);
        at = avp32(out, at, 258, 4);
    } else if (command == 272) {  /* CCA */
        at = avp32(out, at, 258, 4);
        if (has_type) at = avp32(out, at, 416, request_type);
        if (has_number) at = avp32(out, at, 415, request_number);
    }
    memcpy(out + 4, req + 4, 16);  /* flags, command, application, hop-by-hop, end-to-end */
    out[4] &= 0x7F & ~0x10;        /* R and T cleared (P kept) */
    put32(out, (1u << 24) | (uint32_t)at);
    return at;
}

static void drop(int epfd, struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->fd < MAX_CONN) conns[c->fd] = NULL;
    free(c);
}

static void serve(int epfd, struct conn *c) {
    for (;;) {
        ssize_t got = read(c->fd, c->in + c->have, BUF_SIZE - c->have);
        if (got == 0) { drop(epfd, c); return; }
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            drop(epfd, c); return;
        }
        c->have += (size_t)got;
        size_t pos = 0, out = 0;
        while (c->have - pos >= 20) {
            uint32_t len = be32(c->in + pos) & 0xFFFFFF;
            if (len < 20 || len > BUF_SIZE / 2) { drop(epfd, c); return; }
            if (c->have - pos < len) break;
            if (c->in[pos + 4] & 0x80 && out + 1024 + len < BUF_SIZE)
                out += answer(c->in + pos, len, c->out + out);
            pos += len;
        }
        memmove(c->in, c->in + pos, c->have - pos);
        c->have -= pos;
        for (size_t sent = 0; sent < out;) {
            ssize_t n = write(c->fd, c->out + sent, out - sent);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;  /* loopback: brief */
            if (n <= 0) { drop(epfd, c); return; }
            sent += (size_t)n;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s LOOPBACK-ADDRESS PORT [SECONDS]\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1 || (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "a loopback IPv4 address only\n");
        return 2;
    }
    int seconds = argc > 3 ? atoi(argv[3]) : 600;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 128)) {
        perror("bind/listen");
        return 1;
    }
    int epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    printf("diameter stub listening on %s:%s for %d s\n", argv[1], argv[2], seconds);
    fflush(stdout);
    time_t end = time(NULL) + seconds;
    struct epoll_event events[MAX_EVENTS];
    while (time(NULL) < end) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, 500);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (fd >= MAX_CONN) { close(fd); continue; }
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *fresh = calloc(1, sizeof *fresh);
                    if (!fresh) { close(fd); continue; }
                    fresh->fd = fd;
                    conns[fd] = fresh;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = fresh};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev);
                }
            } else {
                serve(epfd, c);
            }
        }
    }
    return 0;
}
