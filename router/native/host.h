/*
 * host.h - per-source accounting for the firewall's limits.
 */
#ifndef RT_HOST_H
#define RT_HOST_H

#include "tuple.h"

/* One source (an IPv4 address, or an IPv6 address or prefix, zeroed past
 * it) that has opened connections. */
struct host_entry {
    union rt_addr addr;   /* the source */
    uint32_t conns;       /* its tracked connections */
    uint32_t next;        /* chain link, or free-list link */
    uint32_t tokens;      /* new-connection bucket, in 1/1000 */
    uint32_t refill_ms;   /* low 32 bits of when it was refilled */
    uint8_t in_use;       /* slot holds an entry */
    uint8_t family;       /* 4 or 6 */
    uint8_t pad[6];       /* zero */
};

struct host_table {
    struct host_entry *e;  /* 'capacity' slots */
    uint32_t *buckets;     /* chain heads */
    uint32_t mask;         /* buckets - 1 */
    uint32_t capacity;     /* most sources tracked */
    uint32_t high_water;   /* slots from here on never used */
    uint32_t free_head;    /* recycled slots */
    uint32_t cursor;       /* where the next eviction scan starts */
    uint32_t active;       /* sources with connections (conns > 0) */
    uint64_t key;          /* hash key */
};

int host_init(struct host_table *ht, uint32_t capacity, uint64_t seed);
void host_destroy(struct host_table *ht);

/* The entry of source 'addr' of 'family', made if 'create' (evicting an
 * idle one when full); NULL if there is none and none can be made. */
struct host_entry *host_get(struct host_table *ht, const union rt_addr *addr, uint8_t family,
                            bool create);

#endif /* RT_HOST_H */
