/*
 * portmap.h - the mappings LAN hosts ask for (PCP, NAT-PMP, UPnP IGD; the
 * control plane's router/portmap/ answers the protocols): pinned NAT44
 * mappings and IPv6 firewall pinholes, loaded whole with
 * rt_dp_set_portmaps() and looked up by their outside and inside endpoints.
 *
 * A NAT44 mapping is a port forward that is also its inside endpoint's
 * outbound mapping (RFC 6887 section 11: MAP semantics): new connections to
 * the external interface's address and port go to the inside endpoint, and
 * new connections from the inside endpoint leave with that port.  Its
 * filters (PCP's FILTER option) name the remote peers that may open
 * connections; none means anyone (endpoint-independent filtering).  A
 * pinhole lets new IPv6 connections from its external interface reach one
 * inside endpoint, through the same filters.
 */
#ifndef RT_PORTMAP_H
#define RT_PORTMAP_H

#include <stdbool.h>
#include <stddef.h>
#include "rt.h"
#include "tuple.h"

struct pm_table {
    struct rt_portmap *e;  /* the entries, as loaded */
    uint32_t n;            /* entries */
    uint32_t n4;           /* NAT44 mappings among them */
    uint32_t n6;           /* IPv6 pinholes among them */
    uint32_t mask;         /* buckets - 1 */
    uint32_t *by_ext;      /* NAT44: bucket -> first entry, by (proto, port) */
    uint32_t *by_int;      /* all: bucket -> first entry, by inside endpoint */
    uint32_t *next_ext;    /* per entry: next in its by_ext chain */
    uint32_t *next_int;    /* per entry: next in its by_int chain */
};

/* Builds a table of 'n' entries checked against 'n_ifaces' interfaces into
 * '*t' (zeroed first); false with the reason in 'err' on a bad entry or
 * two entries for one outside or inside endpoint. */
bool pm_build(struct pm_table *t, const struct rt_portmap *e, uint32_t n,
              uint32_t n_ifaces, char *err, size_t err_size);
void pm_free(struct pm_table *t);

/* The NAT44 mapping of external port 'port' (network order), or NULL. */
const struct rt_portmap *pm_by_ext(const struct pm_table *t, uint8_t proto, rt_be16 port);

/* The entry of inside endpoint ('family', 'proto', 'addr', 'port'), or
 * NULL; 'port' in network order. */
const struct rt_portmap *pm_by_int(const struct pm_table *t, uint8_t family, uint8_t proto,
                                   const union rt_addr *addr, rt_be16 port);

/* May remote peer 'src':'sport' (network order) open a connection through
 * 'e'? */
bool pm_admits(const struct rt_portmap *e, const union rt_addr *src, rt_be16 sport);

#endif /* RT_PORTMAP_H */
