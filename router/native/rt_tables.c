/*
 * rt_tables.c - the data plane's life cycle and its tables: rt_dp_new(),
 * rt_dp_free(), and rt_dp_load(), which checks every table of a
 * 'struct rt_tables' into new memory, one loader per table, and swaps them
 * in only when all of them passed, so a refused load changes nothing.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include "dp.h"
#include "wire.h"

struct rt_dp *rt_dp_new(const struct rt_dp_params *p)
{
    if (!p || p->batch == 0 || p->batch > 4096 || p->slot_size < 576 ||
        p->slot_size > 262144)
        return NULL;
    struct rt_dp *dp = calloc(1, sizeof *dp);
    if (!dp)
        return NULL;
    dp->host_iface = -1;
    /* Held for a batch at a time (microseconds): a waiter spins a little
     * before it sleeps, because waking a sleeping thread costs more than
     * that on a VM (an inter-processor interrupt through the hypervisor). */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    int merr = pthread_mutex_init(&dp->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    if (merr != 0) {
        free(dp);
        return NULL;
    }
    if (ct_init(&dp->ct, p->ct_capacity, p->seed, dp->counters) != 0) {
        free(dp);
        return NULL;
    }
    /* The load balancers hash with the table's keys until told otherwise. */
    memcpy(dp->lb_keys, dp->ct.keys, sizeof dp->lb_keys);
    /* Every mapping has a connection, and most inside endpoints have
     * several: half the connection count is plenty. */
    uint32_t maps = p->ct_capacity / 2 > 64 ? p->ct_capacity / 2 : 64;
    if (nat_maps_init(&dp->nm, maps, p->ct_capacity, p->seed) != 0) {
        rt_dp_free(dp);
        return NULL;
    }
    dp->nm.pinned = &dp->pm;
    dp->ct.on_delete = dp_on_ct_delete;
    dp->ct.on_delete_ctx = dp;
    dp->frag.key = p->seed * 0x94d049bb133111ebULL + 7;
    if (host_init(&dp->hosts, maps, p->seed) != 0) {
        rt_dp_free(dp);
        return NULL;
    }
    dp->batch = p->batch;
    dp->slot_size = p->slot_size;
    dp->slots = malloc((size_t)p->batch * (SLOT_HEADROOM + p->slot_size));
    dp->pkts = calloc(p->batch, sizeof *dp->pkts);
    if (!dp->slots || !dp->pkts) {
        rt_dp_free(dp);
        return NULL;
    }
    for (uint32_t i = 0; i < p->batch; i++) {
        dp->pkts[i].data =
            dp->slots + (size_t)i * (SLOT_HEADROOM + p->slot_size) + SLOT_HEADROOM;
        dp->pkts[i].cap = p->slot_size;
    }
    dp->rng = p->seed ^ 0x9e3779b97f4a7c15ULL;
    if (dp->rng == 0)
        dp->rng = 1;
    /* The tracker's and NAT's knobs stay zero: until the first rt_dp_load()
     * there is no interface, so no packet gets as far as either, and the
     * load sets every one (their defaults live in the config's model). */
    return dp;
}

void rt_dp_free(struct rt_dp *dp)
{
    if (!dp)
        return;
    io_free(dp);
    ct_destroy(&dp->ct);
    nat_maps_destroy(&dp->nm);
    pm_free(&dp->pm);
    host_destroy(&dp->hosts);
    free(dp->fib.routes);
    free(dp->routes6);
    free(dp->npt6);
    free(dp->masq6);
    free(dp->nat);
    free(dp->dnat);
    free(dp->lb_slots);
    free(dp->lb_conns);
    free(dp->lb_backends);
    free(dp->nat_pool);
    free(dp->fw);
    free(dp->fw_counts);
    free(dp->slots);
    free(dp->pkts);
    free(dp->ev.ev);
    free(dp->cap.rec);
    free(dp->cap.data);
    pthread_mutex_destroy(&dp->lock);
    free(dp);
}

const char *rt_dp_error(const struct rt_dp *dp)
{
    return dp->error;
}

/* The tables of one load, built and checked before any is swapped in. */
struct staged {
    struct fib_route *routes;
    struct dp_route6 *routes6;
    struct dp_npt6 *npt6;
    struct dp_masq6 *masq6;
    struct dp_nat_rule *nat;
    struct rt_dnat_cfg *dnat;
    struct rt_lb_slot *lb;
    uint64_t *lbc;
    struct rt_lb_slot *lbb;
    rt_be32 *pool;
    struct rt_fw_rule *fw;
    uint64_t *fwc;
    uint8_t fw_states;
};

static void staged_free(struct staged *s)
{
    free(s->routes);
    free(s->routes6);
    free(s->npt6);
    free(s->masq6);
    free(s->nat);
    free(s->dnat);
    free(s->lb);
    free(s->lbc);
    free(s->lbb);
    free(s->pool);
    free(s->fw);
    free(s->fwc);
}

/* Sets the load error; returns -1. */
__attribute__((format(printf, 2, 3))) static int fail(struct rt_dp *dp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dp->error, sizeof dp->error, fmt, ap);
    va_end(ap);
    return -1;
}

/* An array of 'n' zeroed elements of 'size' (at least one, so that an
 * empty table is not mistaken for a failed allocation). */
static void *table(uint32_t n, size_t size)
{
    return calloc(n ? n : 1, size);
}

static uint32_t plen_mask(uint32_t plen)
{
    return plen == 0 ? 0 : 0xffffffffu << (32 - plen);
}

static int check_params(struct rt_dp *dp, const struct rt_tables *t)
{
    if (t->n_ifaces > RT_MAX_IFACES)
        return fail(dp, "too many interfaces: %u > %u", t->n_ifaces, RT_MAX_IFACES);
    if (t->n_zones == 0 || t->n_zones > RT_MAX_ZONES)
        return fail(dp, "zone count %u not in 1..%u", t->n_zones, RT_MAX_ZONES);
    if (t->n_timeouts != RT_N_TIMEOUTS)
        return fail(dp, "%u timeouts given, %u expected", t->n_timeouts, RT_N_TIMEOUTS);
    if (t->port_min == 0 || t->port_min > t->port_max || t->port_max > 65535)
        return fail(dp, "bad NAT port range %u-%u", t->port_min, t->port_max);
    if (t->nat_filtering > RT_FILTER_EIF)
        return fail(dp, "bad NAT filtering %u", t->nat_filtering);
    if (t->tcp_max_retrans < 1 || t->tcp_max_retrans > 15)
        return fail(dp, "tcp_max_retrans %u not in 1..15", t->tcp_max_retrans);
    if (t->src_prefix6 > 128)
        return fail(dp, "src_prefix6 %u not in 0..128", t->src_prefix6);
    if (t->src_share > 100)
        return fail(dp, "src_share %u not in 0..100", t->src_share);
    uint32_t hosts = 0;
    for (uint32_t i = 0; i < t->n_ifaces; i++) {
        uint32_t f = t->ifaces[i].flags;
        if (f & ~(uint32_t)(RT_IF_VNET_HDR | RT_IF_SERVICES | RT_IF_HOST))
            return fail(dp, "interface %u: unknown flags %#x", i, f);
        if ((f & RT_IF_SERVICES) && (f & RT_IF_HOST))
            return fail(dp, "interface %u: the host link cannot offer services", i);
        if ((f & RT_IF_HOST) && ++hosts > 1)
            return fail(dp, "interface %u: a second host link", i);
        if (t->ifaces[i].zone >= t->n_zones)
            return fail(dp, "interface %u: zone %u out of range", i, t->ifaces[i].zone);
        if (t->ifaces[i].mtu < 68 || t->ifaces[i].mtu > dp->slot_size)
            return fail(dp, "interface %u: mtu %u not in 68..%u", i, t->ifaces[i].mtu,
                        dp->slot_size);
    }
    return 0;
}

static int load_masq6(struct rt_dp *dp, const struct rt_tables *t, struct staged *s)
{
    for (uint32_t i = 0; i < t->n_masq6; i++) {
        const struct rt_masq6_cfg *c = &t->masq6[i];
        if (c->src_plen > 128 || c->out_iface < 0 || (uint32_t)c->out_iface >= t->n_ifaces)
            return fail(dp, "NAT66 rule %u: prefix length %u or interface %d out of range", i,
                        c->src_plen, c->out_iface);
        if (!t->ifaces[c->out_iface].has_addr6)
            return fail(dp, "NAT66 rule %u: interface %d has no IPv6 address", i,
                        c->out_iface);
        memcpy(s->masq6[i].src, c->src_prefix, 16);
        s->masq6[i].plen = c->src_plen;
        s->masq6[i].out_iface = c->out_iface;
    }
    return 0;
}

static int load_npt6(struct rt_dp *dp, const struct rt_tables *t, struct staged *s)
{
    for (uint32_t i = 0; i < t->n_npt6; i++) {
        const struct rt_npt6_cfg *c = &t->npt6[i];
        if (c->plen == 0 || c->plen > 48 || c->iface < 0 || (uint32_t)c->iface >= t->n_ifaces)
            return fail(dp, "NPTv6 rule %u: prefix length must be 1..48, interface valid", i);
        memcpy(s->npt6[i].inside, c->inside, 16);
        memcpy(s->npt6[i].outside, c->outside, 16);
        s->npt6[i].plen = c->plen;
        s->npt6[i].iface = c->iface;
        dp_npt6_prepare(&s->npt6[i]);
    }
    return 0;
}

/* IPv6 routes, longest prefix first (insertion sort: a few dozen). */
static int load_routes6(struct rt_dp *dp, const struct rt_tables *t, struct staged *s)
{
    for (uint32_t i = 0; i < t->n_routes6; i++) {
        const struct rt_route6_cfg *r = &t->routes6[i];
        if (r->plen > 128 || r->iface < 0 || (uint32_t)r->iface >= t->n_ifaces)
            return fail(dp, "IPv6 route %u: bad prefix length or interface", i);
        uint32_t j = i;
        while (j > 0 && s->routes6[j - 1].plen < r->plen) {
            s->routes6[j] = s->routes6[j - 1];
            j--;
        }
        memcpy(s->routes6[j].prefix, r->prefix, 16);
        s->routes6[j].plen = r->plen;
        s->routes6[j].iface = r->iface;
    }
    return 0;
}

static int load_dnat(struct rt_dp *dp, const struct rt_tables *t, struct staged *s)
{
    for (uint32_t i = 0; i < t->n_dnat; i++) {
        const struct rt_dnat_cfg *d = &t->dnat[i];
        if (d->proto != IPPROTO_TCP_ && d->proto != IPPROTO_UDP_)
            return fail(dp, "port forward %u: protocol %u is not TCP or UDP", i, d->proto);
        if (d->port_min == 0 || d->port_min > d->port_max ||
            (uint32_t)d->to_port + (d->port_max - d->port_min) > 65535 || d->to_port == 0)
            return fail(dp, "port forward %u: bad port range", i);
        if (d->addr == 0 || (d->to_addr == 0 && d->lb_size == 0))
            return fail(dp, "port forward %u: missing address", i);
        if (d->lb_size && ((uint64_t)d->lb_first + d->lb_size > t->n_lb_slots ||
                           d->port_min != d->port_max))
            return fail(dp, "load balancer %u: bad slot range or port range", i);
        s->dnat[i] = *d;
    }
    return 0;
}

static int load_fw(struct rt_dp *dp, const struct rt_tables *t, struct staged *s)
{
    s->fw = table(t->n_fw_rules, sizeof *s->fw);
    s->fwc = table(2 * t->n_fw_rules, sizeof *s->fwc);
    if (!s->fw || !s->fwc)
        return fail(dp, "out of memory");
    if (t->input_policy > RT_FW_REJECT)
        return fail(dp, "bad input policy %u", t->input_policy);
    for (uint32_t i = 0; i < t->n_fw_rules; i++) {
        const struct rt_fw_rule *r = &t->fw_rules[i];
        if (r->chain > RT_FW_INPUT || r->action > RT_FW_REJECT ||
            r->src_plen > (r->family == 6 ? 128 : 32) ||
            r->dst_plen > (r->family == 6 ? 128 : 32) ||
            r->from_zone >= (int32_t)t->n_zones || r->to_zone >= (int32_t)t->n_zones ||
            r->port_min > r->port_max ||
            (r->states & ~(RT_FW_NEW | RT_FW_ESTABLISHED | RT_FW_RELATED)))
            return fail(dp, "firewall rule %u: field out of range", i);
        s->fw[i] = *r;
        s->fw_states |= r->states;
    }
    return 0;
}

static int load_lb(struct rt_dp *dp, const struct rt_tables *t, struct staged *s)
{
    s->lb = table(t->n_lb_slots, sizeof *s->lb);
    s->lbc = table(t->n_backends, sizeof *s->lbc);
    s->lbb = table(t->n_backends, sizeof *s->lbb);
    if (!s->lb || !s->lbc || !s->lbb)
        return fail(dp, "out of memory");
    for (uint32_t i = 0; i < t->n_lb_slots; i++) {
        if (t->lb_slots[i].backend >= t->n_backends || t->lb_slots[i].addr == 0 ||
            t->lb_slots[i].port == 0)
            return fail(dp, "load balancer slot %u: bad backend", i);
        s->lb[i] = t->lb_slots[i];
        s->lbb[t->lb_slots[i].backend] = t->lb_slots[i];
    }
    return 0;
}

static int load_routes(struct rt_dp *dp, const struct rt_tables *t, struct staged *s)
{
    for (uint32_t i = 0; i < t->n_routes; i++) {
        const struct rt_route_cfg *c = &t->routes[i];
        if (c->plen > 32)
            return fail(dp, "route %u: prefix length %u", i, c->plen);
        if (c->iface < 0 || (uint32_t)c->iface >= t->n_ifaces)
            return fail(dp, "route %u: interface %d out of range", i, c->iface);
        struct fib_route *r = &s->routes[i];
        r->mask = plen_mask(c->plen);
        r->prefix = ntohl(c->prefix) & r->mask;
        r->plen = (uint8_t)c->plen;
        r->iface = c->iface;
        r->gateway = c->gateway;
    }
    fib_sort(s->routes, t->n_routes);
    return 0;
}

static int load_nat(struct rt_dp *dp, const struct rt_tables *t, struct staged *s)
{
    for (uint32_t i = 0; i < t->n_nat; i++) {
        const struct rt_nat_cfg *c = &t->nat[i];
        struct dp_nat_rule *n = &s->nat[i];
        if (c->src_plen > 32)
            return fail(dp, "nat rule %u: prefix length %u", i, c->src_plen);
        if (c->out_iface >= (int32_t)t->n_ifaces || c->out_iface < -1)
            return fail(dp, "nat rule %u: interface %d out of range", i, c->out_iface);
        n->src_mask = plen_mask(c->src_plen);
        n->src_prefix = ntohl(c->src_prefix) & n->src_mask;
        n->out_iface = c->out_iface;
        n->to_addr = c->to_addr;
        if (c->pool_size && (uint64_t)c->pool_first + c->pool_size > t->n_nat_pool)
            return fail(dp, "nat rule %u: pool out of range", i);
        n->pool_first = c->pool_first;
        n->pool_size = c->pool_size;
    }
    s->pool = table(t->n_nat_pool, sizeof *s->pool);
    if (!s->pool)
        return fail(dp, "out of memory");
    for (uint32_t i = 0; i < t->n_nat_pool; i++) {
        if (t->nat_pool[i] == 0)
            return fail(dp, "nat pool address %u is 0.0.0.0", i);
        s->pool[i] = t->nat_pool[i];
    }
    return 0;
}

/* Every table checked into 's', in the order their errors are reported. */
static int load_all(struct rt_dp *dp, const struct rt_tables *t, struct staged *s)
{
    if (check_params(dp, t) != 0)
        return -1;
    s->routes = table(t->n_routes, sizeof *s->routes);
    s->routes6 = table(t->n_routes6, sizeof *s->routes6);
    s->nat = table(t->n_nat, sizeof *s->nat);
    s->dnat = table(t->n_dnat, sizeof *s->dnat);
    s->npt6 = table(t->n_npt6, sizeof *s->npt6);
    s->masq6 = table(t->n_masq6, sizeof *s->masq6);
    if (!s->routes || !s->routes6 || !s->npt6 || !s->masq6 || !s->nat || !s->dnat)
        return fail(dp, "out of memory");
    if (load_masq6(dp, t, s) || load_npt6(dp, t, s) || load_routes6(dp, t, s) ||
        load_dnat(dp, t, s) || load_fw(dp, t, s) || load_lb(dp, t, s) ||
        load_routes(dp, t, s) || load_nat(dp, t, s))
        return -1;
    return 0;
}

/*
 * The new interfaces.  An interface is known by its descriptor: it keeps
 * its counters when interfaces are added, removed or reordered, and
 * fragments on their way (and a capture) follow it, or are dropped with it.
 */
static void swap_ifaces(struct rt_dp *dp, const struct rt_tables *t)
{
    struct dp_iface old_if[RT_MAX_IFACES];
    uint32_t old_n = dp->n_ifaces;
    memcpy(old_if, dp->ifaces, sizeof old_if);
    int16_t remap[RT_MAX_IFACES];
    for (uint32_t j = 0; j < old_n; j++) {
        remap[j] = -1;
        for (uint32_t i = 0; i < t->n_ifaces; i++)
            if (old_if[j].fd >= 0 && t->ifaces[i].fd == old_if[j].fd)
                remap[j] = (int16_t)i;
    }
    for (uint32_t j = old_n; j < RT_MAX_IFACES; j++)
        remap[j] = -1;
    dp->host_iface = -1;
    frag_remap_ifaces(&dp->frag, remap);
    if (dp->cap.ifaces) {
        uint64_t mask = 0;
        for (uint32_t j = 0; j < old_n; j++)
            if ((dp->cap.ifaces >> j & 1) && remap[j] >= 0)
                mask |= 1ull << remap[j];
        dp->cap.ifaces = mask;
    }
    for (uint32_t i = 0; i < t->n_ifaces; i++) {
        struct dp_iface *d = &dp->ifaces[i];
        const struct rt_iface_cfg *c = &t->ifaces[i];
        memset(&d->st, 0, sizeof d->st);
        for (uint32_t j = 0; j < old_n; j++)
            if (remap[j] == (int16_t)i)
                d->st = old_if[j].st;
        d->fd = c->fd;
        d->addr = c->addr;
        d->mtu = c->mtu;
        d->zone = c->zone;
        d->flags = c->flags;
        d->rp_filter = c->rp_filter;
        memcpy(d->addr6, c->addr6, 16);
        d->has_addr6 = c->has_addr6 != 0;
        if (c->flags & RT_IF_HOST)
            dp->host_iface = (int16_t)i;
    }
    dp->n_ifaces = t->n_ifaces;
}

/* Frees the old array at 'slot' and puts 'new_' there. */
#define SWAP(slot, new_)                                                       \
    do {                                                                       \
        free(slot);                                                            \
        (slot) = (new_);                                                       \
    } while (0)

static void swap_tables(struct rt_dp *dp, const struct rt_tables *t, const struct staged *s)
{
    SWAP(dp->routes6, s->routes6);
    dp->n_routes6 = t->n_routes6;
    SWAP(dp->npt6, s->npt6);
    dp->n_npt6 = t->n_npt6;
    SWAP(dp->masq6, s->masq6);
    dp->n_masq6 = t->n_masq6;
    SWAP(dp->fib.routes, s->routes);
    dp->fib.n = t->n_routes;
    SWAP(dp->nat, s->nat);
    dp->n_nat = t->n_nat;
    SWAP(dp->dnat, s->dnat);
    dp->n_dnat = t->n_dnat;
    SWAP(dp->fw, s->fw);
    dp->n_fw = t->n_fw_rules;
    SWAP(dp->fw_counts, s->fwc);
    dp->fw_states = s->fw_states;
    SWAP(dp->nat_pool, s->pool);
    dp->n_nat_pool = t->n_nat_pool;
    SWAP(dp->lb_slots, s->lb);
    dp->n_lb_slots = t->n_lb_slots;
    SWAP(dp->lb_conns, s->lbc);
    SWAP(dp->lb_backends, s->lbb);
    dp->n_backends = t->n_backends;
}

/* The firewall's scalars: input policy, per-source limits, ICMP rate. */
static void set_firewall(struct rt_dp *dp, const struct rt_tables *t)
{
    dp->input_policy = (uint8_t)t->input_policy;
    dp->src_conn_cap = t->src_conn_cap;
    dp->src_new_rate = t->src_new_rate;
    dp->src_share_cap = t->src_share ? (uint32_t)((uint64_t)dp->ct.capacity * t->src_share / 100)
                                     : 0;
    if (t->src_share && dp->src_share_cap == 0)
        dp->src_share_cap = 1;
    uint32_t prefix6 = t->src_prefix6 ? t->src_prefix6 : 128;
    if (prefix6 != dp->src_prefix6)
        dp_forget_ipv6_sources(dp);
    dp->src_prefix6 = prefix6;
    if (dp->icmp_rate != t->icmp_rate) {
        dp->icmp_rate = t->icmp_rate;
        dp->icmp_tokens = (uint64_t)t->icmp_rate * 1000; /* start full */
        dp->icmp_refill_ms = dp->now_ms;
    }
    dp->n_zones = t->n_zones;
    memset(dp->zone_policy, 0, sizeof dp->zone_policy);
    for (uint32_t a = 0; a < t->n_zones; a++)
        for (uint32_t b = 0; b < t->n_zones; b++)
            dp->zone_policy[a][b] = t->zone_policy[a * t->n_zones + b] != 0;
}

/* The tracker's and NAT's knobs. */
static void set_tracking(struct rt_dp *dp, const struct rt_tables *t)
{
    for (uint32_t i = 0; i < RT_N_TIMEOUTS; i++)
        dp->ctp.timeout_ms[i] = (uint64_t)t->timeouts[i] * 1000;
    dp->ctp.tcp_loose = (t->flags & RT_F_TCP_LOOSE) != 0;
    dp->ctp.tcp_liberal = (t->flags & RT_F_TCP_LIBERAL) != 0;
    dp->ctp.tcp_max_retrans = (uint8_t)t->tcp_max_retrans;
    dp->l4_csum = (t->flags & RT_F_L4_CSUM) != 0;
    dp->np.port_min = (uint16_t)t->port_min;
    dp->np.port_max = (uint16_t)t->port_max;
    dp->np.preserve_ports = (t->flags & RT_F_PRESERVE_PORTS) != 0;
    dp->np.eim = (t->flags & RT_F_EIM) != 0;
    dp->np.filtering = (uint8_t)t->nat_filtering;
}

int rt_dp_load(struct rt_dp *dp, const struct rt_tables *t)
{
    struct staged s;
    memset(&s, 0, sizeof s);
    dp->error[0] = 0;
    if (load_all(dp, t, &s) != 0) {
        staged_free(&s);
        return -1;
    }
    /* Everything checked: swap in. */
    swap_ifaces(dp, t);
    swap_tables(dp, t, &s);
    set_firewall(dp, t);
    set_tracking(dp, t);
    return 0;
}
