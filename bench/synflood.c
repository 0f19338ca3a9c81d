/*
 * synflood.c - one host's SYN flood, for the stall benchmark (nat_bench.py
 * --tests flood): TCP SYNs from SRC to DST, ports DPORT to DPORT + 63, each
 * with a new source port (so each is a new connection for a NAT; 4 million
 * before one repeats), as fast as the sender can, for SECONDS; prints how
 * many it sent.
 *
 *   synflood SRC DST DPORT SECONDS [PPS]
 *
 * With PPS, no more than that many a second (paced per batch), so that two
 * NATs can be offered the same load.
 * A raw socket with IP_HDRINCL, batches of 64 through sendmmsg().  Needs
 * CAP_NET_RAW (root in the namespace).  Stops by itself at the deadline.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define LEN 40

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint16_t csum(const uint8_t *p, size_t n, uint32_t sum)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        sum += (uint32_t)p[n - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static void build(uint8_t *b, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                  uint32_t seq)
{
    memset(b, 0, LEN);
    b[0] = 0x45;
    b[3] = LEN;
    b[6] = 0x40; /* DF */
    b[8] = 64;
    b[9] = 6;
    memcpy(b + 12, &src, 4);
    memcpy(b + 16, &dst, 4);
    uint16_t c = csum(b, 20, 0);
    b[10] = (uint8_t)(c >> 8);
    b[11] = (uint8_t)c;
    uint8_t *t = b + 20;
    t[0] = (uint8_t)(sport >> 8);
    t[1] = (uint8_t)sport;
    t[2] = (uint8_t)(dport >> 8);
    t[3] = (uint8_t)dport;
    t[4] = (uint8_t)(seq >> 24);
    t[5] = (uint8_t)(seq >> 16);
    t[6] = (uint8_t)(seq >> 8);
    t[7] = (uint8_t)seq;
    t[12] = 5 << 4;
    t[13] = 0x02; /* SYN */
    t[14] = 0xff;
    t[15] = 0xff;
    uint8_t pseudo[12];
    memcpy(pseudo, &src, 4);
    memcpy(pseudo + 4, &dst, 4);
    pseudo[8] = 0;
    pseudo[9] = 6;
    pseudo[10] = 0;
    pseudo[11] = 20;
    uint32_t sum = 0;
    for (int i = 0; i < 12; i += 2)
        sum += (uint32_t)(pseudo[i] << 8 | pseudo[i + 1]);
    c = csum(t, 20, sum);
    t[16] = (uint8_t)(c >> 8);
    t[17] = (uint8_t)c;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: synflood SRC DST DPORT SECONDS [PPS]\n");
        return 2;
    }
    uint32_t src, dst;
    if (inet_pton(AF_INET, argv[1], &src) != 1 || inet_pton(AF_INET, argv[2], &dst) != 1) {
        fprintf(stderr, "synflood: bad address\n");
        return 2;
    }
    uint16_t dport = (uint16_t)atoi(argv[3]);
    double secs = atof(argv[4]);
    if (secs <= 0 || secs > 600) {
        fprintf(stderr, "synflood: SECONDS must be in (0, 600]\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (fd < 0) {
        perror("synflood: socket");
        return 1;
    }
    static uint8_t bufs[BATCH][LEN];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = dst};
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = LEN;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof to;
    }
    double pps = argc == 6 ? atof(argv[5]) : 0;
    uint64_t sent = 0;
    uint32_t n = 0;
    double start = now(), end = start + secs;
    while (now() < end) {
        if (pps > 0)
            while ((double)sent > (now() - start) * pps && now() < end)
                ; /* paced: wait for the schedule to catch up */
        for (int i = 0; i < BATCH; i++, n++)
            build(bufs[i], src, dst, (uint16_t)(1024 + n % 64000),
                  (uint16_t)(dport + n / 64000 % 64), n * 2654435761u);
        int r = sendmmsg(fd, msgs, BATCH, 0);
        if (r > 0)
            sent += (uint64_t)r;
    }
    printf("%llu\n", (unsigned long long)sent);
    close(fd);
    return 0;
}
