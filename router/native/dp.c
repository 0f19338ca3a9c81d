/*
 * dp.c - the per-packet pipeline.
 *
 * Theory of operation.  For each packet of a batch:
 *
 *   parse -> sanity of addresses -> ICMP error? (RELATED path)
 *         -> conntrack lookup
 *              hit:  route on the translated destination, TTL and MTU
 *                    checks, L4 state update, NAT rewrite, forward
 *              miss: local destination? (echo answered, rest counted)
 *                    route, TTL and MTU checks, zone policy for NEW,
 *                    L4 "may this open a connection", NAT binding,
 *                    insert, rewrite, forward
 *
 * TTL and MTU are checked before the state changes, so a packet that will
 * be dropped leaves no trace in the table; and an ICMP error the router
 * sends quotes the packet as it arrived.  Every drop is counted under one
 * reason; a packet that is dropped but answered (time exceeded, fragmentation
 * needed, unreachable, echo reply) leaves with out_iface set and a reason.
 *
 * Nothing here allocates, blocks or calls the system: see io.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include "dp.h"
#include "csum.h"
#include "wire.h"


static_assert(RT_TCPF_WINDOW_SCALE == CT_TCPF_WINDOW_SCALE &&
                  RT_TCPF_SACK_PERM == CT_TCPF_SACK_PERM &&
                  RT_TCPF_BE_LIBERAL == CT_TCPF_BE_LIBERAL &&
                  RT_TCPF_DATA_UNACK == CT_TCPF_DATA_UNACK &&
                  RT_TCPF_MAXACK_SET == CT_TCPF_MAXACK_SET,
              "rt.h and ct.h TCP window flags agree");
/* ICMP errors quote at most this much, so that they fit 576 bytes
 * (RFC 1812 4.3.2.3). */
#define ICMP_ERR_MAX 576
#define ICMP_TTL 64

static const char *const drop_names[] = {
#define X(name, str) str,
    RT_DROP_REASONS(X)
#undef X
};
static const char *const counter_names[] = {
#define X(name, str) str,
    RT_COUNTERS(X)
#undef X
};
static const char *const timeout_names[] = {
#define X(name, str, secs) str,
    RT_TIMEOUTS(X)
#undef X
};
static const uint32_t timeout_defaults[] = {
#define X(name, str, secs) secs,
    RT_TIMEOUTS(X)
#undef X
};
static const char *const tcp_state_names[] = {
#define X(name) #name,
    RT_TCP_STATES(X)
#undef X
};

/* ---- addresses ---------------------------------------------------------- */

static bool is_local(const struct rt_dp *dp, rt_be32 a)
{
    for (uint32_t i = 0; i < dp->n_ifaces; i++)
        if (dp->ifaces[i].addr == a && a != 0)
            return true;
    return false;
}

/* Sources no host may use (RFC 1122 3.2.1.3, RFC 5735). */
static bool martian_src(uint32_t s)
{
    uint8_t top = (uint8_t)(s >> 24);
    return top == 0 || top == 127 || top >= 224;
}

/* ---- sending ICMP ------------------------------------------------------- */

static void ip4_header(struct rt_dp *dp, uint8_t *ip, uint32_t total,
                       rt_be32 src, rt_be32 dst)
{
    ip[IP4_OFF_VER_IHL] = 0x45;
    ip[IP4_OFF_TOS] = 0;
    wire_put_be16(ip + IP4_OFF_TOTLEN, htons((uint16_t)total));
    wire_put_be16(ip + IP4_OFF_ID, htons(dp->ip_id++));
    wire_put_be16(ip + IP4_OFF_FRAG, 0);
    ip[IP4_OFF_TTL] = ICMP_TTL;
    ip[IP4_OFF_PROTO] = IPPROTO_ICMP_;
    wire_put_be16(ip + IP4_OFF_CSUM, 0);
    wire_put_be32(ip + IP4_OFF_SRC, src);
    wire_put_be32(ip + IP4_OFF_DST, dst);
    wire_put_be16(ip + IP4_OFF_CSUM, csum_full(ip, IP4_HDR_MIN));
}

void dp_clear_offload(struct rt_pkt *p)
{
    p->csum_flags = 0;
    p->gso_type = RT_GSO_NONE;
    p->gso_size = 0;
    p->hdr_len = 0;
    p->csum_start = 0;
    p->csum_offset = 0;
}

/*
 * Token bucket for the errors and resets the router sends (RFC 1812
 * 4.3.2.8): 'icmp_rate' per second, bursts of as many.  Returns false, and
 * counts it, when the bucket is empty.
 */
bool dp_icmp_allowed(struct rt_dp *dp)
{
    if (!dp->icmp_rate)
        return true;
    uint64_t cap = (uint64_t)dp->icmp_rate * 1000;
    uint64_t dt = dp->now_ms - dp->icmp_refill_ms;
    dp->icmp_refill_ms = dp->now_ms;
    uint64_t add = dt * dp->icmp_rate;
    dp->icmp_tokens = add >= cap || dp->icmp_tokens + add >= cap ? cap
                                                                  : dp->icmp_tokens + add;
    if (dp->icmp_tokens < 1000) {
        dp->counters[RT_CNT_ICMP_RATE_LIMITED]++;
        return false;
    }
    dp->icmp_tokens -= 1000;
    return true;
}

/* Routes a packet the router originates to 'dst'; -1 if no route. */
static int route_out(struct rt_dp *dp, rt_be32 dst)
{
    const struct fib_route *r = fib_lookup(&dp->fib, dst);
    return r ? r->iface : -1;
}

/*
 * Replaces the packet in 'p' by an ICMP error of 'type'/'code' about it,
 * addressed to its source (RFC 792, RFC 1812 4.3.2).  'info' fills the
 * second word (the next-hop MTU for "fragmentation needed").  Never answers
 * an ICMP error, a packet from a non-unicast source, or when the link has
 * no address to send from.
 */
static void send_icmp_error(struct rt_dp *dp, struct rt_pkt *p,
                            const struct pkt_meta *m, uint8_t type,
                            uint8_t code, uint32_t info)
{
    rt_be32 src = dp->ifaces[p->in_iface].addr;
    rt_be32 dst = m->tuple.src.v4;
    if (m->icmp_error || src == 0 || martian_src(ntohl(dst)) || !dp_icmp_allowed(dp))
        return;
    uint32_t room = p->cap < ICMP_ERR_MAX ? p->cap : ICMP_ERR_MAX;
    if (room < IP4_HDR_MIN + ICMP_HDR_LEN + m->l3_len + 8u)
        return;
    uint32_t quote = m->len;
    if (quote > room - IP4_HDR_MIN - ICMP_HDR_LEN)
        quote = room - IP4_HDR_MIN - ICMP_HDR_LEN;
    int out = route_out(dp, dst);
    if (out < 0)
        return;
    /* The quote moves 28 bytes up: memmove handles the overlap. */
    memmove(p->data + IP4_HDR_MIN + ICMP_HDR_LEN, p->data, quote);
    uint32_t total = IP4_HDR_MIN + ICMP_HDR_LEN + quote;
    ip4_header(dp, p->data, total, src, dst);
    uint8_t *icmp = p->data + IP4_HDR_MIN;
    icmp[ICMP_OFF_TYPE] = type;
    icmp[ICMP_OFF_CODE] = code;
    wire_put_be16(icmp + ICMP_OFF_CSUM, 0);
    wire_put_be32(icmp + 4, htonl(info));
    wire_put_be16(icmp + ICMP_OFF_CSUM,
                  csum_full(icmp, ICMP_HDR_LEN + quote));
    p->len = total;
    p->out_iface = (int16_t)out;
    dp_clear_offload(p);
    dp->counters[RT_CNT_ICMP_SENT]++;
}

/* Answers an echo request addressed to the router, in place. */
static void send_echo_reply(struct rt_dp *dp, struct rt_pkt *p,
                            const struct pkt_meta *m)
{
    rt_be32 me = m->tuple.dst.v4, peer = m->tuple.src.v4;
    int out = route_out(dp, peer);
    if (out < 0)
        return;
    uint8_t *icmp = p->data + m->l4_off;
    icmp[ICMP_OFF_TYPE] = ICMP_ECHO_REPLY;
    /* Type 8 -> 0 in the first word of the message. */
    csum_replace2(icmp + ICMP_OFF_CSUM, htons(ICMP_ECHO << 8),
                  htons(ICMP_ECHO_REPLY << 8));
    /* A fresh header: options are not echoed (RFC 1122 3.2.2.6 allows). */
    if (m->l3_len != IP4_HDR_MIN)
        memmove(p->data + IP4_HDR_MIN, icmp, m->l4_len);
    ip4_header(dp, p->data, IP4_HDR_MIN + m->l4_len, me, peer);
    p->len = IP4_HDR_MIN + m->l4_len;
    p->out_iface = (int16_t)out;
    dp_clear_offload(p);
    dp->counters[RT_CNT_ICMP_SENT]++;
}

/* ---- forwarding --------------------------------------------------------- */

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

/* The public form of connection 'c'. */
static void fill_entry(const struct rt_dp *dp, const struct ct_conn *c,
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

/* A NEW, UPDATE or DESTROY event for 'c'. */
void dp_ct_event(struct rt_dp *dp, const struct ct_conn *c, uint8_t type)
{
    struct rt_event *e = ev_push(&dp->ev, type);
    if (e)
        fill_entry(dp, c, &e->ct, dp->now_ms);
}

/*
 * Checks that 'm' may leave through 'out' (TTL, MTU) and answers with an
 * ICMP error if not.  Returns true if it may.
 */
static bool may_forward(struct rt_dp *dp, struct rt_pkt *p,
                        const struct pkt_meta *m, int out)
{
    if (m->ttl <= 1) {
        dp_drop(dp, p, RT_DROP_TTL_EXPIRED);
        send_icmp_error(dp, p, m, ICMP_TIME_EXCEEDED, 0, 0);
        return false;
    }
    uint32_t mtu = dp->ifaces[out].mtu;
    /* A GSO packet leaves as segments: each must fit. */
    uint32_t size = p->gso_type != RT_GSO_NONE
                        ? (uint32_t)m->l4_off + m->l4_hdr_len + p->gso_size
                        : m->len;
    if (size > mtu) {
        dp_drop(dp, p, RT_DROP_TOO_BIG);
        if (m->df)
            send_icmp_error(dp, p, m, ICMP_DEST_UNREACH,
                            ICMP_UNREACH_NEEDFRAG, mtu & 0xffff);
        return false;
    }
    return true;
}

/* Decrements the TTL (RFC 1812 5.3.1) and marks the packet for 'out'. */
static void forward(struct rt_pkt *p, const struct pkt_meta *m, int out)
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

#define account dp_account

enum dp_track dp_track(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                       struct ct_conn *c, enum ct_dir dir, uint64_t now)
{
    const struct ct_l4_proto *l4 = ct_l4_for(m->proto);
    uint8_t old_state = c->state;
    uint16_t old_status = c->status;
    switch (l4->update(c, ct_tcp_win(&dp->ct, c), m, dir, &dp->ctp, now)) {
    case CT_ACCEPT:
        dp_account(c, m, dir);
        if (dp->ct_events && (c->state != old_state || c->status != old_status))
            dp_ct_event(dp, c, RT_EV_UPDATE);
        return DP_TRACK_FORWARD;
    case CT_IGNORE:
        dp->counters[RT_CNT_IGNORE]++;
        return DP_TRACK_FORWARD;
    case CT_INVALID:
        dp->counters[RT_CNT_INVALID]++;
        dp_drop(dp, p, RT_DROP_CT_INVALID);
        return DP_TRACK_DROPPED;
    case CT_OUT_OF_WINDOW:
        dp->counters[RT_CNT_INVALID]++;
        dp_drop(dp, p, RT_DROP_TCP_WINDOW);
        return DP_TRACK_DROPPED;
    case CT_BAD_RST:
        dp->counters[RT_CNT_INVALID]++;
        dp_drop(dp, p, RT_DROP_TCP_BAD_RST);
        return DP_TRACK_DROPPED;
    case CT_REOPEN:
        ct_delete(&dp->ct, c);
        dp->counters[RT_CNT_DELETED]++;
        return DP_TRACK_REOPEN;
    case CT_KILL:
        dp_account(c, m, dir);
        return DP_TRACK_KILL;
    }
    return DP_TRACK_DROPPED; /* not reached: every verdict is handled */
}

void dp_track_kill(struct rt_dp *dp, struct ct_conn *c)
{
    ct_delete(&dp->ct, c);
    dp->counters[RT_CNT_DELETED]++;
}

/* ---- firewall ------------------------------------------------------------ */

static bool in_prefix(rt_be32 addr, rt_be32 net, uint8_t plen)
{
    uint32_t mask = plen ? 0xffffffffu << (32 - plen) : 0;
    return ((ntohl(addr) ^ ntohl(net)) & mask) == 0;
}

/*
 * The first rule of 'chain' matching packet 'm' in conntrack state 'state'
 * (RT_FW_NEW, _ESTABLISHED or _RELATED), leaving through 'out' (-1 for the
 * input chain) towards 'dst':'dport' (after any destination NAT, and for
 * replies after undoing source NAT, as netfilter's forward chain sees them).  Counts
 * the match and returns the rule's action, or -1 if no rule matches.  A rule
 * without states matches new connections only: replies and related packets
 * of accepted connections pass unless a rule names those states.
 */
/* The first rule of 'chain' that matches, or -1 (nothing counted). */
static int fw_match(const struct rt_dp *dp, const struct rt_pkt *p,
                    const struct pkt_meta *m, uint8_t chain, int out,
                    uint8_t state, const union rt_addr *dst, rt_be16 dport)
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
    int i = fw_match(dp, p, m, chain, out, state, dst, dport);
    if (i < 0)
        return -1;
    dp->fw_counts[2 * i]++;
    dp->fw_counts[2 * i + 1] += m->len;
    dp->fw_rule = i;
    return dp->fw[i].action;
}

/*
 * Answers 'm' with a TCP RST (RFC 9293 3.10.7.1), in place, as if from its
 * destination.
 */
static void send_tcp_reset(struct rt_dp *dp, struct rt_pkt *p,
                           const struct pkt_meta *m)
{
    const uint8_t *th = m->data + m->l4_off;
    uint8_t flags = m->tcp_flags;
    if ((flags & TCP_RST) || m->l4_len < TCP_HDR_MIN || p->cap < 40 ||
        !dp_icmp_allowed(dp))
        return;
    int out = route_out(dp, m->tuple.src.v4);
    if (out < 0)
        return;
    uint32_t seg = m->l4_len - m->l4_hdr_len + ((flags & TCP_SYN) ? 1 : 0) +
                   ((flags & TCP_FIN) ? 1 : 0);
    uint32_t seq = 0, ack = 0;
    uint8_t rflags = TCP_RST;
    if (flags & TCP_ACK) {
        seq = wire_h32(th + TCP_OFF_ACK);
    } else {
        ack = wire_h32(th + TCP_OFF_SEQ) + seg;
        rflags |= TCP_ACK;
    }
    rt_be16 sport = wire_be16(th + TCP_OFF_DPORT), dport = wire_be16(th + TCP_OFF_SPORT);
    rt_be32 src = m->tuple.dst.v4, dst = m->tuple.src.v4;
    uint8_t *ip = p->data;
    ip4_header(dp, ip, 40, src, dst);
    ip[IP4_OFF_PROTO] = IPPROTO_TCP_;
    wire_put_be16(ip + IP4_OFF_CSUM, 0);
    wire_put_be16(ip + IP4_OFF_CSUM, csum_full(ip, IP4_HDR_MIN));
    uint8_t *t = ip + IP4_HDR_MIN;
    memset(t, 0, TCP_HDR_MIN);
    wire_put_be16(t + TCP_OFF_SPORT, sport);
    wire_put_be16(t + TCP_OFF_DPORT, dport);
    wire_put_be32(t + TCP_OFF_SEQ, htonl(seq));
    wire_put_be32(t + TCP_OFF_ACK, htonl(ack));
    t[TCP_OFF_DOFF] = 5 << 4;
    t[TCP_OFF_FLAGS] = rflags;
    wire_put_be16(t + TCP_OFF_CSUM,
                  csum_fold(csum_add_bytes(csum_pseudo4(src, dst, IPPROTO_TCP_,
                                                        TCP_HDR_MIN),
                                           t, TCP_HDR_MIN)));
    p->len = 40;
    p->out_iface = (int16_t)out;
    dp_clear_offload(p);
    dp->counters[RT_CNT_ICMP_SENT]++;
}

/* Carries out a drop or reject verdict of the firewall. */
static void fw_refuse(struct rt_dp *dp, struct rt_pkt *p,
                      const struct pkt_meta *m, int action)
{
    if (m->family == 6) {
        dp_refuse6(dp, p, m, action);
        return;
    }
    if (action != RT_FW_REJECT) {
        dp_drop_rule(dp, p, RT_DROP_FW_DROP, dp->fw_rule);
        return;
    }
    dp_drop_rule(dp, p, RT_DROP_FW_REJECT, dp->fw_rule);
    if (m->proto == IPPROTO_TCP_ && m->frag != 2)
        send_tcp_reset(dp, p, m);
    else
        send_icmp_error(dp, p, m, ICMP_DEST_UNREACH, ICMP_UNREACH_ADMIN, 0);
}

struct ct_conn *dp_related_conn(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
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

/* An ICMP error: RELATED to the connection of the packet it quotes. */
static void process_related(struct rt_dp *dp, struct rt_pkt *p,
                            struct pkt_meta *m, uint64_t now)
{
    enum ct_dir dir;
    struct ct_conn *c = dp_related_conn(dp, p, m, is_local(dp, m->tuple.dst.v4), now, &dir);
    if (!c)
        return;
    int out = route_out(dp, c->tuple[!dir].src.v4);
    if (out < 0) {
        dp_drop(dp, p, RT_DROP_NO_ROUTE);
        return;
    }
    if (!may_forward(dp, p, m, out))
        return;
    if (dp->fw_states & RT_FW_RELATED) {
        int a = dp_fw_eval(dp, p, m, RT_FW_FORWARD, out, RT_FW_RELATED,
                           &c->tuple[!dir].src, 0);
        if (a == RT_FW_DROP || a == RT_FW_REJECT) {
            fw_refuse(dp, p, m, a);
            return;
        }
    }
    /* An error neither refreshes nor ends the connection (RFC 5508 REQ-6,
     * RFC 5382 REQ-10). */
    dp->counters[RT_CNT_RELATED]++;
    nat_rewrite_icmp_error(m, c, dir);
    forward(p, m, out);
}

/* A packet for the router itself. */
void dp_process_local(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m)
{
    int a = dp_fw_eval(dp, p, m, RT_FW_INPUT, -1, RT_FW_NEW, &m->tuple.dst,
                       m->tuple.dport);
    if (a < 0)
        a = dp->input_policy;
    if (a != RT_FW_ACCEPT) {
        fw_refuse(dp, p, m, a);
        return;
    }
    if (m->frag) { /* nothing here reassembles */
        dp_drop(dp, p, RT_DROP_FRAGMENT);
        return;
    }
    if (m->family == 6 && m->proto == IPPROTO_ICMPV6_ && m->icmp_type == ICMP6_ECHO_REQUEST) {
        dp_drop(dp, p, RT_DROP_LOCAL);
        dp_echo_reply6(dp, p, m);
        return;
    }
    if (m->family == 4 && m->proto == IPPROTO_ICMP_ && m->icmp_type == ICMP_ECHO) {
        dp_drop(dp, p, RT_DROP_LOCAL);
        send_echo_reply(dp, p, m);
        return;
    }
    dp_drop(dp, p, RT_DROP_LOCAL_DROP);
}

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

/* The port forward for a new TCP/UDP packet, or NULL. */
static const struct rt_dnat_cfg *dnat_match(const struct rt_dp *dp,
                                            const struct pkt_meta *m)
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

/*
 * Where a new connection is sent when its destination is rewritten: by a
 * port forward, or by an endpoint-independent mapping that lets it in.
 */
struct dnat_target {
    rt_be32 addr;          /* inside address */
    rt_be16 port;          /* inside port */
    rt_be32 ext;           /* the external address it came to */
    bool masquerade;       /* full NAT */
    struct nat_map *map;   /* the mapping that let it in, or NULL */
    int32_t backend;       /* load balancer backend number, or -1 */
};

/* The slot of a load balancer for new connection 'm': a keyed hash of its
 * tuple, so that one client's connections spread over the backends and a
 * connection's packets never move (conntrack keeps the choice). */
static const struct rt_lb_slot *lb_pick(const struct rt_dp *dp,
                                        const struct rt_dnat_cfg *d,
                                        const struct pkt_meta *m)
{
    uint32_t h = ct_hash(&dp->ct, &m->tuple);
    return &dp->lb_slots[d->lb_first + h % d->lb_size];
}

/* A port forward for 'm', or NULL. */
static bool forward_target(const struct rt_dp *dp, const struct pkt_meta *m,
                           struct dnat_target *t)
{
    const struct rt_dnat_cfg *dn = dnat_match(dp, m);
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
static bool mapping_target(struct rt_dp *dp, const struct pkt_meta *m,
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

/*
 * The address new connection 'm' is source-NATed to, or 0.  Full NAT takes
 * the output interface's address; a hairpinned connection (it leaves
 * through the interface it came in on, so the server would answer the
 * client directly) takes the external address it was sent to, as RFC 4787
 * REQ-9a asks; otherwise the SNAT/masquerade rules decide.
 */
static rt_be32 snat_address(const struct rt_dp *dp, const struct rt_pkt *p,
                            const struct pkt_meta *m,
                            const struct dnat_target *dn, int out)
{
    if (dn && dn->masquerade)
        return dp->ifaces[out].addr;
    if (dn && out == p->in_iface)
        return dn->ext;
    const struct dp_nat_rule *nr = nat_match(dp, m, out);
    if (!nr)
        return 0;
    if (nr->pool_size) {
        /* "Paired" pooling (RFC 4787 REQ-2): the address is a keyed hash of
         * the inside address, so every flow of a host uses the same one. */
        uint64_t h = ((uint64_t)m->tuple.src.v4 ^ dp->ct.seed) * 0x9e3779b97f4a7c15ULL;
        return dp->nat_pool[nr->pool_first + (uint32_t)(h >> 32) % nr->pool_size];
    }
    return nr->to_addr ? nr->to_addr : dp->ifaces[out].addr;
}

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
static bool fair_evict(struct rt_dp *dp, const struct host_entry *host)
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

/* Gives up a connection that was being built: its mapping reference. */
static void abandon(struct rt_dp *dp, const struct ct_conn *c)
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
    if (ct_l4_for(m->proto)->update(c, w, m, CT_DIR_ORIGINAL, &dp->ctp, now) != CT_ACCEPT) {
        dp->counters[RT_CNT_INVALID]++;
        why = RT_DROP_CT_INVALID;
    } else {
        account(c, m, CT_DIR_ORIGINAL);
        if (host && dp->src_share_cap && dp->ct.count >= dp->ct.capacity)
            fair_evict(dp, host);
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
        abandon(dp, c);
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
    if (dp->ct_events)
        dp_ct_event(dp, slot, RT_EV_NEW);
    return slot;
}

/* A packet no connection knows: may it open one?  'hash' is the hash of its
 * tuple, which the caller has just looked up and not found. */
static void process_new(struct rt_dp *dp, struct rt_pkt *p,
                        struct pkt_meta *m, uint32_t hash, uint64_t now)
{
    struct dnat_target tgt;
    const struct dnat_target *dn = NULL;
    if (forward_target(dp, m, &tgt))
        dn = &tgt;
    else if (is_local(dp, m->tuple.dst.v4)) {
        if (!mapping_target(dp, m, &tgt, now)) {
            dp_process_local(dp, p, m);
            return;
        }
        dn = &tgt;
    }
    rt_be32 dst = dn ? dn->addr : m->tuple.dst.v4;
    const struct fib_route *r = fib_lookup(&dp->fib, dst);
    if (!r) {
        dp_drop(dp, p, RT_DROP_NO_ROUTE);
        send_icmp_error(dp, p, m, ICMP_DEST_UNREACH, ICMP_UNREACH_NET, 0);
        return;
    }
    int out = r->iface;
    if (!may_forward(dp, p, m, out))
        return;
    /* Firewall rules first; without a matching rule, a port forward or a
     * mapping is its own permission and anything else needs the zone pair's
     * policy. */
    union rt_addr fw_dst = {.w = {0, 0}};
    fw_dst.v4 = dst;
    int a = dp_fw_eval(dp, p, m, RT_FW_FORWARD, out, RT_FW_NEW, &fw_dst,
                       dn ? dn->port : m->tuple.dport);
    if (a == RT_FW_DROP || a == RT_FW_REJECT) {
        fw_refuse(dp, p, m, a);
        return;
    }
    uint32_t zin = dp->ifaces[p->in_iface].zone;
    uint32_t zout = dp->ifaces[out].zone;
    if (a < 0 && !dn && !dp->zone_policy[zin][zout]) {
        dp_drop(dp, p, RT_DROP_POLICY);
        return;
    }
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
    if (dn) {
        c.tuple[CT_DIR_REPLY].src.v4 = dn->addr;
        c.tuple[CT_DIR_REPLY].sport = dn->port;
        c.status |= CT_DST_NAT;
        if (dn->map) {
            dn->map->refs++;
            c.status |= CT_NAT_MAPPED;
            dp->counters[RT_CNT_NAT_MAP_INBOUND]++;
        }
    }

    bool reply_free = false;
    rt_be32 to = snat_address(dp, p, m, dn, out);
    if (to && to != m->tuple.src.v4) {
        /* Only one mapping reference per connection: a hairpinned
         * connection that came in through a mapping keeps that one. */
        struct nat_params np = dp->np;
        if (c.status & CT_NAT_MAPPED)
            np.eim = false;
        union rt_addr ta = {.w = {0, 0}};
        ta.v4 = to;
        if (!nat_snat(&dp->ct, &dp->nm, &c, &ta, &np, &dp->rng, now)) {
            abandon(dp, &c);
            dp_drop(dp, p, RT_DROP_NAT_NO_PORT);
            /* RFC 5508 REQ-8: say so, with "communication administratively
             * prohibited". */
            send_icmp_error(dp, p, m, ICMP_DEST_UNREACH, ICMP_UNREACH_ADMIN, 0);
            return;
        }
        reply_free = true; /* nat_snat found it unused */
    }
    struct ct_conn *slot = dp_conn_commit(dp, p, m, &c, &w, hash, reply_free, host, now);
    if (!slot)
        return;
    if (dn && dn->backend >= 0 && (uint32_t)dn->backend < dp->n_backends)
        dp->lb_conns[dn->backend]++;
    nat_rewrite(m, slot, CT_DIR_ORIGINAL);
    forward(p, m, out);
}

/* A packet of a known connection. */
static void process_tracked(struct rt_dp *dp, struct rt_pkt *p,
                            struct pkt_meta *m, struct ct_conn *c,
                            enum ct_dir dir, uint32_t hash, uint64_t now)
{
    dp->counters[RT_CNT_FOUND]++;
    rt_be32 dst = c->tuple[!dir].src.v4; /* after translation */
    const struct fib_route *r = fib_lookup(&dp->fib, dst);
    if (!r) {
        dp_drop(dp, p, RT_DROP_NO_ROUTE);
        send_icmp_error(dp, p, m, ICMP_DEST_UNREACH, ICMP_UNREACH_NET, 0);
        return;
    }
    int out = r->iface;
    if (!may_forward(dp, p, m, out))
        return;
    if (dp->fw_states & RT_FW_ESTABLISHED) {
        int a = dp_fw_eval(dp, p, m, RT_FW_FORWARD, out, RT_FW_ESTABLISHED,
                           &c->tuple[!dir].src, c->tuple[!dir].sport);
        if (a == RT_FW_DROP || a == RT_FW_REJECT) {
            fw_refuse(dp, p, m, a);
            return;
        }
    }

    switch (dp_track(dp, p, m, c, dir, now)) {
    case DP_TRACK_DROPPED:
        return;
    case DP_TRACK_REOPEN:
        process_new(dp, p, m, hash, now);
        return;
    case DP_TRACK_KILL:
        nat_rewrite(m, c, dir);
        forward(p, m, out);
        dp_track_kill(dp, c);
        return;
    case DP_TRACK_FORWARD:
        break;
    }
    nat_rewrite(m, c, dir);
    forward(p, m, out);
}

/*
 * Checks the offload metadata against the packet itself: a partial checksum
 * must sit where TCP or UDP keeps its checksum, and a GSO packet must be TCP
 * of its own family (TCPV4, TCPV6) or UDP (UDP_L4) with a partial checksum
 * and a segment size.
 * Counts segments for the conntrack counters.
 */
static enum rt_drop_reason check_offload(struct rt_dp *dp,
                                         const struct rt_pkt *p,
                                         struct pkt_meta *m)
{
    m->segs = 1;
    if (p->csum_flags & RT_PKT_NEEDS_CSUM) {
        uint32_t coff = m->proto == IPPROTO_TCP_   ? TCP_OFF_CSUM
                        : m->proto == IPPROTO_UDP_ ? UDP_OFF_CSUM
                                                   : 0;
        if (!coff || p->csum_start != m->l4_off || p->csum_offset != coff)
            return RT_DROP_BAD_OFFLOAD;
        m->csum_partial = 1;
        dp->counters[RT_CNT_CSUM_PARTIAL]++;
    }
    uint8_t gso = p->gso_type & (uint8_t)~RT_GSO_ECN;
    if (gso == RT_GSO_NONE)
        return RT_DROP_NONE;
    bool fits = (gso == RT_GSO_TCPV4 && m->proto == IPPROTO_TCP_ && m->family == 4) ||
                (gso == RT_GSO_TCPV6 && m->proto == IPPROTO_TCP_ && m->family == 6) ||
                (gso == RT_GSO_UDP_L4 && m->proto == IPPROTO_UDP_);
    if (!fits || p->gso_size == 0 || !m->csum_partial)
        return RT_DROP_BAD_OFFLOAD;
    uint32_t payload = m->l4_len - m->l4_hdr_len;
    uint32_t segs = (payload + p->gso_size - 1) / p->gso_size;
    m->segs = (uint16_t)(segs ? segs : 1);
    dp->counters[RT_CNT_GSO_PACKETS]++;
    dp->counters[RT_CNT_GSO_SEGMENTS] += m->segs;
    return RT_DROP_NONE;
}

/* First stage: interface, counters, parse, offload metadata.  Returns
 * false when the packet is already dropped. */
static bool stage_parse(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m)
{
    p->out_iface = -1;
    p->reason = RT_DROP_NONE;
    if (p->in_iface >= dp->n_ifaces) {
        dp->drops[RT_DROP_BAD_IFACE]++;
        p->reason = RT_DROP_BAD_IFACE;
        return false;
    }
    struct dp_iface *in = &dp->ifaces[p->in_iface];
    in->st.rx_packets++;
    in->st.rx_bytes += p->len;
    dp->counters[RT_CNT_RX_PACKETS]++;

    uint32_t len = p->len <= p->cap ? p->len : p->cap;
    /* A checksum the sending kernel left to us (NEEDS_CSUM) or already
     * verified (CSUM_VALID) is not checked again. */
    bool verify = dp->l4_csum &&
                  !(p->csum_flags & (RT_PKT_NEEDS_CSUM | RT_PKT_CSUM_VALID));
    enum rt_drop_reason r = pkt_parse(p->data, len, verify, m);
    if (r == RT_DROP_NONE)
        r = check_offload(dp, p, m);
    if (r != RT_DROP_NONE) {
        dp_drop(dp, p, r);
        return false;
    }
    return true;
}

/* Second stage: addresses, then the RELATED, tracked or new path. */
static void stage_process(struct rt_dp *dp, struct rt_pkt *p,
                          struct pkt_meta *m, uint32_t hash, uint64_t now)
{
    if (m->family == 6) {
        dp_process6(dp, p, m, hash, now);
        return;
    }
    uint32_t src = ntohl(m->tuple.src.v4), dst = ntohl(m->tuple.dst.v4);
    if (martian_src(src) || is_local(dp, m->tuple.src.v4) ||
        (dst >> 24) == 0 || (dst >> 24) == 127) {
        dp_drop(dp, p, RT_DROP_MARTIAN);
        return;
    }
    if (dst >= 0xe0000000u) {
        dp_drop(dp, p, RT_DROP_NOT_UNICAST);
        return;
    }
    uint32_t rpf = dp->ifaces[p->in_iface].rp_filter;
    if (rpf != RT_RPF_OFF) {
        /* Would a reply to this source leave through the interface this
         * came in on (strict), or at all (loose)?  RFC 3704. */
        const struct fib_route *back = fib_lookup(&dp->fib, m->tuple.src.v4);
        if (!back || (rpf == RT_RPF_STRICT && back->iface != p->in_iface)) {
            dp_drop(dp, p, RT_DROP_SPOOFED);
            return;
        }
    }
    if (m->frag == 2) { /* a later fragment: it follows its first */
        frag_later(dp, p, m, now);
        return;
    }
    if (m->icmp_error) {
        process_related(dp, p, m, now);
        return;
    }
    struct frag_key fk;
    if (m->frag)
        frag_key_of(m, &fk);
    enum ct_dir dir;
    struct ct_conn *c = ct_find(&dp->ct, &m->tuple, hash, now, &dir);
    if (c)
        process_tracked(dp, p, m, c, dir, hash, now);
    else
        process_new(dp, p, m, hash, now);
    if (m->frag && p->out_iface >= 0 && p->reason == RT_DROP_NONE) {
        dp->counters[RT_CNT_FRAGMENTS]++;
        frag_first_done(dp, &fk, p->data, p->out_iface, now);
    }
}

/*
 * A software pipeline over the batch: packet i is parsed and hashed and its
 * bucket prefetched, while packet i - DIST has the first connection of its
 * bucket prefetched and packet i - 2 * DIST is processed.  In a large table
 * a lookup is two dependent cache misses (bucket, then connection); this
 * way each has DIST packets' worth of work to arrive in, instead of
 * stalling the packet that needs it.  Packets are still processed strictly
 * in order; the prefetches are only hints.
 */
#define DIST 10
#define RING 32 /* a power of two > 2 * DIST */

void rt_dp_process(struct rt_dp *dp, struct rt_pkt *pkts, uint32_t n,
                   uint64_t now_ms)
{
    struct pkt_meta m[RING];
    uint32_t hash[RING];
    bool ok[RING];
    dp->counters[RT_CNT_BATCHES]++;
    /* The data plane's clock never goes back: workers read the time when
     * they wake, so a batch may carry one a little older than the batch
     * another worker just processed, and the token buckets take elapsed
     * time as 'now - last refill'. */
    if (now_ms < dp->now_ms)
        now_ms = dp->now_ms;
    dp->now_ms = now_ms;
    for (uint32_t i = 0; i < n + 2 * DIST; i++) {
        if (i < n) {
            uint32_t r = i % RING;
            ok[r] = stage_parse(dp, &pkts[i], &m[r]);
            if (ok[r]) {
                hash[r] = ct_hash(&dp->ct, &m[r].tuple);
                ct_prefetch_bucket(&dp->ct, hash[r]);
            }
        }
        if (i >= DIST && i - DIST < n) {
            uint32_t r = (i - DIST) % RING;
            if (ok[r])
                ct_prefetch_head(&dp->ct, hash[r], m[r].proto == IPPROTO_TCP_);
        }
        if (i >= 2 * DIST) {
            uint32_t j = i - 2 * DIST, r = j % RING;
            if (ok[r])
                stage_process(dp, &pkts[j], &m[r], hash[r], now_ms);
        }
    }
}

/* ---- life cycle and tables ---------------------------------------------- */

/*
 * IPv6 sources are about to be counted under prefixes of another length:
 * the counts so far no longer name the right entries.  The connections
 * they counted stop counting (the limits apply to new connections from
 * here on), which errs on the side of letting traffic through.
 */
static void forget_ipv6_sources(struct rt_dp *dp)
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

static void on_ct_delete(void *ctx, const struct ct_conn *c)
{
    struct rt_dp *dp = ctx;
    if (dp->ct_events)
        dp_ct_event(dp, c, RT_EV_DESTROY);
    if (c->status & CT_NAT_MAPPED)
        nat_map_release(&dp->nm, c, ct_slot(&dp->ct, c));
    if (c->status & CT_HOST_COUNTED) {
        const struct ct_tuple *o = &c->tuple[CT_DIR_ORIGINAL];
        union rt_addr key;
        source_key(dp, &o->src, o->family, &key);
        struct host_entry *e = host_get(&dp->hosts, &key, o->family, false);
        if (e && e->conns && --e->conns == 0 && dp->hosts.active)
            dp->hosts.active--;
    }
}

struct rt_dp *rt_dp_new(const struct rt_dp_params *p)
{
    if (!p || p->batch == 0 || p->batch > 4096 || p->slot_size < 576 ||
        p->slot_size > 262144)
        return NULL;
    struct rt_dp *dp = calloc(1, sizeof *dp);
    if (!dp)
        return NULL;
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
    /* Every mapping has a connection, and most inside endpoints have
     * several: half the connection count is plenty. */
    uint32_t maps = p->ct_capacity / 2 > 64 ? p->ct_capacity / 2 : 64;
    if (nat_maps_init(&dp->nm, maps, p->ct_capacity, p->seed) != 0) {
        rt_dp_free(dp);
        return NULL;
    }
    dp->ct.on_delete = on_ct_delete;
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
    for (uint32_t i = 0; i < RT_N_TIMEOUTS; i++)
        dp->ctp.timeout_ms[i] = (uint64_t)timeout_defaults[i] * 1000;
    dp->ctp.tcp_loose = true;
    dp->ctp.tcp_max_retrans = 3;
    dp->l4_csum = true;
    dp->np.port_min = 1024;
    dp->np.port_max = 65535;
    dp->np.preserve_ports = true;
    dp->np.eim = true;
    dp->np.filtering = NAT_FILTER_ADF;
    dp->src_prefix6 = 128;
    return dp;
}

void rt_dp_free(struct rt_dp *dp)
{
    if (!dp)
        return;
    io_free(dp);
    ct_destroy(&dp->ct);
    nat_maps_destroy(&dp->nm);
    host_destroy(&dp->hosts);
    free(dp->fib.routes);
    free(dp->routes6);
    free(dp->npt6);
    free(dp->masq6);
    free(dp->nat);
    free(dp->dnat);
    free(dp->lb_slots);
    free(dp->lb_conns);
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

static uint32_t plen_mask(uint32_t plen)
{
    return plen == 0 ? 0 : 0xffffffffu << (32 - plen);
}

#define LOAD_FAIL(...)                                                         \
    do {                                                                       \
        snprintf(dp->error, sizeof dp->error, __VA_ARGS__);                    \
        free(routes);                                                          \
        free(routes6);                                                         \
        free(npt6);                                                            \
        free(masq6);                                                           \
        free(nat);                                                             \
        free(dnat);                                                            \
        free(lb);                                                              \
        free(pool);                                                            \
        free(fw);                                                              \
        free(fwc);                                                             \
        free(lbc);                                                             \
        return -1;                                                             \
    } while (0)

int rt_dp_load(struct rt_dp *dp, const struct rt_tables *t)
{
    struct fib_route *routes = NULL;
    struct dp_route6 *routes6 = NULL;
    struct dp_npt6 *npt6 = NULL;
    struct dp_masq6 *masq6 = NULL;
    struct dp_nat_rule *nat = NULL;
    struct rt_dnat_cfg *dnat = NULL;
    struct rt_lb_slot *lb = NULL;
    uint64_t *lbc = NULL;
    rt_be32 *pool = NULL;
    struct rt_fw_rule *fw = NULL;
    uint64_t *fwc = NULL;
    uint8_t fw_states = 0;
    dp->error[0] = 0;
    if (t->n_ifaces > RT_MAX_IFACES)
        LOAD_FAIL("too many interfaces: %u > %u", t->n_ifaces, RT_MAX_IFACES);
    if (t->n_zones == 0 || t->n_zones > RT_MAX_ZONES)
        LOAD_FAIL("zone count %u not in 1..%u", t->n_zones, RT_MAX_ZONES);
    if (t->n_timeouts != RT_N_TIMEOUTS)
        LOAD_FAIL("%u timeouts given, %u expected", t->n_timeouts,
                  RT_N_TIMEOUTS);
    if (t->port_min == 0 || t->port_min > t->port_max || t->port_max > 65535)
        LOAD_FAIL("bad NAT port range %u-%u", t->port_min, t->port_max);
    if (t->nat_filtering > RT_FILTER_EIF)
        LOAD_FAIL("bad NAT filtering %u", t->nat_filtering);
    if (t->tcp_max_retrans < 1 || t->tcp_max_retrans > 15)
        LOAD_FAIL("tcp_max_retrans %u not in 1..15", t->tcp_max_retrans);
    if (t->src_prefix6 > 128)
        LOAD_FAIL("src_prefix6 %u not in 0..128", t->src_prefix6);
    if (t->src_share > 100)
        LOAD_FAIL("src_share %u not in 0..100", t->src_share);
    for (uint32_t i = 0; i < t->n_ifaces; i++) {
        if (t->ifaces[i].zone >= t->n_zones)
            LOAD_FAIL("interface %u: zone %u out of range", i,
                      t->ifaces[i].zone);
        if (t->ifaces[i].mtu < 68 || t->ifaces[i].mtu > dp->slot_size)
            LOAD_FAIL("interface %u: mtu %u not in 68..%u", i,
                      t->ifaces[i].mtu, dp->slot_size);
    }
    routes = calloc(t->n_routes ? t->n_routes : 1, sizeof *routes);
    routes6 = calloc(t->n_routes6 ? t->n_routes6 : 1, sizeof *routes6);
    nat = calloc(t->n_nat ? t->n_nat : 1, sizeof *nat);
    dnat = calloc(t->n_dnat ? t->n_dnat : 1, sizeof *dnat);
    npt6 = calloc(t->n_npt6 ? t->n_npt6 : 1, sizeof *npt6);
    masq6 = calloc(t->n_masq6 ? t->n_masq6 : 1, sizeof *masq6);
    if (!routes || !routes6 || !npt6 || !masq6 || !nat || !dnat)
        LOAD_FAIL("out of memory");
    for (uint32_t i = 0; i < t->n_masq6; i++) {
        const struct rt_masq6_cfg *c = &t->masq6[i];
        if (c->src_plen > 128 || c->out_iface < 0 || (uint32_t)c->out_iface >= t->n_ifaces)
            LOAD_FAIL("NAT66 rule %u: prefix length %u or interface %d out of range", i,
                      c->src_plen, c->out_iface);
        if (!t->ifaces[c->out_iface].has_addr6)
            LOAD_FAIL("NAT66 rule %u: interface %d has no IPv6 address", i, c->out_iface);
        memcpy(masq6[i].src, c->src_prefix, 16);
        masq6[i].plen = c->src_plen;
        masq6[i].out_iface = c->out_iface;
    }
    for (uint32_t i = 0; i < t->n_npt6; i++) {
        const struct rt_npt6_cfg *c = &t->npt6[i];
        if (c->plen == 0 || c->plen > 48 || c->iface < 0 ||
            (uint32_t)c->iface >= t->n_ifaces)
            LOAD_FAIL("NPTv6 rule %u: prefix length must be 1..48, interface valid", i);
        memcpy(npt6[i].inside, c->inside, 16);
        memcpy(npt6[i].outside, c->outside, 16);
        npt6[i].plen = c->plen;
        npt6[i].iface = c->iface;
        dp_npt6_prepare(&npt6[i]);
    }
    /* IPv6 routes, longest prefix first (insertion sort: a few dozen). */
    for (uint32_t i = 0; i < t->n_routes6; i++) {
        const struct rt_route6_cfg *r = &t->routes6[i];
        if (r->plen > 128 || r->iface < 0 || (uint32_t)r->iface >= t->n_ifaces)
            LOAD_FAIL("IPv6 route %u: bad prefix length or interface", i);
        uint32_t j = i;
        while (j > 0 && routes6[j - 1].plen < r->plen) {
            routes6[j] = routes6[j - 1];
            j--;
        }
        memcpy(routes6[j].prefix, r->prefix, 16);
        routes6[j].plen = r->plen;
        routes6[j].iface = r->iface;
    }
    for (uint32_t i = 0; i < t->n_dnat; i++) {
        const struct rt_dnat_cfg *d = &t->dnat[i];
        if (d->proto != IPPROTO_TCP_ && d->proto != IPPROTO_UDP_)
            LOAD_FAIL("port forward %u: protocol %u is not TCP or UDP", i,
                      d->proto);
        if (d->port_min == 0 || d->port_min > d->port_max ||
            (uint32_t)d->to_port + (d->port_max - d->port_min) > 65535 ||
            d->to_port == 0)
            LOAD_FAIL("port forward %u: bad port range", i);
        if (d->addr == 0 || (d->to_addr == 0 && d->lb_size == 0))
            LOAD_FAIL("port forward %u: missing address", i);
        if (d->lb_size && ((uint64_t)d->lb_first + d->lb_size > t->n_lb_slots ||
                           d->port_min != d->port_max))
            LOAD_FAIL("load balancer %u: bad slot range or port range", i);
        dnat[i] = *d;
    }
    fw = calloc(t->n_fw_rules ? t->n_fw_rules : 1, sizeof *fw);
    fwc = calloc(2 * (size_t)(t->n_fw_rules ? t->n_fw_rules : 1), sizeof *fwc);
    if (!fw || !fwc)
        LOAD_FAIL("out of memory");
    if (t->input_policy > RT_FW_REJECT)
        LOAD_FAIL("bad input policy %u", t->input_policy);
    for (uint32_t i = 0; i < t->n_fw_rules; i++) {
        const struct rt_fw_rule *r = &t->fw_rules[i];
        if (r->chain > RT_FW_INPUT || r->action > RT_FW_REJECT ||
            r->src_plen > (r->family == 6 ? 128 : 32) ||
            r->dst_plen > (r->family == 6 ? 128 : 32) ||
            r->from_zone >= (int32_t)t->n_zones ||
            r->to_zone >= (int32_t)t->n_zones || r->port_min > r->port_max ||
            (r->states & ~(RT_FW_NEW | RT_FW_ESTABLISHED | RT_FW_RELATED)))
            LOAD_FAIL("firewall rule %u: field out of range", i);
        fw[i] = *r;
        fw_states |= r->states;
    }
    lb = calloc(t->n_lb_slots ? t->n_lb_slots : 1, sizeof *lb);
    lbc = calloc(t->n_backends ? t->n_backends : 1, sizeof *lbc);
    if (!lb || !lbc)
        LOAD_FAIL("out of memory");
    for (uint32_t i = 0; i < t->n_lb_slots; i++) {
        if (t->lb_slots[i].backend >= t->n_backends || t->lb_slots[i].addr == 0 ||
            t->lb_slots[i].port == 0)
            LOAD_FAIL("load balancer slot %u: bad backend", i);
        lb[i] = t->lb_slots[i];
    }
    for (uint32_t i = 0; i < t->n_routes; i++) {
        const struct rt_route_cfg *c = &t->routes[i];
        if (c->plen > 32)
            LOAD_FAIL("route %u: prefix length %u", i, c->plen);
        if (c->iface < 0 || (uint32_t)c->iface >= t->n_ifaces)
            LOAD_FAIL("route %u: interface %d out of range", i, c->iface);
        routes[i].mask = plen_mask(c->plen);
        routes[i].prefix = ntohl(c->prefix) & routes[i].mask;
        routes[i].plen = (uint8_t)c->plen;
        routes[i].iface = c->iface;
        routes[i].gateway = c->gateway;
    }
    fib_sort(routes, t->n_routes);
    for (uint32_t i = 0; i < t->n_nat; i++) {
        const struct rt_nat_cfg *c = &t->nat[i];
        if (c->src_plen > 32)
            LOAD_FAIL("nat rule %u: prefix length %u", i, c->src_plen);
        if (c->out_iface >= (int32_t)t->n_ifaces || c->out_iface < -1)
            LOAD_FAIL("nat rule %u: interface %d out of range", i,
                      c->out_iface);
        nat[i].src_mask = plen_mask(c->src_plen);
        nat[i].src_prefix = ntohl(c->src_prefix) & nat[i].src_mask;
        nat[i].out_iface = c->out_iface;
        nat[i].to_addr = c->to_addr;
        if (c->pool_size && (uint64_t)c->pool_first + c->pool_size > t->n_nat_pool)
            LOAD_FAIL("nat rule %u: pool out of range", i);
        nat[i].pool_first = c->pool_first;
        nat[i].pool_size = c->pool_size;
    }
    pool = calloc(t->n_nat_pool ? t->n_nat_pool : 1, sizeof *pool);
    if (!pool)
        LOAD_FAIL("out of memory");
    for (uint32_t i = 0; i < t->n_nat_pool; i++) {
        if (t->nat_pool[i] == 0)
            LOAD_FAIL("nat pool address %u is 0.0.0.0", i);
        pool[i] = t->nat_pool[i];
    }

    /* Everything checked: swap in.  An interface is known by its
     * descriptor: it keeps its counters when interfaces are added, removed
     * or reordered, and fragments on their way follow it (or are dropped
     * with it). */
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
        memset(&d->st, 0, sizeof d->st);
        for (uint32_t j = 0; j < old_n; j++)
            if (remap[j] == (int16_t)i)
                d->st = old_if[j].st;
        d->fd = t->ifaces[i].fd;
        d->addr = t->ifaces[i].addr;
        d->mtu = t->ifaces[i].mtu;
        d->zone = t->ifaces[i].zone;
        d->flags = t->ifaces[i].flags;
        d->rp_filter = t->ifaces[i].rp_filter;
        memcpy(d->addr6, t->ifaces[i].addr6, 16);
        d->has_addr6 = t->ifaces[i].has_addr6 != 0;
    }
    dp->n_ifaces = t->n_ifaces;
    free(dp->routes6);
    dp->routes6 = routes6;
    dp->n_routes6 = t->n_routes6;
    free(dp->npt6);
    dp->npt6 = npt6;
    dp->n_npt6 = t->n_npt6;
    free(dp->masq6);
    dp->masq6 = masq6;
    dp->n_masq6 = t->n_masq6;
    free(dp->fib.routes);
    dp->fib.routes = routes;
    dp->fib.n = t->n_routes;
    free(dp->nat);
    dp->nat = nat;
    dp->n_nat = t->n_nat;
    free(dp->dnat);
    dp->dnat = dnat;
    dp->n_dnat = t->n_dnat;
    free(dp->fw);
    dp->fw = fw;
    dp->n_fw = t->n_fw_rules;
    free(dp->fw_counts);
    dp->fw_counts = fwc;
    dp->fw_states = fw_states;
    dp->input_policy = (uint8_t)t->input_policy;
    dp->src_conn_cap = t->src_conn_cap;
    dp->src_new_rate = t->src_new_rate;
    dp->src_share_cap = t->src_share ? (uint32_t)((uint64_t)dp->ct.capacity * t->src_share / 100)
                                     : 0;
    if (t->src_share && dp->src_share_cap == 0)
        dp->src_share_cap = 1;
    uint32_t prefix6 = t->src_prefix6 ? t->src_prefix6 : 128;
    if (prefix6 != dp->src_prefix6)
        forget_ipv6_sources(dp);
    dp->src_prefix6 = prefix6;
    if (dp->icmp_rate != t->icmp_rate) {
        dp->icmp_rate = t->icmp_rate;
        dp->icmp_tokens = (uint64_t)t->icmp_rate * 1000; /* start full */
        dp->icmp_refill_ms = dp->now_ms;
    }
    free(dp->nat_pool);
    dp->nat_pool = pool;
    dp->n_nat_pool = t->n_nat_pool;
    free(dp->lb_slots);
    dp->lb_slots = lb;
    dp->n_lb_slots = t->n_lb_slots;
    free(dp->lb_conns);
    dp->lb_conns = lbc;
    dp->n_backends = t->n_backends;
    dp->n_zones = t->n_zones;
    memset(dp->zone_policy, 0, sizeof dp->zone_policy);
    for (uint32_t a = 0; a < t->n_zones; a++)
        for (uint32_t b = 0; b < t->n_zones; b++)
            dp->zone_policy[a][b] = t->zone_policy[a * t->n_zones + b] != 0;
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
    return 0;
}

/* ---- inspection --------------------------------------------------------- */

void rt_ct_sweep(struct rt_dp *dp, uint64_t now_ms, uint32_t max_slots,
                 struct rt_sweep_result *out)
{
    memset(out, 0, sizeof *out);
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
        fill_entry(dp, c, &out[k++], now_ms);
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
    int in = v6 ? dp_route6(dp, o->src.b) : route_out(dp, o->src.v4);
    if (in < 0)
        return false;
    struct rt_pkt p;
    memset(&p, 0, sizeof p);
    p.in_iface = (int16_t)in;
    if (v6 ? dp_is_local6(dp, dst.b) : is_local(dp, dst.v4)) {
        int i = fw_match(dp, &p, &m, RT_FW_INPUT, -1, RT_FW_NEW, &dst, dport);
        return (i < 0 ? dp->input_policy : dp->fw[i].action) == RT_FW_ACCEPT;
    }
    int out = v6 ? dp_route6(dp, dst.b) : route_out(dp, dst.v4);
    if (out < 0)
        return false;
    int i = fw_match(dp, &p, &m, RT_FW_FORWARD, out, RT_FW_NEW, &dst, dport);
    if (i >= 0)
        return dp->fw[i].action == RT_FW_ACCEPT;
    if (dnat && !v6) {
        if (dnat_match(dp, &m))
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
                                       CT_DST_NAT));
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
        abandon(dp, &c);
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
        abandon(dp, &c);
        return -2;
    }
    if (slot->status & CT_NAT_MAPPED)
        nat_map_link(&dp->nm, slot, ct_slot(&dp->ct, slot));
    return 0;
}

int rt_ct_delete(struct rt_dp *dp, uint32_t slot)
{
    if (slot >= dp->ct.high_water || !ct_live(&dp->ct.conns[slot]))
        return -1;
    ct_delete(&dp->ct, &dp->ct.conns[slot]);
    dp->counters[RT_CNT_DELETED]++;
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

void rt_ct_flush(struct rt_dp *dp)
{
    ct_flush(&dp->ct);
}

/* Copies the first min('n', 'have') of 'src' to 'out'. */
static void copy_counts(uint64_t *out, uint32_t n, const uint64_t *src, uint32_t have)
{
    if (n > have)
        n = have;
    if (n)
        memcpy(out, src, (size_t)n * sizeof *out);
}

uint32_t rt_dp_counters(const struct rt_dp *dp, uint64_t *out, uint32_t n)
{
    copy_counts(out, n, dp->counters, RT_N_COUNTERS);
    return RT_N_COUNTERS;
}

uint32_t rt_dp_drops(const struct rt_dp *dp, uint64_t *out, uint32_t n)
{
    copy_counts(out, n, dp->drops, RT_DROP_N_REASONS);
    return RT_DROP_N_REASONS;
}

int rt_dp_iface_stats(const struct rt_dp *dp, uint32_t iface,
                      struct rt_iface_stats *out)
{
    if (iface >= dp->n_ifaces)
        return -1;
    *out = dp->ifaces[iface].st;
    return 0;
}

uint32_t rt_dp_fw_stats(const struct rt_dp *dp, uint64_t *out, uint32_t n)
{
    copy_counts(out, n, dp->fw_counts, 2 * dp->n_fw);
    return dp->n_fw;
}

uint32_t rt_dp_lb_stats(const struct rt_dp *dp, uint64_t *out, uint32_t n)
{
    copy_counts(out, n, dp->lb_conns, dp->n_backends);
    return dp->n_backends;
}

uint32_t rt_n_counters(void) { return RT_N_COUNTERS; }
uint32_t rt_n_drop_reasons(void) { return RT_DROP_N_REASONS; }
uint32_t rt_n_timeouts(void) { return RT_N_TIMEOUTS; }
uint32_t rt_n_tcp_states(void) { return RT_TCP_N_STATES; }

const char *rt_counter_name(uint32_t i)
{
    return i < RT_N_COUNTERS ? counter_names[i] : NULL;
}

const char *rt_drop_name(uint32_t i)
{
    return i < RT_DROP_N_REASONS ? drop_names[i] : NULL;
}

const char *rt_timeout_name(uint32_t i)
{
    return i < RT_N_TIMEOUTS ? timeout_names[i] : NULL;
}

uint32_t rt_timeout_default(uint32_t i)
{
    return i < RT_N_TIMEOUTS ? timeout_defaults[i] : 0;
}

const char *rt_tcp_state_name(uint32_t i)
{
    return i < RT_TCP_N_STATES ? tcp_state_names[i] : NULL;
}

uint8_t rt_tcp_transition(uint32_t dir, uint32_t flag_class, uint32_t state)
{
    return ct_tcp_transition(dir, flag_class, state);
}

uint32_t rt_tcp_flag_class(uint8_t flags)
{
    return ct_tcp_flag_class(flags);
}

uint16_t rt_csum_full(const uint8_t *data, uint32_t len)
{
    return csum_full(data, len);
}

void rt_csum_replace2(uint8_t *field, uint16_t old, uint16_t new_)
{
    csum_replace2(field, old, new_);
}

void rt_csum_replace4(uint8_t *field, uint32_t old, uint32_t new_)
{
    csum_replace4(field, old, new_);
}

uint32_t rt_abi_sizeof(const char *name)
{
#define S(t)                                                                   \
    if (strcmp(name, #t) == 0)                                                 \
        return (uint32_t)sizeof(struct t);
    S(rt_dp_params)
    S(rt_iface_cfg)
    S(rt_route_cfg)
    S(rt_nat_cfg)
    S(rt_dnat_cfg)
    S(rt_lb_slot)
    S(rt_fw_rule)
    S(rt_tables)
    S(rt_pkt)
    S(rt_iface_stats)
    S(rt_worker_stats)
    S(rt_sweep_result)
    S(rt_ct_entry)
#undef S
    return 0;
}

/* ---- events and capture ------------------------------------------------- */

static bool pow2_in(uint32_t v, uint32_t max)
{
    return v && v <= max && (v & (v - 1)) == 0;
}

int rt_events_enable(struct rt_dp *dp, uint32_t ct_events,
                     uint64_t drop_reasons, uint32_t drop_rate, uint32_t ring)
{
    bool on = ct_events || drop_reasons;
    if (on && !pow2_in(ring, 1u << 20))
        return -1;
    if (!on) {
        free(dp->ev.ev);
        dp->ev.ev = NULL;
        dp->ev.size = 0;
        dp->ev.head = dp->ev.tail = 0;
    } else if (ring != dp->ev.size) {
        struct rt_event *ev = calloc(ring, sizeof *ev);
        if (!ev)
            return -1;
        free(dp->ev.ev);
        dp->ev.ev = ev;
        dp->ev.size = ring;
        dp->ev.head = dp->ev.tail = 0; /* queued events are not kept */
    }
    dp->ct_events = ct_events != 0;
    dp->ct.notify_all = dp->ct_events;
    dp->drop_sample = drop_reasons & ((1ull << RT_DROP_N_REASONS) - 1) &
                      ~(1ull << RT_DROP_NONE);
    dp->drop_rate = drop_rate;
    dp->drop_tokens = (uint64_t)drop_rate * 1000;
    dp->drop_refill_ms = dp->now_ms;
    return 0;
}

uint32_t rt_events_read(struct rt_dp *dp, struct rt_event *out, uint32_t n)
{
    uint32_t k = 0;
    while (k < n && dp->ev.tail != dp->ev.head)
        out[k++] = dp->ev.ev[dp->ev.tail++ & (dp->ev.size - 1)];
    return k;
}

uint64_t rt_events_lost(const struct rt_dp *dp, uint32_t type)
{
    return type < RT_EV_N_TYPES ? dp->ev.lost[type] : 0;
}

int rt_capture_start(struct rt_dp *dp, uint64_t ifaces, uint32_t snaplen,
                     uint32_t slots)
{
    if (!ifaces || snaplen < 20 || snaplen > 65535 || !pow2_in(slots, 1u << 16))
        return -1;
    struct rt_capture *rec = calloc(slots, sizeof *rec);
    uint8_t *data = malloc((size_t)slots * snaplen);
    if (!rec || !data) {
        free(rec);
        free(data);
        return -1;
    }
    rt_capture_stop(dp);
    dp->cap.rec = rec;
    dp->cap.data = data;
    dp->cap.size = slots;
    dp->cap.snaplen = snaplen;
    dp->cap.ifaces = ifaces;
    return 0;
}

void rt_capture_stop(struct rt_dp *dp)
{
    free(dp->cap.rec);
    free(dp->cap.data);
    uint64_t lost = dp->cap.lost;
    memset(&dp->cap, 0, sizeof dp->cap);
    dp->cap.lost = lost;
}

uint32_t rt_capture_read(struct rt_dp *dp, struct rt_capture *recs,
                         uint8_t *data, uint32_t n)
{
    struct cap_ring *r = &dp->cap;
    uint32_t k = 0;
    while (k < n && r->tail != r->head) {
        uint32_t i = r->tail++ & (r->size - 1);
        recs[k] = r->rec[i];
        memcpy(data + (size_t)k * r->snaplen, r->data + (size_t)i * r->snaplen,
               r->rec[i].caplen);
        k++;
    }
    return k;
}

uint64_t rt_capture_lost(const struct rt_dp *dp)
{
    return dp->cap.lost;
}
