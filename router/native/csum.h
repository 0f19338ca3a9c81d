/*
 * csum.h - the Internet checksum (RFC 1071) and its incremental update
 * (RFC 1624).
 *
 * All values are handled as they sit in memory.  The one's complement sum
 * does not depend on byte order as long as every word is taken the same way,
 * so a field can be updated from the raw old and new bytes with no swaps.
 */
#ifndef RT_CSUM_H
#define RT_CSUM_H

#include "rt_types.h"

/* Adds 'len' bytes at 'data' to the running 32-bit-wide sum 'sum'. */
uint64_t csum_add_bytes(uint64_t sum, const uint8_t *data, size_t len);

/* Folds a running sum to 16 bits and complements it: the checksum field. */
uint16_t csum_fold(uint64_t sum);

/* Full checksum of 'len' bytes: 0 when 'data' holds a correct checksum. */
uint16_t csum_full(const uint8_t *data, size_t len);

/* Running sum of the IPv4 pseudo-header (RFC 9293 3.1, RFC 768). */
uint64_t csum_pseudo4(rt_be32 src, rt_be32 dst, uint8_t proto, uint32_t l4_len);
/* The IPv6 pseudo-header (RFC 8200 8.1) of 'l4_len' bytes of 'proto'. */
uint64_t csum_pseudo6(const uint8_t *src, const uint8_t *dst, uint8_t proto,
                      uint32_t l4_len);

/*
 * RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').  Updates the checksum stored at
 * 'field' (2 bytes, any alignment) for a 16-bit or 32-bit word of the
 * covered data changing from 'old' to 'new'.
 */
static inline uint16_t csum16_add(uint16_t a, uint16_t b)
{
    uint32_t s = (uint32_t)a + b;
    return (uint16_t)((s & 0xffff) + (s >> 16));
}

static inline void csum_replace2(uint8_t *field, uint16_t old, uint16_t new_)
{
    uint16_t hc;
    __builtin_memcpy(&hc, field, 2);
    hc = (uint16_t)~csum16_add(csum16_add((uint16_t)~hc, (uint16_t)~old), new_);
    __builtin_memcpy(field, &hc, 2);
}

static inline void csum_replace4(uint8_t *field, uint32_t old, uint32_t new_)
{
    uint16_t hc;
    __builtin_memcpy(&hc, field, 2);
    uint16_t s = (uint16_t)~hc;
    s = csum16_add(s, (uint16_t)~(uint16_t)old);
    s = csum16_add(s, (uint16_t)~(uint16_t)(old >> 16));
    s = csum16_add(s, (uint16_t)new_);
    s = csum16_add(s, (uint16_t)(new_ >> 16));
    hc = (uint16_t)~s;
    __builtin_memcpy(field, &hc, 2);
}

/*
 * The same update for a field that holds a partial checksum (a packet marked
 * NEEDS_CSUM): the field carries the folded pseudo-header sum itself, not its
 * complement, and whoever finishes the checksum adds the rest and complements
 * it.  So the sum is updated without the complement: S' = S + ~m + m'.
 * Only pseudo-header words (addresses, length) may change this way.
 */
static inline void csum_replace4_partial(uint8_t *field, uint32_t old, uint32_t new_)
{
    uint16_t s;
    __builtin_memcpy(&s, field, 2);
    s = csum16_add(s, (uint16_t)~(uint16_t)old);
    s = csum16_add(s, (uint16_t)~(uint16_t)(old >> 16));
    s = csum16_add(s, (uint16_t)new_);
    s = csum16_add(s, (uint16_t)(new_ >> 16));
    __builtin_memcpy(field, &s, 2);
}

/* csum_replace4() or, with 'partial', csum_replace4_partial() for an IPv6
 * address (16 bytes at 'old' and 'new_') changing under a checksum that
 * covers it through the pseudo-header. */
void csum_replace16(uint8_t *field, const uint8_t *old, const uint8_t *new_, bool partial);

#endif /* RT_CSUM_H */
