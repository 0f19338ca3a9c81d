/*
 * dp_fwd.h - leaving through a link: the next hop of a packet (route, TTL
 * or hop limit, MTU) and the last touch before it goes (TTL decremented,
 * NPTv6 outbound).  Both families side by side, family-switched at the two
 * entry points dp_next_hop() and dp_forward().
 *
 * Inline because every forwarded packet takes them, from the IPv4 and IPv6
 * pipelines and from the steps they share (dp_track.c): out of line they
 * would cost a call across files each.
 *
 * TTL and MTU are checked before the state changes, so a packet that will
 * be dropped leaves no trace in the table; and an ICMP error the router
 * sends quotes the packet as it arrived.
 */
#ifndef RT_DP_FWD_H
#define RT_DP_FWD_H

#include <arpa/inet.h>
#include "dp.h"
#include "csum.h"
#include "wire.h"

/* The size the packet has on the link: a GSO packet leaves as segments,
 * and each must fit. */
static inline uint32_t dp_wire_size(const struct rt_pkt *p, const struct pkt_meta *m)
{
    return p->gso_type != RT_GSO_NONE ? (uint32_t)m->l4_off + m->l4_hdr_len + p->gso_size
                                      : m->len;
}

/*
 * Checks that 'm' may leave through 'out' (TTL, MTU) and answers with an
 * ICMP error if not.  Returns true if it may.
 */
static inline bool dp_may_forward4(struct rt_dp *dp, struct rt_pkt *p,
                                   const struct pkt_meta *m, int out)
{
    if (m->ttl <= 1) {
        dp_drop(dp, p, RT_DROP_TTL_EXPIRED);
        dp_icmp4_error(dp, p, m, ICMP_TIME_EXCEEDED, 0, 0);
        return false;
    }
    uint32_t mtu = dp->ifaces[out].mtu;
    if (dp_wire_size(p, m) > mtu) {
        dp_drop(dp, p, RT_DROP_TOO_BIG);
        if (m->df)
            dp_icmp4_error(dp, p, m, ICMP_DEST_UNREACH, ICMP_UNREACH_NEEDFRAG, mtu & 0xffff);
        return false;
    }
    return true;
}

/* Hop limit and MTU for leaving through 'out'; answers if it may not
 * (RFC 8201: routers never fragment IPv6). */
static inline bool dp_may_forward6(struct rt_dp *dp, struct rt_pkt *p,
                                   const struct pkt_meta *m, int out)
{
    if (m->ttl <= 1) {
        dp_drop(dp, p, RT_DROP_TTL_EXPIRED);
        dp_icmp6_error(dp, p, m, ICMP6_TIME_EXCEEDED, 0, 0);
        return false;
    }
    uint32_t mtu = dp->ifaces[out].mtu;
    if (dp_wire_size(p, m) > mtu) {
        dp_drop(dp, p, RT_DROP_TOO_BIG);
        dp_icmp6_error(dp, p, m, ICMP6_PACKET_TOO_BIG, 0, mtu);
        return false;
    }
    return true;
}

/* The interface a packet to 'dst' (after translation) leaves through,
 * checked for TTL or hop limit and MTU; -1 when it may not leave (dropped,
 * and answered with the ICMP error: never for an ICMP error itself). */
static inline int dp_next_hop(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                              const union rt_addr *dst)
{
    if (m->family == 6) {
        int out = dp_route6(dp, dst->b);
        if (out < 0) {
            dp_drop(dp, p, RT_DROP_NO_ROUTE);
            dp_icmp6_error(dp, p, m, ICMP6_DST_UNREACH, ICMP6_UNREACH_NOROUTE, 0);
            return -1;
        }
        return dp_may_forward6(dp, p, m, out) ? out : -1;
    }
    int out = dp_route4(dp, dst->v4);
    if (out < 0) {
        dp_drop(dp, p, RT_DROP_NO_ROUTE);
        dp_icmp4_error(dp, p, m, ICMP_DEST_UNREACH, ICMP_UNREACH_NET, 0);
        return -1;
    }
    return dp_may_forward4(dp, p, m, out) ? out : -1;
}

/* Decrements the TTL (RFC 1812 5.3.1) and marks the packet for 'out'. */
static inline void dp_forward4(struct rt_pkt *p, const struct pkt_meta *m, int out)
{
    uint8_t *ip = p->data;
    /* TTL and protocol as one word, changed in a register: a byte store
     * followed by a word load of the same bytes would stall the load. */
    uint16_t old = wire_be16(ip + IP4_OFF_TTL);
    uint16_t new_ = htons((uint16_t)(ntohs(old) - 0x100)); /* TTL >= 2 here */
    wire_put_be16(ip + IP4_OFF_TTL, new_);
    csum_replace2(ip + IP4_OFF_CSUM, old, new_);
    p->len = m->len;
    p->out_iface = (int16_t)out;
}

/* NPTv6 outbound, the hop limit decremented, marked for 'out'. */
static inline void dp_forward6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                               int out)
{
    if (dp->n_npt6) {
        const struct dp_npt6 *n = dp_npt6_rule(dp, out, p->data + IP6_OFF_SRC, false);
        if (n && !dp_npt6_rewrite(p->data + IP6_OFF_SRC, n->outside, n->plen, n->adj_out)) {
            dp_drop(dp, p, RT_DROP_NPT_UNMAPPABLE);
            return;
        }
        /* An error quoting a packet that came in translated: the quote
         * gets its outside address back (checksum-neutral, so the ICMPv6
         * checksum holds). */
        uint8_t *qdst = p->data + m->inner_off + IP6_OFF_DST;
        if (n && m->icmp_error && prefix_match6(qdst, n->inside, n->plen))
            (void)dp_npt6_rewrite(qdst, n->outside, n->plen, n->adj_out);
    }
    p->data[IP6_OFF_HLIM]--;
    p->len = m->len;
    p->out_iface = (int16_t)out;
}

static inline void dp_forward(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                              int out)
{
    if (m->family == 6)
        dp_forward6(dp, p, m, out);
    else
        dp_forward4(p, m, out);
}

/* The host link for a packet to the router's services (RT_IF_HOST), or -1
 * when there is none (a restored connection) or the packet does not fit
 * (the control plane gives the host link the largest MTU): dropped. */
static inline int dp_host_hop(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m)
{
    int out = dp->host_iface;
    if (out < 0) {
        dp_drop(dp, p, RT_DROP_LOCAL_DROP);
        return -1;
    }
    if (dp_wire_size(p, m) > dp->ifaces[out].mtu) {
        dp_drop(dp, p, RT_DROP_TOO_BIG);
        return -1;
    }
    return out;
}

/* Marks 'p' for the host link as it is: a packet for the router itself is
 * delivered, not forwarded, so its TTL or hop limit stays. */
static inline void dp_deliver(struct rt_pkt *p, const struct pkt_meta *m, int out)
{
    p->len = m->len;
    p->out_iface = (int16_t)out;
}

#endif /* RT_DP_FWD_H */
