/*
 * dp.h - the data plane object, private to the C files.
 */
#ifndef RT_DP_H
#define RT_DP_H

#include <pthread.h>
#include <string.h>
#include "rt.h"
#include "ct_proto.h"
#include "fib.h"
#include "nat.h"
#include "dp_frag.h"
#include "host.h"
#include "events.h"
#include "portmap.h"

struct dp_iface {
    int32_t fd;                 /* TUN fd or -1 */
    rt_be32 addr;               /* the router's address on this link */
    uint32_t mtu;               /* largest IP packet sent here */
    uint32_t zone;              /* zone number */
    uint32_t flags;             /* RT_IF_* */
    uint32_t rp_filter;         /* RT_RPF_* */
    uint8_t addr6[16];          /* the router's IPv6 address here */
    bool has_addr6;             /* addr6 is set */
    struct rt_iface_stats st;   /* counters; kept across reloads */
};

struct dp_npt6 {
    uint8_t inside[16];
    uint8_t outside[16];
    uint32_t plen;
    int32_t iface;
    uint16_t adj_out;   /* one's complement added to word 3 going out */
    uint16_t adj_in;    /* ... and coming in */
};

struct dp_route6 {
    uint8_t prefix[16];
    uint32_t plen;
    int32_t iface;
};

struct dp_masq6 {
    uint8_t src[16];            /* source prefix */
    uint32_t plen;
    int32_t out_iface;
};

struct dp_nat_rule {
    uint32_t src_prefix;        /* host order */
    uint32_t src_mask;          /* host order */
    int32_t out_iface;          /* -1 = any */
    rt_be32 to_addr;            /* 0 = masquerade */
    uint32_t pool_first;        /* pool: first address in 'nat_pool' */
    uint32_t pool_size;         /* pool size, 0 = no pool */
};

struct rt_dp {
    struct ct_table ct;                       /* connection table */
    struct ct_params ctp;                     /* tracker knobs */
    struct nat_params np;                     /* NAT knobs */
    struct nat_maps nm;                       /* EIM mappings */
    uint64_t rng;                             /* xorshift state */
    bool l4_csum;                             /* verify TCP/UDP checksums */
    uint16_t ip_id;                           /* id of packets we originate */
    uint32_t n_ifaces;                        /* interfaces loaded */
    struct dp_iface ifaces[RT_MAX_IFACES];    /* by interface number */
    struct fib fib;                           /* routes */
    struct dp_route6 *routes6;                /* IPv6 routes, longest first */
    uint32_t n_routes6;
    struct dp_npt6 *npt6;                     /* IPv6 prefix translations */
    uint32_t n_npt6;
    struct dp_masq6 *masq6;                   /* NAT66 masquerade rules */
    uint32_t n_masq6;
    struct dp_nat_rule *nat;                  /* NAT rules */
    uint32_t n_nat;                           /* number of NAT rules */
    struct rt_dnat_cfg *dnat;                 /* port forwards */
    uint32_t n_dnat;                          /* number of port forwards */
    rt_be32 *nat_pool;                        /* SNAT pool addresses */
    uint32_t n_nat_pool;                      /* their number */
    struct rt_lb_slot *lb_slots;              /* load balancer tables */
    uint32_t n_lb_slots;                      /* their slots */
    uint64_t *lb_conns;                       /* new connections per backend */
    uint32_t n_backends;                      /* size of 'lb_conns' */
    uint32_t n_zones;                         /* zones loaded */
    uint8_t zone_policy[RT_MAX_ZONES][RT_MAX_ZONES]; /* 1 = accept NEW */
    uint64_t counters[RT_N_COUNTERS];         /* RT_CNT_* */
    uint64_t drops[RT_DROP_N_REASONS];        /* by reason */
    uint32_t batch;                           /* poll budget ceiling */
    uint32_t slot_size;                       /* bytes per packet slot */
    uint8_t *slots;                           /* batch slots of SLOT_HEADROOM
                                                 + slot_size bytes */
    struct rt_pkt *pkts;                      /* batch descriptors */
    struct rt_fw_rule *fw;                    /* firewall rules */
    uint32_t n_fw;                            /* number of rules */
    uint64_t *fw_counts;                      /* [2 * rule]: packets, bytes */
    uint8_t fw_states;                        /* states any rule names */
    int fw_rule;                              /* the rule fw_eval() matched */
    uint8_t input_policy;                     /* RT_FW_* without a match */
    int16_t host_iface;                       /* the RT_IF_HOST link, or -1 */
    uint32_t icmp_rate;                       /* errors per second, 0 = any */
    uint64_t icmp_tokens;                     /* token bucket, in 1/1000 */
    uint64_t icmp_refill_ms;                  /* when it was last refilled */
    uint64_t now_ms;                          /* time of the current batch */
    struct host_table hosts;                  /* per-source accounting */
    uint32_t src_conn_cap;                    /* conns per source, 0 = any */
    uint32_t src_new_rate;                    /* new conns/s per source */
    uint32_t src_prefix6;                     /* IPv6 sources counted per
                                                 prefix of this length */
    uint32_t src_share_cap;                   /* conns one source may hold
                                                 (its share), 0 = any */
    struct frag_state frag;                   /* fragments in flight */
    struct ev_ring ev;                        /* events for the control plane */
    uint32_t ct_events;                       /* bit t: report events of type t
                                                 (NEW, UPDATE, DESTROY) */
    uint64_t drop_sample;                     /* bit r: sample drops for r */
    uint32_t drop_rate;                       /* samples per second */
    uint64_t drop_tokens;                     /* token bucket, in 1/1000 */
    uint64_t drop_refill_ms;                  /* when it was last refilled */
    struct cap_ring cap;                      /* packet capture */
    char error[160];                          /* last rt_dp_load() error */
    pthread_mutex_t lock;                     /* held around every use of the
                                                 state above once workers run
                                                 (see io.c) */
    struct io_workers *workers;               /* NULL unless started */
    uint32_t worker_background;               /* bit k: worker k runs at the
                                                 lowest priority (nice 19) */
    struct io_ctx *loop_io;                   /* rt_dp_poll()'s reader */
    struct rt_worker_stats worker_st[RT_MAX_WORKERS]; /* by worker number,
                                                 kept across restarts */
    /* Last: the hot fields above keep their places (and cache lines). */
    struct pm_table pm;                       /* mappings LAN hosts asked for */
    uint32_t standby;                         /* HA standby: opens no forwarded
                                                 connection (rt_dp_set_standby) */
    uint64_t lb_keys[6];                      /* the load balancers' hash keys
                                                 (rt_dp_set_lb_key) */
    struct rt_lb_slot *lb_backends;           /* each backend once, by number
                                                 (n_backends of them) */
    struct cap_filter capf;                   /* the capture's filter */
};

/*
 * The files of the pipeline, each calling only the ones listed after it
 * (tests/unit/test_layout.py fails on a call that goes back up):
 *
 *   dp_batch.c   a batch: parse, hash, prefetch, then one family's path
 *   dp_ip4.c     IPv4: address checks, NAT44 for new connections
 *   dp_ip6.c     IPv6: address checks, NPTv6 inbound, NAT66
 *   dp_track.c   either family: tracked, RELATED, local and new-connection
 *                steps they share
 *   dp_frag.c    fragments follow their first
 *   nat_rules.c  which translation a new connection gets; npt6.c NPTv6
 *   dp_fw.c      firewall rules and per-source limits
 *   dp_icmp.c    what the router sends: ICMP, ICMPv6, TCP resets, replies
 *   dp_drop.c    drops with their reasons, sampled drop and connection events
 *
 * and below them the state (ct*.c, nat.c, host.c, events.c) and the wire
 * (parse.c, csum.c, fib.c).  io.c (system calls) sits above dp_batch.c, and
 * rt_*.c (the exports) above everything.
 */

/* Stops and frees the workers, if any (io.c). */
void io_workers_stop(struct rt_dp *dp);
/* ... and frees everything else io.c allocated. */
void io_free(struct rt_dp *dp);

/* Room before each packet in a slot for the virtio_net_hdr (10 bytes),
 * rounded up so that the IP header stays aligned. */
#define SLOT_HEADROOM 16

/* ---- lookups on the loaded tables, inline: every packet asks ----------- */

/* Zeroes the offload metadata of 'p': a packet the router writes itself, or
 * one read from a descriptor without IFF_VNET_HDR, has none. */
static inline void dp_clear_offload(struct rt_pkt *p)
{
    p->csum_flags = 0;
    p->gso_type = RT_GSO_NONE;
    p->gso_size = 0;
    p->hdr_len = 0;
    p->csum_start = 0;
    p->csum_offset = 0;
}

/* Whether 'a' is one of the router's IPv4 addresses. */
static inline bool dp_is_local4(const struct rt_dp *dp, rt_be32 a)
{
    for (uint32_t i = 0; i < dp->n_ifaces; i++)
        if (dp->ifaces[i].addr == a && a != 0)
            return true;
    return false;
}

/* Whether 'a' is one of the router's IPv6 addresses. */
static inline bool dp_is_local6(const struct rt_dp *dp, const uint8_t *a)
{
    for (uint32_t i = 0; i < dp->n_ifaces; i++)
        if (dp->ifaces[i].has_addr6 && memcmp(dp->ifaces[i].addr6, a, 16) == 0)
            return true;
    return false;
}

/* Whether 'p' came from the host link, where the router's own stack may
 * send from the router's addresses. */
static inline bool dp_from_host(const struct rt_dp *dp, const struct rt_pkt *p)
{
    return dp->host_iface >= 0 && p->in_iface == (uint16_t)dp->host_iface;
}

/* Whether 'a' (of the family of 'm') is one of the router's addresses. */
static inline bool dp_is_local(const struct rt_dp *dp, const struct pkt_meta *m,
                               const union rt_addr *a)
{
    return m->family == 6 ? dp_is_local6(dp, a->b) : dp_is_local4(dp, a->v4);
}

/* The IPv4 output interface for 'dst', or -1. */
static inline int dp_route4(const struct rt_dp *dp, rt_be32 dst)
{
    const struct fib_route *r = fib_lookup(&dp->fib, dst);
    return r ? r->iface : -1;
}

/* The IPv6 output interface for 'dst' (routes are sorted longest first), or -1. */
static inline int dp_route6(const struct rt_dp *dp, const uint8_t *dst)
{
    for (uint32_t i = 0; i < dp->n_routes6; i++)
        if (prefix_match6(dst, dp->routes6[i].prefix, dp->routes6[i].plen))
            return dp->routes6[i].iface;
    return -1;
}

static inline void dp_account(struct ct_conn *c, const struct pkt_meta *m,
                              enum ct_dir dir)
{
    ct_count_packet(c, dir, m->segs, m->len);
    if (dir == CT_DIR_REPLY)
        c->status |= CT_SEEN_REPLY;
}

/* ---- dp_drop.c ----------------------------------------------------------- */

/* Counts 'p' as dropped for reason 'r'; dp_drop_rule() for a packet that
 * firewall rule 'rule' (-1 for none) refused. */
void dp_drop(struct rt_dp *dp, struct rt_pkt *p, enum rt_drop_reason r);
void dp_drop_rule(struct rt_dp *dp, struct rt_pkt *p, enum rt_drop_reason r,
                  int rule);
/* A NEW, UPDATE or DESTROY event for 'c'. */
void dp_ct_event(struct rt_dp *dp, const struct ct_conn *c, uint8_t type);
/* The public form of connection 'c'. */
void dp_ct_fill(const struct rt_dp *dp, const struct ct_conn *c,
                struct rt_ct_entry *e, uint64_t now_ms);

/* ---- dp_icmp.c ----------------------------------------------------------- */

/* Takes a token of the bucket for the errors and resets the router sends;
 * false (counted) when it is empty. */
bool dp_icmp_allowed(struct rt_dp *dp);
/* Replace the packet in 'p' by an ICMP (ICMPv6) error of 'type'/'code'
 * about it, to its source; 'info' is the second word (an MTU). */
void dp_icmp4_error(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                    uint8_t type, uint8_t code, uint32_t info);
void dp_icmp6_error(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                    uint8_t type, uint8_t code, uint32_t info);
/* Answers an echo request to one of the router's addresses, in place. */
void dp_echo_reply(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m);
/* Carries out a drop or reject verdict of the firewall on 'p' (a reject
 * answers with a TCP reset or "administratively prohibited"). */
void dp_refuse(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m, int action);

/* ---- dp_fw.c ------------------------------------------------------------- */

/* The first rule of 'chain' that matches 'm' in conntrack state 'state',
 * leaving through 'out' (-1: the input chain) towards 'dst':'dport', or -1;
 * dp_fw_eval() also counts the match and returns the rule's action. */
int dp_fw_match(const struct rt_dp *dp, const struct rt_pkt *p, const struct pkt_meta *m,
                uint8_t chain, int out, uint8_t state, const union rt_addr *dst,
                rt_be16 dport);
int dp_fw_eval(struct rt_dp *dp, const struct rt_pkt *p, const struct pkt_meta *m,
               uint8_t chain, int out, uint8_t state, const union rt_addr *dst,
               rt_be16 dport);

/* The firewall's per-source limits for new connection 'm': its source's
 * bucket of new connections per second and its cap on tracked connections.
 * Sets '*host' to the source's entry (NULL if no limit is configured, or if
 * the table had no room: then the source is not limited). */
enum rt_drop_reason dp_source_limits(struct rt_dp *dp, const struct pkt_meta *m,
                                     struct host_entry **host);
/* The table is full and 'host' wants a connection: evicts one of a source
 * over its fair share, if 'host' is under it.  True if one went. */
bool dp_fair_evict(struct rt_dp *dp, const struct host_entry *host);
/* Connection 'c' is gone: its source holds one fewer. */
void dp_source_release(struct rt_dp *dp, const struct ct_conn *c);
/* IPv6 sources are about to be counted under prefixes of another length. */
void dp_forget_ipv6_sources(struct rt_dp *dp);

/* ---- nat_rules.c, npt6.c ------------------------------------------------- */

/* Where a new connection is sent when its destination is rewritten: by a
 * port forward, or by an endpoint-independent mapping that lets it in. */
struct dnat_target {
    rt_be32 addr;          /* inside address */
    rt_be16 port;          /* inside port */
    rt_be32 ext;           /* the external address it came to */
    bool masquerade;       /* full NAT */
    struct nat_map *map;   /* the mapping that let it in, or NULL */
    int32_t backend;       /* load balancer backend number, or -1 */
    bool portmap;          /* let in by a mapping a LAN host asked for */
};

/* The port forward for a new TCP/UDP packet, or NULL. */
const struct rt_dnat_cfg *dp_dnat_match(const struct rt_dp *dp, const struct pkt_meta *m);
/* A port forward (or load balancer) for 'm'; a mapping that lets 'm' in. */
/* Whether addr:port (network order) is a load balancer's backend. */
bool dp_lb_backend(const struct rt_dp *dp, rt_be32 addr, rt_be16 port);
bool dp_forward_target(const struct rt_dp *dp, const struct pkt_meta *m,
                       struct dnat_target *t);
bool dp_mapping_target(struct rt_dp *dp, const struct pkt_meta *m,
                       struct dnat_target *t, uint64_t now);
/* A mapping a LAN host asked for that lets 'm' in (portmap.h). */
bool dp_portmap_target(const struct rt_dp *dp, const struct pkt_meta *m,
                       struct dnat_target *t);
/* Source NAT of new connection 'c' to 'to' with the external port of its
 * inside endpoint's asked-for mapping, when it has one there and the tuple
 * is free; false otherwise (nothing changed that the caller keeps). */
bool dp_portmap_snat(struct rt_dp *dp, struct ct_conn *c, rt_be32 to, uint64_t now);
/* An IPv6 pinhole that lets new connection 'm', arrived on 'in', in. */
bool dp_pinhole_admits(const struct rt_dp *dp, int in, const struct pkt_meta *m);
/* Whether new IPv4 connection 'm' leaving through 'out' is source-NATed,
 * and to which address ('*to': 0 while a masqueraded interface has none,
 * as before its DHCP lease); the IPv6 address NAT66 masquerades it to, or
 * NULL. */
bool dp_snat_address(const struct rt_dp *dp, const struct rt_pkt *p, const struct pkt_meta *m,
                     const struct dnat_target *dn, int out, rt_be32 *to);
const uint8_t *dp_masq6_address(const struct rt_dp *dp, const struct pkt_meta *m, int out);

/* Fills the checksum adjustments of an NPTv6 rule. */
void dp_npt6_prepare(struct dp_npt6 *n);
/* The NPTv6 rule of interface 'iface' whose outside prefix (inbound) or
 * inside prefix (outbound) holds address 'a', or NULL. */
const struct dp_npt6 *dp_npt6_rule(const struct rt_dp *dp, int iface, const uint8_t *a,
                                   bool inbound);
/* Rewrites the prefix of the address at 'a' to 'to' (RFC 6296 3.2); false,
 * nothing changed, for the one word-3 value that cannot map back. */
bool dp_npt6_rewrite(uint8_t *a, const uint8_t *to, uint32_t plen, uint16_t adj);

/* ---- dp_track.c ---------------------------------------------------------- */

/* The two halves of opening a connection, shared by both pipelines.
 * dp_conn_init() builds connection 'c' for new packet 'm' in the caller's
 * memory (its L4 tracker decides whether 'm' may open one; tuples are the
 * packet's and its plain inverse); the caller then edits the reply tuple
 * for NAT.  dp_conn_commit() runs the tracker on 'm', stores 'c' in the
 * table under 'hash' (with its TCP window state 'w'), counts it against
 * 'host' and reports NEW; it returns the stored connection, or NULL after
 * dropping the packet with its reason and releasing 'c''s NAT mapping.
 * dp_conn_abandon() gives up a connection being built (its mapping). */
bool dp_conn_init(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                  struct ct_conn *c, struct ct_tcp_win *w, uint64_t now);
struct ct_conn *dp_conn_commit(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                               struct ct_conn *c, struct ct_tcp_win *w, uint32_t hash,
                               bool reply_free, struct host_entry *host, uint64_t now);
void dp_conn_abandon(struct rt_dp *dp, const struct ct_conn *c);

/* May new connection 'm', leaving through 'out' towards 'dst':'dport', be
 * opened?  The forward chain's rules for NEW, then (without a matching
 * rule, unless 'own_permission': a port forward or mapping is its own) the
 * zone pair's policy, then the per-source limits, whose entry goes to
 * '*host'.  False when 'p' is refused, dropped and counted. */
bool dp_admit_new(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m, int out,
                  const union rt_addr *dst, rt_be16 dport, bool own_permission,
                  struct host_entry **host);

/* A packet of known connection 'c' (direction 'dir'), either family: route,
 * firewall for ESTABLISHED, the L4 tracker, NAT, forward.  Returns true
 * when the connection was gone and 'p' must be taken as new. */
bool dp_process_tracked(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                        struct ct_conn *c, enum ct_dir dir, uint64_t now);
/* An ICMP or ICMPv6 error: RELATED to the connection it quotes, or dropped. */
void dp_process_related(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                        uint64_t now);
/* A packet for one of the router's own addresses that no connection knows,
 * either family ('hash': of its tuple): the input chain, then echo
 * answered; from a services link with a host link, a connection to the
 * router's services opened; anything else counted. */
void dp_process_local(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint32_t hash,
                      uint64_t now);
/* The table's hook: connection 'c' is being deleted. */
void dp_on_ct_delete(void *ctx, const struct ct_conn *c);

/* The control plane's calls that delete connections (sweep, delete, flush)
 * move the clock on first: a DESTROY event's age and a NAT log's end are
 * read from it (packets move it in rt_dp_process). */
static inline void dp_clock(struct rt_dp *dp, uint64_t now_ms)
{
    if (now_ms > dp->now_ms)
        dp->now_ms = now_ms;
}

/* ---- dp_ip4.c, dp_ip6.c -------------------------------------------------- */

/* A family's path for a parsed packet whose tuple hashes to 'hash':
 * address checks, then fragments, RELATED, tracked or new.  Returns false
 * when 'p' was dropped before any of those; dp_ip6_check() may rewrite the
 * destination (NPTv6) and with it '*hash'. */
bool dp_ip4_check(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m);
bool dp_ip6_check(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m, uint32_t *hash);
void dp_ip4_dispatch(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                     uint32_t hash, uint64_t now);
void dp_ip6_dispatch(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                     uint32_t hash, uint64_t now);

#endif /* RT_DP_H */
