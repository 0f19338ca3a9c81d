/*
 * fib.h - IPv4 longest-prefix-match routing over a table compiled by the
 * control plane.
 */
#ifndef RT_FIB_H
#define RT_FIB_H

#include "rt_types.h"

struct fib_route {
    uint32_t prefix;  /* network, host order, host bits zero */
    uint32_t mask;    /* netmask, host order */
    uint8_t plen;     /* prefix length 0..32 */
    uint8_t pad[3];   /* explicit, zero */
    int32_t iface;    /* output interface */
    rt_be32 gateway;  /* next hop, 0 when directly connected */
};

struct fib {
    struct fib_route *routes; /* sorted by prefix length, longest first */
    uint32_t n;               /* number of routes */
};

/* Returns the route for 'dst' (network order), or NULL. */
const struct fib_route *fib_lookup(const struct fib *f, rt_be32 dst);

/* Sorts 'routes' longest prefix first; keeps the given order among equal
 * lengths, so the first of two equal prefixes wins. */
void fib_sort(struct fib_route *routes, uint32_t n);

#endif /* RT_FIB_H */
