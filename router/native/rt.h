/*
 * rt.h - the public API of the data plane: everything Python may call.
 *
 * rt.cdef repeats the declarations below for cffi; test_abi.py checks that
 * the two agree.  Calls come from one thread (the event loop) unless workers
 * run (rt_workers_start): then each call is made holding rt_dp_lock().  Time is always an argument ('now_ms', monotonic
 * milliseconds), so tests can drive expiry with a fake clock.
 */
#ifndef RT_H
#define RT_H

#include "rt_types.h"

#define RT_MAX_IFACES 64
#define RT_MAX_WORKERS 64
#define RT_MAX_ZONES 32

/* Flags of struct rt_tables. */
#define RT_F_TCP_LOOSE 0x1      /* pick up TCP connections mid-stream */
#define RT_F_L4_CSUM 0x2        /* verify TCP and UDP checksums */
#define RT_F_PRESERVE_PORTS 0x4 /* NAT keeps a source port when free */
#define RT_F_EIM 0x8            /* endpoint-independent NAT mapping */
#define RT_F_TCP_LIBERAL 0x10   /* let out-of-window TCP segments pass */

/* rt_tables.nat_filtering (RFC 4787 section 5). */
#define RT_FILTER_APDF 0 /* address and port dependent */
#define RT_FILTER_ADF 1  /* address dependent */
#define RT_FILTER_EIF 2  /* endpoint independent */

/* Flags of struct rt_iface_cfg. */
#define RT_IF_VNET_HDR 0x1 /* the fd carries a virtio_net_hdr before each packet */
#define RT_IF_SERVICES 0x2 /* new connections to the router's addresses from here
                              go to the router's services (RT_IF_HOST), if the
                              input chain accepts them */
#define RT_IF_HOST 0x4     /* the host link: behind it is the router's own
                              network stack (its services); packets from it
                              may carry the router's addresses.  At most one */

/* Offload metadata of a packet (struct rt_pkt), as virtio_net_hdr has it. */
#define RT_PKT_NEEDS_CSUM 0x1 /* L4 checksum field holds only the pseudo-header
                                 sum; whoever sends it on completes it */
#define RT_PKT_CSUM_VALID 0x2 /* L4 checksum already verified */
#define RT_GSO_NONE 0
#define RT_GSO_TCPV4 1
#define RT_GSO_UDP 3     /* UFO: not accepted */
#define RT_GSO_TCPV6 4
#define RT_GSO_UDP_L4 5  /* USO */
#define RT_GSO_ECN 0x80

/* Connection status bits in struct rt_ct_entry (Linux IPS_* numbering). */
#define RT_CT_SEEN_REPLY 0x02
#define RT_CT_ASSURED 0x04
#define RT_CT_CONFIRMED 0x08
#define RT_CT_SRC_NAT 0x10
#define RT_CT_DST_NAT 0x20
#define RT_CT_NAT_MAPPED 0x1000 /* holds a NAT mapping (not a Linux bit) */
#define RT_CT_TO_HOST 0x4000    /* to the router's services through the host
                                   link (not a Linux bit) */
#define RT_CT_FROM_HOST 0x8000  /* opened by the router's own stack, from the
                                   host link (not a Linux bit) */

/* Sizes fixed when the data plane is created. */
struct rt_dp_params {
    uint32_t ct_capacity; /* maximum tracked connections */
    uint32_t batch;       /* packets read per rt_dp_poll() at most */
    uint32_t slot_size;   /* bytes per packet buffer (>= largest MTU) */
    uint32_t pad;         /* zero */
    uint64_t seed;        /* hash key and NAT port randomness */
};

/* One link.  Index in rt_tables.ifaces is the interface number. */
struct rt_iface_cfg {
    int32_t fd;     /* TUN file descriptor, -1 when only rt_dp_process runs */
    rt_be32 addr;   /* the router's IPv4 address on this link, 0 if none */
    uint32_t mtu;   /* largest IP packet sent out of this link */
    uint32_t zone;  /* zone number, < n_zones */
    uint32_t flags; /* RT_IF_* */
    uint32_t rp_filter; /* RT_RPF_* */
    uint8_t addr6[16];  /* the router's IPv6 address on this link */
    uint32_t has_addr6; /* 1 if addr6 is set */
};

struct rt_route_cfg {
    rt_be32 prefix;   /* destination network */
    uint32_t plen;    /* prefix length, 0..32 */
    int32_t iface;    /* output interface */
    rt_be32 gateway;  /* next hop, 0 if directly connected */
};

/* NPTv6 (RFC 6296): packets leaving through 'iface' from 'inside'/plen get
 * the 'outside' prefix; packets arriving there for 'outside'/plen get
 * 'inside' back.  Checksum-neutral: plen <= 48, the adjustment goes into
 * bits 48-63. */
struct rt_npt6_cfg {
    uint8_t inside[16];
    uint8_t outside[16];
    uint32_t plen;      /* 1..48, the same for both prefixes */
    int32_t iface;
};

/* NAT66 masquerade: new IPv6 connections from 'src_prefix'/'src_plen'
 * leaving through 'out_iface' take that interface's IPv6 address and a free
 * port (ICMPv6 identifier). */
struct rt_masq6_cfg {
    uint8_t src_prefix[16];
    uint32_t src_plen;  /* 0..128, 0 = any source */
    int32_t out_iface;
};

/* An IPv6 route: connected networks and static routes alike. */
struct rt_route6_cfg {
    uint8_t prefix[16]; /* destination network */
    uint32_t plen;      /* prefix length, 0..128 */
    int32_t iface;      /* output interface */
};

/* Source NAT rule, first match wins, applied to new connections. */
struct rt_nat_cfg {
    rt_be32 src_prefix; /* match: source network */
    uint32_t src_plen;  /* match: its prefix length (0 = any) */
    int32_t out_iface;  /* match: output interface (-1 = any) */
    rt_be32 to_addr;    /* translate to this address; 0 = the output
                           interface's own address (masquerade) */
    uint32_t pool_first; /* a pool instead: its first address in nat_pool */
    uint32_t pool_size;  /* number of pool addresses, 0 = no pool */
};

/*
 * Destination NAT (port forwarding), matched on new TCP/UDP connections to
 * 'addr' (from any interface, so that hairpinned connections from inside
 * match too).  Ports are in host order; a range maps onto a range of the same
 * size starting at 'to_port'.
 */
struct rt_dnat_cfg {
    rt_be32 addr;        /* external address */
    rt_be32 to_addr;     /* internal host */
    uint16_t port_min;   /* external ports, inclusive */
    uint16_t port_max;
    uint16_t to_port;    /* first internal port */
    uint8_t proto;       /* 6 or 17 */
    uint8_t masquerade;  /* full NAT: also SNAT to the output interface */
    uint32_t lb_first;   /* load balancer: first of its slots in lb_slots */
    uint32_t lb_size;    /* load balancer: number of slots; 0 = a plain forward
                            to to_addr:to_port */
};

/* One slot of a load balancer's lookup table (Maglev): a new connection
 * hashes to a slot and goes to its backend. */
struct rt_lb_slot {
    rt_be32 addr;        /* backend address */
    uint16_t port;       /* backend port, host order */
    uint16_t backend;    /* backend number, for its counter */
};

/* Firewall rules, first match wins (see docs/firewall.md). */
#define RT_FW_FORWARD 0   /* chain: packets the router forwards */
#define RT_FW_INPUT 1     /* chain: packets for the router itself */
#define RT_FW_ACCEPT 0
#define RT_FW_DROP 1
#define RT_FW_REJECT 2    /* TCP: RST; else ICMP administratively prohibited */
#define RT_FW_NEW 0x1         /* conntrack states a rule may match */
#define RT_FW_ESTABLISHED 0x2
#define RT_FW_RELATED 0x4

struct rt_fw_rule {
    uint8_t chain;       /* RT_FW_FORWARD or RT_FW_INPUT */
    uint8_t action;      /* RT_FW_ACCEPT, _DROP or _REJECT */
    uint8_t proto;       /* IP protocol, 0 = any */
    uint8_t states;      /* RT_FW_* state bits, 0 = any */
    int16_t from_zone;   /* zone the packet came in from, -1 = any */
    int16_t to_zone;     /* zone it leaves to (forward chain), -1 = any */
    rt_be32 src;         /* source network */
    rt_be32 dst;         /* destination network */
    uint8_t src_plen;    /* its prefix length, 0 = any */
    uint8_t dst_plen;
    int16_t icmp_type;   /* ICMP type, -1 = any */
    uint16_t port_min;   /* destination port range, host order; 0 = any */
    uint16_t port_max;
    uint8_t family;      /* 6: src6/dst6 with src_plen/dst_plen (0..128)
                            match IPv6 packets only; else src/dst IPv4 */
    uint8_t src6[16];
    uint8_t dst6[16];
};

/* Reverse-path check of an interface's incoming sources (anti-spoofing). */
#define RT_RPF_OFF 0
#define RT_RPF_LOOSE 1   /* the source must be routable */
#define RT_RPF_STRICT 2  /* ... back out of the interface it came in on */

/* Everything the control plane compiles from the config. */
struct rt_tables {
    const struct rt_iface_cfg *ifaces;
    uint32_t n_ifaces;
    uint32_t n_routes;
    const struct rt_route_cfg *routes;
    const struct rt_nat_cfg *nat;
    uint32_t n_nat;
    uint32_t n_zones;
    const uint8_t *zone_policy; /* [from * n_zones + to]: 1 = accept NEW */
    const uint32_t *timeouts;   /* seconds, enum rt_timeout order */
    uint32_t n_timeouts;        /* must equal rt_n_timeouts() */
    uint32_t port_min;          /* NAT port search range */
    uint32_t port_max;
    uint32_t flags;             /* RT_F_* */
    const struct rt_dnat_cfg *dnat; /* port forwards, first match wins */
    uint32_t n_dnat;
    uint32_t nat_filtering;     /* RT_FILTER_* */
    const rt_be32 *nat_pool;    /* all SNAT pools' addresses */
    uint32_t n_nat_pool;
    const struct rt_lb_slot *lb_slots; /* all load balancers' tables */
    uint32_t n_lb_slots;
    uint32_t n_backends;        /* backend numbers are below this */
    const struct rt_fw_rule *fw_rules;
    uint32_t n_fw_rules;
    uint32_t input_policy;      /* RT_FW_ACCEPT/_DROP/_REJECT when no rule
                                   of the input chain matches */
    uint32_t icmp_rate;         /* ICMP errors and RSTs the router sends per
                                   second at most (burst as large); 0 = no
                                   limit */
    uint32_t src_conn_cap;      /* tracked connections per source, 0 = any */
    uint32_t src_new_rate;      /* new connections per second per source
                                   (burst as large), 0 = any */
    uint32_t tcp_max_retrans;   /* identical ACKs in a row before the
                                   tcp_max_retrans timeout applies, 1..15 */
    const struct rt_route6_cfg *routes6; /* IPv6 routes, any order */
    uint32_t n_routes6;
    const struct rt_npt6_cfg *npt6;      /* IPv6 prefix translations */
    uint32_t n_npt6;
    const struct rt_masq6_cfg *masq6;    /* NAT66 masquerade, first match */
    uint32_t n_masq6;
    uint32_t src_prefix6;       /* IPv6 sources are limited per prefix of
                                   this length, 1..128; 0 = 128 */
    uint32_t src_share;         /* percent of the table one source may hold,
                                   1..100; 0 = no share (and no fair
                                   eviction when the table is full) */
};

/*
 * A packet handed to rt_dp_process().  The offload fields mirror the
 * virtio_net_hdr a TUN with IFF_VNET_HDR passes along; they stay valid on
 * output (the router never changes header lengths), and are zeroed when the
 * router replaces the packet by one of its own.
 */
struct rt_pkt {
    uint8_t *data;        /* packet bytes, rewritten in place */
    uint32_t len;         /* in: bytes read; out: bytes to send */
    uint32_t cap;         /* size of 'data': room for a generated answer */
    uint16_t in_iface;    /* interface it arrived on */
    int16_t out_iface;    /* out: interface to send on, -1 if none */
    uint16_t reason;      /* out: enum rt_drop_reason, 0 if forwarded */
    uint8_t csum_flags;   /* RT_PKT_* */
    uint8_t gso_type;     /* RT_GSO_* */
    uint16_t gso_size;    /* GSO: payload bytes per segment */
    uint16_t hdr_len;     /* GSO: bytes of headers (a hint) */
    uint16_t csum_start;  /* NEEDS_CSUM: offset of the L4 header */
    uint16_t csum_offset; /* NEEDS_CSUM: checksum field, from csum_start */
};

struct rt_iface_stats {
    uint64_t rx_packets; /* packets read */
    uint64_t rx_bytes;
    uint64_t rx_dropped; /* packets read and dropped */
    uint64_t tx_packets; /* packets written */
    uint64_t tx_bytes;
    uint64_t tx_errors;  /* writes that failed */
};

/* What one worker did (rt_workers_stats). */
struct rt_worker_stats {
    uint64_t packets;    /* packets read */
    uint64_t batches;    /* batches processed */
    uint64_t wakeups;    /* returns from a sleeping poll() */
    uint64_t errors;     /* queues given up after a failed read */
    uint64_t lock_waits; /* times the data plane's lock was busy */
    uint64_t locked_ns;  /* time holding it */
    uint64_t busy_ns;    /* time from a wakeup with packets to the end of
                            its batches: locked_ns / busy_ns is the part
                            that does not run in parallel */
};

struct rt_sweep_result {
    uint32_t visited;   /* slots looked at */
    uint32_t expired;   /* connections removed */
    uint32_t wrapped;   /* 1 if a full pass over the table ended */
    uint32_t count;     /* connections left */
};

/* One connection, as `conntrack -L` shows it. */
struct rt_ct_entry {
    uint32_t slot;        /* stable while the connection lives */
    uint8_t family;       /* 4 or 6 */
    uint8_t proto;        /* IP protocol */
    uint8_t state;        /* TCP state (enum rt_tcp_state), else 0 */
    uint8_t pad;
    uint32_t status;      /* RT_CT_* bits */
    uint8_t src[2][16];   /* [direction] source address */
    uint8_t dst[2][16];   /* [direction] destination address */
    uint16_t sport[2];    /* host order; ICMP: identifier */
    uint16_t dport[2];    /* host order; ICMP: type << 8 | code */
    uint64_t timeout_ms;  /* time left */
    uint64_t age_ms;      /* time since the first packet */
    uint64_t packets[2];  /* [direction] */
    uint64_t bytes[2];    /* [direction] */
    /* TCP window tracking, per direction (all zero: not known; a restored
     * connection then passes as if picked up mid-stream). */
    uint32_t tcp_end[2];    /* highest sequence number sent + 1 */
    uint32_t tcp_maxend[2]; /* highest sequence number it may send + 1 */
    uint32_t tcp_maxwin[2]; /* largest window it announced */
    uint32_t tcp_maxack[2]; /* highest acknowledgement it sent (with MAXACK) */
    uint8_t tcp_scale[2];   /* its window scale */
    uint8_t tcp_flags[2];   /* RT_TCPF_* */
};

/* rt_ct_entry.tcp_flags (Linux's IP_CT_TCP_FLAG_*). */
#define RT_TCPF_WINDOW_SCALE 0x01
#define RT_TCPF_SACK_PERM 0x02
#define RT_TCPF_BE_LIBERAL 0x08
#define RT_TCPF_DATA_UNACK 0x10
#define RT_TCPF_MAXACK_SET 0x20

/* struct rt_event.type.  Index 0 of rt_events_lost() counts drop samples
 * left out by the sampling rate. */
#define RT_EV_RATE_LIMITED 0
#define RT_EV_NEW 1     /* a connection was confirmed */
#define RT_EV_UPDATE 2  /* its state, SEEN_REPLY or ASSURED changed */
#define RT_EV_DESTROY 3 /* it was removed (expired, closed, deleted, evicted) */
#define RT_EV_DROP 4    /* a packet was dropped for a sampled reason */
#define RT_EV_N_TYPES 5

/* One event.  DROP events describe the packet in ct: family, proto and
 * direction-0 addresses and ports (ICMP: id, type << 8 | code). */
struct rt_event {
    uint8_t type;       /* RT_EV_* */
    uint8_t tcp_flags;  /* DROP: the TCP flags byte */
    uint16_t reason;    /* DROP: enum rt_drop_reason */
    int16_t iface;      /* DROP: interface it came in on */
    int16_t rule;       /* DROP: firewall rule number, -1 for none */
    struct rt_ct_entry ct;
};

/* A captured packet; its first 'caplen' bytes follow in the data buffer. */
struct rt_capture {
    uint64_t ts_us;     /* wall clock, microseconds */
    uint32_t len;       /* length of the packet */
    uint32_t caplen;    /* bytes kept, <= the snap length */
    uint16_t iface;     /* interface */
    uint8_t dir;        /* RT_CAP_RX or RT_CAP_TX */
    uint8_t pad[5];
};
#define RT_CAP_RX 0
#define RT_CAP_TX 1

struct rt_dp;

/* Creates a data plane; NULL if a size is out of range or memory is short. */
struct rt_dp *rt_dp_new(const struct rt_dp_params *p);
void rt_dp_free(struct rt_dp *dp);

/* Replaces all tables at once, between batches.  Returns 0, or -1 with the
 * reason in rt_dp_error(); then nothing changed. */
int rt_dp_load(struct rt_dp *dp, const struct rt_tables *t);
const char *rt_dp_error(const struct rt_dp *dp);

/* Runs 'n' caller-supplied packets through the pipeline (tests, fuzzing). */
void rt_dp_process(struct rt_dp *dp, struct rt_pkt *pkts, uint32_t n,
                   uint64_t now_ms);

/* Reads up to 'budget' packets from interface 'iface', processes them and
 * writes the results out; then reads one batch from each interface it wrote
 * to (answers are often queued by the time a TUN write returns).  Returns
 * the number of packets read in all, or -errno from 'iface'. */
int rt_dp_poll(struct rt_dp *dp, uint32_t iface, uint32_t budget,
               uint64_t now_ms);

/* Workers: 'n' threads, worker k reading and writing descriptors
 * fds[k * n_ifaces + i] for interface i (queue k of every multi-queue
 * TUN device; -1: none, as for an interface being replaced), in batches
 * of at most 'budget' packets; after packets came
 * a worker keeps polling without sleeping for 'busy_poll_us' (0: never).
 * 'n_ifaces' must be the loaded tables' interface count; the descriptors
 * must stay open, and the interface numbering unchanged, until
 * rt_workers_stop(): stop the workers before a reload that changes
 * interfaces.  Returns 0 or -errno (-EBUSY when already running). */
int rt_workers_start(struct rt_dp *dp, uint32_t n, const int32_t *fds, uint32_t n_ifaces,
                     uint32_t budget, uint32_t busy_poll_us);
/* Stops the workers and waits for them; nothing if none run. */
void rt_workers_stop(struct rt_dp *dp);
/* Workers started from now on whose bit is set in 'mask' run at the lowest
 * priority (nice 19): the worker of connection openers, so that when the
 * CPUs are busy, the worker of established traffic runs first. */
void rt_workers_background(struct rt_dp *dp, uint32_t mask);

/* Loads the steering program for multi-queue TUN devices (steer.c): TCP
 * segments with SYN set and ACK clear go to queue 'syn_queue', everything
 * else to queue 0.  Returns the program's descriptor (for
 * TUNSETSTEERINGEBPF), or -errno (-EPERM without CAP_BPF); the verifier's
 * log, if any, goes to 'log'. */
int rt_steer_load(uint32_t syn_queue, char *log, uint32_t log_size);
/* The same for several queues moved by several workers: a hash of the
 * flow's addresses and ports, so that a flow stays on one queue. */
int rt_steer_flow_load(char *log, uint32_t log_size);

/* The two programs of an attached kernel interface (attach.c), for the tc
 * ingress hooks: on the interface, IP (but neighbour discovery) to the TUN
 * device 'tun_ifindex' (on a LAN link, 'lan' != 0, multicast stays the
 * kernel's too); on the TUN device, what the router writes out
 * through the interface 'wire_ifindex'.  Each returns the program's
 * descriptor or -errno (-EPERM without CAP_BPF); the verifier's log goes to
 * 'log'. */
int rt_attach_ingress_load(uint32_t tun_ifindex, uint32_t lan, char *log,
                           uint32_t log_size);
int rt_attach_egress_load(uint32_t wire_ifindex, char *log, uint32_t log_size);
uint32_t rt_workers_count(const struct rt_dp *dp);
/* Worker k's counters (since the data plane was made: they go on across
 * restarts); -1 if there is no such worker now. */
int rt_workers_stats(const struct rt_dp *dp, uint32_t k, struct rt_worker_stats *out);

/* While workers run, every other call below and above must be made with the
 * lock held (rt_dp_poll() and the workers take it themselves, around each
 * batch): datapath.py does this for Python. */
void rt_dp_lock(struct rt_dp *dp);
void rt_dp_unlock(struct rt_dp *dp);

/* Fragments that waited for their first one and may now go: copies one
 * into 'buf' and sets '*out_iface'; returns its length, 0 when none is left.
 * rt_dp_poll() sends them itself. */
uint32_t rt_dp_take_ready(struct rt_dp *dp, uint8_t *buf, uint32_t cap,
                          int16_t *out_iface);

/* Garbage collection: visits up to 'max_slots' table slots. */
void rt_ct_sweep(struct rt_dp *dp, uint64_t now_ms, uint32_t max_slots,
                 struct rt_sweep_result *out);

/* Copies up to 'n' connections from '*cursor' on; advances the cursor.
 * Returns how many were copied; 0 when the table has no more. */
uint32_t rt_ct_dump(struct rt_dp *dp, uint32_t *cursor,
                    struct rt_ct_entry *out, uint32_t n, uint64_t now_ms);

/* Bytes the connection table holds: slots, hash index, free list. */
uint64_t rt_ct_table_bytes(const struct rt_dp *dp);
/* Puts back a connection saved with rt_ct_dump() (restart with state): its
 * tuples, state, status, counters, age and time left.  NAT mappings are
 * rebuilt from it.  Returns 0, or -1 if the entry is not valid, -2 if it
 * clashes with the table or the table is full, -3 if the running config
 * would not let such a connection open (firewall rules, forwards, policy). */
int rt_ct_restore(struct rt_dp *dp, const struct rt_ct_entry *e,
                  uint64_t now_ms);

/* Removes the connection in 'slot' (from rt_ct_dump) at 'now_ms' (the time
 * its DESTROY event ends it); returns 0, or -1 if the slot holds none. */
int rt_ct_delete(struct rt_dp *dp, uint32_t slot, uint64_t now_ms);
/* Sets the time left of the connection in 'slot' to 'timeout_ms' from
 * 'now_ms' (conntrack -U --timeout); its next packet sets it again as its
 * state wants.  Returns 0, or -1 if the slot holds none. */
int rt_ct_set_timeout(struct rt_dp *dp, uint32_t slot, uint64_t now_ms,
                      uint64_t timeout_ms);

uint32_t rt_ct_count(const struct rt_dp *dp);
/* Endpoint-independent NAT mappings in use. */
uint32_t rt_nat_map_count(const struct rt_dp *dp);
uint32_t rt_ct_capacity(const struct rt_dp *dp);
void rt_ct_flush(struct rt_dp *dp, uint64_t now_ms);

/* Copies up to 'n' counters (enum rt_counter order) or drop counters (enum
 * rt_drop_reason order); returns how many exist. */
uint32_t rt_dp_counters(const struct rt_dp *dp, uint64_t *out, uint32_t n);
uint32_t rt_dp_drops(const struct rt_dp *dp, uint64_t *out, uint32_t n);
int rt_dp_iface_stats(const struct rt_dp *dp, uint32_t iface,
                      struct rt_iface_stats *out);

/* Names and defaults, so Python never repeats a list the C side owns. */
uint32_t rt_n_counters(void);
uint32_t rt_n_drop_reasons(void);
uint32_t rt_n_timeouts(void);
uint32_t rt_n_tcp_states(void);
const char *rt_counter_name(uint32_t i);
const char *rt_drop_name(uint32_t i);
const char *rt_timeout_name(uint32_t i);
uint32_t rt_timeout_default(uint32_t i);
const char *rt_tcp_state_name(uint32_t i);

/* Packets and bytes each firewall rule matched since the last load (two
 * entries per rule); returns how many rules there are. */
uint32_t rt_dp_fw_stats(const struct rt_dp *dp, uint64_t *out, uint32_t n);

/* New connections sent to each backend since the last load; returns how
 * many backends there are. */
uint32_t rt_dp_lb_stats(const struct rt_dp *dp, uint64_t *out, uint32_t n);

/*
 * Mappings LAN hosts asked for (PCP, NAT-PMP, UPnP IGD), loaded whole: see
 * portmap.h.  Ports in host order; addresses in network order, IPv4 in the
 * first 4 bytes.
 */
#define RT_PM_FILTERS 4  /* remote peer filters per entry (PCP FILTER) */
#define RT_PM_MAX 65536  /* entries in one table */

struct rt_pm_filter {
    uint8_t addr[16];    /* remote peer network */
    uint8_t plen;        /* its prefix length, 0 = any address */
    uint8_t pad;
    uint16_t port;       /* remote port, 0 = any */
};

struct rt_portmap {
    uint8_t family;      /* 4: NAT44 mapping on the address of 'iface';
                            6: IPv6 pinhole from 'iface' */
    uint8_t proto;       /* 6 or 17 */
    int16_t iface;       /* the external interface */
    uint16_t ext_port;   /* external port (family 4), 1..65535 */
    uint16_t int_port;   /* inside port, 1..65535 */
    uint8_t int_addr[16]; /* inside host */
    uint32_t n_filters;  /* 0: any remote peer; else one of 'filters' */
    struct rt_pm_filter filters[RT_PM_FILTERS];
};

/* Replaces the table of mappings; 0, or -1 with rt_dp_error() telling why
 * (the old table stays). */
int rt_dp_set_portmaps(struct rt_dp *dp, const struct rt_portmap *e, uint32_t n);

/* What holds the external port of NAT44 mapping 'e' (its inside endpoint
 * aside): RT_PM_FREE, RT_PM_FORWARD (a port forward), RT_PM_TAKEN (another
 * inside endpoint's mapping or connection), or -1 for a bad entry.
 * '*existing': the external port of a live endpoint-independent mapping
 * the inside endpoint already has on that interface, else 0. */
#define RT_PM_FREE 0
#define RT_PM_FORWARD 1
#define RT_PM_TAKEN 2
int rt_dp_portmap_probe(struct rt_dp *dp, const struct rt_portmap *e, uint64_t now_ms,
                        uint16_t *existing);

/* High availability: a standby router ('on' non-zero) opens no connection
 * that it would forward: the first packet of one is dropped and counted as
 * ha_standby, so that nothing reaching it before the connection table of
 * the old active router is committed can take a NAT port or a state of its
 * own.  Connections already in the table, and those to or from the
 * router's own services, go on. */
void rt_dp_set_standby(struct rt_dp *dp, uint32_t on);

/* The load balancers' hash key (default: the connection table's, random per
 * start).  Two routers of a pair given the same key send a new connection
 * to the same backend, so that either can take a connection over that it
 * never heard of (docs/ha.md). */
void rt_dp_set_lb_key(struct rt_dp *dp, uint64_t key);

/* Test hooks: the TCP transition table and the checksum primitives. */
uint8_t rt_tcp_transition(uint32_t dir, uint32_t flag_class, uint32_t state);
uint32_t rt_tcp_flag_class(uint8_t flags);
uint16_t rt_csum_full(const uint8_t *data, uint32_t len);
void rt_csum_replace2(uint8_t *field, uint16_t old, uint16_t new_);
void rt_csum_replace4(uint8_t *field, uint32_t old, uint32_t new_);

/* ABI check: sizeof of the public structs, by name; 0 if unknown.  The
 * list is every struct of rt.cdef (tests/native/test_abi.py reads the cdef
 * and fails on one missing here). */
#define RT_ABI_STRUCTS(X)                                                      \
    X(rt_dp_params) X(rt_iface_cfg) X(rt_fw_rule) X(rt_route_cfg)              \
    X(rt_npt6_cfg) X(rt_masq6_cfg) X(rt_route6_cfg) X(rt_nat_cfg)              \
    X(rt_dnat_cfg) X(rt_lb_slot) X(rt_tables) X(rt_pkt) X(rt_worker_stats)     \
    X(rt_iface_stats) X(rt_sweep_result) X(rt_ct_entry) X(rt_event)            \
    X(rt_capture) X(rt_pm_filter) X(rt_portmap)
uint32_t rt_abi_sizeof(const char *name);

/*
 * Events.  'ct_events' has bit t set for each connection event type t
 * (1 << RT_EV_NEW, RT_EV_UPDATE, RT_EV_DESTROY) to report, so that a reader
 * of NEW and DESTROY alone costs no UPDATE per state change; 'drop_reasons' has bit r
 * set for each enum rt_drop_reason to sample, at most 'drop_rate' samples
 * per second (burst as large).  'ring' is the ring size, a power of two up
 * to 1 << 20; with nothing on, the ring is freed.  Returns 0, or -1 on a bad
 * size or no memory (then nothing changed).
 */
int rt_events_enable(struct rt_dp *dp, uint32_t ct_events,
                     uint64_t drop_reasons, uint32_t drop_rate, uint32_t ring);
/* Moves up to 'n' queued events to 'out'; returns how many. */
uint32_t rt_events_read(struct rt_dp *dp, struct rt_event *out, uint32_t n);
/* Events of 'type' lost so far because the ring was full (type
 * RT_EV_RATE_LIMITED: drop samples over the rate). */
uint64_t rt_events_lost(const struct rt_dp *dp, uint32_t type);

/*
 * Packet capture on the interfaces of mask 'ifaces' (bit i: interface i),
 * both directions, packets as read and as written, cut at 'snaplen' bytes,
 * in a ring of 'slots' (a power of two).  'filter' (NULL or "": none) is a
 * tcpdump expression, compiled by libpcap and run on each packet before it
 * is copied.  Returns 0, or -1 with the reason (libpcap's for a filter) in
 * 'err'.
 */
int rt_capture_start(struct rt_dp *dp, uint64_t ifaces, uint32_t snaplen,
                     uint32_t slots, const char *filter, char *err, uint32_t errlen);
/* Compiles 'filter' as rt_capture_start() would, and only that: 0, or -1
 * with libpcap's reason in 'err'. */
int rt_capture_check(const char *filter, uint32_t snaplen, char *err, uint32_t errlen);
void rt_capture_stop(struct rt_dp *dp);
/* Moves up to 'n' captured packets out: records to 'recs', their bytes to
 * 'data' at i * snaplen.  Returns how many. */
uint32_t rt_capture_read(struct rt_dp *dp, struct rt_capture *recs,
                         uint8_t *data, uint32_t n);
/* Packets not captured because the ring was full. */
uint64_t rt_capture_lost(const struct rt_dp *dp);
/* Packets the capture's filter did not match. */
uint64_t rt_capture_filtered(const struct rt_dp *dp);

#endif /* RT_H */
