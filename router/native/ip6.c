/*
 * ip6.c - the IPv6 pipeline: forwarding with hop limits, ICMPv6, connection
 * tracking, the stateful firewall, and the two IPv6 translations: NPTv6
 * (stateless) and NAT66 masquerade (stateful, for labs that want it).
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
 * NPTv6 (RFC 6296) is the one translation: stateless and checksum-neutral.
 * A packet arriving on an interface with a rule, for an address in the
 * rule's outside prefix, gets the inside prefix before anything else looks
 * at it; a packet leaving through it from the inside prefix gets the outside
 * one after conntrack and the firewall, so both only ever see inside
 * addresses.  The prefix change is balanced by one 16-bit word (bits 48-63)
 * so that the one's complement sum of the address, and with it every L4
 * checksum, stays the same.
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
#include "dp.h"
#include "csum.h"
#include "wire.h"

/* One's complement sum of the 16-bit words of the first 'plen' bits of 'a'
 * (the bits past it taken as zero). */
static uint16_t prefix_sum(const uint8_t *a, uint32_t plen)
{
    uint32_t sum = 0;
    for (uint32_t w = 0; w * 16 < plen; w++) {
        uint32_t bits = plen - w * 16 >= 16 ? 16 : plen - w * 16;
        uint16_t mask = (uint16_t)(0xffffu << (16 - bits));
        sum += (uint16_t)((a[2 * w] << 8 | a[2 * w + 1]) & mask);
    }
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

static uint16_t ones_add(uint16_t a, uint16_t b)
{
    uint32_t s = (uint32_t)a + b;
    return (uint16_t)((s & 0xffff) + (s >> 16));
}

void dp_npt6_prepare(struct dp_npt6 *n)
{
    uint16_t in = prefix_sum(n->inside, n->plen), out = prefix_sum(n->outside, n->plen);
    n->adj_out = ones_add(in, (uint16_t)~out); /* inside -> outside */
    n->adj_in = ones_add(out, (uint16_t)~in);  /* outside -> inside */
}

/*
 * Replaces the first plen bits of the address at 'a' (which match 'from')
 * by 'to', and adds 'adj' to word 3 (RFC 6296 3.2).  A word 3 of 0xffff
 * cannot be mapped back one to one: false, nothing changed.
 */
static bool npt_rewrite(uint8_t *a, const uint8_t *to, uint32_t plen, uint16_t adj)
{
    uint16_t w3 = (uint16_t)(a[6] << 8 | a[7]);
    if (w3 == 0xffff)
        return false;
    uint32_t full = plen / 8, rest = plen % 8;
    memcpy(a, to, full);
    if (rest) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        a[full] = (uint8_t)((to[full] & mask) | (a[full] & ~mask));
    }
    w3 = ones_add(w3, adj);
    if (w3 == 0xffff)
        w3 = 0; /* the same value in one's complement; 0xffff is avoided */
    a[6] = (uint8_t)(w3 >> 8);
    a[7] = (uint8_t)w3;
    return true;
}

/* The NPTv6 rule of interface 'iface' whose outside prefix (inbound) or
 * inside prefix (outbound) holds address 'a'. */
static const struct dp_npt6 *npt_rule(const struct rt_dp *dp, int iface, const uint8_t *a,
                                      bool inbound)
{
    for (uint32_t i = 0; i < dp->n_npt6; i++) {
        const struct dp_npt6 *n = &dp->npt6[i];
        if (n->iface == iface && prefix_match6(a, inbound ? n->outside : n->inside, n->plen))
            return n;
    }
    return NULL;
}

/* The address new connection 'm' leaving through 'out' is masqueraded to,
 * or NULL.  NPTv6 comes first: a source an NPTv6 rule of 'out' translates
 * is not masqueraded. */
static const uint8_t *masq6_address(const struct rt_dp *dp, const struct pkt_meta *m, int out)
{
    if (dp->n_npt6 && npt_rule(dp, out, m->tuple.src.b, false))
        return NULL;
    for (uint32_t i = 0; i < dp->n_masq6; i++) {
        const struct dp_masq6 *r = &dp->masq6[i];
        if (r->out_iface == out && prefix_match6(m->tuple.src.b, r->src, r->plen))
            return dp->ifaces[out].addr6;
    }
    return NULL;
}

/* Error messages the router sends are at most the minimum IPv6 MTU. */
#define ICMP6_ERR_MAX IP6_MIN_MTU

static bool is_multicast6(const uint8_t *a) { return a[0] == 0xff; }
static bool is_link_local6(const uint8_t *a) { return a[0] == 0xfe && (a[1] & 0xc0) == 0x80; }

static bool is_unspecified_or_loopback6(const uint8_t *a)
{
    for (int i = 0; i < 15; i++)
        if (a[i])
            return false;
    return a[15] <= 1;
}

/* The output interface for 'dst' (routes are sorted longest first), or -1. */
int dp_route6(const struct rt_dp *dp, const uint8_t *dst)
{
    for (uint32_t i = 0; i < dp->n_routes6; i++)
        if (prefix_match6(dst, dp->routes6[i].prefix, dp->routes6[i].plen))
            return dp->routes6[i].iface;
    return -1;
}

bool dp_is_local6(const struct rt_dp *dp, const uint8_t *a)
{
    for (uint32_t i = 0; i < dp->n_ifaces; i++)
        if (dp->ifaces[i].has_addr6 && memcmp(dp->ifaces[i].addr6, a, 16) == 0)
            return true;
    return false;
}

static void ip6_header(uint8_t *ip, uint32_t payload, uint8_t nh, const uint8_t *src,
                       const uint8_t *dst)
{
    memset(ip, 0, IP6_HDR_LEN);
    ip[0] = 0x60;
    wire_put_be16(ip + IP6_OFF_PLEN, htons((uint16_t)payload));
    ip[IP6_OFF_NH] = nh;
    ip[IP6_OFF_HLIM] = 64;
    memcpy(ip + IP6_OFF_SRC, src, 16);
    memcpy(ip + IP6_OFF_DST, dst, 16);
}

static void icmp6_checksum(uint8_t *ip, uint32_t len)
{
    uint8_t *icmp = ip + IP6_HDR_LEN;
    wire_put_be16(icmp + ICMP_OFF_CSUM, 0);
    uint16_t c = csum_fold(csum_add_bytes(
        csum_pseudo6(ip + IP6_OFF_SRC, ip + IP6_OFF_DST, IPPROTO_ICMPV6_, len), icmp, len));
    wire_put_be16(icmp + ICMP_OFF_CSUM, c);
}

/*
 * Replaces the packet in 'p' by an ICMPv6 error about it (RFC 4443 2.4):
 * from the router's address on the link it came in on, to its source, with
 * as much of it as fits in the minimum MTU.  Never about an ICMPv6 error, a
 * packet from a multicast or unspecified source, or without an address.
 */
static void send_icmp6_error(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                             uint8_t type, uint8_t code, uint32_t info)
{
    const struct dp_iface *in = &dp->ifaces[p->in_iface];
    const uint8_t *peer = m->tuple.src.b;
    if (m->icmp_error || !in->has_addr6 || is_multicast6(peer) ||
        is_unspecified_or_loopback6(peer) || !dp_icmp_allowed(dp))
        return;
    int out = dp_route6(dp, peer);
    if (out < 0)
        return;
    uint32_t room = p->cap < ICMP6_ERR_MAX ? p->cap : ICMP6_ERR_MAX;
    if (room < IP6_HDR_LEN + ICMP_HDR_LEN + IP6_HDR_LEN)
        return;
    uint32_t quote = m->len;
    if (quote > room - IP6_HDR_LEN - ICMP_HDR_LEN)
        quote = room - IP6_HDR_LEN - ICMP_HDR_LEN;
    uint8_t peer_copy[16];
    memcpy(peer_copy, peer, 16);
    memmove(p->data + IP6_HDR_LEN + ICMP_HDR_LEN, p->data, quote);
    ip6_header(p->data, ICMP_HDR_LEN + quote, IPPROTO_ICMPV6_, in->addr6, peer_copy);
    uint8_t *icmp = p->data + IP6_HDR_LEN;
    icmp[ICMP_OFF_TYPE] = type;
    icmp[ICMP_OFF_CODE] = code;
    wire_put_be32(icmp + 4, htonl(info));
    icmp6_checksum(p->data, ICMP_HDR_LEN + quote);
    p->len = IP6_HDR_LEN + ICMP_HDR_LEN + quote;
    p->out_iface = (int16_t)out;
    dp_clear_offload(p);
    dp->counters[RT_CNT_ICMP_SENT]++;
}

void dp_packet_too_big6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                        uint32_t mtu)
{
    send_icmp6_error(dp, p, m, ICMP6_PACKET_TOO_BIG, 0, mtu);
}

/* Answers an echo request to one of the router's addresses, in place. */
void dp_echo_reply6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m)
{
    uint8_t me[16], peer[16];
    memcpy(me, m->tuple.dst.b, 16);
    memcpy(peer, m->tuple.src.b, 16);
    int out = dp_route6(dp, peer);
    if (out < 0)
        return;
    /* A fresh header: extension headers are not echoed. */
    if (m->l4_off != IP6_HDR_LEN)
        memmove(p->data + IP6_HDR_LEN, p->data + m->l4_off, m->l4_len);
    ip6_header(p->data, m->l4_len, IPPROTO_ICMPV6_, me, peer);
    p->data[IP6_HDR_LEN + ICMP_OFF_TYPE] = ICMP6_ECHO_REPLY;
    icmp6_checksum(p->data, m->l4_len);
    p->len = IP6_HDR_LEN + m->l4_len;
    p->out_iface = (int16_t)out;
    dp_clear_offload(p);
    dp->counters[RT_CNT_ICMP_SENT]++;
}

/* Hop limit and MTU for leaving through 'out'; answers if it may not. */
static bool may_forward6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m, int out)
{
    if (m->ttl <= 1) {
        dp_drop(dp, p, RT_DROP_TTL_EXPIRED);
        send_icmp6_error(dp, p, m, ICMP6_TIME_EXCEEDED, 0, 0);
        return false;
    }
    uint32_t mtu = dp->ifaces[out].mtu;
    uint32_t size = p->gso_type != RT_GSO_NONE
                        ? (uint32_t)m->l4_off + m->l4_hdr_len + p->gso_size
                        : m->len;
    if (size > mtu) {
        dp_drop(dp, p, RT_DROP_TOO_BIG);
        send_icmp6_error(dp, p, m, ICMP6_PACKET_TOO_BIG, 0, mtu);
        return false;
    }
    return true;
}

/* The interface a packet to 'dst' (after translation) leaves through,
 * checked for hop limit and MTU; -1 when it may not leave (dropped, and
 * answered with the ICMPv6 error). */
static int next_hop6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                     const uint8_t *dst)
{
    int out = dp_route6(dp, dst);
    if (out < 0) {
        dp_drop(dp, p, RT_DROP_NO_ROUTE);
        send_icmp6_error(dp, p, m, ICMP6_DST_UNREACH, ICMP6_UNREACH_NOROUTE, 0);
        return -1;
    }
    return may_forward6(dp, p, m, out) ? out : -1;
}

static void forward6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m, int out)
{
    if (dp->n_npt6) {
        const struct dp_npt6 *n = npt_rule(dp, out, p->data + IP6_OFF_SRC, false);
        if (n && !npt_rewrite(p->data + IP6_OFF_SRC, n->outside, n->plen, n->adj_out)) {
            dp_drop(dp, p, RT_DROP_NPT_UNMAPPABLE);
            return;
        }
        /* An error quoting a packet that came in translated: the quote
         * gets its outside address back (checksum-neutral, so the ICMPv6
         * checksum holds). */
        uint8_t *qdst = p->data + m->inner_off + IP6_OFF_DST;
        if (n && m->icmp_error && prefix_match6(qdst, n->inside, n->plen))
            (void)npt_rewrite(qdst, n->outside, n->plen, n->adj_out);
    }
    p->data[IP6_OFF_HLIM]--;
    p->len = m->len;
    p->out_iface = (int16_t)out;
}

void dp_refuse6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m, int action)
{
    if (action != RT_FW_REJECT) {
        dp_drop_rule(dp, p, RT_DROP_FW_DROP, dp->fw_rule);
        return;
    }
    dp_drop_rule(dp, p, RT_DROP_FW_REJECT, dp->fw_rule);
    send_icmp6_error(dp, p, m, ICMP6_DST_UNREACH, ICMP6_UNREACH_ADMIN, 0);
}

/* An ICMPv6 error: RELATED to the flow it quotes, or dropped. */
static void process_related6(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                             uint64_t now)
{
    enum ct_dir dir;
    struct ct_conn *c = dp_related_conn(dp, p, m, dp_is_local6(dp, m->tuple.dst.b), now, &dir);
    if (!c)
        return;
    int out = dp_route6(dp, c->tuple[!dir].src.b);
    if (out < 0) {
        dp_drop(dp, p, RT_DROP_NO_ROUTE);
        return;
    }
    if (!may_forward6(dp, p, m, out))
        return;
    if (dp->fw_states & RT_FW_RELATED) {
        int a = dp_fw_eval(dp, p, m, RT_FW_FORWARD, out, RT_FW_RELATED, &c->tuple[!dir].src, 0);
        if (a == RT_FW_DROP || a == RT_FW_REJECT) {
            dp_refuse6(dp, p, m, a);
            return;
        }
    }
    dp->counters[RT_CNT_RELATED]++;
    nat_rewrite_icmp_error(m, c, dir);
    forward6(dp, p, m, out);
}

static void process_tracked6(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                             struct ct_conn *c, enum ct_dir dir, uint32_t hash,
                             uint64_t now);

static void process_new6(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                         uint32_t hash, uint64_t now)
{
    if (dp_is_local6(dp, m->tuple.dst.b)) { /* a re-opened tuple of a NAT66 reply */
        dp_process_local(dp, p, m);
        return;
    }
    int out = next_hop6(dp, p, m, m->tuple.dst.b);
    if (out < 0)
        return;
    int a = dp_fw_eval(dp, p, m, RT_FW_FORWARD, out, RT_FW_NEW, &m->tuple.dst, m->tuple.dport);
    if (a == RT_FW_DROP || a == RT_FW_REJECT) {
        dp_refuse6(dp, p, m, a);
        return;
    }
    uint32_t zin = dp->ifaces[p->in_iface].zone, zout = dp->ifaces[out].zone;
    if (a < 0 && !dp->zone_policy[zin][zout]) {
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
    bool reply_free = false;
    const uint8_t *masq = dp->n_masq6 ? masq6_address(dp, m, out) : NULL;
    if (masq && memcmp(masq, m->tuple.src.b, 16) != 0) {
        union rt_addr to;
        memcpy(to.b, masq, 16);
        if (!nat_snat(&dp->ct, NULL, &c, &to, &dp->np, &dp->rng, now)) {
            dp_drop(dp, p, RT_DROP_NAT_NO_PORT);
            send_icmp6_error(dp, p, m, ICMP6_DST_UNREACH, ICMP6_UNREACH_ADMIN, 0);
            return;
        }
        reply_free = true; /* nat_snat found it unused */
    }
    struct ct_conn *slot = dp_conn_commit(dp, p, m, &c, &w, hash, reply_free, host, now);
    if (!slot)
        return;
    nat_rewrite(m, slot, CT_DIR_ORIGINAL);
    forward6(dp, p, m, out);
}

static void process_tracked6(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                             struct ct_conn *c, enum ct_dir dir, uint32_t hash,
                             uint64_t now)
{
    dp->counters[RT_CNT_FOUND]++;
    const union rt_addr *dst = &c->tuple[!dir].src; /* after translation */
    int out = next_hop6(dp, p, m, dst->b);
    if (out < 0)
        return;
    if (dp->fw_states & RT_FW_ESTABLISHED) {
        int a = dp_fw_eval(dp, p, m, RT_FW_FORWARD, out, RT_FW_ESTABLISHED, dst,
                           c->tuple[!dir].sport);
        if (a == RT_FW_DROP || a == RT_FW_REJECT) {
            dp_refuse6(dp, p, m, a);
            return;
        }
    }
    switch (dp_track(dp, p, m, c, dir, now)) {
    case DP_TRACK_DROPPED:
        return;
    case DP_TRACK_REOPEN:
        process_new6(dp, p, m, hash, now);
        return;
    case DP_TRACK_KILL:
        nat_rewrite(m, c, dir);
        forward6(dp, p, m, out);
        dp_track_kill(dp, c);
        return;
    case DP_TRACK_FORWARD:
        break;
    }
    nat_rewrite(m, c, dir);
    forward6(dp, p, m, out);
}

/* Local, RELATED, tracked or new: the packet's path once its addresses have
 * passed the checks. */
static void dispatch6(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint32_t hash,
                      uint64_t now)
{
    const uint8_t *dst = m->tuple.dst.b;
    enum ct_dir dir;
    struct ct_conn *c = NULL;
    if (dp_is_local6(dp, dst)) {
        /* With NAT66, replies are addressed to the router. */
        if (dp->n_masq6 && m->icmp_error) {
            process_related6(dp, p, m, now);
            return;
        }
        if (dp->n_masq6)
            c = ct_find(&dp->ct, &m->tuple, hash, now, &dir);
        if (!c) {
            if (m->icmp_error)
                dp_drop(dp, p, RT_DROP_LOCAL_DROP);
            else
                dp_process_local(dp, p, m);
            return;
        }
        process_tracked6(dp, p, m, c, dir, hash, now);
        return;
    }
    if (m->icmp_error) {
        process_related6(dp, p, m, now);
        return;
    }
    c = ct_find(&dp->ct, &m->tuple, hash, now, &dir);
    if (c)
        process_tracked6(dp, p, m, c, dir, hash, now);
    else
        process_new6(dp, p, m, hash, now);
}

void dp_process6(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint32_t hash,
                 uint64_t now)
{
    if (dp->n_npt6) {
        const struct dp_npt6 *n = npt_rule(dp, p->in_iface, m->tuple.dst.b, true);
        if (n) {
            if (!npt_rewrite(p->data + IP6_OFF_DST, n->inside, n->plen, n->adj_in)) {
                dp_drop(dp, p, RT_DROP_NPT_UNMAPPABLE);
                return;
            }
            memcpy(m->tuple.dst.b, p->data + IP6_OFF_DST, 16);
            hash = ct_hash(&dp->ct, &m->tuple);
            /* An error about a packet that left translated quotes its
             * outside source: translated back, it finds its flow. */
            uint8_t *qsrc = p->data + m->inner_off + IP6_OFF_SRC;
            if (m->icmp_error && prefix_match6(qsrc, n->outside, n->plen) &&
                npt_rewrite(qsrc, n->inside, n->plen, n->adj_in))
                memcpy(m->inner.src.b, qsrc, 16);
        }
    }
    const uint8_t *src = m->tuple.src.b, *dst = m->tuple.dst.b;
    if (is_multicast6(dst)) {
        dp_drop(dp, p, RT_DROP_NOT_UNICAST); /* solicitations from the kernel side */
        return;
    }
    if (is_multicast6(src) || is_unspecified_or_loopback6(src) || is_link_local6(src) ||
        dp_is_local6(dp, src) || is_unspecified_or_loopback6(dst) || is_link_local6(dst)) {
        dp_drop(dp, p, RT_DROP_MARTIAN);
        return;
    }
    uint32_t rpf = dp->ifaces[p->in_iface].rp_filter;
    if (rpf != RT_RPF_OFF) {
        int back = dp_route6(dp, src);
        if (back < 0 || (rpf == RT_RPF_STRICT && back != p->in_iface)) {
            dp_drop(dp, p, RT_DROP_SPOOFED);
            return;
        }
    }
    if (m->frag == 2) { /* a later fragment: it follows its first */
        frag_later(dp, p, m, now);
        return;
    }
    if (!m->frag) {
        dispatch6(dp, p, m, hash, now);
        return;
    }
    /* A first fragment goes through like a whole packet; what it became is
     * remembered for the rest of its datagram (frag.c). */
    struct frag_key fk;
    frag_key_of(m, &fk);
    dispatch6(dp, p, m, hash, now);
    if (p->out_iface >= 0 && p->reason == RT_DROP_NONE) {
        dp->counters[RT_CNT_FRAGMENTS]++;
        frag_first_done(dp, &fk, p->data, p->out_iface, now);
    }
}
