/*
 * nat.h - choosing NAT bindings and rewriting packets to match them.
 */
#ifndef RT_NAT_H
#define RT_NAT_H

#include "ct.h"
#include "parse.h"

struct nat_params {
    uint16_t port_min;    /* TCP/UDP search range, inclusive */
    uint16_t port_max;
    bool preserve_ports;  /* keep the source port / ICMP id when free */
};

/* The most candidate ports one binding may try: 128 + 64 + 32 + 16 + 8,
 * the bound Linux and Open vSwitch use. */
#define NAT_MAX_PROBES 248

/*
 * Source NAT for the new connection 'c', whose tuples are the original
 * tuple and its plain inverse: makes the reply tuple point at 'addr' and, for
 * TCP, UDP and ICMP queries, at a port (identifier) no other connection's
 * tuple uses.  '*rng' is the data plane's random state.  Returns false when
 * no free binding was found within NAT_MAX_PROBES.
 */
bool nat_snat(struct ct_table *ct, struct ct_conn *c, rt_be32 addr,
              const struct nat_params *np, uint64_t *rng, uint64_t now_ms);

/* Rewrites packet 'm' of 'c' travelling in 'dir' so that it looks like the
 * inverse of the other direction's tuple, updating checksums (RFC 1624). */
void nat_rewrite(struct pkt_meta *m, const struct ct_conn *c, enum ct_dir dir);

/*
 * Rewrites an ICMP error travelling in 'dir' about a packet of 'c' (RFC 5508
 * REQ-4/5): the outer addresses like nat_rewrite(), and the quoted packet so
 * that it looks like what its sender sent.  The ICMP checksum is recomputed.
 */
void nat_rewrite_icmp_error(struct pkt_meta *m, const struct ct_conn *c,
                            enum ct_dir dir);

/* xorshift64* step. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dULL;
}

#endif /* RT_NAT_H */
