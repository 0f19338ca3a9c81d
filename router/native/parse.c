/*
 * parse.c - the only place that reads raw packet bytes unchecked.
 *
 * Theory of operation: pkt_parse() walks the IPv4 header, then the L4
 * header, checking every length against the bytes actually read before it
 * touches them, and fills a struct pkt_meta.  Later stages use the offsets
 * in the metadata and may rely on them: a TCP header is at least 20 bytes
 * and lies inside the packet, a UDP header 8, an ICMP header 8, and for an
 * ICMP error the inner IP header and 'inner_l4_avail' bytes of its L4
 * header are present.  IPv6 packets are recognised and reported as such.
 */
#include <stddef.h>
#include <string.h>
#include "parse.h"
#include "csum.h"
#include "wire.h"

/* The helpers both families' parses share are called from two places each,
 * and gcc then keeps them out of line; inlined, the UDP path costs what it
 * did when each family had its own copy (bench/core_bench.c, established
 * flows: 59 ns a packet inlined, 62 ns not). */
#define PER_PACKET static inline __attribute__((always_inline))

bool tuple_invert(const struct ct_tuple *t, struct ct_tuple *out)
{
    *out = *t;
    out->src = t->dst;
    out->dst = t->src;
    if (t->proto == IPPROTO_ICMP_) {
        /* The identifier stays in 'sport'; the type flips query <-> reply. */
        uint8_t type = (uint8_t)(ntohs(t->dport) >> 8);
        uint8_t code = (uint8_t)ntohs(t->dport);
        int inv = icmp_query_reply_type(type);
        if (inv < 0)
            inv = icmp_reply_query_type(type);
        if (inv < 0)
            return false;
        out->dport = htons((uint16_t)(((unsigned)inv << 8) | code));
    } else if (t->proto == IPPROTO_ICMPV6_) {
        uint8_t type = (uint8_t)(ntohs(t->dport) >> 8);
        uint8_t code = (uint8_t)ntohs(t->dport);
        int inv = icmp6_query_reply_type(type);
        if (inv < 0)
            return false;
        out->dport = htons((uint16_t)(((unsigned)inv << 8) | code));
    } else {
        out->sport = t->dport;
        out->dport = t->sport;
    }
    return true;
}

static bool icmp_is_error(uint8_t type)
{
    return type == ICMP_DEST_UNREACH || type == ICMP_SOURCE_QUENCH ||
           type == ICMP_REDIRECT || type == ICMP_TIME_EXCEEDED ||
           type == ICMP_PARAM_PROB;
}

/* The "ports" of an L4 header at 'l4' ('avail' bytes): TCP/UDP ports, or
 * the ICMP identifier and (type << 8 | code). */
static void l4_ports(uint8_t proto, const uint8_t *l4, uint32_t avail,
                     rt_be16 *sport, rt_be16 *dport)
{
    *sport = *dport = 0;
    if (proto == IPPROTO_TCP_ || proto == IPPROTO_UDP_) {
        if (avail >= 4) {
            *sport = wire_be16(l4);
            *dport = wire_be16(l4 + 2);
        }
    } else if (proto == IPPROTO_ICMP_ || proto == IPPROTO_ICMPV6_) {
        if (avail >= 6) {
            *sport = wire_be16(l4 + ICMP_OFF_ID);
            *dport = htons((uint16_t)((l4[0] << 8) | l4[1]));
        }
    }
}

/*
 * Parses the packet quoted inside an ICMP error.  RFC 792 promises the IP
 * header plus 8 bytes; anything beyond is optional.  Bad inner IP checksums
 * are dropped (RFC 5508 REQ-3a); inner L4 checksums are not checked (3c).
 */
static enum rt_drop_reason parse_icmp_inner(struct pkt_meta *m)
{
    uint32_t off = m->l4_off + ICMP_HDR_LEN;
    if (m->len < off + IP4_HDR_MIN)
        return RT_DROP_L4_SHORT;
    const uint8_t *ip = m->data + off;
    if ((ip[0] >> 4) != 4)
        return RT_DROP_BAD_VERSION;
    uint32_t ihl = (uint32_t)(ip[0] & 0x0f) * 4;
    if (ihl < IP4_HDR_MIN || m->len < off + ihl)
        return RT_DROP_BAD_HDR_LEN;
    if (csum_full(ip, ihl) != 0)
        return RT_DROP_BAD_IP_CSUM;
    uint32_t avail = m->len - off - ihl;
    uint8_t iproto = ip[IP4_OFF_PROTO];
    bool ported = iproto == IPPROTO_ICMP_ || iproto == IPPROTO_TCP_ ||
                  iproto == IPPROTO_UDP_;
    if (ported && avail < 8)
        return RT_DROP_L4_SHORT;  /* cannot tell which flow it is about */
    if (avail > 8)
        avail = 8;
    m->inner_off = (uint16_t)off;
    m->inner_l4_off = (uint16_t)(off + ihl);
    m->inner_l4_avail = (uint8_t)avail;
    rt_be16 sp, dp;
    l4_ports(iproto, m->data + m->inner_l4_off, avail, &sp, &dp);
    tuple_fill4(&m->inner, wire_be32(ip + IP4_OFF_SRC), wire_be32(ip + IP4_OFF_DST),
                sp, dp, iproto);
    return RT_DROP_NONE;
}

/* The TCP header at 'l4' ('n' bytes to the end): its length, and with
 * 'verify' its checksum, 'pseudo' being the pseudo-header sum. */
static enum rt_drop_reason parse_tcp(struct pkt_meta *m, const uint8_t *l4, uint32_t n,
                                     uint64_t pseudo, bool verify)
{
    if (n < TCP_HDR_MIN)
        return RT_DROP_L4_SHORT;
    uint32_t doff = (uint32_t)(l4[TCP_OFF_DOFF] >> 4) * 4;
    if (doff < TCP_HDR_MIN || doff > n)
        return RT_DROP_L4_SHORT;
    if (verify && csum_fold(csum_add_bytes(pseudo, l4, n)) != 0)
        return RT_DROP_BAD_L4_CSUM;
    m->tcp_flags = l4[TCP_OFF_FLAGS];
    m->tcp_seq = wire_h32(l4 + TCP_OFF_SEQ);
    m->tcp_ack = wire_h32(l4 + TCP_OFF_ACK);
    m->tcp_win = wire_h16(l4 + TCP_OFF_WIN);
    m->l4_hdr_len = (uint16_t)doff;
    return RT_DROP_NONE;
}

/* The pseudo-header sum of 'len' bytes of 'proto' in the packet of 'm',
 * either family (RFC 793 3.1, RFC 8200 8.1). */
PER_PACKET uint64_t pseudo_sum(const struct pkt_meta *m, uint8_t proto, uint32_t len)
{
    const uint8_t *ip = m->data;
    if (m->family == 6)
        return csum_pseudo6(ip + IP6_OFF_SRC, ip + IP6_OFF_DST, proto, len);
    return csum_pseudo4(wire_be32(ip + IP4_OFF_SRC), wire_be32(ip + IP4_OFF_DST), proto, len);
}

/* A UDP header in the 'n' bytes at 'l4' of either family, its checksum
 * verified when 'verify'.  In IPv4 a zero checksum means the sender computed
 * none (RFC 768); in IPv6 it is mandatory, fragmented or not (RFC 8200 8.1). */
PER_PACKET enum rt_drop_reason parse_udp(struct pkt_meta *m, const uint8_t *l4, uint32_t n,
                                     bool verify)
{
    if (n < UDP_HDR_LEN)
        return RT_DROP_L4_SHORT;
    uint32_t ulen = wire_h16(l4 + UDP_OFF_LEN);
    /* In a first fragment the datagram goes on in later ones. */
    if (ulen < UDP_HDR_LEN || (ulen > n && !m->frag))
        return RT_DROP_L4_SHORT;
    bool v6 = m->family == 6, none = wire_be16(l4 + UDP_OFF_CSUM) == 0;
    if (v6 && none && (m->frag || verify))
        return RT_DROP_BAD_L4_CSUM;
    if (verify && !none &&
        csum_fold(csum_add_bytes(pseudo_sum(m, IPPROTO_UDP_, ulen), l4, ulen)) != 0)
        return RT_DROP_BAD_L4_CSUM;
    m->l4_hdr_len = UDP_HDR_LEN;
    return RT_DROP_NONE;
}

/* TCP or UDP in the 'n' bytes at 'l4', either family; checksums verified
 * when 'verify'. */
PER_PACKET enum rt_drop_reason parse_ported(struct pkt_meta *m, uint8_t *l4, uint32_t n, bool verify)
{
    if (m->proto == IPPROTO_UDP_)
        return parse_udp(m, l4, n, verify);
    return parse_tcp(m, l4, n, verify && n >= TCP_HDR_MIN ? pseudo_sum(m, IPPROTO_TCP_, n) : 0,
                     verify);
}

static enum rt_drop_reason parse_l4(struct pkt_meta *m, bool l4_csum)
{
    if (m->frag)
        l4_csum = false; /* the checksum covers the whole datagram */
    uint8_t *l4 = m->data + m->l4_off;
    uint32_t n = m->l4_len;
    rt_be32 src = wire_be32(m->data + IP4_OFF_SRC);
    rt_be32 dst = wire_be32(m->data + IP4_OFF_DST);

    switch (m->proto) {
    case IPPROTO_TCP_:
    case IPPROTO_UDP_: {
        enum rt_drop_reason r = parse_ported(m, l4, n, l4_csum);
        if (r != RT_DROP_NONE)
            return r;
        break;
    }
    case IPPROTO_ICMP_: {
        if (n < ICMP_HDR_LEN)
            return RT_DROP_L4_SHORT;
        if (!m->frag && csum_full(l4, n) != 0)
            return RT_DROP_BAD_L4_CSUM;
        m->l4_hdr_len = ICMP_HDR_LEN;
        m->icmp_type = l4[ICMP_OFF_TYPE];
        m->icmp_code = l4[ICMP_OFF_CODE];
        if (icmp_is_error(m->icmp_type)) {
            m->icmp_error = 1;
            enum rt_drop_reason r = parse_icmp_inner(m);
            if (r != RT_DROP_NONE)
                return r;
        } else if (icmp_query_reply_type(m->icmp_type) >= 0 ||
                   icmp_reply_query_type(m->icmp_type) >= 0) {
            m->icmp_query = 1;
        }
        break;
    }
    default:
        break;
    }
    rt_be16 sp, dp;
    l4_ports(m->proto, l4, n, &sp, &dp);
    tuple_fill4(&m->tuple, src, dst, sp, dp, m->proto);
    return RT_DROP_NONE;
}

static bool is_ext6(uint8_t nh)
{
    return nh == IP6_NH_HOPOPTS || nh == IP6_NH_ROUTING || nh == IP6_NH_FRAGMENT ||
           nh == IP6_NH_DSTOPTS || nh == IP6_NH_AH;
}

/*
 * The upper-layer header of the IPv6 packet quoted at 'in' ('len' bytes of
 * it): walks its extension headers like parse6() does, with the same bound,
 * and returns the offset of the L4 header with its protocol in '*proto'.
 * A quote cut inside the chain, or of a later fragment (no L4 header),
 * leaves '*proto' an extension header: the tuple then matches no flow.
 */
static uint32_t quoted_l4_6(const uint8_t *in, uint32_t len, uint8_t *proto)
{
    uint8_t nh = in[IP6_OFF_NH];
    uint32_t off = IP6_HDR_LEN;
    for (unsigned i = 0; i < IP6_MAX_EXT && is_ext6(nh) && off + 8 <= len; i++) {
        const uint8_t *h = in + off;
        if (nh == IP6_NH_FRAGMENT) {
            if (wire_h16(h + 2) & 0xfff8)
                break;
            nh = h[0];
            off += 8;
            continue;
        }
        uint32_t hl = nh == IP6_NH_AH ? ((uint32_t)h[1] + 2) * 4 : ((uint32_t)h[1] + 1) * 8;
        nh = h[0];
        off += hl;
    }
    *proto = nh;
    return off;
}

/*
 * IPv6: the fixed header, then the extension headers walked with a bound
 * (RFC 8200 4.1: hop-by-hop only first; at most IP6_MAX_EXT of them), then
 * the L4 header as for IPv4.  UDP checksums are mandatory in IPv6 (a zero
 * one is invalid), ICMPv6 checksums cover a pseudo-header.
 */
/* An ICMPv6 error at 'l4' ('n' bytes, at offset 'off' of the packet): the
 * quoted packet's tuple, its extension headers walked (a first fragment's
 * quote has a fragment header). */
static enum rt_drop_reason parse_icmp6_quote(struct pkt_meta *m, uint8_t *l4, uint32_t n,
                                             uint32_t off)
{
    m->icmp_error = 1;
    if (n < ICMP_HDR_LEN + IP6_HDR_LEN + 4)
        return RT_DROP_L4_SHORT;
    uint8_t *in = l4 + ICMP_HDR_LEN;
    uint32_t qlen = n - ICMP_HDR_LEN;
    uint8_t iproto;
    uint32_t ioff = quoted_l4_6(in, qlen, &iproto);
    uint32_t avail = ioff < qlen ? qlen - ioff : 0;
    if (ioff > qlen)
        ioff = qlen;
    if (off + ICMP_HDR_LEN + ioff > 0xffff)
        return RT_DROP_BAD_EXT_HDR; /* offsets are 16 bits */
    m->inner_off = (uint16_t)(off + ICMP_HDR_LEN);
    m->inner_l4_off = (uint16_t)(off + ICMP_HDR_LEN + ioff);
    m->inner_l4_avail = (uint8_t)(avail < 8 ? avail : 8);
    rt_be16 sp, dp;
    l4_ports(iproto, in + ioff, avail, &sp, &dp);
    tuple_fill6(&m->inner, in + IP6_OFF_SRC, in + IP6_OFF_DST, sp, dp, iproto);
    return RT_DROP_NONE;
}

static enum rt_drop_reason parse6(uint8_t *data, uint32_t len, bool l4_csum,
                                  struct pkt_meta *m)
{
    if (len < IP6_HDR_LEN)
        return RT_DROP_SHORT;
    uint32_t total = IP6_HDR_LEN + wire_h16(data + IP6_OFF_PLEN);
    if (total > len)
        return RT_DROP_BAD_TOTAL_LEN; /* jumbograms (plen 0) are not forwarded */
    m->family = 6;
    m->len = total;
    m->ttl = data[IP6_OFF_HLIM];
    uint8_t nh = data[IP6_OFF_NH];
    uint32_t off = IP6_HDR_LEN;
    for (unsigned i = 0;; i++) {
        if (!is_ext6(nh))
            break;
        if (i >= IP6_MAX_EXT || (nh == IP6_NH_HOPOPTS && i != 0) || off + 8 > total)
            return RT_DROP_BAD_EXT_HDR;
        const uint8_t *h = data + off;
        if (nh == IP6_NH_FRAGMENT) {
            /* RFC 8200 4.5.  An atomic fragment (offset 0, M clear, RFC
             * 6946) is a whole packet; a later one has no L4 header; a
             * first one must hold the whole header chain (RFC 7112), which
             * the L4 parse below checks. */
            uint16_t fo = wire_h16(h + 2);
            if (m->frag)
                return RT_DROP_BAD_IPV6_FRAGMENT; /* a second fragment header */
            if ((fo & 1) && (total - off - 8) % 8 != 0)
                return RT_DROP_BAD_IPV6_FRAGMENT; /* not the last: 8-byte units */
            if (fo & 0xfff9) {
                memcpy(&m->frag_id, h + 4, 4);
                if (fo & 0xfff8) {
                    m->frag = 2;
                    m->proto = h[0];
                    m->l3_len = (uint16_t)(off + 8);
                    m->l4_off = (uint16_t)(off + 8);
                    m->l4_len = total - off - 8;
                    tuple_fill6(&m->tuple, data + IP6_OFF_SRC, data + IP6_OFF_DST, 0, 0, h[0]);
                    return RT_DROP_NONE;
                }
                m->frag = 1;
                l4_csum = false; /* the checksum covers the whole datagram */
            }
            nh = h[0];
            off += 8;
            continue;
        }
        uint32_t hl = nh == IP6_NH_AH ? ((uint32_t)h[1] + 2) * 4 : ((uint32_t)h[1] + 1) * 8;
        if (off + hl > total)
            return RT_DROP_BAD_EXT_HDR;
        nh = h[0];
        off += hl;
    }
    if (off > 0xffff)
        return RT_DROP_BAD_EXT_HDR;
    m->proto = nh;
    m->l3_len = (uint16_t)off;
    m->l4_off = (uint16_t)off;
    m->l4_len = total - off;
    uint8_t *l4 = data + off;
    uint32_t n = m->l4_len;
    const uint8_t *src = data + IP6_OFF_SRC, *dst = data + IP6_OFF_DST;
    switch (nh) {
    case IPPROTO_TCP_:
    case IPPROTO_UDP_: {
        enum rt_drop_reason r = parse_ported(m, l4, n, l4_csum);
        if (r != RT_DROP_NONE)
            return r;
        break;
    }
    case IPPROTO_ICMPV6_: {
        if (n < ICMP_HDR_LEN)
            return RT_DROP_L4_SHORT;
        if (!m->frag && csum_fold(csum_add_bytes(csum_pseudo6(src, dst, nh, n), l4, n)) != 0)
            return RT_DROP_BAD_L4_CSUM;
        m->l4_hdr_len = ICMP_HDR_LEN;
        m->icmp_type = l4[ICMP_OFF_TYPE];
        m->icmp_code = l4[ICMP_OFF_CODE];
        if (m->icmp_type < 128) {
            enum rt_drop_reason r = parse_icmp6_quote(m, l4, n, off);
            if (r != RT_DROP_NONE)
                return r;
        } else if (icmp6_query_reply_type(m->icmp_type) >= 0) {
            m->icmp_query = 1;
        }
        break;
    }
    default:
        break;
    }
    rt_be16 sp, dp;
    l4_ports(nh, l4, n, &sp, &dp);
    tuple_fill6(&m->tuple, src, dst, sp, dp, nh);
    return RT_DROP_NONE;
}

enum rt_drop_reason pkt_parse(uint8_t *data, uint32_t len, bool l4_csum,
                              struct pkt_meta *m)
{
    /* Everything but the two tuples (80 bytes the parse writes itself: the
     * packet's tuple on success, the quoted one for ICMP errors only). */
    memset(m, 0, offsetof(struct pkt_meta, tuple));
    m->data = data;
    if (len < 1)
        return RT_DROP_SHORT;
    unsigned version = data[0] >> 4;
    if (version == 6)
        return parse6(data, len, l4_csum, m);
    if (version != 4)
        return RT_DROP_BAD_VERSION;
    if (len < IP4_HDR_MIN)
        return RT_DROP_SHORT;
    uint32_t ihl = (uint32_t)(data[0] & 0x0f) * 4;
    if (ihl < IP4_HDR_MIN || ihl > len)
        return RT_DROP_BAD_HDR_LEN;
    uint32_t total = wire_h16(data + IP4_OFF_TOTLEN);
    if (total < ihl || total > len)
        return RT_DROP_BAD_TOTAL_LEN;
    if (csum_full(data, ihl) != 0)
        return RT_DROP_BAD_IP_CSUM;

    m->family = 4;
    m->len = total;
    m->l3_len = (uint16_t)ihl;
    m->l4_off = (uint16_t)ihl;
    m->l4_len = total - ihl;
    m->proto = data[IP4_OFF_PROTO];
    m->ttl = data[IP4_OFF_TTL];
    uint16_t frag = wire_h16(data + IP4_OFF_FRAG);
    m->df = (frag & IP4_FRAG_DF) != 0;
    m->frag_id = wire_be16(data + IP4_OFF_ID);
    if (frag & IP4_FRAG_OFFSET) {
        m->frag = 2; /* no L4 header here */
        tuple_fill4(&m->tuple, wire_be32(data + IP4_OFF_SRC),
                    wire_be32(data + IP4_OFF_DST), 0, 0, m->proto);
        return RT_DROP_NONE;
    }
    if (frag & IP4_FRAG_MF)
        m->frag = 1;
    return parse_l4(m, l4_csum);
}
