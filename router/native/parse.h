/*
 * parse.h - bytes to packet metadata, bounds checked once.
 */
#ifndef RT_PARSE_H
#define RT_PARSE_H

#include "tuple.h"

/* What the parser learned about one packet.  Offsets are from 'data'. */
struct pkt_meta {
    uint8_t *data;          /* the packet, starting at the IP header */
    uint32_t len;           /* IP total length (padding after it is cut) */
    uint16_t l3_len;        /* IP header length in bytes */
    uint16_t l4_off;        /* offset of the L4 header (== l3_len) */
    uint32_t l4_len;        /* bytes from the L4 header to the end */
    uint16_t l4_hdr_len;    /* TCP/UDP/ICMP header length, 0 for others */
    uint16_t segs;          /* segments this packet stands for (GSO), set
                               by the caller; 1 for a plain packet */
    uint8_t family;         /* 4 or 6 */
    uint8_t proto;          /* IP protocol */
    uint8_t ttl;            /* IPv4 TTL */
    uint8_t tcp_flags;      /* TCP flags byte, 0 otherwise */
    uint16_t tcp_win;       /* TCP window field, host order */
    uint32_t tcp_seq;       /* TCP sequence number, host order */
    uint32_t tcp_ack;       /* TCP acknowledgement number, host order */
    uint8_t df;             /* IPv4 don't-fragment bit set */
    uint8_t frag;           /* a fragment: 1 the first (offset 0), 2 a later
                               one (no L4 header), 0 a whole datagram */
    rt_be32 frag_id;        /* IPv4 identification (16 bits) or IPv6
                               fragment identification, as in the packet */
    uint8_t icmp_type;      /* ICMP type, if proto is ICMP */
    uint8_t icmp_code;      /* ICMP code, if proto is ICMP */
    uint8_t icmp_error;     /* ICMP error carrying an inner packet */
    uint8_t icmp_query;     /* ICMP query or query reply (has an id) */
    uint8_t inner_l4_avail; /* bytes of inner L4 header present (<= 8) */
    uint8_t csum_partial;   /* L4 checksum is partial (NEEDS_CSUM); set by
                               the caller, not the parser */
    uint16_t inner_off;     /* ICMP error: offset of the inner IP header */
    uint16_t inner_l4_off;  /* ICMP error: offset of the inner L4 header */
    /* pkt_parse() zeroes what comes before 'tuple' and leaves these two to
     * be written: 'tuple' always on success, 'inner' only for ICMP errors
     * (icmp_error set), so they must stay last and be read only so. */
    struct ct_tuple tuple;  /* the packet's own tuple */
    struct ct_tuple inner;  /* ICMP error: tuple of the inner packet */
};

/*
 * Parses the packet of 'len' bytes at 'data' into 'm'.  With 'l4_csum' TCP
 * and UDP checksums are verified too (ICMP checksums always are, RFC 5508
 * REQ-3), except in fragments, which hold only part of what the checksum
 * covers.  A later fragment (offset > 0) has no L4 header: its tuple has
 * addresses and protocol only.  Returns RT_DROP_NONE or the reason to drop
 * the packet.  After a success every offset in 'm' lies inside the packet.
 */
enum rt_drop_reason pkt_parse(uint8_t *data, uint32_t len, bool l4_csum,
                              struct pkt_meta *m);

#endif /* RT_PARSE_H */
