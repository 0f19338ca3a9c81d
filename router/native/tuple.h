/*
 * tuple.h - the connection tuple: what identifies one direction of a flow.
 *
 * A tuple is a fixed-size, zeroed, network-order key, so it can be hashed and
 * compared as bytes.  Addresses have room for IPv6; an IPv4 address sits in
 * the first four bytes and the other twelve stay zero.  Like Linux's
 * nf_conntrack_tuple, the source part (address and port) is what SNAT
 * rewrites and the destination part is what DNAT rewrites.
 *
 * Changes here must be mirrored in ct_hash() and tuple_invert().
 */
#ifndef RT_TUPLE_H
#define RT_TUPLE_H

#include <assert.h>
#include "rt_types.h"

/* An IPv4 or IPv6 address in network order. */
union rt_addr {
    uint8_t b[16];  /* all 16 bytes, IPv6 */
    rt_be32 v4;     /* IPv4: first 4 bytes, the rest zero */
    uint64_t w[2];  /* for hashing */
};

struct ct_tuple {
    union rt_addr src;  /* source address */
    union rt_addr dst;  /* destination address */
    rt_be16 sport;      /* TCP/UDP source port; ICMP query identifier */
    rt_be16 dport;      /* TCP/UDP destination port; ICMP (type << 8 | code) */
    uint8_t proto;      /* IP protocol number */
    uint8_t family;     /* 4 or 6 */
    uint16_t zone;      /* conntrack zone, 0 for now; keeps the size round */
};
static_assert(sizeof(struct ct_tuple) == 40, "ct_tuple must have no padding");

/*
 * Fills 't' as an IPv4 tuple with five 8-byte stores.  The hash reads the
 * tuple as 8-byte words right away; building it from narrow field stores
 * instead defeats store-to-load forwarding and costs a stall per word.
 */
static inline void tuple_fill4(struct ct_tuple *t, rt_be32 src, rt_be32 dst,
                               rt_be16 sport, rt_be16 dport, uint8_t proto)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* One 8-byte store per word, straight into 't': building the words in
     * an array first lets the compiler copy it with 16-byte loads, which
     * cannot be forwarded from the 8-byte stores and stall. */
    uint64_t w0 = src, w2 = dst, zero = 0;
    uint64_t w4 = (uint64_t)sport | (uint64_t)dport << 16 | (uint64_t)proto << 32 |
                  (uint64_t)4 << 40;
    uint8_t *b = (uint8_t *)t;
    __builtin_memcpy(b, &w0, 8);
    __builtin_memcpy(b + 8, &zero, 8);
    __builtin_memcpy(b + 16, &w2, 8);
    __builtin_memcpy(b + 24, &zero, 8);
    __builtin_memcpy(b + 32, &w4, 8);
#else
    __builtin_memset(t, 0, sizeof *t);
    t->src.v4 = src;
    t->dst.v4 = dst;
    t->sport = sport;
    t->dport = dport;
    t->proto = proto;
    t->family = 4;
#endif
}

/* Fills 't' as an IPv6 tuple. */
static inline void tuple_fill6(struct ct_tuple *t, const uint8_t *src,
                               const uint8_t *dst, rt_be16 sport, rt_be16 dport,
                               uint8_t proto)
{
    __builtin_memcpy(t->src.b, src, 16);
    __builtin_memcpy(t->dst.b, dst, 16);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* The last word in one store, as in tuple_fill4(). */
    uint64_t w4 = (uint64_t)sport | (uint64_t)dport << 16 | (uint64_t)proto << 32 |
                  (uint64_t)6 << 40;
    __builtin_memcpy((uint8_t *)t + 32, &w4, 8);
#else
    t->sport = sport;
    t->dport = dport;
    t->proto = proto;
    t->family = 6;
    t->zone = 0;
#endif
}

/* Directions of a connection, as Linux names them. */
enum ct_dir { CT_DIR_ORIGINAL = 0, CT_DIR_REPLY = 1, CT_DIRS = 2 };

/*
 * ICMP query types that may start a connection, and their reply types
 * (RFC 792, RFC 950).  Returns -1 for a type that is not a query.
 */
static inline int icmp_query_reply_type(uint8_t type)
{
    switch (type) {
    case 8: return 0;    /* echo */
    case 13: return 14;  /* timestamp */
    case 15: return 16;  /* information */
    case 17: return 18;  /* address mask */
    default: return -1;
    }
}

/* The inverse for a reply type, or -1. */
static inline int icmp_reply_query_type(uint8_t type)
{
    switch (type) {
    case 0: return 8;
    case 14: return 13;
    case 16: return 15;
    case 18: return 17;
    default: return -1;
    }
}

/* True if the first 'plen' bits of IPv6 addresses 'a' and 'net' agree. */
static inline bool prefix_match6(const uint8_t *a, const uint8_t *net, uint32_t plen)
{
    uint32_t full = plen / 8, rest = plen % 8;
    if (__builtin_memcmp(a, net, full) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return ((a[full] ^ net[full]) & mask) == 0;
}

/* ICMPv6 echo (RFC 4443): request <-> reply, or -1. */
static inline int icmp6_query_reply_type(uint8_t type)
{
    return type == 128 ? 129 : type == 129 ? 128 : -1;
}

/*
 * Writes into 'out' the tuple of the other direction of 't'.  Returns false
 * if 't' has no inverse (an ICMP type that is neither query nor reply).
 */
bool tuple_invert(const struct ct_tuple *t, struct ct_tuple *out);

#endif /* RT_TUPLE_H */
