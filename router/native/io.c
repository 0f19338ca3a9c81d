/*
 * io.c - the only file that makes system calls.
 *
 * rt_dp_poll() drains up to 'budget' packets from one TUN file descriptor
 * into the preallocated slots with read() (a TUN hands out one packet per
 * read), runs the batch through the pipeline, and writes every packet that
 * has an output interface.  The descriptor is non-blocking; EAGAIN ends the
 * batch early.  A failed write is counted on the output interface and the
 * packet is lost, as a full transmit queue would lose it.
 *
 * With IFF_VNET_HDR a virtio_net_hdr travels in front of every packet, in
 * both directions: it says whether the L4 checksum is still to be completed
 * (NEEDS_CSUM) and whether the packet is a GSO super-packet standing for many
 * segments.  Slots keep SLOT_HEADROOM bytes free in front of the packet, so
 * the header is read and written in the same system call as the packet, and
 * the packet is never copied.  The header's 16-bit fields are little-endian
 * (the legacy virtio layout, native on the machines this runs on).
 */
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "dp.h"

#define VNET_HDR_LEN 10 /* struct virtio_net_hdr */

static uint16_t le16_at(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return le16toh(v);
}

static void put_le16(uint8_t *p, uint16_t v)
{
    v = htole16(v);
    memcpy(p, &v, 2);
}

static void vnet_decode(struct rt_pkt *p, const uint8_t *h)
{
    p->csum_flags = h[0] & (RT_PKT_NEEDS_CSUM | RT_PKT_CSUM_VALID);
    p->gso_type = h[1];
    p->hdr_len = le16_at(h + 2);
    p->gso_size = le16_at(h + 4);
    p->csum_start = le16_at(h + 6);
    p->csum_offset = le16_at(h + 8);
}

static void vnet_encode(const struct rt_pkt *p, uint8_t *h)
{
    h[0] = p->csum_flags & RT_PKT_NEEDS_CSUM;
    h[1] = p->gso_type;
    put_le16(h + 2, p->hdr_len);
    put_le16(h + 4, p->gso_size);
    put_le16(h + 6, p->csum_start);
    put_le16(h + 8, p->csum_offset);
}

/*
 * Writes 'len' bytes of packet at 'data' to interface 'out', with a
 * virtio_net_hdr made from 'meta' in front when the interface takes one (the
 * SLOT_HEADROOM bytes before 'data' are free for it).  Counts the result.
 */
static void write_out(struct rt_dp *dp, int16_t out, uint8_t *data, uint32_t len,
                      const struct rt_pkt *meta)
{
    struct dp_iface *o = &dp->ifaces[out];
    uint8_t *at = data;
    size_t n = len;
    if (o->flags & RT_IF_VNET_HDR) {
        at -= VNET_HDR_LEN;
        n += VNET_HDR_LEN;
        vnet_encode(meta, at);
    } else if (meta->gso_type != RT_GSO_NONE ||
               (meta->csum_flags & RT_PKT_NEEDS_CSUM)) {
        /* All interfaces share one offload mode (see tun.py), so this only
         * happens if tables were loaded inconsistently. */
        o->st.tx_errors++;
        dp->drops[RT_DROP_BAD_OFFLOAD]++;
        return;
    }
    if (cap_on(&dp->cap, (uint32_t)out))
        cap_push(&dp->cap, (uint16_t)out, RT_CAP_TX, data, len);
    ssize_t w;
    do {
        w = o->fd >= 0 ? write(o->fd, at, n) : -1;
    } while (w < 0 && errno == EINTR);
    if (w == (ssize_t)n) {
        o->st.tx_packets++;
        o->st.tx_bytes += len;
        dp->counters[RT_CNT_TX_PACKETS]++;
    } else {
        o->st.tx_errors++;
        dp->drops[RT_DROP_TX_ERROR]++;
    }
}

/* Fragments that waited for their first one, released by this batch. */
static void send_ready_fragments(struct rt_dp *dp)
{
    struct rt_pkt *p = &dp->pkts[0]; /* the batch is written: reuse a slot */
    struct rt_pkt plain;
    memset(&plain, 0, sizeof plain); /* no offload metadata */
    int16_t out;
    uint32_t len;
    while ((len = rt_dp_take_ready(dp, p->data, dp->slot_size, &out)) > 0)
        write_out(dp, out, p->data, len, &plain);
}

/* Reads up to 'budget' packets from 'iface', processes and writes them;
 * sets a bit in '*wrote' for every interface written to. */
static int poll_one(struct rt_dp *dp, uint32_t iface, uint32_t budget, uint64_t now_ms,
                    uint64_t *wrote)
{
    int fd = dp->ifaces[iface].fd;
    bool vnet = dp->ifaces[iface].flags & RT_IF_VNET_HDR;
    uint32_t n = 0;
    int err = 0;
    while (n < budget) {
        struct rt_pkt *p = &dp->pkts[n];
        uint8_t *at = vnet ? p->data - VNET_HDR_LEN : p->data;
        size_t room = dp->slot_size + (vnet ? VNET_HDR_LEN : 0);
        ssize_t r = read(fd, at, room);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                err = -errno;
            break;
        }
        if (vnet) {
            if (r < VNET_HDR_LEN)
                continue; /* cannot happen with a TUN; nothing to process */
            vnet_decode(p, at);
            r -= VNET_HDR_LEN;
        } else {
            dp_clear_offload(p);
        }
        p->len = (uint32_t)r;
        p->cap = dp->slot_size;
        p->in_iface = (uint16_t)iface;
        if (cap_on(&dp->cap, iface))
            cap_push(&dp->cap, (uint16_t)iface, RT_CAP_RX, p->data, p->len);
        n++;
    }
    if (n == 0)
        return err;
    rt_dp_process(dp, dp->pkts, n, now_ms);
    for (uint32_t i = 0; i < n; i++) {
        struct rt_pkt *p = &dp->pkts[i];
        if (p->out_iface >= 0) {
            write_out(dp, p->out_iface, p->data, p->len, p);
            *wrote |= 1ull << p->out_iface;
        }
    }
    send_ready_fragments(dp);
    return (int)n;
}

/*
 * One batch from 'iface', then one batch from each interface it wrote to.
 * A write() to a TUN device runs the receiving namespace's stack in this
 * call, so an answer (an echo reply, a SYN-ACK, a TCP ACK) is often already
 * queued on the output device when the write returns: reading it now saves
 * a trip back through the event loop, which on a VM is a good part of a
 * round trip.  One level only, so a call reads at most 1 + n_ifaces
 * batches.
 */
int rt_dp_poll(struct rt_dp *dp, uint32_t iface, uint32_t budget,
               uint64_t now_ms)
{
    if (iface >= dp->n_ifaces || dp->ifaces[iface].fd < 0)
        return -EBADF;
    if (budget > dp->batch)
        budget = dp->batch;
    uint64_t wrote = 0, ignored = 0;
    int r = poll_one(dp, iface, budget, now_ms, &wrote);
    if (r <= 0)
        return r;
    wrote &= ~(1ull << iface);
    while (wrote) {
        uint32_t o = (uint32_t)__builtin_ctzll(wrote);
        wrote &= wrote - 1;
        if (o < dp->n_ifaces && dp->ifaces[o].fd >= 0) {
            int more = poll_one(dp, o, budget, now_ms, &ignored);
            if (more > 0)
                r += more;
        }
    }
    return r;
}
