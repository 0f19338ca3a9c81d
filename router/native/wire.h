/*
 * wire.h - header offsets and unaligned-safe loads and stores.
 *
 * Packets come from read() into byte buffers with no alignment promise, so
 * every multi-byte field is read and written through memcpy, which compilers
 * turn into single moves.  Loads named _be return the raw network-order
 * value; loads named _h convert to host order.
 */
#ifndef RT_WIRE_H
#define RT_WIRE_H

#include <string.h>
#include <arpa/inet.h>
#include "rt_types.h"

/* IPv4 header (RFC 791). */
#define IP4_HDR_MIN 20
#define IP4_OFF_VER_IHL 0
#define IP4_OFF_TOS 1
#define IP4_OFF_TOTLEN 2
#define IP4_OFF_ID 4
#define IP4_OFF_FRAG 6
#define IP4_OFF_TTL 8
#define IP4_OFF_PROTO 9
#define IP4_OFF_CSUM 10
#define IP4_OFF_SRC 12
#define IP4_OFF_DST 16
#define IP4_FRAG_DF 0x4000
#define IP4_FRAG_MF 0x2000
#define IP4_FRAG_OFFSET 0x1fff

/* IPv6 fixed header (RFC 8200). */
#define IP6_HDR_LEN 40
#define IP6_OFF_PLEN 4
#define IP6_OFF_NH 6
#define IP6_OFF_HLIM 7
#define IP6_OFF_SRC 8
#define IP6_OFF_DST 24
#define IP6_MIN_MTU 1280
/* Extension headers (RFC 8200 4). */
#define IP6_NH_HOPOPTS 0
#define IP6_NH_ROUTING 43
#define IP6_NH_FRAGMENT 44
#define IP6_NH_AH 51
#define IP6_NH_NONE 59
#define IP6_NH_DSTOPTS 60
#define IP6_MAX_EXT 8     /* headers walked at most before giving up */

/* ICMPv6 (RFC 4443). */
#define IPPROTO_ICMPV6_ 58
#define ICMP6_DST_UNREACH 1
#define ICMP6_PACKET_TOO_BIG 2
#define ICMP6_TIME_EXCEEDED 3
#define ICMP6_PARAM_PROB 4
#define ICMP6_ECHO_REQUEST 128
#define ICMP6_ECHO_REPLY 129
#define ICMP6_UNREACH_NOROUTE 0
#define ICMP6_UNREACH_ADMIN 1

/* TCP (RFC 9293). */
#define TCP_HDR_MIN 20
#define TCP_OFF_SPORT 0
#define TCP_OFF_DPORT 2
#define TCP_OFF_SEQ 4
#define TCP_OFF_ACK 8
#define TCP_OFF_DOFF 12
#define TCP_OFF_FLAGS 13
#define TCP_OFF_WIN 14
#define TCP_OFF_CSUM 16
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_ECE 0x40
#define TCP_CWR 0x80

/* UDP (RFC 768). */
#define UDP_HDR_LEN 8
#define UDP_OFF_SPORT 0
#define UDP_OFF_DPORT 2
#define UDP_OFF_LEN 4
#define UDP_OFF_CSUM 6

/* ICMP (RFC 792). */
#define ICMP_HDR_LEN 8
#define ICMP_OFF_TYPE 0
#define ICMP_OFF_CODE 1
#define ICMP_OFF_CSUM 2
#define ICMP_OFF_ID 4
#define ICMP_OFF_SEQ 6
#define ICMP_OFF_MTU 6
#define ICMP_ECHO_REPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_SOURCE_QUENCH 4
#define ICMP_REDIRECT 5
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAM_PROB 12
#define ICMP_TIMESTAMP 13
#define ICMP_TIMESTAMP_REPLY 14
#define ICMP_INFO_REQUEST 15
#define ICMP_INFO_REPLY 16
#define ICMP_ADDR_MASK 17
#define ICMP_ADDR_MASK_REPLY 18
#define ICMP_UNREACH_NET 0
#define ICMP_UNREACH_PROTO 2
#define ICMP_UNREACH_PORT 3
#define ICMP_UNREACH_NEEDFRAG 4
#define ICMP_UNREACH_ADMIN 13

#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

static inline uint16_t wire_be16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline uint32_t wire_be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint16_t wire_h16(const uint8_t *p)
{
    return ntohs(wire_be16(p));
}

static inline uint32_t wire_h32(const uint8_t *p)
{
    return ntohl(wire_be32(p));
}

static inline void wire_put_be16(uint8_t *p, rt_be16 v)
{
    memcpy(p, &v, 2);
}

static inline void wire_put_be32(uint8_t *p, rt_be32 v)
{
    memcpy(p, &v, 4);
}

/* ---- address classes ------------------------------------------------------ */

/* Sources no host may use (RFC 1122 3.2.1.3, RFC 5735); 's' in host order. */
static inline bool addr4_martian_src(uint32_t s)
{
    uint8_t top = (uint8_t)(s >> 24);
    return top == 0 || top == 127 || top >= 224;
}

static inline bool addr6_multicast(const uint8_t *a) { return a[0] == 0xff; }
static inline bool addr6_link_local(const uint8_t *a)
{
    return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

static inline bool addr6_unspecified_or_loopback(const uint8_t *a)
{
    for (int i = 0; i < 15; i++)
        if (a[i])
            return false;
    return a[15] <= 1;
}

#endif /* RT_WIRE_H */
