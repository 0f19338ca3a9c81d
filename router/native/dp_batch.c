/*
 * dp_batch.c - a batch of packets through the pipeline.
 *
 * Theory of operation.  For each packet: the input interface and its
 * counters, the parse (parse.c) with the offload metadata checked against
 * the packet, the hash of its tuple with the connection table's bucket
 * prefetched, then the path of its family (dp_ip4.c, dp_ip6.c) with the
 * fragment bookkeeping both share.  Packets are processed strictly in
 * order; see rt_dp_process() for how the lookups' cache misses overlap.
 */
#include <string.h>
#include "dp.h"
#include "wire.h"

/*
 * Checks the offload metadata against the packet itself: a partial checksum
 * must sit where TCP or UDP keeps its checksum, and a GSO packet must be TCP
 * of its own family (TCPV4, TCPV6) or UDP (UDP_L4) with a partial checksum
 * and a segment size.
 * Counts segments for the conntrack counters.
 */
static enum rt_drop_reason check_offload(struct rt_dp *dp,
                                         const struct rt_pkt *p,
                                         struct pkt_meta *m)
{
    m->segs = 1;
    if (p->csum_flags & RT_PKT_NEEDS_CSUM) {
        uint32_t coff = m->proto == IPPROTO_TCP_   ? TCP_OFF_CSUM
                        : m->proto == IPPROTO_UDP_ ? UDP_OFF_CSUM
                                                   : 0;
        if (!coff || p->csum_start != m->l4_off || p->csum_offset != coff)
            return RT_DROP_BAD_OFFLOAD;
        m->csum_partial = 1;
        dp->counters[RT_CNT_CSUM_PARTIAL]++;
    }
    uint8_t gso = p->gso_type & (uint8_t)~RT_GSO_ECN;
    if (gso == RT_GSO_NONE)
        return RT_DROP_NONE;
    bool fits = (gso == RT_GSO_TCPV4 && m->proto == IPPROTO_TCP_ && m->family == 4) ||
                (gso == RT_GSO_TCPV6 && m->proto == IPPROTO_TCP_ && m->family == 6) ||
                (gso == RT_GSO_UDP_L4 && m->proto == IPPROTO_UDP_);
    if (!fits || p->gso_size == 0 || !m->csum_partial)
        return RT_DROP_BAD_OFFLOAD;
    uint32_t payload = m->l4_len - m->l4_hdr_len;
    uint32_t segs = (payload + p->gso_size - 1) / p->gso_size;
    m->segs = (uint16_t)(segs ? segs : 1);
    dp->counters[RT_CNT_GSO_PACKETS]++;
    dp->counters[RT_CNT_GSO_SEGMENTS] += m->segs;
    return RT_DROP_NONE;
}

/* First stage: interface, counters, parse, offload metadata.  Returns
 * false when the packet is already dropped. */
static bool stage_parse(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m)
{
    p->out_iface = -1;
    p->reason = RT_DROP_NONE;
    if (p->in_iface >= dp->n_ifaces) {
        dp->drops[RT_DROP_BAD_IFACE]++;
        p->reason = RT_DROP_BAD_IFACE;
        return false;
    }
    struct dp_iface *in = &dp->ifaces[p->in_iface];
    in->st.rx_packets++;
    in->st.rx_bytes += p->len;
    dp->counters[RT_CNT_RX_PACKETS]++;

    uint32_t len = p->len <= p->cap ? p->len : p->cap;
    /* A checksum the sending kernel left to us (NEEDS_CSUM) or already
     * verified (CSUM_VALID) is not checked again. */
    bool verify = dp->l4_csum &&
                  !(p->csum_flags & (RT_PKT_NEEDS_CSUM | RT_PKT_CSUM_VALID));
    enum rt_drop_reason r = pkt_parse(p->data, len, verify, m);
    if (r == RT_DROP_NONE)
        r = check_offload(dp, p, m);
    if (r != RT_DROP_NONE) {
        dp_drop(dp, p, r);
        return false;
    }
    return true;
}

/* Second stage: the family's address checks, then its path; a fragment
 * of a datagram follows what its first fragment became (dp_frag.c). */
static void stage_process(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                          uint32_t hash, uint64_t now)
{
    bool v6 = m->family == 6;
    if (!(v6 ? dp_ip6_check(dp, p, m, &hash) : dp_ip4_check(dp, p, m)))
        return;
    if (m->frag == 2) { /* a later fragment: it follows its first */
        frag_later(dp, p, m, now);
        return;
    }
    if (!m->frag) {
        if (v6)
            dp_ip6_dispatch(dp, p, m, hash, now);
        else
            dp_ip4_dispatch(dp, p, m, hash, now);
        return;
    }
    /* A first fragment goes through like a whole packet; what it became is
     * remembered for the rest of its datagram. */
    struct frag_key fk;
    frag_key_of(m, &fk);
    if (v6)
        dp_ip6_dispatch(dp, p, m, hash, now);
    else
        dp_ip4_dispatch(dp, p, m, hash, now);
    if (p->out_iface >= 0 && p->reason == RT_DROP_NONE) {
        dp->counters[RT_CNT_FRAGMENTS]++;
        frag_first_done(dp, &fk, p->data, p->out_iface, now);
    }
}

/*
 * A software pipeline over the batch: packet i is parsed and hashed and its
 * bucket prefetched, while packet i - DIST has the first connection of its
 * bucket prefetched and packet i - 2 * DIST is processed.  In a large table
 * a lookup is two dependent cache misses (bucket, then connection); this
 * way each has DIST packets' worth of work to arrive in, instead of
 * stalling the packet that needs it.  Packets are still processed strictly
 * in order; the prefetches are only hints.
 */
#define DIST 10
#define RING 32 /* a power of two > 2 * DIST */

void rt_dp_process(struct rt_dp *dp, struct rt_pkt *pkts, uint32_t n,
                   uint64_t now_ms)
{
    struct pkt_meta m[RING];
    uint32_t hash[RING];
    bool ok[RING];
    dp->counters[RT_CNT_BATCHES]++;
    /* The data plane's clock never goes back: workers read the time when
     * they wake, so a batch may carry one a little older than the batch
     * another worker just processed, and the token buckets take elapsed
     * time as 'now - last refill'. */
    if (now_ms < dp->now_ms)
        now_ms = dp->now_ms;
    dp->now_ms = now_ms;
    for (uint32_t i = 0; i < n + 2 * DIST; i++) {
        if (i < n) {
            uint32_t r = i % RING;
            ok[r] = stage_parse(dp, &pkts[i], &m[r]);
            if (ok[r]) {
                hash[r] = ct_hash(&dp->ct, &m[r].tuple);
                ct_prefetch_bucket(&dp->ct, hash[r]);
            }
        }
        if (i >= DIST && i - DIST < n) {
            uint32_t r = (i - DIST) % RING;
            if (ok[r])
                ct_prefetch_head(&dp->ct, hash[r], m[r].proto == IPPROTO_TCP_);
        }
        if (i >= 2 * DIST) {
            uint32_t j = i - 2 * DIST, r = j % RING;
            if (ok[r])
                stage_process(dp, &pkts[j], &m[r], hash[r], now_ms);
        }
    }
}
