/*
 * dp_ip6.c - the IPv6 path of a parsed packet: forwarding with hop
 * limits, ICMPv6, connection tracking, the stateful firewall, and the two
 * IPv6 translations: NPTv6 (stateless) and NAT66 masquerade (stateful, for
 * labs that want it).
 *
 * Theory of operation.  After parse6() (parse.c) a packet is judged like an
 * IPv4 one, with IPv6's own rules: multicast and link-local destinations are
 * never forwarded (the kernel side of a TUN sends router and neighbour
 * solicitations; a TUN link has no neighbours to discover), the hop limit is
 * decremented without any header checksum, a packet larger than the output
 * MTU is answered with "packet too big" (RFC 8201: routers never fragment),
 * and ICMPv6 errors quoting a tracked flow are RELATED to it.  The table,
 * the TCP/UDP/ICMP trackers, the zone policies and the rules without
 * addresses are the same code as for IPv4; rules naming IPv4 prefixes never
 * match IPv6 packets.
 *
 * NPTv6 (RFC 6296, npt6.c) is applied to the destination on the way in,
 * before anything else looks at the packet, and to the source on the way
 * out (dp_fwd.h), so conntrack and the firewall only see inside addresses.
 *
 * NAT66 masquerade is IPv4 masquerade with 16-byte addresses: a new
 * connection leaving through an interface with a rule gets that interface's
 * IPv6 address and a free port in its reply tuple (nat.c), and packets are
 * rewritten with incremental checksum updates, ICMPv6 errors with their
 * quotes.  Replies are addressed to the router itself, so a packet for one
 * of its addresses looks for a connection before it is taken as local.
 * Mappings are per connection (no endpoint-independent table for IPv6).
 */
#include <string.h>
#include <arpa/inet.h>
#include "dp_fwd.h"

/* NPTv6 inbound: a destination in the outside prefix of a rule of the input
 * interface gets the inside prefix, and '*hash' follows it.  False when it
 * cannot be mapped (dropped). */
static bool npt_inbound(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint32_t *hash)
{
    const struct dp_npt6 *n = dp_npt6_rule(dp, p->in_iface, m->tuple.dst.b, true);
    if (!n)
        return true;
    if (!dp_npt6_rewrite(p->data + IP6_OFF_DST, n->inside, n->plen, n->adj_in)) {
        dp_drop(dp, p, RT_DROP_NPT_UNMAPPABLE);
        return false;
    }
    memcpy(m->tuple.dst.b, p->data + IP6_OFF_DST, 16);
    *hash = ct_hash(&dp->ct, &m->tuple);
    /* An error about a packet that left translated quotes its outside
     * source: translated back, it finds its flow. */
    uint8_t *qsrc = p->data + m->inner_off + IP6_OFF_SRC;
    if (m->icmp_error && prefix_match6(qsrc, n->outside, n->plen) &&
        dp_npt6_rewrite(qsrc, n->inside, n->plen, n->adj_in))
        memcpy(m->inner.src.b, qsrc, 16);
    return true;
}

bool dp_ip6_check(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint32_t *hash)
{
    if (dp->n_npt6 && !npt_inbound(dp, p, m, hash))
        return false;
    const uint8_t *src = m->tuple.src.b, *dst = m->tuple.dst.b;
    if (addr6_multicast(dst)) {
        dp_drop(dp, p, RT_DROP_NOT_UNICAST); /* solicitations from the kernel side */
        return false;
    }
    if (addr6_multicast(src) || addr6_unspecified_or_loopback(src) || addr6_link_local(src) ||
        (dp_is_local6(dp, src) && !dp_from_host(dp, p)) || addr6_unspecified_or_loopback(dst) ||
        addr6_link_local(dst)) {
        dp_drop(dp, p, RT_DROP_MARTIAN);
        return false;
    }
    uint32_t rpf = dp->ifaces[p->in_iface].rp_filter;
    if (rpf != RT_RPF_OFF) {
        int back = dp_route6(dp, src);
        if (back < 0 || (rpf == RT_RPF_STRICT && back != p->in_iface)) {
            dp_drop(dp, p, RT_DROP_SPOOFED);
            return false;
        }
    }
    return true;
}

static void process_new(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint32_t hash,
                        uint64_t now)
{
    if (dp_is_local6(dp, m->tuple.dst.b)) { /* or a re-opened tuple of a NAT66 reply */
        dp_process_local(dp, p, m, hash, now);
        return;
    }
    int out = dp_next_hop(dp, p, m, &m->tuple.dst);
    if (out < 0)
        return;
    struct host_entry *host;
    /* A pinhole a LAN host asked for is its own permission, as a port
     * forward is. */
    bool pinhole = dp->pm.n6 && dp_pinhole_admits(dp, p->in_iface, m);
    if (!dp_admit_new(dp, p, m, out, &m->tuple.dst, m->tuple.dport,
                      pinhole || dp_from_host(dp, p), &host))
        return;
    if (pinhole)
        dp->counters[RT_CNT_PORTMAP_INBOUND]++;
    struct ct_conn c;
    struct ct_tcp_win w;
    if (!dp_conn_init(dp, p, m, &c, &w, now))
        return;
    if (dp_from_host(dp, p))
        c.status |= CT_FROM_HOST;
    bool reply_free = false;
    const uint8_t *masq = dp->n_masq6 ? dp_masq6_address(dp, m, out) : NULL;
    if (masq && memcmp(masq, m->tuple.src.b, 16) != 0) {
        union rt_addr to;
        memcpy(to.b, masq, 16);
        if (!nat_snat(&dp->ct, NULL, &c, &to, &dp->np, &dp->rng, now)) {
            dp_drop(dp, p, RT_DROP_NAT_NO_PORT);
            dp_icmp6_error(dp, p, m, ICMP6_DST_UNREACH, ICMP6_UNREACH_ADMIN, 0);
            return;
        }
        reply_free = true; /* nat_snat found it unused */
    }
    struct ct_conn *slot = dp_conn_commit(dp, p, m, &c, &w, hash, reply_free, host, now);
    if (!slot)
        return;
    nat_rewrite(m, slot, CT_DIR_ORIGINAL);
    dp_forward6(dp, p, m, out);
}

void dp_ip6_dispatch(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint32_t hash,
                     uint64_t now)
{
    enum ct_dir dir;
    struct ct_conn *c = NULL;
    if (dp_is_local6(dp, m->tuple.dst.b)) {
        /* With NAT66, replies are addressed to the router; with a host
         * link, so are the connections to its services. */
        bool tracked = dp->n_masq6 || dp->host_iface >= 0;
        if (tracked && m->icmp_error) {
            dp_process_related(dp, p, m, now);
            return;
        }
        if (tracked)
            c = ct_find(&dp->ct, &m->tuple, hash, now, &dir);
        if (!c) {
            if (m->icmp_error)
                dp_drop(dp, p, RT_DROP_LOCAL_DROP);
            else
                dp_process_local(dp, p, m, hash, now);
            return;
        }
    } else if (m->icmp_error) {
        dp_process_related(dp, p, m, now);
        return;
    } else {
        c = ct_find(&dp->ct, &m->tuple, hash, now, &dir);
    }
    if (!c || dp_process_tracked(dp, p, m, c, dir, now))
        process_new(dp, p, m, hash, now);
}
