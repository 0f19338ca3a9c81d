/*
 * npt6.c - IPv6-to-IPv6 network prefix translation (NPTv6, RFC 6296):
 * stateless and checksum-neutral.
 *
 * A packet arriving on an interface with a rule, for an address in the
 * rule's outside prefix, gets the inside prefix before anything else looks
 * at it (dp_ip6.c); a packet leaving through it from the inside prefix gets
 * the outside one after conntrack and the firewall (dp_fwd.h), so both only
 * ever see inside addresses.  The prefix change is balanced by one 16-bit
 * word (bits 48-63) so that the one's complement sum of the address, and
 * with it every L4 checksum, stays the same.
 */
#include <string.h>
#include "dp.h"

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
bool dp_npt6_rewrite(uint8_t *a, const uint8_t *to, uint32_t plen, uint16_t adj)
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
const struct dp_npt6 *dp_npt6_rule(const struct rt_dp *dp, int iface, const uint8_t *a,
                                   bool inbound)
{
    for (uint32_t i = 0; i < dp->n_npt6; i++) {
        const struct dp_npt6 *n = &dp->npt6[i];
        if (n->iface == iface && prefix_match6(a, inbound ? n->outside : n->inside, n->plen))
            return n;
    }
    return NULL;
}


/* Error messages the router sends are at most the minimum IPv6 MTU. */
#define ICMP6_ERR_MAX IP6_MIN_MTU
