/*
 * fib.c - route lookup.
 *
 * Theory of operation: the table is an array sorted by prefix length,
 * longest first, so the first match is the longest one.  A home or lab
 * router has tens of routes, where a linear scan of a few cache lines beats
 * a trie; the control plane owns the structure, so a faster one can replace
 * this without touching the data plane's callers.
 */
#include <arpa/inet.h>
#include "fib.h"

const struct fib_route *fib_lookup(const struct fib *f, rt_be32 dst)
{
    uint32_t d = ntohl(dst);
    for (uint32_t i = 0; i < f->n; i++) {
        const struct fib_route *r = &f->routes[i];
        if ((d & r->mask) == r->prefix)
            return r;
    }
    return NULL;
}

void fib_sort(struct fib_route *routes, uint32_t n)
{
    /* Insertion sort: stable, and tables are small and loaded rarely. */
    for (uint32_t i = 1; i < n; i++) {
        struct fib_route r = routes[i];
        uint32_t j = i;
        while (j > 0 && routes[j - 1].plen < r.plen) {
            routes[j] = routes[j - 1];
            j--;
        }
        routes[j] = r;
    }
}
