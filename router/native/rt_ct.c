/*
 * rt_ct.c - the connection table's exports: the GC's sweep, listing,
 * deleting and flushing connections, and restoring them from the state
 * file, each checked against the running config as its first packet would
 * be.
 */
#include <string.h>
#include <arpa/inet.h>
#include "dp.h"
#include "wire.h"

void rt_ct_sweep(struct rt_dp *dp, uint64_t now_ms, uint32_t max_slots,
                 struct rt_sweep_result *out)
{
    memset(out, 0, sizeof *out);
    dp_clock(dp, now_ms);  /* the DESTROY events of what expires say when */
    out->wrapped =
        ct_sweep(&dp->ct, now_ms, max_slots, &out->visited, &out->expired);
    out->count = dp->ct.count;
}

uint32_t rt_ct_dump(struct rt_dp *dp, uint32_t *cursor,
                    struct rt_ct_entry *out, uint32_t n, uint64_t now_ms)
{
    uint32_t k = 0;
    uint32_t i = *cursor;
    for (; i < dp->ct.high_water && k < n; i++) {
        const struct ct_conn *c = &dp->ct.conns[i];
        if (!ct_live(c) || ct_expired(c, now_ms))
            continue;
        dp_ct_fill(dp, c, &out[k++], now_ms);
    }
    *cursor = i;
    return k;
}

/*
 * Would the current config let connection 'c' open?  A restored entry
 * passes the same decision as the first packet of its original direction:
 * it came in on the interface that routes back to its source, goes out
 * (after any DNAT) where its destination routes; the firewall rules for NEW
 * decide, else a port forward or load balancer that still exists, or a live
 * mapping of the same inside endpoint, is its own permission, else the zone
 * policy (the input chain and policy for the router's own address).  So a
 * state file, even a forged one, can open no hole the config would not.
 */
static bool restore_permitted(struct rt_dp *dp, const struct ct_conn *c,
                              uint64_t now_ms)
{
    const struct ct_tuple *o = &c->tuple[CT_DIR_ORIGINAL], *r = &c->tuple[CT_DIR_REPLY];
    bool v6 = o->family == 6;
    bool dnat = (c->status & CT_DST_NAT) != 0;
    struct pkt_meta m;
    memset(&m, 0, sizeof m);
    m.family = o->family;
    m.proto = o->proto;
    m.tuple = *o;
    if (o->proto == IPPROTO_ICMP_ || o->proto == IPPROTO_ICMPV6_)
        m.icmp_type = (uint8_t)(ntohs(o->dport) >> 8);
    union rt_addr dst = dnat ? r->src : o->dst;
    rt_be16 dport = dnat ? r->sport : o->dport;
    int in = v6 ? dp_route6(dp, o->src.b) : dp_route4(dp, o->src.v4);
    if (in < 0)
        return false;
    struct rt_pkt p;
    memset(&p, 0, sizeof p);
    p.in_iface = (int16_t)in;
    if (v6 ? dp_is_local6(dp, dst.b) : dp_is_local4(dp, dst.v4)) {
        int i = dp_fw_match(dp, &p, &m, RT_FW_INPUT, -1, RT_FW_NEW, &dst, dport);
        return (i < 0 ? dp->input_policy : dp->fw[i].action) == RT_FW_ACCEPT;
    }
    int out = v6 ? dp_route6(dp, dst.b) : dp_route4(dp, dst.v4);
    if (out < 0)
        return false;
    int i = dp_fw_match(dp, &p, &m, RT_FW_FORWARD, out, RT_FW_NEW, &dst, dport);
    if (i >= 0)
        return dp->fw[i].action == RT_FW_ACCEPT;
    if (v6 && dp->pm.n6 && dp_pinhole_admits(dp, in, &m))
        return true;
    if (dnat && !v6) {
        struct dnat_target t;
        if (dp_dnat_match(dp, &m) ||
            (dp_portmap_target(dp, &m, &t) && t.addr == r->src.v4 && t.port == r->sport))
            return true;
        struct nat_map *mp = nat_map_by_ext(&dp->nm, o->proto, o->dst.v4, o->dport);
        if (mp && dp->np.filtering != NAT_FILTER_APDF &&
            nat_map_live(&dp->ct, mp, now_ms) && mp->int_addr == r->src.v4 &&
            mp->int_port == r->sport)
            return true;
    }
    return dp->zone_policy[dp->ifaces[in].zone][dp->ifaces[out].zone] != 0;
}

int rt_ct_restore(struct rt_dp *dp, const struct rt_ct_entry *e,
                  uint64_t now_ms)
{
    if ((e->family != 4 && e->family != 6) ||
        (e->proto == IPPROTO_TCP_ && e->state >= RT_TCP_N_STATES) ||
        e->timeout_ms == 0 || e->timeout_ms > CT_MAX_TIMEOUT_MS)
        return -1;
    struct ct_conn c;
    memset(&c, 0, sizeof c);
    for (unsigned d = 0; d < CT_DIRS; d++) {
        if (e->family == 6) {
            tuple_fill6(&c.tuple[d], e->src[d], e->dst[d], htons(e->sport[d]),
                        htons(e->dport[d]), e->proto);
        } else {
            rt_be32 src, dst;
            memcpy(&src, e->src[d], 4);
            memcpy(&dst, e->dst[d], 4);
            tuple_fill4(&c.tuple[d], src, dst, htons(e->sport[d]), htons(e->dport[d]),
                        e->proto);
        }
        c.packets_lo[d] = (uint32_t)e->packets[d];
        c.packets_hi[d] = (uint16_t)(e->packets[d] >> 32);
        c.bytes[d] = e->bytes[d];
    }
    c.state = e->proto == IPPROTO_TCP_ ? e->state : 0;
    c.status = (uint16_t)(e->status & (CT_SEEN_REPLY | CT_ASSURED | CT_SRC_NAT |
                                       CT_DST_NAT | CT_TO_HOST | CT_FROM_HOST));
    ct_set_timeout(&c, now_ms, e->timeout_ms);
    c.created = (uint32_t)((now_ms - (e->age_ms < now_ms ? e->age_ms : 0)) >>
                           CT_CREATED_SHIFT);
    enum ct_dir dir;
    uint32_t hash = ct_hash(&dp->ct, &c.tuple[CT_DIR_ORIGINAL]);
    if (ct_find(&dp->ct, &c.tuple[CT_DIR_ORIGINAL], hash, now_ms, &dir))
        return -2;
    struct ct_tuple inverse;
    if (!(c.status & (CT_SRC_NAT | CT_DST_NAT)) &&
        (!tuple_invert(&c.tuple[CT_DIR_ORIGINAL], &inverse) ||
         memcmp(&inverse, &c.tuple[CT_DIR_REPLY], sizeof inverse) != 0))
        return -1; /* without NAT the reply tuple is the plain inverse */
    if (!restore_permitted(dp, &c, now_ms))
        return -3;
    /* Rebuild the endpoint-independent mapping the connection used. */
    const struct ct_tuple *o = &c.tuple[CT_DIR_ORIGINAL], *r = &c.tuple[CT_DIR_REPLY];
    if ((e->status & RT_CT_NAT_MAPPED) && dp->np.eim && e->family == 4) {
        bool ok;
        if (c.status & CT_SRC_NAT)
            ok = nat_map_adopt(&dp->nm, o->proto, o->src.v4, o->sport, r->dst.v4,
                               o->proto == IPPROTO_ICMP_ ? r->sport : r->dport,
                               o->dst.v4);
        else
            ok = nat_map_adopt(&dp->nm, o->proto, r->src.v4, r->sport, o->dst.v4,
                               o->dport, o->src.v4);
        if (ok)
            c.status |= CT_NAT_MAPPED;
    }
    struct ct_conn *slot = ct_alloc(&dp->ct, hash, now_ms);
    if (!slot) {
        dp_conn_abandon(dp, &c);
        return -2;
    }
    *slot = c;
    if (c.tuple[0].proto == IPPROTO_TCP_) {
        struct ct_tcp_win *w = ct_tcp_win(&dp->ct, slot);
        bool known = false;
        for (unsigned d = 0; d < CT_DIRS; d++) {
            w->end[d] = e->tcp_end[d];
            w->maxend[d] = e->tcp_maxend[d];
            w->maxwin[d] = e->tcp_maxwin[d];
            w->maxack[d] = e->tcp_maxack[d];
            w->scale[d] = e->tcp_scale[d] > 14 ? 14 : e->tcp_scale[d];
            w->flags[d] = e->tcp_flags[d] & (CT_TCPF_WINDOW_SCALE |
                                             CT_TCPF_SACK_PERM |
                                             CT_TCPF_BE_LIBERAL |
                                             CT_TCPF_DATA_UNACK |
                                             CT_TCPF_MAXACK_SET);
            known |= e->tcp_maxwin[d] != 0;
        }
        if (!known) /* saved without windows: learn them again */
            w->flags[0] = w->flags[1] = CT_TCPF_SACK_PERM | CT_TCPF_BE_LIBERAL;
    }
    if (!ct_insert(&dp->ct, slot, hash, false, now_ms)) {
        dp_conn_abandon(dp, &c);
        return -2;
    }
    if (slot->status & CT_NAT_MAPPED)
        nat_map_link(&dp->nm, slot, ct_slot(&dp->ct, slot));
    return 0;
}

int rt_ct_delete(struct rt_dp *dp, uint32_t slot, uint64_t now_ms)
{
    if (slot >= dp->ct.high_water || !ct_live(&dp->ct.conns[slot]))
        return -1;
    dp_clock(dp, now_ms);
    ct_delete(&dp->ct, &dp->ct.conns[slot]);
    dp->counters[RT_CNT_DELETED]++;
    return 0;
}

int rt_ct_set_timeout(struct rt_dp *dp, uint32_t slot, uint64_t now_ms,
                      uint64_t timeout_ms)
{
    if (slot >= dp->ct.high_water || !ct_live(&dp->ct.conns[slot]))
        return -1;
    ct_set_timeout(&dp->ct.conns[slot], now_ms, timeout_ms);
    return 0;
}

uint32_t rt_ct_count(const struct rt_dp *dp) { return dp->ct.count; }
uint32_t rt_nat_map_count(const struct rt_dp *dp) { return dp->nm.count; }

uint64_t rt_ct_table_bytes(const struct rt_dp *dp)
{
    const struct ct_table *ct = &dp->ct;
    return (uint64_t)ct->capacity * (sizeof *ct->conns + sizeof *ct->tcpw) +
           ((uint64_t)ct->bucket_mask + 1) * sizeof *ct->buckets;
}
uint32_t rt_ct_capacity(const struct rt_dp *dp) { return dp->ct.capacity; }

void rt_ct_flush(struct rt_dp *dp, uint64_t now_ms)
{
    dp_clock(dp, now_ms);
    ct_flush(&dp->ct);
}
