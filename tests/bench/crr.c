/* TCP connect/request/response and stream load for the packet-path benchmark (tests/bench/bench_packet_path.py).
 *
 *   crr server PORT THREADS            serve until stdin closes (prints READY)
 *   crr crr HOST PORT SECONDS THREADS  connections/s: connect, 1-byte request, 1-byte answer, abortive close (RST,
 *                                      so neither side keeps TIME_WAIT and the client never runs out of ports)
 *   crr stream HOST PORT SECONDS       one connection, the client writes for SECONDS; the server counts the bytes
 *
 * Output is one line "KEY VALUE …" on stdout. Python would measure its own interpreter, not the packet path, so
 * this is C; it is compiled by the benchmark with the system gcc into a scratch dir.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int listen_fd;
static struct sockaddr_in target;
static double seconds;
static volatile int stop;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *serve(void *arg) {
    (void)arg;
    static char buf[1 << 17];
    for (;;) {
        int c = accept(listen_fd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return NULL;
        }
        char kind;
        if (read(c, &kind, 1) == 1) {
            if (kind == 'r') {
                if (write(c, "a", 1) == 1) {
                    while (read(c, buf, sizeof buf) > 0) {
                    }
                }
            } else if (kind == 's') {
                uint64_t total = 0;
                ssize_t n;
                while ((n = read(c, buf, sizeof buf)) > 0) total += (uint64_t)n;
                if (write(c, &total, sizeof total) != sizeof total) { /* the client went away */
                }
            }
        }
        close(c);
    }
}

struct result {
    long conns, errors;
};

static void *crr(void *arg) {
    struct result *r = arg;
    struct linger lg = {1, 0};
    struct timeval tv = {1, 0};
    double end = now() + seconds;
    while (!stop && now() < end) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) { r->errors++; continue; }
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char a;
        if (connect(s, (struct sockaddr *)&target, sizeof target) == 0 && write(s, "r", 1) == 1 && read(s, &a, 1) == 1)
            r->conns++;
        else
            r->errors++;
        setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(s);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "server") == 0) {
        int threads = atoi(argv[3]);
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        int one = 1;
        listen_fd = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) || listen(listen_fd, 4096)) {
            perror("bind/listen");
            return 1;
        }
        for (int i = 0; i < threads; i++) {
            pthread_t t;
            pthread_create(&t, NULL, serve, NULL);
        }
        printf("READY\n");
        fflush(stdout);
        char buf[64];
        while (read(0, buf, sizeof buf) > 0) {
        }
        return 0;
    }
    if (argc >= 5) {
        target.sin_family = AF_INET;
        target.sin_port = htons(atoi(argv[3]));
        inet_pton(AF_INET, argv[2], &target.sin_addr);
        seconds = atof(argv[4]);
    }
    if (argc >= 6 && strcmp(argv[1], "crr") == 0) {
        int threads = atoi(argv[5]);
        pthread_t t[64];
        struct result r[64];
        memset(r, 0, sizeof r);
        if (threads > 64) threads = 64;
        double t0 = now();
        for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, crr, &r[i]);
        long conns = 0, errors = 0;
        for (int i = 0; i < threads; i++) {
            pthread_join(t[i], NULL);
            conns += r[i].conns;
            errors += r[i].errors;
        }
        printf("conns %ld errors %ld seconds %.6f\n", conns, errors, now() - t0);
        return 0;
    }
    if (argc >= 5 && strcmp(argv[1], "stream") == 0) {
        static char buf[1 << 17];
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&target, sizeof target) || write(s, "s", 1) != 1) {
            perror("connect");
            return 1;
        }
        double t0 = now(), end = t0 + seconds;
        while (now() < end) {
            if (write(s, buf, sizeof buf) < 0) {
                perror("write");
                return 1;
            }
        }
        shutdown(s, SHUT_WR);
        uint64_t total = 0;
        if (read(s, &total, sizeof total) != sizeof total) {
            perror("read");
            return 1;
        }
        printf("bytes %llu seconds %.6f\n", (unsigned long long)total, now() - t0);
        return 0;
    }
    fprintf(stderr, "usage: crr server PORT THREADS | crr crr HOST PORT SECONDS THREADS | crr stream HOST PORT SECONDS\n");
    return 2;
}
