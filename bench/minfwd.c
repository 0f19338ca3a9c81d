/*
 * minfwd.c - the smallest useful TUN NAT forwarder, as a baseline for
 * bench/nat_bench.py --baseline: two TUN devices, poll(), read() and write(),
 * and a stateless source NAT of one inside host to one outside address
 * (addresses, IPv4 header and TCP/UDP checksums updated incrementally).  No
 * conntrack, no batching: what any userspace forwarder pays in system calls
 * and wakeups, and nothing else.
 *
 *   minfwd [-o] [-q QUEUES] LAN_DEV WAN_DEV INSIDE_ADDR OUTSIDE_ADDR SECONDS
 *
 * -o   IFF_VNET_HDR with checksum offload and TSO4: GSO super-packets cross
 *      whole (partial checksums updated without the complement).
 * -q N multi-queue devices and N threads, thread k serving queue k of both
 *      devices (the kernel spreads flows over queues by hash); stateless
 *      NAT needs nothing shared.
 *
 * Creates the devices, prints "ready", forwards until SECONDS have passed or
 * it gets SIGTERM.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define VNET_HDR 10
#define MAXQ 8

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static bool offload;
static uint32_t inside, outside;
static time_t end;

static int open_tun(const char *name, bool multi)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0) |
                    (multi ? IFF_MULTI_QUEUE : 0);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
        perror(name);
        exit(1);
    }
    if (offload) {
        int sz = VNET_HDR;
        if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0 ||
            ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) < 0) {
            perror("offload");
            exit(1);
        }
    }
    return fd;
}

static uint16_t fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

/* RFC 1624 for a 32-bit word changing from o to n; 'partial': the field
 * holds an uncomplemented pseudo-header sum (NEEDS_CSUM). */
static void csum4(uint8_t *f, uint32_t o, uint32_t n, bool partial)
{
    uint16_t hc;
    memcpy(&hc, f, 2);
    uint32_t s = partial ? hc : (uint16_t)~hc;
    s += (uint16_t)~o + (uint16_t)~(o >> 16) + (uint16_t)n + (uint16_t)(n >> 16);
    hc = partial ? fold(s) : (uint16_t)~fold(s);
    memcpy(f, &hc, 2);
}

/* Changes the IPv4 address at offset 'off' (12 source, 16 destination). */
static void rewrite(uint8_t *p, ssize_t len, int off, uint32_t from, uint32_t to, bool partial)
{
    uint32_t a;
    if (len < 20 || (p[0] >> 4) != 4)
        return;
    memcpy(&a, p + off, 4);
    if (a != from)
        return;
    memcpy(p + off, &to, 4);
    csum4(p + 10, from, to, false);
    int ihl = (p[0] & 15) * 4;
    int frag = (p[6] & 0x1f) << 8 | p[7];
    if (frag) /* later fragments carry no L4 header */
        return;
    if (p[9] == 6 && len >= ihl + 18) {
        csum4(p + ihl + 16, from, to, partial);
    } else if (p[9] == 17 && len >= ihl + 8 && (partial || (p[ihl + 6] | p[ihl + 7]))) {
        csum4(p + ihl + 6, from, to, partial);
        if (!partial && !(p[ihl + 6] | p[ihl + 7]))
            p[ihl + 6] = p[ihl + 7] = 0xff;
    }
}

struct worker {
    int fd[2];
    pthread_t th;
};

static void *forward(void *arg)
{
    struct worker *w = arg;
    static __thread uint8_t buf[65536 + VNET_HDR];
    size_t hdr = offload ? VNET_HDR : 0;
    struct pollfd p[2] = {{w->fd[0], POLLIN, 0}, {w->fd[1], POLLIN, 0}};
    while (!stop && time(NULL) < end) {
        if (poll(p, 2, 200) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            ssize_t n;
            while ((n = read(w->fd[i], buf, sizeof buf)) > (ssize_t)hdr) {
                bool partial = offload && (buf[0] & 1 /* VIRTIO_NET_HDR_F_NEEDS_CSUM */);
                uint8_t *ip = buf + hdr;
                if (i == 0)
                    rewrite(ip, n - (ssize_t)hdr, 12, inside, outside, partial);
                else
                    rewrite(ip, n - (ssize_t)hdr, 16, outside, inside, partial);
                (void)!write(w->fd[1 - i], buf, (size_t)n);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int queues = 1, opt;
    while ((opt = getopt(argc, argv, "oq:")) != -1) {
        if (opt == 'o')
            offload = true;
        else if (opt == 'q')
            queues = atoi(optarg);
        else
            return 2;
    }
    if (argc - optind != 5 || queues < 1 || queues > MAXQ) {
        fprintf(stderr, "usage: minfwd [-o] [-q QUEUES] LAN_DEV WAN_DEV INSIDE OUTSIDE SECONDS\n");
        return 2;
    }
    char **a = argv + optind;
    if (inet_pton(AF_INET, a[2], &inside) != 1 || inet_pton(AF_INET, a[3], &outside) != 1)
        return 2;
    end = time(NULL) + atoi(a[4]);
    signal(SIGTERM, on_term);
    struct worker w[MAXQ];
    for (int q = 0; q < queues; q++) {
        w[q].fd[0] = open_tun(a[0], queues > 1);
        w[q].fd[1] = open_tun(a[1], queues > 1);
    }
    printf("ready\n");
    fflush(stdout);
    for (int q = 1; q < queues; q++)
        pthread_create(&w[q].th, NULL, forward, &w[q]);
    forward(&w[0]);
    for (int q = 1; q < queues; q++)
        pthread_join(w[q].th, NULL);
    return 0;
}
