/*
 * crr.c - TCP connect/request/response rate, like netperf's TCP_CRR.
 *
 *   crr server ADDR PORT SECONDS WORKERS
 *   crr client ADDR PORT SECONDS WORKERS    prints connections per second
 *
 * A client worker loops until the deadline: connect, send one byte, read one
 * byte, wait for the server to close, close.  The server closes first, so
 * the client never holds TIME_WAIT and never runs out of ports.  Both sides
 * stop by themselves: the server SECONDS + 10 s after it starts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct sockaddr_in addr_of(const char *ip, int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", ip);
        exit(2);
    }
    return a;
}

static int server(const char *ip, int port, int secs, int workers)
{
    struct sockaddr_in a = addr_of(ip, port);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) {
        perror("bind/listen");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (int w = 0; w < workers; w++) {
        if (fork() == 0) {
            alarm((unsigned)secs + 10);
            for (;;) {
                int c = accept(ls, NULL, NULL);
                if (c < 0)
                    continue;
                char b;
                if (read(c, &b, 1) == 1)
                    (void)!write(c, &b, 1);
                close(c);
            }
        }
    }
    alarm((unsigned)secs + 10);
    while (wait(NULL) > 0)
        ;
    return 0;
}

static int client(const char *ip, int port, int secs, int workers)
{
    struct sockaddr_in a = addr_of(ip, port);
    int fds[2];
    if (pipe(fds))
        return 1;
    double end = now() + secs;
    for (int w = 0; w < workers; w++) {
        if (fork() == 0) {
            long n = 0, errors = 0;
            while (now() < end) {
                int s = socket(AF_INET, SOCK_STREAM, 0);
                char b = 'x';
                if (connect(s, (struct sockaddr *)&a, sizeof a) == 0 &&
                    write(s, &b, 1) == 1 && read(s, &b, 1) == 1 &&
                    read(s, &b, 1) == 0)
                    n++;
                else
                    errors++;
                close(s);
                if (errors > 1000 && errors > n)
                    break; /* not working at all: stop early */
            }
            long r[2] = {n, errors};
            (void)!write(fds[1], r, sizeof r);
            _exit(0);
        }
    }
    close(fds[1]);
    long total = 0, errors = 0, r[2];
    while (read(fds[0], r, sizeof r) == sizeof r) {
        total += r[0];
        errors += r[1];
    }
    while (wait(NULL) > 0)
        ;
    printf("%.0f %ld\n", (double)total / secs, errors);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: crr server|client ADDR PORT SECONDS WORKERS\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int port = atoi(argv[3]), secs = atoi(argv[4]), workers = atoi(argv[5]);
    if (strcmp(argv[1], "server") == 0)
        return server(argv[2], port, secs, workers);
    return client(argv[2], port, secs, workers);
}
