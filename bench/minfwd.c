/*
 * minfwd.c - the smallest useful TUN NAT forwarder, as a baseline for
 * bench/nat_bench.py --baseline: two TUN devices, poll(), read() and write(),
 * and a stateless source NAT of one inside host to one outside address
 * (addresses, IPv4 header and TCP/UDP checksums updated incrementally).  No
 * offloads, no conntrack, no batching: what any userspace forwarder pays in
 * system calls and wakeups, and nothing else.
 *
 *   minfwd LAN_DEV WAN_DEV INSIDE_ADDR OUTSIDE_ADDR SECONDS
 *
 * Creates the two devices, prints "ready", forwards until SECONDS have
 * passed or it gets SIGTERM.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static int open_tun(const char *name)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
        perror(name);
        exit(1);
    }
    return fd;
}

/* RFC 1624: the checksum at 'f' for a 32-bit word changing from o to n. */
static void csum4(uint8_t *f, uint32_t o, uint32_t n)
{
    uint16_t hc;
    memcpy(&hc, f, 2);
    uint32_t s = (uint16_t)~hc;
    s += (uint16_t)~o + (uint16_t)~(o >> 16) + (uint16_t)n + (uint16_t)(n >> 16);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    hc = (uint16_t)~s;
    memcpy(f, &hc, 2);
}

/* Changes the IPv4 address at offset 'off' (12 source, 16 destination). */
static void rewrite(uint8_t *p, ssize_t len, int off, uint32_t from, uint32_t to)
{
    uint32_t a;
    if (len < 20 || (p[0] >> 4) != 4)
        return;
    memcpy(&a, p + off, 4);
    if (a != from)
        return;
    memcpy(p + off, &to, 4);
    csum4(p + 10, from, to);
    int ihl = (p[0] & 15) * 4;
    int frag = (p[6] & 0x1f) << 8 | p[7];
    if (frag) /* later fragments carry no L4 header */
        return;
    if (p[9] == 6 && len >= ihl + 18)
        csum4(p + ihl + 16, from, to);
    else if (p[9] == 17 && len >= ihl + 8 && (p[ihl + 6] | p[ihl + 7])) {
        csum4(p + ihl + 6, from, to);
        if (!(p[ihl + 6] | p[ihl + 7]))
            p[ihl + 6] = p[ihl + 7] = 0xff;
    }
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: minfwd LAN_DEV WAN_DEV INSIDE OUTSIDE SECONDS\n");
        return 2;
    }
    uint32_t inside, outside;
    if (inet_pton(AF_INET, argv[3], &inside) != 1 || inet_pton(AF_INET, argv[4], &outside) != 1)
        return 2;
    time_t end = time(NULL) + atoi(argv[5]);
    signal(SIGTERM, on_term);
    int fd[2] = {open_tun(argv[1]), open_tun(argv[2])};
    printf("ready\n");
    fflush(stdout);
    static uint8_t buf[65536];
    struct pollfd p[2] = {{fd[0], POLLIN, 0}, {fd[1], POLLIN, 0}};
    while (!stop && time(NULL) < end) {
        if (poll(p, 2, 200) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            ssize_t n;
            while ((n = read(fd[i], buf, sizeof buf)) > 0) {
                if (i == 0)
                    rewrite(buf, n, 12, inside, outside); /* out: source */
                else
                    rewrite(buf, n, 16, outside, inside); /* back: destination */
                (void)!write(fd[1 - i], buf, (size_t)n);
            }
        }
    }
    return 0;
}
