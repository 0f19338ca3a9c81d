/*
 * io.c - the only file that makes system calls.
 *
 * rt_dp_poll() drains up to 'budget' packets from one TUN file descriptor
 * into the preallocated slots with read() (a TUN hands out one packet per
 * read), runs the batch through the pipeline, and writes every packet that
 * has an output interface.  The descriptor is non-blocking; EAGAIN ends the
 * batch early.  A failed write is counted on the output interface and the
 * packet is lost, as a full transmit queue would lose it.
 */
#include <errno.h>
#include <unistd.h>
#include "dp.h"

int rt_dp_poll(struct rt_dp *dp, uint32_t iface, uint32_t budget,
               uint64_t now_ms)
{
    if (iface >= dp->n_ifaces || dp->ifaces[iface].fd < 0)
        return -EBADF;
    if (budget > dp->batch)
        budget = dp->batch;
    int fd = dp->ifaces[iface].fd;
    uint32_t n = 0;
    int err = 0;
    while (n < budget) {
        struct rt_pkt *p = &dp->pkts[n];
        ssize_t r = read(fd, p->data, p->cap);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                err = -errno;
            break;
        }
        p->len = (uint32_t)r;
        p->in_iface = (uint16_t)iface;
        n++;
    }
    if (n == 0)
        return err;
    rt_dp_process(dp, dp->pkts, n, now_ms);
    for (uint32_t i = 0; i < n; i++) {
        struct rt_pkt *p = &dp->pkts[i];
        if (p->out_iface < 0)
            continue;
        struct dp_iface *out = &dp->ifaces[p->out_iface];
        ssize_t w;
        do {
            w = out->fd >= 0 ? write(out->fd, p->data, p->len) : -1;
        } while (w < 0 && errno == EINTR);
        if (w == (ssize_t)p->len) {
            out->st.tx_packets++;
            out->st.tx_bytes += p->len;
            dp->counters[RT_CNT_TX_PACKETS]++;
        } else {
            out->st.tx_errors++;
            dp->drops[RT_DROP_TX_ERROR]++;
        }
    }
    return (int)n;
}
