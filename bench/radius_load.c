/*
 * radius_load: a tight RADIUS Access-Request load generator (loopback only).
 *
 * Built and driven by bench/radius_load.py (which validates the arguments, writes the user
 * list and formats the report); it can also be run by hand:
 *
 *   radius_load --host 127.0.0.1 --port 1812 --secret testing123 --users-file FILE
 *               [--inflight 64] [--seconds 10] [--max-requests N] [--rate R]
 *               [--timeout-ms 1000] [--sockets 16] [--no-password] [--no-verify-ma]
 *               [--sequential] [--dump-one]
 *
 * Every request is unique in (source port, identifier, authenticator): the authenticator is
 * 16 fresh pseudo-random octets (xoshiro256**, seeded from getrandom), so the
 * Message-Authenticator (HMAC-MD5, from precomputed pad states) and the hidden User-Password are
 * computed per request. Identifiers are handed out per socket in FIFO order. Replies are matched
 * by (socket, identifier) and their Response Authenticator (and, by default, their
 * Message-Authenticator) are verified; a reply that matches no outstanding request (late, after
 * its timeout) is counted as stale.
 *
 * Prints ONE line of JSON on stdout: counts, throughput, latency percentiles, own CPU use.
 * Self-contained: MD5 is implemented here (RFC 1321), no OpenSSL needed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- MD5 (RFC 1321) */

typedef struct {
    uint32_t h[4];
    uint64_t total; /* octets processed */
    uint8_t buf[64];
    size_t used;
} md5_ctx;

static const uint32_t MD5_K[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
    0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
    0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
    0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
    0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
    0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
    0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
    0xeb86d391};
static const uint8_t MD5_S[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                  5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                                  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};

#define ROTL(x, c) (((x) << (c)) | ((x) >> (32 - (c))))

static void md5_block(uint32_t h[4], const uint8_t *p) {
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = (uint32_t)p[4 * i] | ((uint32_t)p[4 * i + 1] << 8) | ((uint32_t)p[4 * i + 2] << 16) |
               ((uint32_t)p[4 * i + 3] << 24);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        int g;
        if (i < 16) {
            f = (b & c) | (~b & d);
            g = i;
        } else if (i < 32) {
            f = (d & b) | (~d & c);
            g = (5 * i + 1) & 15;
        } else if (i < 48) {
            f = b ^ c ^ d;
            g = (3 * i + 5) & 15;
        } else {
            f = c ^ (b | ~d);
            g = (7 * i) & 15;
        }
        uint32_t t = d;
        d = c;
        c = b;
        b = b + ROTL(a + f + MD5_K[i] + m[g], MD5_S[i]);
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

static void md5_init(md5_ctx *c) {
    c->h[0] = 0x67452301;
    c->h[1] = 0xefcdab89;
    c->h[2] = 0x98badcfe;
    c->h[3] = 0x10325476;
    c->total = 0;
    c->used = 0;
}

static void md5_update(md5_ctx *c, const void *data, size_t n) {
    const uint8_t *p = data;
    c->total += n;
    if (c->used) {
        size_t take = 64 - c->used;
        if (take > n) take = n;
        memcpy(c->buf + c->used, p, take);
        c->used += take;
        p += take;
        n -= take;
        if (c->used < 64) return;
        md5_block(c->h, c->buf);
        c->used = 0;
    }
    while (n >= 64) {
        md5_block(c->h, p);
        p += 64;
        n -= 64;
    }
    if (n) {
        memcpy(c->buf, p, n);
        c->used = n;
    }
}

static void md5_final(md5_ctx *c, uint8_t out[16]) {
    uint64_t bits = c->total * 8;
    uint8_t pad = 0x80;
    md5_update(c, &pad, 1);
    uint8_t zero = 0;
    while (c->used != 56) md5_update(c, &zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (8 * i));
    md5_update(c, len, 8);
    for (int i = 0; i < 4; i++) {
        out[4 * i] = (uint8_t)c->h[i];
        out[4 * i + 1] = (uint8_t)(c->h[i] >> 8);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 3] = (uint8_t)(c->h[i] >> 24);
    }
}

/* HMAC-MD5 (RFC 2104) with the inner and outer pad blocks processed once. */
static md5_ctx hmac_inner, hmac_outer;

static void hmac_prepare(const uint8_t *key, size_t key_len) {
    uint8_t k[64] = {0}, pad[64];
    if (key_len > 64) {
        md5_ctx c;
        md5_init(&c);
        md5_update(&c, key, key_len);
        md5_final(&c, k);
    } else {
        memcpy(k, key, key_len);
    }
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    md5_init(&hmac_inner);
    md5_update(&hmac_inner, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    md5_init(&hmac_outer);
    md5_update(&hmac_outer, pad, 64);
}

/* HMAC over a + b + c (pieces of one message), so the MA can be zeroed without a copy. */
static void hmac_md5_3(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, const uint8_t *c,
                       size_t nc, uint8_t out[16]) {
    md5_ctx x = hmac_inner;
    md5_update(&x, a, na);
    if (nb) md5_update(&x, b, nb);
    if (nc) md5_update(&x, c, nc);
    uint8_t inner[16];
    md5_final(&x, inner);
    x = hmac_outer;
    md5_update(&x, inner, 16);
    md5_final(&x, out);
}

/* ---------------------------------------------------------------- PRNG: xoshiro256** */

static uint64_t rng_s[4];
static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static inline uint64_t rng_next(void) {
    uint64_t r = rotl64(rng_s[1] * 5, 7) * 9, t = rng_s[1] << 17;
    rng_s[2] ^= rng_s[0];
    rng_s[3] ^= rng_s[1];
    rng_s[1] ^= rng_s[2];
    rng_s[0] ^= rng_s[3];
    rng_s[2] ^= t;
    rng_s[3] = rotl64(rng_s[3], 45);
    return r;
}

/* ---------------------------------------------------------------- time */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double rusage_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------- state */

#define MAX_SOCKETS 256
#define MAX_USER 253
#define MAX_PKT 4096
#define BATCH 64

enum { ATTR_USER_NAME = 1, ATTR_USER_PASSWORD = 2, ATTR_NAS_IP = 4, ATTR_MA = 80 };

typedef struct {
    uint64_t sent_ns; /* 0: free */
    uint8_t auth[16];
} slot_t;

typedef struct {
    int fd;
    int inflight;
    uint8_t free_ids[256]; /* FIFO ring of free identifiers */
    int free_head, free_count;
    slot_t slots[256];
} sock_t;

static struct {
    const char *host;
    int port;
    const char *secret;
    size_t secret_len;
    const char *users_file;
    int inflight;
    double seconds;
    uint64_t max_requests;
    double rate;
    int timeout_ms;
    int sockets;
    int password;
    int verify_ma;
    int sequential;
    int dump_one;
} opt = {"127.0.0.1", 1812, "testing123", 10, NULL, 64, 10.0, 5000000, 0.0, 1000, 16, 1, 1, 1, 0};

static char **users;
static uint8_t *user_len;
static size_t n_users, next_user;

static sock_t *socks;
static int n_socks, total_inflight;

static struct {
    uint64_t sent, answered, answered_in_window, accepts, rejects, other_codes, timeouts, stale,
        bad_reply, send_errors, behind_schedule, no_ma;
} st;

/* When the first and last requests that timed out were sent (monotonic ns). */
static uint64_t first_timeout_sent, last_timeout_sent;

static uint32_t *lat; /* latencies in units of 100 ns */
static size_t lat_n, lat_cap;

static void die(const char *msg) {
    fprintf(stderr, "radius_load: %s\n", msg);
    exit(2);
}

static void lat_push(uint64_t ns) {
    if (lat_n == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 1 << 20;
        lat = realloc(lat, lat_cap * sizeof *lat);
        if (!lat) die("out of memory for latencies");
    }
    uint64_t v = ns / 100;
    lat[lat_n++] = v > 0xffffffffu ? 0xffffffffu : (uint32_t)v;
}

/* Build one Access-Request for users[u] into pkt; returns its length. */
static size_t build_request(uint8_t *pkt, uint8_t id, size_t u, uint8_t auth_out[16]) {
    uint64_t r0 = rng_next(), r1 = rng_next();
    uint8_t *p = pkt;
    *p++ = 1; /* Access-Request */
    *p++ = id;
    p += 2; /* length later */
    memcpy(p, &r0, 8);
    memcpy(p + 8, &r1, 8);
    memcpy(auth_out, p, 16);
    p += 16;
    uint8_t *ma = p + 2;
    *p++ = ATTR_MA;
    *p++ = 18;
    memset(p, 0, 16);
    p += 16;
    *p++ = ATTR_USER_NAME;
    *p++ = (uint8_t)(user_len[u] + 2);
    memcpy(p, users[u], user_len[u]);
    p += user_len[u];
    if (opt.password) {
        /* User-Password "pw" padded to 16, hidden with MD5(secret + authenticator) (RFC 2865 5.2). */
        uint8_t b[16], clear[16] = {'p', 'w'};
        md5_ctx c;
        md5_init(&c);
        md5_update(&c, opt.secret, opt.secret_len);
        md5_update(&c, auth_out, 16);
        md5_final(&c, b);
        *p++ = ATTR_USER_PASSWORD;
        *p++ = 18;
        for (int i = 0; i < 16; i++) *p++ = clear[i] ^ b[i];
    }
    *p++ = ATTR_NAS_IP;
    *p++ = 6;
    *p++ = 127;
    *p++ = 0;
    *p++ = 0;
    *p++ = 1;
    size_t len = (size_t)(p - pkt);
    pkt[2] = (uint8_t)(len >> 8);
    pkt[3] = (uint8_t)len;
    uint8_t mac[16];
    hmac_md5_3(pkt, len, NULL, 0, NULL, 0, mac); /* MA is still zero here */
    memcpy(ma, mac, 16);
    return len;
}

static size_t pick_user(void) {
    size_t u;
    if (opt.sequential) {
        u = next_user++;
        if (next_user == n_users) next_user = 0;
    } else {
        u = (size_t)(rng_next() % n_users);
    }
    return u;
}

/* Send one request on socket s (which must have a free identifier); 0 if the kernel refused. */
static int send_one(sock_t *s, uint64_t now) {
    uint8_t pkt[MAX_PKT];
    uint8_t id = s->free_ids[s->free_head];
    slot_t *slot = &s->slots[id];
    size_t len = build_request(pkt, id, pick_user(), slot->auth);
    ssize_t w = send(s->fd, pkt, len, 0);
    if (w != (ssize_t)len) {
        st.send_errors++;
        return 0;
    }
    s->free_head = (s->free_head + 1) & 255;
    s->free_count--;
    slot->sent_ns = now ? now : 1;
    s->inflight++;
    total_inflight++;
    st.sent++;
    return 1;
}

static void release(sock_t *s, uint8_t id) {
    s->slots[id].sent_ns = 0;
    s->free_ids[(s->free_head + s->free_count) & 255] = id;
    s->free_count++;
    s->inflight--;
    total_inflight--;
}

static void handle_reply(sock_t *s, const uint8_t *r, size_t n, uint64_t now, uint64_t t_end) {
    if (n < 20) {
        st.bad_reply++;
        return;
    }
    size_t len = ((size_t)r[2] << 8) | r[3];
    if (len < 20 || len > n) {
        st.bad_reply++;
        return;
    }
    slot_t *slot = &s->slots[r[1]];
    if (!slot->sent_ns) {
        st.stale++;
        return;
    }
    /* Response Authenticator = MD5(Code+ID+Length+RequestAuth+Attributes+Secret). */
    uint8_t want[16];
    md5_ctx c;
    md5_init(&c);
    md5_update(&c, r, 4);
    md5_update(&c, slot->auth, 16);
    md5_update(&c, r + 20, len - 20);
    md5_update(&c, opt.secret, opt.secret_len);
    md5_final(&c, want);
    if (memcmp(want, r + 4, 16) != 0) {
        st.stale++; /* an answer to an earlier use of this identifier (after its timeout) */
        return;
    }
    if (opt.verify_ma) {
        /* The reply's Message-Authenticator: HMAC over the reply with the request's
         * authenticator in the authenticator field and the MA value zeroed (RFC 3579 3.2). */
        size_t pos = 20, ma = 0;
        while (pos + 2 <= len) {
            uint8_t alen = r[pos + 1];
            if (alen < 2 || pos + alen > len) break;
            if (r[pos] == ATTR_MA && alen == 18) {
                ma = pos + 2;
                break;
            }
            pos += alen;
        }
        uint8_t buf[MAX_PKT], mac[16];
        if (!ma) {
            st.no_ma++; /* answered, but without Message-Authenticator (FreeRADIUS does that) */
            goto accepted;
        }
        memcpy(buf, r, len);
        memcpy(buf + 4, slot->auth, 16);
        memset(buf + ma, 0, 16);
        hmac_md5_3(buf, len, NULL, 0, NULL, 0, mac);
        if (memcmp(mac, r + ma, 16) != 0) {
            st.bad_reply++;
            release(s, r[1]);
            return;
        }
    }
accepted:;
    uint64_t dt = now - slot->sent_ns;
    lat_push(dt);
    st.answered++;
    if (now <= t_end) st.answered_in_window++;
    if (r[0] == 2)
        st.accepts++;
    else if (r[0] == 3)
        st.rejects++;
    else
        st.other_codes++;
    release(s, r[1]);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(double q) {
    if (!lat_n) return 0.0;
    size_t i = (size_t)(q * (double)(lat_n - 1) + 0.5);
    if (i >= lat_n) i = lat_n - 1;
    return lat[i] / 1e4;
}

static void load_users(void) {
    FILE *f = fopen(opt.users_file, "r");
    if (!f) die("cannot open --users-file");
    size_t cap = 1024;
    users = malloc(cap * sizeof *users);
    user_len = malloc(cap);
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        size_t l = strcspn(line, "\r\n");
        line[l] = 0;
        if (!l) continue;
        if (l > MAX_USER) die("a user name is longer than 253 octets");
        if (n_users == cap) {
            cap *= 2;
            users = realloc(users, cap * sizeof *users);
            user_len = realloc(user_len, cap);
        }
        users[n_users] = strdup(line);
        user_len[n_users] = (uint8_t)l;
        n_users++;
    }
    fclose(f);
    if (!n_users) die("the users file is empty");
}

static int open_socket(const struct sockaddr_storage *dst, socklen_t dlen) {
    int fd = socket(dst->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket() failed");
    int sz = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (connect(fd, (const struct sockaddr *)dst, dlen) != 0) die("connect() failed");
    return fd;
}

static double arg_num(const char *name, const char *v) {
    char *end;
    double d = strtod(v, &end);
    if (!*v || *end) {
        fprintf(stderr, "radius_load: %s: not a number: %s\n", name, v);
        exit(2);
    }
    return d;
}

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE()                                                   \
    do {                                                         \
        if (!v) {                                                \
            fprintf(stderr, "radius_load: %s needs a value\n", a); \
            return 2;                                            \
        }                                                        \
        i++;                                                     \
    } while (0)
        if (!strcmp(a, "--host")) { TAKE(); opt.host = v; }
        else if (!strcmp(a, "--port")) { TAKE(); opt.port = (int)arg_num(a, v); }
        else if (!strcmp(a, "--secret")) { TAKE(); opt.secret = v; opt.secret_len = strlen(v); }
        else if (!strcmp(a, "--users-file")) { TAKE(); opt.users_file = v; }
        else if (!strcmp(a, "--inflight")) { TAKE(); opt.inflight = (int)arg_num(a, v); }
        else if (!strcmp(a, "--seconds")) { TAKE(); opt.seconds = arg_num(a, v); }
        else if (!strcmp(a, "--max-requests")) { TAKE(); opt.max_requests = (uint64_t)arg_num(a, v); }
        else if (!strcmp(a, "--rate")) { TAKE(); opt.rate = arg_num(a, v); }
        else if (!strcmp(a, "--timeout-ms")) { TAKE(); opt.timeout_ms = (int)arg_num(a, v); }
        else if (!strcmp(a, "--sockets")) { TAKE(); opt.sockets = (int)arg_num(a, v); }
        else if (!strcmp(a, "--no-password")) opt.password = 0;
        else if (!strcmp(a, "--no-verify-ma")) opt.verify_ma = 0;
        else if (!strcmp(a, "--random-users")) opt.sequential = 0;
        else if (!strcmp(a, "--sequential")) opt.sequential = 1;
        else if (!strcmp(a, "--dump-one")) opt.dump_one = 1;
        else { fprintf(stderr, "radius_load: unknown argument %s\n", a); return 2; }
#undef TAKE
    }
    /* Loopback only: refuse any other target. */
    if (strcmp(opt.host, "127.0.0.1") != 0 && strcmp(opt.host, "::1") != 0)
        die("only 127.0.0.1 or ::1 may be targeted");
    if (opt.port < 1 || opt.port > 65535) die("--port must be 1..65535");
    if (!opt.secret_len) die("--secret must not be empty");
    if (!opt.users_file) die("--users-file is required");
    if (opt.inflight < 1 || opt.inflight > 65536) die("--inflight must be 1..65536");
    if (opt.seconds <= 0 || opt.seconds > 600) die("--seconds must be in (0, 600]");
    if (opt.max_requests < 1 || opt.max_requests > 100000000ull) die("--max-requests must be 1..1e8");
    if (opt.rate < 0 || opt.rate > 10000000) die("--rate must be 0 (unpaced) .. 1e7");
    if (opt.timeout_ms < 1 || opt.timeout_ms > 10000) die("--timeout-ms must be 1..10000");
    if (opt.sockets < 1 || opt.sockets > MAX_SOCKETS) die("--sockets must be 1..256");
    /* Every socket has 256 identifiers; the window needs enough sockets. */
    n_socks = opt.sockets;
    while ((long)n_socks * 255 < opt.inflight) n_socks++;
    if (n_socks > MAX_SOCKETS) die("--inflight too large for 256 sockets");

    if (getrandom(rng_s, sizeof rng_s, 0) != (ssize_t)sizeof rng_s) die("getrandom failed");
    hmac_prepare((const uint8_t *)opt.secret, opt.secret_len);
    load_users();

    if (opt.dump_one) {
        uint8_t pkt[MAX_PKT], auth[16];
        size_t len = build_request(pkt, 42, 0, auth);
        for (size_t i = 0; i < len; i++) printf("%02x", pkt[i]);
        printf("\n");
        return 0;
    }

    struct sockaddr_storage dst;
    memset(&dst, 0, sizeof dst);
    socklen_t dlen;
    if (strchr(opt.host, ':')) {
        struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&dst;
        d6->sin6_family = AF_INET6;
        d6->sin6_port = htons((uint16_t)opt.port);
        inet_pton(AF_INET6, opt.host, &d6->sin6_addr);
        dlen = sizeof *d6;
    } else {
        struct sockaddr_in *d4 = (struct sockaddr_in *)&dst;
        d4->sin_family = AF_INET;
        d4->sin_port = htons((uint16_t)opt.port);
        inet_pton(AF_INET, opt.host, &d4->sin_addr);
        dlen = sizeof *d4;
    }
    socks = calloc((size_t)n_socks, sizeof *socks);
    struct pollfd *pfd = calloc((size_t)n_socks, sizeof *pfd);
    for (int i = 0; i < n_socks; i++) {
        socks[i].fd = open_socket(&dst, dlen);
        for (int k = 0; k < 256; k++) socks[i].free_ids[k] = (uint8_t)k;
        /* Start each socket at a random identifier. */
        socks[i].free_head = (int)(rng_next() & 255);
        socks[i].free_count = 256;
        pfd[i].fd = socks[i].fd;
        pfd[i].events = POLLIN;
    }
    next_user = (size_t)(rng_next() % n_users);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    static uint8_t rbuf[BATCH][MAX_PKT];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = rbuf[i];
        iov[i].iov_len = MAX_PKT;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    const uint64_t timeout_ns = (uint64_t)opt.timeout_ms * 1000000ull;
    const uint64_t interval_ns = opt.rate > 0 ? (uint64_t)(1e9 / opt.rate) : 0;
    double cpu0 = rusage_cpu_s();
    const uint64_t t0 = now_ns();
    const uint64_t t_end = t0 + (uint64_t)(opt.seconds * 1e9);
    uint64_t next_send = t0, next_scan = t0 + 10000000ull;
    int rr = 0, stopping = 0;
    uint64_t now = t0;

    for (;;) {
        now = now_ns();
        if (!stopping && (now >= t_end || interrupted || st.sent >= opt.max_requests)) stopping = 1;
        if (!stopping) {
            int tries = 0;
            while (total_inflight < opt.inflight && st.sent < opt.max_requests &&
                   (!interval_ns || next_send <= now) && tries < 4 * n_socks) {
                sock_t *s = &socks[rr];
                rr = rr + 1 == n_socks ? 0 : rr + 1;
                if (s->free_count == 0) {
                    tries++;
                    continue;
                }
                if (!send_one(s, now)) {
                    tries++;
                    continue;
                }
                tries = 0;
                if (interval_ns) next_send += interval_ns;
            }
            if (interval_ns && next_send + 1000000ull < now) {
                /* More than 1 ms behind the schedule (window full): do not burst to catch up. */
                st.behind_schedule++;
                next_send = now;
            }
        }
        if (stopping && total_inflight == 0) break;

        /* Sleep until a reply, the next paced send, the next timeout scan or the end. */
        uint64_t wake = next_scan;
        if (!stopping) {
            if (t_end < wake) wake = t_end;
            if (interval_ns && total_inflight < opt.inflight && next_send < wake) wake = next_send;
        }
        struct timespec ts = {0, 0};
        if (wake > now) {
            uint64_t d = wake - now;
            ts.tv_sec = (time_t)(d / 1000000000ull);
            ts.tv_nsec = (long)(d % 1000000000ull);
        }
        int ready = ppoll(pfd, (nfds_t)n_socks, &ts, NULL);
        if (ready < 0 && errno != EINTR) die("ppoll failed");
        if (ready > 0) {
            for (int i = 0; i < n_socks; i++) {
                if (!(pfd[i].revents & (POLLIN | POLLERR))) continue; /* a recv clears ICMP errors */
                for (;;) {
                    int got = recvmmsg(socks[i].fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                    if (got <= 0) break;
                    uint64_t t = now_ns();
                    for (int k = 0; k < got; k++)
                        handle_reply(&socks[i], rbuf[k], msgs[k].msg_len, t, t_end);
                    if (got < BATCH) break;
                }
            }
        }
        now = now_ns();
        if (now >= next_scan) {
            for (int i = 0; i < n_socks; i++) {
                sock_t *s = &socks[i];
                if (!s->inflight) continue;
                for (int id = 0; id < 256; id++) {
                    uint64_t sent = s->slots[id].sent_ns;
                    if (sent && now - sent >= timeout_ns) {
                        if (!st.timeouts) first_timeout_sent = sent;
                        last_timeout_sent = sent;
                        st.timeouts++;
                        release(s, (uint8_t)id);
                    }
                }
            }
            next_scan = now + 10000000ull;
        }
    }
    const uint64_t t_done = now_ns();
    double cpu = rusage_cpu_s() - cpu0;
    double window_s = (double)((t_end < t_done ? t_end : t_done) - t0) / 1e9;
    double wall_s = (double)(t_done - t0) / 1e9;

    qsort(lat, lat_n, sizeof *lat, cmp_u32);
    double mean = 0;
    for (size_t i = 0; i < lat_n; i++) mean += lat[i];
    mean = lat_n ? mean / (double)lat_n / 1e4 : 0.0;

    printf("{\"target\": \"%s:%d\", \"inflight\": %d, \"sockets\": %d, \"rate_target\": %.1f, "
           "\"seconds\": %.3f, \"wall_s\": %.3f, \"sent\": %lu, \"answered\": %lu, "
           "\"answered_in_window\": %lu, \"accepts\": %lu, \"rejects\": %lu, \"other_codes\": %lu, "
           "\"timeouts\": %lu, \"stale_replies\": %lu, \"bad_replies\": %lu, \"send_errors\": %lu, "
           "\"behind_schedule\": %lu, \"replies_without_ma\": %lu, \"throughput\": %.1f, \"send_rate\": %.1f, "
           "\"latency_ms\": {\"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, "
           "\"p999\": %.3f, \"max\": %.3f}, \"cpu_s\": %.3f, \"cpu_pct\": %.1f, "
           "\"timeouts_sent_from_s\": %.3f, \"timeouts_sent_until_s\": %.3f, "
           "\"users\": %zu, \"interrupted\": %s}\n",
           opt.host, opt.port, opt.inflight, n_socks, opt.rate, window_s, wall_s, st.sent,
           st.answered, st.answered_in_window, st.accepts, st.rejects, st.other_codes, st.timeouts,
           st.stale, st.bad_reply, st.send_errors, st.behind_schedule, st.no_ma,
           window_s > 0 ? st.answered_in_window / window_s : 0.0,
           window_s > 0 ? st.sent / window_s : 0.0, mean, pct_ms(0.50), pct_ms(0.90),
           pct_ms(0.99), pct_ms(0.999), lat_n ? lat[lat_n - 1] / 1e4 : 0.0, cpu,
           wall_s > 0 ? 100.0 * cpu / wall_s : 0.0,
           st.timeouts ? (double)(first_timeout_sent - t0) / 1e9 : 0.0,
           st.timeouts ? (double)(last_timeout_sent - t0) / 1e9 : 0.0, n_users,
           interrupted ? "true" : "false");
    return 0;
}
