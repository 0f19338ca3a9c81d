/*
 * dp_icmp.c - what the router sends of its own: ICMP and ICMPv6 errors
 * (RFC 792, RFC 1812 4.3.2, RFC 4443), TCP resets for rejected
 * connections (RFC 9293 3.10.7.1), and echo replies, each written in place
 * of the packet it answers.  All of them are paced by one token bucket
 * (RFC 1812 4.3.2.8, RFC 4443 2.4 (f)).
 */
#include <string.h>
#include <arpa/inet.h>
#include "dp.h"
#include "csum.h"
#include "wire.h"

/* ICMP errors quote at most this much, so that they fit 576 bytes
 * (RFC 1812 4.3.2.3). */
#define ICMP_ERR_MAX 576
#define ICMP_TTL 64
/* Error messages the router sends are at most the minimum IPv6 MTU. */
#define ICMP6_ERR_MAX IP6_MIN_MTU

/* ---- IPv4 ------------------------------------------------------------------ */

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

/*
 * Replaces the packet in 'p' by an ICMP error of 'type'/'code' about it,
 * addressed to its source (RFC 792, RFC 1812 4.3.2).  'info' fills the
 * second word (the next-hop MTU for "fragmentation needed").  Never answers
 * an ICMP error, a packet from a non-unicast source, or when the link has
 * no address to send from.
 */
void dp_icmp4_error(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                    uint8_t type, uint8_t code, uint32_t info)
{
    rt_be32 src = dp->ifaces[p->in_iface].addr;
    rt_be32 dst = m->tuple.src.v4;
    if (m->icmp_error || src == 0 || addr4_martian_src(ntohl(dst)) || !dp_icmp_allowed(dp))
        return;
    uint32_t room = p->cap < ICMP_ERR_MAX ? p->cap : ICMP_ERR_MAX;
    if (room < IP4_HDR_MIN + ICMP_HDR_LEN + m->l3_len + 8u)
        return;
    uint32_t quote = m->len;
    if (quote > room - IP4_HDR_MIN - ICMP_HDR_LEN)
        quote = room - IP4_HDR_MIN - ICMP_HDR_LEN;
    int out = dp_route4(dp, dst);
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
static void echo_reply4(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m)
{
    rt_be32 me = m->tuple.dst.v4, peer = m->tuple.src.v4;
    int out = dp_route4(dp, peer);
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
    int out = dp_route4(dp, m->tuple.src.v4);
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

/* ---- IPv6 ------------------------------------------------------------------ */

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
void dp_icmp6_error(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                    uint8_t type, uint8_t code, uint32_t info)
{
    const struct dp_iface *in = &dp->ifaces[p->in_iface];
    const uint8_t *peer = m->tuple.src.b;
    if (m->icmp_error || !in->has_addr6 || addr6_multicast(peer) ||
        addr6_unspecified_or_loopback(peer) || !dp_icmp_allowed(dp))
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

static void echo_reply6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m)
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

/* ---- either family --------------------------------------------------------- */

void dp_echo_reply(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m)
{
    if (m->family == 6)
        echo_reply6(dp, p, m);
    else
        echo_reply4(dp, p, m);
}

void dp_refuse(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m, int action)
{
    if (action != RT_FW_REJECT) {
        dp_drop_rule(dp, p, RT_DROP_FW_DROP, dp->fw_rule);
        return;
    }
    dp_drop_rule(dp, p, RT_DROP_FW_REJECT, dp->fw_rule);
    if (m->family == 6)
        dp_icmp6_error(dp, p, m, ICMP6_DST_UNREACH, ICMP6_UNREACH_ADMIN, 0);
    else if (m->proto == IPPROTO_TCP_ && m->frag != 2)
        send_tcp_reset(dp, p, m);
    else
        dp_icmp4_error(dp, p, m, ICMP_DEST_UNREACH, ICMP_UNREACH_ADMIN, 0);
}
