/*
 * dp_ip4.c - the IPv4 path of a parsed packet.
 *
 * Theory of operation.  After pkt_parse() (parse.c) and the batch's hash
 * (dp_batch.c):
 *
 *   address checks (martians, not unicast, reverse path)
 *     -> ICMP error?  RELATED path (dp_track.c)
 *     -> conntrack lookup
 *          hit:  the tracked path (dp_track.c); a re-opened tuple comes
 *                back here as new
 *          miss: a port forward, or for one of the router's addresses a
 *                mapping that lets it in, or the router itself (local);
 *                route, TTL and MTU, the firewall's admission, the L4
 *                "may this open a connection", the NAT44 binding, insert,
 *                rewrite, forward
 *
 * Every drop is counted under one reason; a packet that is dropped but
 * answered (time exceeded, fragmentation needed, unreachable, echo reply)
 * leaves with out_iface set and a reason.  Nothing here allocates, blocks
 * or calls the system: see io.c.
 */
#include <string.h>
#include <arpa/inet.h>
#include "dp_fwd.h"

bool dp_ip4_check(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m)
{
    uint32_t src = ntohl(m->tuple.src.v4), dst = ntohl(m->tuple.dst.v4);
    if (addr4_martian_src(src) || (dp_is_local4(dp, m->tuple.src.v4) && !dp_from_host(dp, p)) ||
        (dst >> 24) == 0 || (dst >> 24) == 127) {
        dp_drop(dp, p, RT_DROP_MARTIAN);
        return false;
    }
    if (dst >= 0xe0000000u) {
        dp_drop(dp, p, RT_DROP_NOT_UNICAST);
        return false;
    }
    uint32_t rpf = dp->ifaces[p->in_iface].rp_filter;
    if (rpf != RT_RPF_OFF) {
        /* Would a reply to this source leave through the interface this
         * came in on (strict), or at all (loose)?  RFC 3704. */
        int back = dp_route4(dp, m->tuple.src.v4);
        if (back < 0 || (rpf == RT_RPF_STRICT && back != p->in_iface)) {
            dp_drop(dp, p, RT_DROP_SPOOFED);
            return false;
        }
    }
    return true;
}

/* The NAT44 source binding of new connection 'c' leaving through 'out'
 * (after any destination NAT 'dn'); false when no port was free (dropped
 * and answered).  '*reply_free': the reply tuple is known to be unused. */
static bool bind_source(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                        const struct dnat_target *dn, int out, struct ct_conn *c,
                        bool *reply_free, uint64_t now)
{
    rt_be32 to;
    if (!dp_snat_address(dp, p, m, dn, out, &to) || to == m->tuple.src.v4)
        return true;
    if (!to) { /* the interface has no address (yet): never leak the inside one */
        dp_conn_abandon(dp, c);
        dp_drop(dp, p, RT_DROP_NAT_NO_ADDRESS);
        return false;
    }
    /* A mapping a LAN host asked for is its endpoint's outbound mapping. */
    if (dp->pm.n4 && !(c->status & CT_NAT_MAPPED) && dp_portmap_snat(dp, c, to, now)) {
        *reply_free = true;
        return true;
    }
    /* Only one mapping reference per connection: a hairpinned connection
     * that came in through a mapping keeps that one. */
    struct nat_params np = dp->np;
    if (c->status & CT_NAT_MAPPED)
        np.eim = false;
    union rt_addr ta = {.w = {0, 0}};
    ta.v4 = to;
    if (!nat_snat(&dp->ct, &dp->nm, c, &ta, &np, &dp->rng, now)) {
        dp_conn_abandon(dp, c);
        dp_drop(dp, p, RT_DROP_NAT_NO_PORT);
        /* RFC 5508 REQ-8: say so, with "communication administratively
         * prohibited". */
        dp_icmp4_error(dp, p, m, ICMP_DEST_UNREACH, ICMP_UNREACH_ADMIN, 0);
        return false;
    }
    *reply_free = true; /* nat_snat found it unused */
    return true;
}

/* A packet no connection knows: may it open one?  'hash' is the hash of its
 * tuple, which the caller has just looked up and not found. */
static void process_new(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                        uint32_t hash, uint64_t now)
{
    struct dnat_target tgt;
    const struct dnat_target *dn = NULL;
    if (dp_forward_target(dp, m, &tgt))
        dn = &tgt;
    else if (dp_is_local4(dp, m->tuple.dst.v4)) {
        if (!dp_portmap_target(dp, m, &tgt) && !dp_mapping_target(dp, m, &tgt, now)) {
            dp_process_local(dp, p, m, hash, now);
            return;
        }
        dn = &tgt;
    }
    if (!dn && m->proto == IPPROTO_TCP_ && !(m->tcp_flags & TCP_SYN) && dp->n_backends &&
        dp_lb_backend(dp, m->tuple.src.v4, m->tuple.sport)) {
        /* A load balancer's backend answering a connection this router
         * does not know (taken over from a peer that never sent it): picked
         * up, it would leave source-NATed to a port the client never used,
         * which answers with a reset.  Dropped, it waits for the client's
         * next segment, which reopens the connection on the same backend
         * (the pair shares the load balancers' hash key). */
        dp_drop(dp, p, RT_DROP_LB_ORPHAN);
        return;
    }
    union rt_addr dst = {.w = {0, 0}};
    dst.v4 = dn ? dn->addr : m->tuple.dst.v4;
    if (!dn && dp->host_iface >= 0 && dp_route4(dp, dst.v4) == dp->host_iface) {
        /* The router's own stack is the router: reached as its services
         * are, or not at all, whatever the zone policies say. */
        dp_process_local(dp, p, m, hash, now);
        return;
    }
    int out = dp_next_hop(dp, p, m, &dst);
    if (out < 0)
        return;
    /* Firewall rules first; without a matching rule, a port forward or a
     * mapping is its own permission and anything else needs the zone pair's
     * policy. */
    struct host_entry *host;
    /* The router's own stack, behind the host link, may open connections
     * anywhere unless a rule says otherwise (an output chain that accepts). */
    if (!dp_admit_new(dp, p, m, out, &dst, dn ? dn->port : m->tuple.dport,
                      dn != NULL || dp_from_host(dp, p), &host))
        return;
    struct ct_conn c;
    struct ct_tcp_win w;
    if (!dp_conn_init(dp, p, m, &c, &w, now))
        return;
    if (dp_from_host(dp, p))
        c.status |= CT_FROM_HOST;
    if (dn) {
        c.tuple[CT_DIR_REPLY].src.v4 = dn->addr;
        c.tuple[CT_DIR_REPLY].sport = dn->port;
        c.status |= CT_DST_NAT;
        if (dn->map) {
            dn->map->refs++;
            c.status |= CT_NAT_MAPPED;
            dp->counters[RT_CNT_NAT_MAP_INBOUND]++;
        }
        if (dn->portmap)
            dp->counters[RT_CNT_PORTMAP_INBOUND]++;
    }
    bool reply_free = false;
    if (!bind_source(dp, p, m, dn, out, &c, &reply_free, now))
        return;
    struct ct_conn *slot = dp_conn_commit(dp, p, m, &c, &w, hash, reply_free, host, now);
    if (!slot)
        return;
    if (dn && dn->backend >= 0 && (uint32_t)dn->backend < dp->n_backends)
        dp->lb_conns[dn->backend]++;
    nat_rewrite(m, slot, CT_DIR_ORIGINAL);
    dp_forward4(p, m, out);
}

void dp_ip4_dispatch(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint32_t hash,
                     uint64_t now)
{
    if (m->icmp_error) {
        dp_process_related(dp, p, m, now);
        return;
    }
    enum ct_dir dir;
    struct ct_conn *c = ct_find(&dp->ct, &m->tuple, hash, now, &dir);
    if (!c || dp_process_tracked(dp, p, m, c, dir, now))
        process_new(dp, p, m, hash, now);
}
