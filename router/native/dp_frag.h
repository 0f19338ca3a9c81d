/*
 * dp_frag.h - forwarding IPv4 and IPv6 fragments of tracked flows.
 */
#ifndef RT_DP_FRAG_H
#define RT_DP_FRAG_H

#include "parse.h"

#define FRAG_TABLE 1024  /* datagrams in flight as fragments */
#define FRAG_PROBES 8    /* linear probes in the table */
#define FRAG_PENDING 64  /* later fragments waiting for their first */
#define FRAG_BUF 2048    /* largest fragment that can wait */

/* A datagram's identity: RFC 791's (source, destination, protocol, id) for
 * IPv4, RFC 8200's (source, destination, identification) for IPv6. */
struct frag_key {
    union rt_addr src; /* source address, as received */
    union rt_addr dst; /* destination address, as received */
    rt_be32 id;        /* identification */
    uint8_t proto;     /* IPv4: IP protocol; IPv6: 0 */
    uint8_t family;    /* 4 or 6 */
    uint16_t pad;      /* zero */
};

/* What the first fragment of a datagram became: later ones follow. */
struct frag_entry {
    struct frag_key key;  /* the datagram */
    uint32_t expires;     /* deadline, ms, wrap-safe */
    union rt_addr new_src; /* source after translation */
    union rt_addr new_dst; /* destination after translation */
    int16_t out_iface;    /* where the fragments go */
    uint8_t in_use;       /* slot holds an entry */
    uint8_t pad;          /* zero */
};

/* A later fragment that came before its first, or one ready to go. */
struct frag_pending {
    struct frag_key key;  /* the datagram */
    uint32_t expires;     /* deadline while waiting */
    uint16_t len;         /* bytes in 'data' */
    int16_t out_iface;    /* READY: where it goes */
    uint8_t state;        /* FRAG_FREE, FRAG_WAITING or FRAG_READY */
    uint8_t pad[3];       /* zero */
    uint8_t data[FRAG_BUF];
};

enum { FRAG_FREE = 0, FRAG_WAITING = 1, FRAG_READY = 2 };

struct frag_state {
    struct frag_entry table[FRAG_TABLE];
    struct frag_pending pending[FRAG_PENDING];
    uint32_t n_ready;     /* pending slots in FRAG_READY */
    uint64_t key;         /* hash key */
};

struct rt_dp;
struct rt_pkt;

/* Renumbers the output interfaces of fragments on their way: 'remap[old]'
 * is the new number, or -1 when the interface is gone (its fragments are
 * dropped).  'remap' has RT_MAX_IFACES entries. */
void frag_remap_ifaces(struct frag_state *f, const int16_t *remap);

/* The key of packet 'm' (before any translation). */
void frag_key_of(const struct pkt_meta *m, struct frag_key *k);

/* Records that the first fragment with key 'k' left through 'out' as the
 * packet at 'ip' (whose addresses later fragments get), and releases the
 * later fragments that waited for it. */
void frag_first_done(struct rt_dp *dp, const struct frag_key *k, const uint8_t *ip,
                     int out, uint64_t now_ms);

/* Handles a later fragment: forwards it like its first fragment went, or
 * holds it until the first comes. */
void frag_later(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                uint64_t now_ms);

#endif /* RT_DP_FRAG_H */
