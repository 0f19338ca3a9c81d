/*
 * dp_fw.c - the stateful firewall's decisions: the rules of the forward and
 * input chains (first match wins, counted per rule), and the per-source
 * limits on new connections (a token bucket per source, a cap on tracked
 * connections, and a fair share of a full table).
 */
#include <string.h>
#include <arpa/inet.h>
#include "dp.h"
#include "wire.h"

/* ---- rules ------------------------------------------------------------------ */

static bool in_prefix(rt_be32 addr, rt_be32 net, uint8_t plen)
{
    uint32_t mask = plen ? 0xffffffffu << (32 - plen) : 0;
    return ((ntohl(addr) ^ ntohl(net)) & mask) == 0;
}

/*
 * The first rule of 'chain' matching packet 'm' in conntrack state 'state'
 * (RT_FW_NEW, _ESTABLISHED or _RELATED), leaving through 'out' (-1 for the
 * input chain) towards 'dst':'dport' (after any destination NAT, and for
 * replies after undoing source NAT, as netfilter's forward chain sees
 * them), or -1.  A rule without states matches new connections only:
 * replies and related packets of accepted connections pass unless a rule
 * names those states.  dp_fw_eval() counts the match and returns the
 * rule's action.
 */
int dp_fw_match(const struct rt_dp *dp, const struct rt_pkt *p, const struct pkt_meta *m,
                uint8_t chain, int out, uint8_t state, const union rt_addr *dst,
                rt_be16 dport)
{
    uint32_t zin = dp->ifaces[p->in_iface].zone;
    uint32_t zout = out >= 0 ? dp->ifaces[out].zone : UINT32_MAX;
    uint16_t port = ntohs(dport);
    bool ported = m->proto == IPPROTO_TCP_ || m->proto == IPPROTO_UDP_;
    for (uint32_t i = 0; i < dp->n_fw; i++) {
        const struct rt_fw_rule *r = &dp->fw[i];
        if (r->chain != chain || !((r->states ? r->states : RT_FW_NEW) & state))
            continue;
        if ((r->proto && r->proto != m->proto) ||
            (r->from_zone >= 0 && (uint32_t)r->from_zone != zin) ||
            (r->to_zone >= 0 && (uint32_t)r->to_zone != zout))
            continue;
        if (r->family == 6) {
            if (m->family != 6 || !prefix_match6(m->tuple.src.b, r->src6, r->src_plen) ||
                !prefix_match6(dst->b, r->dst6, r->dst_plen))
                continue;
        } else if ((m->family == 6 && (r->src_plen || r->dst_plen)) ||
                   !in_prefix(m->tuple.src.v4, r->src, r->src_plen) ||
                   !in_prefix(dst->v4, r->dst, r->dst_plen)) {
            continue;
        }
        if (r->port_min && (!ported || m->frag == 2 || port < r->port_min ||
                            port > r->port_max))
            continue;
        if (r->icmp_type >= 0 &&
            ((m->proto != IPPROTO_ICMP_ && m->proto != IPPROTO_ICMPV6_) ||
             r->icmp_type != m->icmp_type))
            continue;
        return (int)i;
    }
    return -1;
}

int dp_fw_eval(struct rt_dp *dp, const struct rt_pkt *p,
               const struct pkt_meta *m, uint8_t chain, int out,
               uint8_t state, const union rt_addr *dst, rt_be16 dport)
{
    int i = dp_fw_match(dp, p, m, chain, out, state, dst, dport);
    if (i < 0)
        return -1;
    dp->fw_counts[2 * i]++;
    dp->fw_counts[2 * i + 1] += m->len;
    dp->fw_rule = i;
    return dp->fw[i].action;
}

/* ---- per-source limits ------------------------------------------------------ */

/* What the per-source limits count a connection from 'src' under: the
 * IPv4 address, or the IPv6 address cut to 'src_prefix6' bits. */
static void source_key(const struct rt_dp *dp, const union rt_addr *src, uint8_t family,
                       union rt_addr *key)
{
    *key = *src;
    if (family != 6 || dp->src_prefix6 >= 128)
        return;
    uint32_t full = dp->src_prefix6 / 8, rest = dp->src_prefix6 % 8;
    if (rest)
        key->b[full] &= (uint8_t)(0xff << (8 - rest));
    memset(key->b + full + (rest ? 1 : 0), 0, 16 - full - (rest ? 1 : 0));
}

enum rt_drop_reason dp_source_limits(struct rt_dp *dp, const struct pkt_meta *m,
                                     struct host_entry **host)
{
    *host = NULL;
    if (!dp->src_conn_cap && !dp->src_new_rate && !dp->src_share_cap)
        return RT_DROP_NONE;
    union rt_addr key;
    source_key(dp, &m->tuple.src, m->family, &key);
    struct host_entry *e = host_get(&dp->hosts, &key, m->family, true);
    *host = e;
    if (!e)
        return RT_DROP_NONE;
    if (dp->src_new_rate) {
        uint64_t cap = (uint64_t)dp->src_new_rate * 1000;
        uint32_t now = (uint32_t)dp->now_ms;
        uint64_t t = e->tokens == UINT32_MAX ? cap
                     : e->tokens + (uint64_t)(uint32_t)(now - e->refill_ms) *
                                       dp->src_new_rate;
        e->refill_ms = now;
        if (t > cap)
            t = cap;
        if (t < 1000) {
            e->tokens = (uint32_t)t;
            return RT_DROP_SRC_RATE_LIMIT;
        }
        e->tokens = (uint32_t)(t - 1000);
    }
    if (dp->src_conn_cap && e->conns >= dp->src_conn_cap)
        return RT_DROP_SRC_CONN_LIMIT;
    if (dp->src_share_cap && e->conns >= dp->src_share_cap)
        return RT_DROP_SRC_SHARE;
    return RT_DROP_NONE;
}

/* How many slots fair_evict() looks at, from a random one. */
#define FAIR_SCAN 64

/*
 * The table is full and 'host' wants a connection.  If it holds less than
 * its fair share (the table divided among the sources that have
 * connections), one connection of a source holding more than that goes:
 * one not yet ASSURED if the scan meets one, else an ASSURED one.  So a
 * host that filled the table with established connections cannot lock out
 * the others, and a host under its share can always connect.  Returns
 * true if an entry was evicted.
 */
bool dp_fair_evict(struct rt_dp *dp, const struct host_entry *host)
{
    struct ct_table *ct = &dp->ct;
    uint32_t sources = dp->hosts.active + (host->conns == 0);
    uint32_t fair = ct->capacity / (sources ? sources : 1);
    if (host->conns >= fair || ct->high_water == 0)
        return false;
    struct ct_conn *pick = NULL;
    uint32_t start = (uint32_t)(rng_next(&dp->rng) % ct->high_water);
    for (uint32_t n = 0; n < FAIR_SCAN && n < ct->high_water; n++) {
        struct ct_conn *c = &ct->conns[(start + n) % ct->high_water];
        if (!ct_live(c) || !(c->status & CT_HOST_COUNTED))
            continue;
        const struct ct_tuple *o = &c->tuple[CT_DIR_ORIGINAL];
        union rt_addr key;
        source_key(dp, &o->src, o->family, &key);
        const struct host_entry *e = host_get(&dp->hosts, &key, o->family, false);
        if (!e || e->conns <= fair)
            continue;
        if (!(c->status & CT_ASSURED)) {
            pick = c;
            break;
        }
        if (!pick)
            pick = c;
    }
    if (!pick)
        return false;
    ct_delete(ct, pick);
    dp->counters[RT_CNT_FAIR_EVICT]++;
    return true;
}

void dp_source_release(struct rt_dp *dp, const struct ct_conn *c)
{
    if (!(c->status & CT_HOST_COUNTED))
        return;
    const struct ct_tuple *o = &c->tuple[CT_DIR_ORIGINAL];
    union rt_addr key;
    source_key(dp, &o->src, o->family, &key);
    struct host_entry *e = host_get(&dp->hosts, &key, o->family, false);
    if (e && e->conns && --e->conns == 0 && dp->hosts.active)
        dp->hosts.active--;
}

/*
 * IPv6 sources are about to be counted under prefixes of another length:
 * the counts so far no longer name the right entries.  The connections
 * they counted stop counting (the limits apply to new connections from
 * here on), which errs on the side of letting traffic through.
 */
void dp_forget_ipv6_sources(struct rt_dp *dp)
{
    for (uint32_t i = 0; i < dp->ct.high_water; i++) {
        struct ct_conn *c = &dp->ct.conns[i];
        if ((c->status & CT_CONFIRMED) && (c->status & CT_HOST_COUNTED) &&
            c->tuple[CT_DIR_ORIGINAL].family == 6)
            c->status &= (uint16_t)~CT_HOST_COUNTED;
    }
    for (uint32_t i = 0; i < dp->hosts.high_water; i++) {
        struct host_entry *e = &dp->hosts.e[i];
        if (e->in_use && e->family == 6 && e->conns) {
            e->conns = 0;
            dp->hosts.active--;
        }
    }
}
