/*
 * rt_portmap.c - the exports for the mappings LAN hosts ask for: loading
 * the table (portmap.c) and asking what holds an external port before the
 * control plane grants it.
 */
#include <arpa/inet.h>
#include <string.h>
#include "dp.h"

int rt_dp_set_portmaps(struct rt_dp *dp, const struct rt_portmap *e, uint32_t n)
{
    struct pm_table t;
    dp->error[0] = 0;
    if (!pm_build(&t, e, n, dp->n_ifaces, dp->error, sizeof dp->error))
        return -1;
    pm_free(&dp->pm);
    dp->pm = t;
    return 0;
}

/* A port forward on 'addr' covering 'port' (host order)? */
static bool forwarded(const struct rt_dp *dp, uint8_t proto, rt_be32 addr, uint16_t port)
{
    for (uint32_t i = 0; i < dp->n_dnat; i++) {
        const struct rt_dnat_cfg *d = &dp->dnat[i];
        if (d->proto == proto && d->addr == addr && port >= d->port_min && port <= d->port_max)
            return true;
    }
    return false;
}

/* A live connection of another inside endpoint whose reply comes to
 * 'addr':'port': a walk of the whole table, which only a router without
 * endpoint-independent mapping needs (with it, the mappings say). */
static bool conn_holds(struct rt_dp *dp, uint8_t proto, rt_be32 addr, rt_be16 port,
                       rt_be32 int_addr, rt_be16 int_port, uint64_t now)
{
    for (uint32_t i = 0; i < dp->ct.high_water; i++) {
        const struct ct_conn *c = &dp->ct.conns[i];
        if (!ct_live(c) || ct_expired(c, now))
            continue;
        const struct ct_tuple *r = &c->tuple[CT_DIR_REPLY];
        if (r->family == 4 && r->proto == proto && r->dst.v4 == addr && r->dport == port &&
            !(r->src.v4 == int_addr && r->sport == int_port) &&
            !(c->tuple[CT_DIR_ORIGINAL].src.v4 == int_addr &&
              c->tuple[CT_DIR_ORIGINAL].sport == int_port))
            return true;
    }
    return false;
}

int rt_dp_portmap_probe(struct rt_dp *dp, const struct rt_portmap *e, uint64_t now_ms,
                        uint16_t *existing)
{
    *existing = 0;
    if (e->family != 4 || (e->proto != 6 && e->proto != 17) || e->iface < 0 ||
        (uint32_t)e->iface >= dp->n_ifaces || !e->ext_port || !e->int_port)
        return -1;
    rt_be32 addr = dp->ifaces[e->iface].addr, int_addr;
    memcpy(&int_addr, e->int_addr, 4);
    rt_be16 int_port = htons(e->int_port), port = htons(e->ext_port);
    struct nat_map *own = nat_map_by_int(&dp->nm, e->proto, int_addr, int_port, addr);
    if (own && nat_map_live(&dp->ct, own, now_ms))
        *existing = ntohs(own->ext_port);
    if (forwarded(dp, e->proto, addr, e->ext_port))
        return RT_PM_FORWARD;
    const struct rt_portmap *pin = pm_by_ext(&dp->pm, e->proto, port);
    if (pin && !(memcmp(pin->int_addr, e->int_addr, 16) == 0 && pin->int_port == e->int_port))
        return RT_PM_TAKEN;
    struct nat_map *m = nat_map_by_ext(&dp->nm, e->proto, addr, port);
    if (m && nat_map_live(&dp->ct, m, now_ms) &&
        !(m->int_addr == int_addr && m->int_port == int_port))
        return RT_PM_TAKEN;
    if (!dp->np.eim && conn_holds(dp, e->proto, addr, port, int_addr, int_port, now_ms))
        return RT_PM_TAKEN;
    return RT_PM_FREE;
}
