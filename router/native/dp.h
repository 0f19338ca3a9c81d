/*
 * dp.h - the data plane object, private to the C files.
 */
#ifndef RT_DP_H
#define RT_DP_H

#include <pthread.h>
#include "rt.h"
#include "ct_proto.h"
#include "fib.h"
#include "nat.h"
#include "frag.h"
#include "host.h"
#include "events.h"

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
    bool ct_events;                           /* report NEW/UPDATE/DESTROY */
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
};

/* Stops and frees the workers, if any (io.c). */
void io_workers_stop(struct rt_dp *dp);
/* ... and frees everything else io.c allocated. */
void io_free(struct rt_dp *dp);

/* Room before each packet in a slot for the virtio_net_hdr (10 bytes),
 * rounded up so that the IP header stays aligned. */
#define SLOT_HEADROOM 16

/* Zeroes the offload metadata of 'p': a packet the router writes itself, or
 * one read from a descriptor without IFF_VNET_HDR, has none. */
void dp_clear_offload(struct rt_pkt *p);

/* Counts 'p' as dropped for reason 'r'. */
void dp_drop(struct rt_dp *dp, struct rt_pkt *p, enum rt_drop_reason r);
/* Shared by the IPv4 pipeline (dp.c) and the IPv6 one (ip6.c). */
int dp_fw_eval(struct rt_dp *dp, const struct rt_pkt *p, const struct pkt_meta *m,
               uint8_t chain, int out, uint8_t state, const union rt_addr *dst,
               rt_be16 dport);
bool dp_icmp_allowed(struct rt_dp *dp);
void dp_ct_event(struct rt_dp *dp, const struct ct_conn *c, uint8_t type);

static inline void dp_account(struct ct_conn *c, const struct pkt_meta *m,
                              enum ct_dir dir)
{
    ct_count_packet(c, dir, m->segs, m->len);
    if (dir == CT_DIR_REPLY)
        c->status |= CT_SEEN_REPLY;
}

/* What the L4 tracker made of a packet of a known connection. */
enum dp_track {
    DP_TRACK_FORWARD, /* state updated (or ignored): forward it */
    DP_TRACK_DROPPED, /* INVALID: already dropped and counted */
    DP_TRACK_REOPEN,  /* the connection is gone: treat it as new */
    DP_TRACK_KILL,    /* forward it, then call dp_track_kill() */
};

/* The two halves of opening a connection, shared by both pipelines.
 * dp_conn_init() builds connection 'c' for new packet 'm' in the caller's
 * memory (its L4 tracker decides whether 'm' may open one; tuples are the
 * packet's and its plain inverse); the caller then edits the reply tuple
 * for NAT.  dp_conn_commit() runs the tracker on 'm', stores 'c' in the
 * table under 'hash' (with its TCP window state 'w'), counts it against
 * 'host' and reports NEW; it returns the stored connection, or NULL after
 * dropping the packet with its reason and releasing 'c''s NAT mapping. */
bool dp_conn_init(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                  struct ct_conn *c, struct ct_tcp_win *w, uint64_t now);
struct ct_conn *dp_conn_commit(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                               struct ct_conn *c, struct ct_tcp_win *w, uint32_t hash,
                               bool reply_free, struct host_entry *host, uint64_t now);

/* The connection ICMP error 'm' quotes, with the direction of the quoted
 * packet in '*dir', if the error is addressed to that packet's sender; else
 * NULL, the error counted and dropped ('to_router': it is for one of the
 * router's addresses).  Shared by the IPv4 and IPv6 pipelines. */
struct ct_conn *dp_related_conn(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                                bool to_router, uint64_t now, enum ct_dir *dir);

/* Runs the tracker of 'm' on 'c' (direction 'dir'): accounting, events,
 * INVALID drops with their reasons, re-opened tuples.  Shared by the IPv4
 * and IPv6 pipelines. */
enum dp_track dp_track(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                       struct ct_conn *c, enum ct_dir dir, uint64_t now);
void dp_track_kill(struct rt_dp *dp, struct ct_conn *c);

/* The firewall's per-source limits for new connection 'm': its source's
 * bucket of new connections per second and its cap on tracked connections.
 * Sets '*host' to the source's entry (NULL if no limit is configured, or if
 * the table had no room: then the source is not limited). */
enum rt_drop_reason dp_source_limits(struct rt_dp *dp, const struct pkt_meta *m,
                                     struct host_entry **host);

/* Replaces 'p' (already counted as dropped) by ICMPv6 "packet too big"
 * with 'mtu' to its source (ip6.c).  For later fragments, which a router
 * may not fragment further either (RFC 8200 5). */
void dp_packet_too_big6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m,
                        uint32_t mtu);

/* A packet for one of the router's own addresses, either family: the
 * input chain, then echo answered, anything else counted (dp.c). */
void dp_process_local(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m);

/* The IPv6 output interface for 'dst', or -1; whether 'a' is one of the
 * router's IPv6 addresses (ip6.c). */
int dp_route6(const struct rt_dp *dp, const uint8_t *dst);
bool dp_is_local6(const struct rt_dp *dp, const uint8_t *a);
/* Refusing an IPv6 packet a rule dropped or rejected (ICMPv6
 * "administratively prohibited" for a reject), and answering an ICMPv6
 * echo request to the router, in place (ip6.c). */
void dp_refuse6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m, int action);
void dp_echo_reply6(struct rt_dp *dp, struct rt_pkt *p, const struct pkt_meta *m);

/* Fills the checksum adjustments of an NPTv6 rule (ip6.c). */
void dp_npt6_prepare(struct dp_npt6 *n);

/* The IPv6 pipeline (ip6.c): everything after parsing for an IPv6 packet.
 * 'hash' is the hash of its tuple. */
void dp_process6(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                 uint32_t hash, uint64_t now);

/* The same, for a packet a firewall rule ('rule', -1 for none) refused. */
void dp_drop_rule(struct rt_dp *dp, struct rt_pkt *p, enum rt_drop_reason r,
                  int rule);

#endif /* RT_DP_H */
