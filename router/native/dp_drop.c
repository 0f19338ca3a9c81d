/*
 * dp_drop.c - drops with their reasons, and the events the control plane
 * reads: sampled DROP events (rate-limited) and connection NEW, UPDATE and
 * DESTROY events.
 *
 * Every drop in the data plane goes through dp_drop(): one counter per
 * reason (RT_DROP_REASONS in rt_types.h), the input interface's rx_dropped,
 * and for the reasons the operator asked to see, a DROP event built from
 * the packet's bytes.
 */
#include <string.h>
#include <arpa/inet.h>
#include "dp.h"
#include "wire.h"

/* Takes a token of the drop-sampling bucket: false when over the rate. */
static bool drop_sample_allowed(struct rt_dp *dp)
{
    uint64_t cap = (uint64_t)dp->drop_rate * 1000;
    uint64_t now = dp->now_ms;
    if (now > dp->drop_refill_ms) {
        dp->drop_tokens += (now - dp->drop_refill_ms) * dp->drop_rate;
        dp->drop_refill_ms = now;
    }
    if (dp->drop_tokens > cap)
        dp->drop_tokens = cap;
    if (dp->drop_tokens < 1000) {
        dp->ev.lost[RT_EV_RATE_LIMITED]++;
        return false;
    }
    dp->drop_tokens -= 1000;
    return true;
}

/* A DROP event for 'p': what its headers say, read again from the bytes
 * (the parse may not have happened, or not to the end). */
static void sample_drop(struct rt_dp *dp, const struct rt_pkt *p,
                        enum rt_drop_reason r, int rule)
{
    if (!drop_sample_allowed(dp))
        return;
    struct rt_event *e = ev_push(&dp->ev, RT_EV_DROP);
    if (!e)
        return;
    e->reason = (uint16_t)r;
    e->iface = (int16_t)p->in_iface;
    e->rule = (int16_t)rule;
    const uint8_t *d = p->data;
    if (p->len < IP4_HDR_MIN || (d[0] >> 4) != 4) {
        e->ct.family = p->len && (d[0] >> 4) == 6 ? 6 : 0;
        return;
    }
    uint32_t ihl = (uint32_t)(d[0] & 0xf) * 4;
    e->ct.family = 4;
    e->ct.proto = d[IP4_OFF_PROTO];
    memcpy(e->ct.src[0], d + IP4_OFF_SRC, 4);
    memcpy(e->ct.dst[0], d + IP4_OFF_DST, 4);
    bool first = (wire_h16(d + IP4_OFF_FRAG) & IP4_FRAG_OFFSET) == 0;
    if (!first || ihl < IP4_HDR_MIN || p->len < ihl + 8)
        return;
    const uint8_t *l4 = d + ihl;
    if (e->ct.proto == IPPROTO_TCP_ || e->ct.proto == IPPROTO_UDP_) {
        e->ct.sport[0] = wire_h16(l4);
        e->ct.dport[0] = wire_h16(l4 + 2);
        if (e->ct.proto == IPPROTO_TCP_ && p->len >= ihl + TCP_HDR_MIN)
            e->tcp_flags = l4[TCP_OFF_FLAGS];
    } else if (e->ct.proto == IPPROTO_ICMP_) {
        e->ct.sport[0] = wire_h16(l4 + 4);
        e->ct.dport[0] = (uint16_t)(l4[0] << 8 | l4[1]);
    }
}

void dp_drop_rule(struct rt_dp *dp, struct rt_pkt *p, enum rt_drop_reason r,
                  int rule)
{
    p->reason = (uint16_t)r;
    dp->drops[r]++;
    if (p->in_iface < dp->n_ifaces)
        dp->ifaces[p->in_iface].st.rx_dropped++;
    if (dp->drop_sample && ((dp->drop_sample >> r) & 1))
        sample_drop(dp, p, r, rule);
}

void dp_drop(struct rt_dp *dp, struct rt_pkt *p, enum rt_drop_reason r)
{
    dp_drop_rule(dp, p, r, -1);
}

void dp_ct_fill(const struct rt_dp *dp, const struct ct_conn *c,
                struct rt_ct_entry *e, uint64_t now_ms)
{
    memset(e, 0, sizeof *e);
    e->slot = ct_slot(&dp->ct, c);
    e->family = c->tuple[0].family;
    e->proto = c->tuple[0].proto;
    e->state = c->tuple[0].proto == IPPROTO_TCP_ ? c->state : 0;
    e->status = c->status;
    for (unsigned d = 0; d < CT_DIRS; d++) {
        memcpy(e->src[d], c->tuple[d].src.b, 16);
        memcpy(e->dst[d], c->tuple[d].dst.b, 16);
        e->sport[d] = ntohs(c->tuple[d].sport);
        e->dport[d] = ntohs(c->tuple[d].dport);
        e->packets[d] = ct_packets(c, (enum ct_dir)d);
        e->bytes[d] = c->bytes[d];
    }
    e->timeout_ms = ct_time_left(c, now_ms);
    e->age_ms = ct_age(c, now_ms);
    if (e->proto == IPPROTO_TCP_) {
        const struct ct_tcp_win *w = ct_tcp_win(&dp->ct, c);
        for (unsigned d = 0; d < CT_DIRS; d++) {
            e->tcp_end[d] = w->end[d];
            e->tcp_maxend[d] = w->maxend[d];
            e->tcp_maxwin[d] = w->maxwin[d];
            e->tcp_maxack[d] = w->maxack[d];
            e->tcp_scale[d] = w->scale[d];
            e->tcp_flags[d] = w->flags[d];
        }
    }
}

void dp_ct_event(struct rt_dp *dp, const struct ct_conn *c, uint8_t type)
{
    struct rt_event *e = ev_push(&dp->ev, type);
    if (e)
        dp_ct_fill(dp, c, &e->ct, dp->now_ms);
}
