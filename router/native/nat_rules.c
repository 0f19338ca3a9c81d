/*
 * nat_rules.c - which translation a new connection gets, from the loaded
 * rules: a port forward or a load balancer's backend (Maglev slots), an
 * endpoint-independent mapping that lets it in (RFC 4787 5), the source
 * address of SNAT, masquerade or a pool, and NAT66 masquerade.  The
 * translation itself (ports, rewrites, mappings) is nat.c's.
 */
#include <arpa/inet.h>
#include "dp.h"
#include "wire.h"

static const struct dp_nat_rule *nat_match(const struct rt_dp *dp,
                                           const struct pkt_meta *m, int out)
{
    uint32_t src = ntohl(m->tuple.src.v4);
    for (uint32_t i = 0; i < dp->n_nat; i++) {
        const struct dp_nat_rule *r = &dp->nat[i];
        if ((r->out_iface < 0 || r->out_iface == out) &&
            (src & r->src_mask) == r->src_prefix)
            return r;
    }
    return NULL;
}

const struct rt_dnat_cfg *dp_dnat_match(const struct rt_dp *dp, const struct pkt_meta *m)
{
    if (m->proto != IPPROTO_TCP_ && m->proto != IPPROTO_UDP_)
        return NULL;
    uint16_t dport = ntohs(m->tuple.dport);
    for (uint32_t i = 0; i < dp->n_dnat; i++) {
        const struct rt_dnat_cfg *d = &dp->dnat[i];
        if (d->proto == m->proto && d->addr == m->tuple.dst.v4 &&
            dport >= d->port_min && dport <= d->port_max)
            return d;
    }
    return NULL;
}

/* The slot of a load balancer for new connection 'm': a keyed hash of its
 * tuple, so that one client's connections spread over the backends and a
 * connection's packets never move (conntrack keeps the choice).  The key is
 * the load balancers' own: a pair of routers given the same one picks the
 * same backend for the same tuple (rt_dp_set_lb_key). */
static const struct rt_lb_slot *lb_pick(const struct rt_dp *dp,
                                        const struct rt_dnat_cfg *d,
                                        const struct pkt_meta *m)
{
    uint32_t h = ct_hash_with(dp->lb_keys, &m->tuple);
    return &dp->lb_slots[d->lb_first + h % d->lb_size];
}

bool dp_lb_backend(const struct rt_dp *dp, rt_be32 addr, rt_be16 port)
{
    uint16_t p = ntohs(port);
    for (uint32_t i = 0; i < dp->n_backends; i++)
        if (dp->lb_backends[i].addr == addr && dp->lb_backends[i].port == p)
            return true;
    return false;
}

/* A port forward for 'm', or false. */
bool dp_forward_target(const struct rt_dp *dp, const struct pkt_meta *m,
                       struct dnat_target *t)
{
    const struct rt_dnat_cfg *dn = dp_dnat_match(dp, m);
    if (!dn)
        return false;
    if (dn->lb_size) {
        const struct rt_lb_slot *s = lb_pick(dp, dn, m);
        *t = (struct dnat_target){.addr = s->addr, .port = htons(s->port),
                                  .ext = dn->addr,
                                  .masquerade = dn->masquerade != 0,
                                  .backend = s->backend};
        return true;
    }
    uint16_t port = (uint16_t)(dn->to_port + (ntohs(m->tuple.dport) - dn->port_min));
    *t = (struct dnat_target){.addr = dn->to_addr, .port = htons(port),
                              .ext = dn->addr, .masquerade = dn->masquerade != 0,
                              .backend = -1};
    return true;
}

/*
 * A mapping that lets 'm' in (RFC 4787 section 5): with endpoint-independent
 * filtering anyone may reach the mapped port; with address-dependent
 * filtering only an address the inside endpoint has sent to (or, hairpinned,
 * an inside host using the external address).  Address-and-port-dependent
 * filtering lets in only packets of existing connections, which never get
 * here.
 */
bool dp_mapping_target(struct rt_dp *dp, const struct pkt_meta *m,
                       struct dnat_target *t, uint64_t now)
{
    if (dp->np.filtering == NAT_FILTER_APDF ||
        (m->proto != IPPROTO_TCP_ && m->proto != IPPROTO_UDP_))
        return false;
    struct nat_map *mp = nat_map_by_ext(&dp->nm, m->proto, m->tuple.dst.v4,
                                        m->tuple.dport);
    if (mp)
        mp = nat_map_live(&dp->ct, mp, now);
    if (!mp)
        return false;
    if (dp->np.filtering == NAT_FILTER_ADF &&
        !nat_map_knows_peer(mp, m->tuple.src.v4) &&
        !nat_map_knows_peer(mp, mp->ext_addr))
        return false;
    *t = (struct dnat_target){.addr = mp->int_addr, .port = mp->int_port,
                              .ext = mp->ext_addr, .map = mp, .backend = -1};
    return true;
}

/* A mapping a LAN host asked for: the external interface's address and
 * the mapped port, from a peer its filters admit.  Hairpinned connections
 * from inside pass the same filters. */
bool dp_portmap_target(const struct rt_dp *dp, const struct pkt_meta *m,
                       struct dnat_target *t)
{
    if (!dp->pm.n4 || (m->proto != IPPROTO_TCP_ && m->proto != IPPROTO_UDP_))
        return false;
    const struct rt_portmap *e = pm_by_ext(&dp->pm, m->proto, m->tuple.dport);
    if (!e || (uint32_t)e->iface >= dp->n_ifaces ||
        dp->ifaces[e->iface].addr != m->tuple.dst.v4 ||
        !pm_admits(e, &m->tuple.src, m->tuple.sport))
        return false;
    rt_be32 a;
    memcpy(&a, e->int_addr, 4);
    *t = (struct dnat_target){.addr = a, .port = htons(e->int_port), .ext = m->tuple.dst.v4,
                              .backend = -1, .portmap = true};
    return true;
}

bool dp_portmap_snat(struct rt_dp *dp, struct ct_conn *c, rt_be32 to, uint64_t now)
{
    const struct ct_tuple *o = &c->tuple[CT_DIR_ORIGINAL];
    if (o->proto != IPPROTO_TCP_ && o->proto != IPPROTO_UDP_)
        return false;
    const struct rt_portmap *e = pm_by_int(&dp->pm, 4, o->proto, &o->src, o->sport);
    if (!e || (uint32_t)e->iface >= dp->n_ifaces || dp->ifaces[e->iface].addr != to)
        return false;
    struct ct_tuple *r = &c->tuple[CT_DIR_REPLY];
    r->dst.v4 = to;
    r->dport = htons(e->ext_port);
    if (ct_tuple_in_use(&dp->ct, r, now)) {
        r->dst = o->src; /* back to the plain inverse: nat_snat starts over */
        r->dport = o->sport;
        return false;
    }
    c->status |= CT_SRC_NAT;
    return true;
}

bool dp_pinhole_admits(const struct rt_dp *dp, int in, const struct pkt_meta *m)
{
    if (m->proto != IPPROTO_TCP_ && m->proto != IPPROTO_UDP_)
        return false;
    const struct rt_portmap *e = pm_by_int(&dp->pm, 6, m->proto, &m->tuple.dst, m->tuple.dport);
    return e && e->iface == in && pm_admits(e, &m->tuple.src, m->tuple.sport);
}

/*
 * The address new connection 'm' is source-NATed to, or 0.  Full NAT takes
 * the output interface's address; a hairpinned connection (it leaves
 * through the interface it came in on, so the server would answer the
 * client directly) takes the external address it was sent to, as RFC 4787
 * REQ-9a asks; otherwise the SNAT/masquerade rules decide.
 */
bool dp_snat_address(const struct rt_dp *dp, const struct rt_pkt *p, const struct pkt_meta *m,
                     const struct dnat_target *dn, int out, rt_be32 *to)
{
    *to = 0;
    if (dn && dn->masquerade) {
        *to = dp->ifaces[out].addr;
        return true;
    }
    if (dn && out == p->in_iface) {
        *to = dn->ext;
        return true;
    }
    const struct dp_nat_rule *nr = nat_match(dp, m, out);
    if (!nr)
        return false;
    if (nr->pool_size) {
        /* "Paired" pooling (RFC 4787 REQ-2): the address is a keyed hash of
         * the inside address, so every flow of a host uses the same one. */
        uint64_t h = ((uint64_t)m->tuple.src.v4 ^ dp->ct.seed) * 0x9e3779b97f4a7c15ULL;
        *to = dp->nat_pool[nr->pool_first + (uint32_t)(h >> 32) % nr->pool_size];
        return true;
    }
    *to = nr->to_addr ? nr->to_addr : dp->ifaces[out].addr;
    return true;
}

/* The address new connection 'm' leaving through 'out' is masqueraded to,
 * or NULL.  NPTv6 comes first: a source an NPTv6 rule of 'out' translates
 * is not masqueraded. */
const uint8_t *dp_masq6_address(const struct rt_dp *dp, const struct pkt_meta *m, int out)
{
    if (dp->n_npt6 && dp_npt6_rule(dp, out, m->tuple.src.b, false))
        return NULL;
    for (uint32_t i = 0; i < dp->n_masq6; i++) {
        const struct dp_masq6 *r = &dp->masq6[i];
        if (r->out_iface == out && prefix_match6(m->tuple.src.b, r->src, r->plen))
            return dp->ifaces[out].addr6;
    }
    return NULL;
}
