/*
 * csum.c - Internet checksum primitives.
 *
 * Theory of operation: the checksum is the one's complement of the one's
 * complement sum of 16-bit words (RFC 1071).  csum_add_bytes() accumulates in
 * a 64-bit register four bytes at a time and folds at the end, which is exact
 * as long as fewer than 2^32 words are added.  Incremental updates follow
 * RFC 1624 equation 3, which, unlike equation 2 of RFC 1141, never turns a
 * correct 0x0000 into 0xffff by itself.
 */
#include <string.h>
#include "csum.h"

uint64_t csum_add_bytes(uint64_t sum, const uint8_t *data, size_t len)
{
    while (len >= 4) {
        uint32_t w;
        memcpy(&w, data, 4);
        sum += w;
        data += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t w;
        memcpy(&w, data, 2);
        sum += w;
        data += 2;
        len -= 2;
    }
    if (len) {
        /* A trailing odd byte is the high-order byte of a zero-padded word
         * in network order, i.e. the first byte in memory. */
        uint8_t pad[2] = {data[0], 0};
        uint16_t w;
        memcpy(&w, pad, 2);
        sum += w;
    }
    return sum;
}

uint16_t csum_fold(uint64_t sum)
{
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffffu) + (sum >> 16);
    sum = (sum & 0xffffu) + (sum >> 16);
    sum = (sum & 0xffffu) + (sum >> 16);
    return (uint16_t)~sum;
}

uint16_t csum_full(const uint8_t *data, size_t len)
{
    return csum_fold(csum_add_bytes(0, data, len));
}

uint64_t csum_pseudo4(rt_be32 src, rt_be32 dst, uint8_t proto, uint32_t l4_len)
{
    uint64_t sum = (uint64_t)src + dst;
    uint8_t tail[4] = {0, proto, (uint8_t)(l4_len >> 8), (uint8_t)l4_len};
    uint32_t w;
    memcpy(&w, tail, 4);
    return sum + w;
}

uint64_t csum_pseudo6(const uint8_t *src, const uint8_t *dst, uint8_t proto,
                      uint32_t l4_len)
{
    uint8_t tail[8] = {(uint8_t)(l4_len >> 24), (uint8_t)(l4_len >> 16),
                       (uint8_t)(l4_len >> 8), (uint8_t)l4_len, 0, 0, 0, proto};
    uint64_t sum = csum_add_bytes(0, src, 16);
    sum = csum_add_bytes(sum, dst, 16);
    return csum_add_bytes(sum, tail, sizeof tail);
}

void csum_replace16(uint8_t *field, const uint8_t *old, const uint8_t *new_, bool partial)
{
    for (int i = 0; i < 16; i += 4) {
        uint32_t o, n;
        memcpy(&o, old + i, 4);
        memcpy(&n, new_ + i, 4);
        if (o == n)
            continue;
        if (partial)
            csum_replace4_partial(field, o, n);
        else
            csum_replace4(field, o, n);
    }
}
