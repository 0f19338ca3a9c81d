/*
 * nat.h - choosing NAT bindings and rewriting packets to match them.
 */
#ifndef RT_NAT_H
#define RT_NAT_H

#include "ct.h"
#include "parse.h"
#include "portmap.h"

/* Filtering of inbound packets to a mapping's external endpoint (RFC 4787
 * section 5); APDF lets in only what matches a connection. */
enum nat_filtering {
    NAT_FILTER_APDF = 0, /* address and port dependent */
    NAT_FILTER_ADF = 1,  /* address dependent */
    NAT_FILTER_EIF = 2,  /* endpoint independent */
};

struct nat_params {
    uint16_t port_min;    /* TCP/UDP search range, inclusive */
    uint16_t port_max;
    bool preserve_ports;  /* keep the source port / ICMP id when free */
    bool eim;             /* endpoint-independent mapping (RFC 4787 REQ-1) */
    uint8_t filtering;    /* enum nat_filtering */
};

#define NAT_PEERS 4 /* remote addresses a mapping remembers, for ADF */

/*
 * An endpoint-independent mapping: every connection from one inside
 * endpoint (protocol, address, port or ICMP identifier) to one external
 * address uses the same external port, whatever the destination.  It lives
 * as long as a live connection uses it: its connections are on a list
 * (through the slot-indexed arrays of struct nat_maps), and a mapping is
 * only ever used after nat_map_live() has found one of them unexpired, so
 * an expired connection the sweep has not reached yet holds no port and
 * lets nothing in.
 */
struct nat_map {
    rt_be32 int_addr;          /* inside address */
    rt_be32 ext_addr;          /* external address */
    rt_be16 int_port;          /* inside port / ICMP identifier */
    rt_be16 ext_port;          /* external port / identifier */
    uint8_t proto;             /* IP protocol */
    uint8_t n_peers;           /* entries used in 'peers' */
    uint8_t peer_next;         /* next entry of 'peers' to overwrite */
    uint8_t in_use;            /* slot holds a mapping */
    uint32_t refs;             /* connections using it */
    uint32_t next_int;         /* chain of the by-inside index */
    uint32_t next_ext;         /* chain of the by-outside index */
    rt_be32 peers[NAT_PEERS];  /* addresses the inside endpoint sent to */
    uint32_t head;             /* first connection (slot) on its list */
};

/* The mapping table, preallocated like the connection table. */
struct nat_maps {
    struct nat_map *maps;      /* 'capacity' slots */
    uint32_t *by_int;          /* chain heads, by inside endpoint */
    uint32_t *by_ext;          /* chain heads, by outside endpoint */
    uint32_t mask;             /* buckets - 1 */
    uint32_t capacity;         /* most mappings */
    uint32_t count;            /* mappings in use */
    uint32_t free_head;        /* recycled slots, linked by next_int */
    uint32_t high_water;       /* slots from here on never used */
    uint64_t key;              /* hash key */
    uint32_t *conn_next;       /* per connection slot: next on its mapping's */
    uint32_t *conn_prev;       /*   list, previous (NAT_UNLINKED: on none) */
    uint32_t conns;            /* connection slots those arrays cover */
    const struct pm_table *pinned; /* ports LAN hosts asked for: never
                                      given to another inside endpoint */
};

#define NAT_UNLINKED (CT_NIL - 1)

/* 'capacity' mappings for a table of 'conns' connections. */
int nat_maps_init(struct nat_maps *nm, uint32_t capacity, uint32_t conns,
                  uint64_t seed);
void nat_maps_destroy(struct nat_maps *nm);

/* The mapping of inside endpoint ('proto', 'int_addr', 'int_port') on
 * external address 'ext_addr', or NULL. */
struct nat_map *nat_map_by_int(struct nat_maps *nm, uint8_t proto, rt_be32 int_addr,
                               rt_be16 int_port, rt_be32 ext_addr);

/* The mapping whose outside endpoint is ('proto', 'addr', 'port'), or NULL. */
struct nat_map *nat_map_by_ext(struct nat_maps *nm, uint8_t proto, rt_be32 addr,
                               rt_be16 port);

/* Drops one reference of the mapping of connection 'c' (which holds
 * CT_NAT_MAPPED), taking slot 'slot' off its list (CT_NIL: a connection
 * never inserted); frees the mapping with its last reference. */
void nat_map_release(struct nat_maps *nm, const struct ct_conn *c, uint32_t slot);

/* Puts inserted connection 'c' (holding CT_NAT_MAPPED) in slot 'slot' on its
 * mapping's list. */
void nat_map_link(struct nat_maps *nm, const struct ct_conn *c, uint32_t slot);

/* 'm' if one of its connections is unexpired at 'now_ms'; expired ones met
 * on the way are deleted, and with the last of them the mapping: then NULL. */
struct nat_map *nat_map_live(struct ct_table *ct,
                             struct nat_map *m, uint64_t now_ms);

/* Takes a reference on the mapping (proto, inside endpoint, external
 * endpoint), making it if needed; false if the external port belongs to
 * another mapping or there is no room (used when connections are restored). */
bool nat_map_adopt(struct nat_maps *nm, uint8_t proto, rt_be32 int_addr,
                   rt_be16 int_port, rt_be32 ext_addr, rt_be16 ext_port,
                   rt_be32 peer);

/* True if 'peer' is among the addresses the mapping's inside endpoint sent
 * to (address-dependent filtering). */
bool nat_map_knows_peer(const struct nat_map *m, rt_be32 peer);

/* The most candidate ports one binding may try: 128 + 64 + 32 + 16 + 8,
 * the bound Linux and Open vSwitch use. */
#define NAT_MAX_PROBES 248

/*
 * Source NAT for the new connection 'c', whose tuples are the original
 * tuple and its plain inverse: makes the reply tuple point at 'to' (zeroed
 * past an IPv4 address; an IPv6 one for NAT66) and, for
 * TCP, UDP and ICMP queries, at a port (identifier) no other connection's
 * tuple uses.  With endpoint-independent mapping the port comes from the
 * inside endpoint's mapping, made on first use, which then no other inside
 * endpoint may share (no port overloading, REQ-3); 'c' takes a reference
 * (CT_NAT_MAPPED).  '*rng' is the data plane's random state.  Returns false
 * when no free binding was found within NAT_MAX_PROBES.  IPv6 connections get
 * no mapping: each finds its own port, like Linux's NAT66 masquerade.
 */
bool nat_snat(struct ct_table *ct, struct nat_maps *nm, struct ct_conn *c,
              const union rt_addr *to, const struct nat_params *np,
              uint64_t *rng, uint64_t now_ms);

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
