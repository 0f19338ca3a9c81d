/*
 * dp_track.c - connections, either family: the steps the IPv4 and IPv6
 * paths share once a packet's addresses have passed their checks.
 *
 *   tracked   route on the translated destination, TTL or hop limit and MTU,
 *             the ESTABLISHED rules, the L4 tracker, NAT rewrite, forward
 *   RELATED   an ICMP error finds the connection it quotes, is translated
 *             with it and forwarded; it neither refreshes nor ends it
 *   local     for one of the router's addresses: the input chain, echo,
 *             or from a LAN link a connection to the router's services
 *             behind the host link (delivered, not forwarded)
 *   new       the family's path picks the route and translation; the
 *             firewall's admission (rules, zone policy, per-source limits)
 *             and the two halves of opening a connection are here
 *
 * The family-specific parts are the address checks and translations of
 * dp_ip4.c and dp_ip6.c, and the next hop and forwarding in dp_fwd.h.
 */
#include <string.h>
#include "dp_fwd.h"

/* ---- opening a connection ------------------------------------------------- */

void dp_conn_abandon(struct rt_dp *dp, const struct ct_conn *c)
{
    if (c->status & CT_NAT_MAPPED)
        nat_map_release(&dp->nm, c, CT_NIL);
}

bool dp_conn_init(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                  struct ct_conn *c, struct ct_tcp_win *w, uint64_t now)
{
    memset(c, 0, sizeof *c);
    if (!ct_l4_for(m->proto)->new_conn(c, w, m, &dp->ctp) ||
        !tuple_invert(&m->tuple, &c->tuple[CT_DIR_REPLY])) {
        dp->counters[RT_CNT_INVALID]++;
        dp_drop(dp, p, m->proto == IPPROTO_TCP_ ? RT_DROP_BAD_TCP_FLAGS : RT_DROP_CT_INVALID);
        return false;
    }
    c->tuple[CT_DIR_ORIGINAL] = m->tuple;
    c->created = (uint32_t)(now >> CT_CREATED_SHIFT);
    return true;
}

struct ct_conn *dp_conn_commit(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                               struct ct_conn *c, struct ct_tcp_win *w, uint32_t hash,
                               bool reply_free, struct host_entry *host, uint64_t now)
{
    enum rt_drop_reason why = RT_DROP_NONE;
    struct ct_conn *slot = NULL;
    if (__builtin_expect(__atomic_load_n(&dp->standby, __ATOMIC_RELAXED) != 0, 0) &&
        !(c->status & (CT_TO_HOST | CT_FROM_HOST))) {
        why = RT_DROP_HA_STANDBY; /* waits for the commit of the synced table */
    } else if (ct_l4_for(m->proto)->update(c, w, m, CT_DIR_ORIGINAL, &dp->ctp, now) != CT_ACCEPT) {
        dp->counters[RT_CNT_INVALID]++;
        why = RT_DROP_CT_INVALID;
    } else {
        dp_account(c, m, CT_DIR_ORIGINAL);
        if (host && dp->src_share_cap && dp->ct.count >= dp->ct.capacity)
            dp_fair_evict(dp, host);
        slot = ct_alloc(&dp->ct, hash, now);
        if (slot) {
            *slot = *c;
            if (m->proto == IPPROTO_TCP_)
                *ct_tcp_win(&dp->ct, slot) = *w;
            if (!ct_insert(&dp->ct, slot, hash, reply_free, now))
                slot = NULL;
        }
        if (!slot)
            why = RT_DROP_CT_FULL;
    }
    if (why != RT_DROP_NONE) {
        dp_conn_abandon(dp, c);
        dp_drop(dp, p, why);
        return NULL;
    }
    if (slot->status & CT_NAT_MAPPED)
        nat_map_link(&dp->nm, slot, ct_slot(&dp->ct, slot));
    if (host) {
        if (host->conns++ == 0)
            dp->hosts.active++;
        slot->status |= CT_HOST_COUNTED;
    }
    if (dp->ct_events & (1u << RT_EV_NEW))
        dp_ct_event(dp, slot, RT_EV_NEW);
    return slot;
}

/* ---- a known connection ----------------------------------------------------- */

/* Whether a packet of 'c' travelling in direction 'dir' goes to the host
 * link: the original direction of a connection to the router's services,
 * the replies of one its own stack opened.  Not by route: such a packet may
 * be addressed to one of the router's addresses on another link. */
static inline bool to_services(const struct ct_conn *c, enum ct_dir dir)
{
    return c->status & (dir == CT_DIR_ORIGINAL ? CT_TO_HOST : CT_FROM_HOST);
}

/* What the L4 tracker made of a packet of a known connection. */
enum track_verdict {
    TRACK_FORWARD, /* state updated (or ignored): forward it */
    TRACK_DROPPED, /* INVALID: already dropped and counted */
    TRACK_REOPEN,  /* the connection is gone: treat it as new */
    TRACK_KILL,    /* forward it, then delete the connection */
};

/* Runs the tracker of 'm' on 'c' (direction 'dir'): accounting, events,
 * INVALID drops with their reasons, re-opened tuples. */
static enum track_verdict track(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                                struct ct_conn *c, enum ct_dir dir, uint64_t now)
{
    const struct ct_l4_proto *l4 = ct_l4_for(m->proto);
    uint8_t old_state = c->state;
    uint16_t old_status = c->status;
    switch (l4->update(c, ct_tcp_win(&dp->ct, c), m, dir, &dp->ctp, now)) {
    case CT_ACCEPT:
        dp_account(c, m, dir);
        if ((dp->ct_events & (1u << RT_EV_UPDATE)) &&
            (c->state != old_state || c->status != old_status))
            dp_ct_event(dp, c, RT_EV_UPDATE);
        return TRACK_FORWARD;
    case CT_IGNORE:
        dp->counters[RT_CNT_IGNORE]++;
        return TRACK_FORWARD;
    case CT_INVALID:
        dp->counters[RT_CNT_INVALID]++;
        dp_drop(dp, p, RT_DROP_CT_INVALID);
        return TRACK_DROPPED;
    case CT_OUT_OF_WINDOW:
        dp->counters[RT_CNT_INVALID]++;
        dp_drop(dp, p, RT_DROP_TCP_WINDOW);
        return TRACK_DROPPED;
    case CT_BAD_RST:
        dp->counters[RT_CNT_INVALID]++;
        dp_drop(dp, p, RT_DROP_TCP_BAD_RST);
        return TRACK_DROPPED;
    case CT_REOPEN:
        ct_delete(&dp->ct, c);
        dp->counters[RT_CNT_DELETED]++;
        return TRACK_REOPEN;
    case CT_KILL:
        dp_account(c, m, dir);
        return TRACK_KILL;
    }
    return TRACK_DROPPED; /* not reached: every verdict is handled */
}

/* The connection ICMP error 'm' quotes, with the direction of the quoted
 * packet in '*dir', if the error is addressed to that packet's sender; else
 * NULL, the error counted and dropped ('to_router': it is for one of the
 * router's addresses). */
static struct ct_conn *related_conn(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                                    bool to_router, uint64_t now, enum ct_dir *dir)
{
    struct ct_tuple key;
    struct ct_conn *c = NULL;
    if (tuple_invert(&m->inner, &key))
        c = ct_find(&dp->ct, &key, ct_hash(&dp->ct, &key), now, dir);
    /* The error must be addressed to the quoted packet's sender (tuples are
     * zeroed past an IPv4 address, so 16 bytes compare both families). */
    if (c && memcmp(c->tuple[*dir].dst.b, m->tuple.dst.b, 16) == 0)
        return c;
    if (to_router) {
        dp_drop(dp, p, RT_DROP_LOCAL_DROP);
        return NULL;
    }
    dp->counters[RT_CNT_ERROR]++;
    dp_drop(dp, p, RT_DROP_ICMP_NO_FLOW);
    return NULL;
}

/* ---- the steps both families' paths take ---------------------------------- */

bool dp_admit_new(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m, int out,
                  const union rt_addr *dst, rt_be16 dport, bool own_permission,
                  struct host_entry **host)
{
    int a = dp_fw_eval(dp, p, m, RT_FW_FORWARD, out, RT_FW_NEW, dst, dport);
    if (a == RT_FW_DROP || a == RT_FW_REJECT) {
        dp_refuse(dp, p, m, a);
        return false;
    }
    uint32_t zin = dp->ifaces[p->in_iface].zone, zout = dp->ifaces[out].zone;
    if (a < 0 && !own_permission && !dp->zone_policy[zin][zout]) {
        dp_drop(dp, p, RT_DROP_POLICY);
        return false;
    }
    enum rt_drop_reason why = dp_source_limits(dp, m, host);
    if (why != RT_DROP_NONE) {
        dp_drop(dp, p, why);
        return false;
    }
    return true;
}

bool dp_process_tracked(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                        struct ct_conn *c, enum ct_dir dir, uint64_t now)
{
    dp->counters[RT_CNT_FOUND]++;
    const union rt_addr *dst = &c->tuple[!dir].src; /* after translation */
    bool to_host = __builtin_expect(to_services(c, dir), 0);
    int out = to_host ? dp_host_hop(dp, p, m) : dp_next_hop(dp, p, m, dst);
    if (out < 0)
        return false;
    if (dp->fw_states & RT_FW_ESTABLISHED) {
        int a = dp_fw_eval(dp, p, m, RT_FW_FORWARD, out, RT_FW_ESTABLISHED, dst,
                           c->tuple[!dir].sport);
        if (a == RT_FW_DROP || a == RT_FW_REJECT) {
            dp_refuse(dp, p, m, a);
            return false;
        }
    }
    enum track_verdict t = track(dp, p, m, c, dir, now);
    if (t == TRACK_DROPPED)
        return false;
    if (t == TRACK_REOPEN)
        return true;
    nat_rewrite(m, c, dir);
    if (__builtin_expect(to_host, 0))
        dp_deliver(p, m, out);
    else
        dp_forward(dp, p, m, out);
    if (t == TRACK_KILL) {
        ct_delete(&dp->ct, c);
        dp->counters[RT_CNT_DELETED]++;
    }
    return false;
}

void dp_process_related(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint64_t now)
{
    enum ct_dir dir;
    struct ct_conn *c = related_conn(dp, p, m, dp_is_local(dp, m, &m->tuple.dst), now, &dir);
    if (!c)
        return;
    /* No error is sent about an error: a missing route is a drop.  The
     * error travels in direction 'dir' (against the packet it quotes). */
    bool to_host = to_services(c, dir);
    int out = to_host ? dp_host_hop(dp, p, m) : dp_next_hop(dp, p, m, &c->tuple[!dir].src);
    if (out < 0)
        return;
    if (dp->fw_states & RT_FW_RELATED) {
        int a = dp_fw_eval(dp, p, m, RT_FW_FORWARD, out, RT_FW_RELATED,
                           &c->tuple[!dir].src, 0);
        if (a == RT_FW_DROP || a == RT_FW_REJECT) {
            dp_refuse(dp, p, m, a);
            return;
        }
    }
    /* An error neither refreshes nor ends the connection (RFC 5508 REQ-6,
     * RFC 5382 REQ-10). */
    dp->counters[RT_CNT_RELATED]++;
    nat_rewrite_icmp_error(m, c, dir);
    if (to_host)
        dp_deliver(p, m, out);
    else
        dp_forward(dp, p, m, out);
}

/* A new connection to the router's services: the host link gets it as it
 * is, and its replies come back from there with the router's address. */
static void open_to_services(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                             uint32_t hash, uint64_t now)
{
    int out = dp_host_hop(dp, p, m);
    if (out < 0)
        return;
    struct host_entry *host;
    enum rt_drop_reason why = dp_source_limits(dp, m, &host);
    if (why != RT_DROP_NONE) {
        dp_drop(dp, p, why);
        return;
    }
    struct ct_conn c;
    struct ct_tcp_win w;
    if (!dp_conn_init(dp, p, m, &c, &w, now))
        return;
    c.status |= CT_TO_HOST;
    if (dp_conn_commit(dp, p, m, &c, &w, hash, false, host, now))
        dp_deliver(p, m, out);
}

void dp_process_local(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint32_t hash,
                      uint64_t now)
{
    int a = dp_fw_eval(dp, p, m, RT_FW_INPUT, -1, RT_FW_NEW, &m->tuple.dst,
                       m->tuple.dport);
    if (a < 0)
        a = dp->input_policy;
    if (a != RT_FW_ACCEPT) {
        dp_refuse(dp, p, m, a);
        return;
    }
    if (m->frag) { /* nothing here reassembles */
        dp_drop(dp, p, RT_DROP_FRAGMENT);
        return;
    }
    if ((m->family == 6 && m->proto == IPPROTO_ICMPV6_ && m->icmp_type == ICMP6_ECHO_REQUEST) ||
        (m->family == 4 && m->proto == IPPROTO_ICMP_ && m->icmp_type == ICMP_ECHO)) {
        dp_drop(dp, p, RT_DROP_LOCAL);
        dp_echo_reply(dp, p, m);
        return;
    }
    /* Services are offered on the links that say so (the LAN's), never
     * on the others (the WAN's), whatever the input chain says. */
    if (dp->host_iface >= 0 && (dp->ifaces[p->in_iface].flags & RT_IF_SERVICES)) {
        open_to_services(dp, p, m, hash, now);
        return;
    }
    dp_drop(dp, p, RT_DROP_LOCAL_DROP);
}

void dp_on_ct_delete(void *ctx, const struct ct_conn *c)
{
    struct rt_dp *dp = ctx;
    if (dp->ct_events & (1u << RT_EV_DESTROY))
        dp_ct_event(dp, c, RT_EV_DESTROY);
    if (c->status & CT_NAT_MAPPED)
        nat_map_release(&dp->nm, c, ct_slot(&dp->ct, c));
    dp_source_release(dp, c);
}
