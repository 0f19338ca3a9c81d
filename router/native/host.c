/*
 * host.c - per-source accounting: how many connections each source address
 * has, and a token bucket for the rate at which it opens new ones.
 *
 * Theory of operation: a chained hash table of fixed size.  An entry stays
 * while its source has connections and after (so that closing connections
 * quickly does not refill a bucket); when the table is full, a bounded scan
 * from a rotating cursor evicts an entry with no connections.  If it finds
 * none, the new source is not tracked and its connections are not limited,
 * which is the safe side for a router that must not fail closed on memory.
 */
#include <stdlib.h>
#include <string.h>
#include "host.h"

#define HOST_EVICT_SCAN 64
#define HOST_NIL UINT32_MAX

static uint32_t host_hash(const struct host_table *ht, const union rt_addr *addr,
                          uint8_t family)
{
    uint64_t h = (addr->w[0] ^ ht->key) * 0x9e3779b97f4a7c15ULL;
    h = (h ^ (h >> 29) ^ addr->w[1] ^ family) * 0xbf58476d1ce4e5b9ULL;
    return (uint32_t)(h >> 32);
}

static bool same(const struct host_entry *e, const union rt_addr *addr, uint8_t family)
{
    return e->family == family && e->addr.w[0] == addr->w[0] && e->addr.w[1] == addr->w[1];
}

int host_init(struct host_table *ht, uint32_t capacity, uint64_t seed)
{
    memset(ht, 0, sizeof *ht);
    uint32_t nb = 2;
    while (nb < 2 * (uint64_t)capacity)
        nb <<= 1;
    ht->e = calloc(capacity, sizeof *ht->e);
    ht->buckets = malloc((size_t)nb * sizeof *ht->buckets);
    if (!ht->e || !ht->buckets) {
        host_destroy(ht);
        return -1;
    }
    memset(ht->buckets, 0xff, (size_t)nb * sizeof *ht->buckets);
    ht->mask = nb - 1;
    ht->capacity = capacity;
    ht->free_head = HOST_NIL;
    ht->key = seed * 0xc2b2ae3d27d4eb4fULL + 11;
    return 0;
}

void host_destroy(struct host_table *ht)
{
    free(ht->e);
    free(ht->buckets);
    memset(ht, 0, sizeof *ht);
}

static void unlink_entry(struct host_table *ht, uint32_t i)
{
    uint32_t *link = &ht->buckets[host_hash(ht, &ht->e[i].addr, ht->e[i].family) & ht->mask];
    while (*link != HOST_NIL && *link != i)
        link = &ht->e[*link].next;
    if (*link == i)
        *link = ht->e[i].next;
}

/* A free slot: recycled, never used, or an idle entry evicted. */
static int64_t take_slot(struct host_table *ht)
{
    if (ht->free_head != HOST_NIL) {
        uint32_t i = ht->free_head;
        ht->free_head = ht->e[i].next;
        return i;
    }
    if (ht->high_water < ht->capacity)
        return ht->high_water++;
    for (unsigned n = 0; n < HOST_EVICT_SCAN; n++) {
        uint32_t i = ht->cursor;
        ht->cursor = (ht->cursor + 1) % ht->capacity;
        if (ht->e[i].in_use && ht->e[i].conns == 0) {
            unlink_entry(ht, i);
            return i;
        }
    }
    return -1;
}

struct host_entry *host_get(struct host_table *ht, const union rt_addr *addr, uint8_t family,
                            bool create)
{
    if (!ht->capacity)
        return NULL;
    uint32_t b = host_hash(ht, addr, family) & ht->mask;
    for (uint32_t i = ht->buckets[b]; i != HOST_NIL; i = ht->e[i].next)
        if (same(&ht->e[i], addr, family))
            return &ht->e[i];
    if (!create)
        return NULL;
    int64_t slot = take_slot(ht);
    if (slot < 0)
        return NULL;
    struct host_entry *e = &ht->e[slot];
    memset(e, 0, sizeof *e);
    e->addr = *addr;
    e->family = family;
    e->in_use = 1;
    e->tokens = UINT32_MAX; /* "full", set properly on first use */
    e->next = ht->buckets[b];
    ht->buckets[b] = (uint32_t)slot;
    return e;
}
