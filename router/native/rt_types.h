/*
 * rt_types.h - types and named lists shared by every file of the data plane.
 *
 * Byte order is visible in the types: rt_be16/rt_be32 hold values exactly as
 * they sit on the wire.  They are plain integers (so they can live in packed
 * keys and be compared as bytes); the names are the documentation.
 *
 * Drop reasons, TCP states, timeouts and counters are X-macros so that the
 * enum, the name table exported to Python and the stats array cannot drift.
 */
#ifndef RT_TYPES_H
#define RT_TYPES_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

typedef uint16_t rt_be16; /* 16-bit value in network byte order */
typedef uint32_t rt_be32; /* 32-bit value in network byte order */

/* Why a packet was dropped.  Every drop in the data plane names one. */
#define RT_DROP_REASONS(X)                                                     \
    X(NONE, "none")                     /* not dropped */                      \
    X(SHORT, "short_packet")            /* shorter than its headers */         \
    X(BAD_VERSION, "bad_ip_version")    /* neither IPv4 nor IPv6 */            \
    X(BAD_HDR_LEN, "bad_header_length") /* IHL < 5 or beyond the packet */     \
    X(BAD_TOTAL_LEN, "bad_total_length") /* total length beyond the read */    \
    X(BAD_IP_CSUM, "bad_ip_checksum")   /* IPv4 header checksum wrong */       \
    X(BAD_L4_CSUM, "bad_l4_checksum")   /* TCP/UDP/ICMP checksum wrong */      \
    X(L4_SHORT, "short_l4_header")      /* L4 header truncated */              \
    X(BAD_TCP_FLAGS, "bad_tcp_flags")   /* flag combination never valid */     \
    X(FRAGMENT, "fragment")             /* fragment for the router itself */   \
    X(FRAG_NO_ROOM, "fragment_no_room") /* no room to hold an early fragment */ \
    X(FRAG_EXPIRED, "fragment_expired") /* first fragment never came */        \
    X(BAD_EXT_HDR, "bad_ipv6_ext_header") /* malformed IPv6 header chain */    \
    X(BAD_IPV6_FRAGMENT, "bad_ipv6_fragment") /* RFC 8200 4.5 / RFC 7112 */  \
    X(NPT_UNMAPPABLE, "npt_unmappable") /* NPTv6: subnet word 0xffff (RFC 6296) */ \
    X(MARTIAN, "martian_address")       /* impossible source or dest */        \
    X(NOT_UNICAST, "not_unicast")       /* multicast/broadcast destination */  \
    X(TTL_EXPIRED, "ttl_expired")       /* TTL reached zero here */            \
    X(NO_ROUTE, "no_route")             /* no route to the destination */      \
    X(TOO_BIG, "too_big")               /* larger than the output MTU */       \
    X(CT_INVALID, "ct_invalid")         /* conntrack says INVALID */           \
    X(TCP_WINDOW, "tcp_out_of_window")  /* TCP segment outside the window */   \
    X(TCP_BAD_RST, "tcp_invalid_rst")   /* TCP RST outside the window */       \
    X(CT_FULL, "ct_full")               /* no room in the conntrack table */   \
    X(NAT_NO_PORT, "nat_no_port")       /* no free NAT port/identifier */      \
    X(NAT_NO_ADDRESS, "nat_no_address") /* masquerade, interface unaddressed */ \
    X(POLICY, "policy")                 /* zone policy drops NEW */            \
    X(FW_DROP, "firewall_drop")         /* a firewall rule drops it */         \
    X(FW_REJECT, "firewall_reject")     /* a firewall rule rejects it */       \
    X(SPOOFED, "spoofed_source")        /* fails the reverse-path check */     \
    X(SRC_CONN_LIMIT, "source_conn_limit") /* source has too many conns */    \
    X(SRC_RATE_LIMIT, "source_rate_limit") /* source opens them too fast */   \
    X(SRC_SHARE, "source_share")    /* source holds its share of the table */ \
    X(ICMP_NO_FLOW, "icmp_error_no_flow") /* ICMP error for unknown flow */    \
    X(LOCAL, "local_delivered")         /* consumed by the router itself */    \
    X(LOCAL_DROP, "local_unhandled")    /* for the router, nothing answers */  \
    X(BAD_IFACE, "bad_interface")       /* packet from an unknown iface */     \
    X(BAD_OFFLOAD, "bad_offload")       /* inconsistent GSO/checksum metadata */ \
    X(TX_ERROR, "tx_error")             /* write() to the output failed */    \
    X(HA_STANDBY, "ha_standby")         /* new connection on a standby router */ \
    X(LB_ORPHAN, "lb_orphan_reply")     /* a backend's segment, connection unknown */

#define RT_DROP_ENUM__(name, str) RT_DROP_##name,
enum rt_drop_reason { RT_DROP_REASONS(RT_DROP_ENUM__) RT_DROP_N_REASONS };
#undef RT_DROP_ENUM__

/* Linux nf_conntrack TCP states, same names and order. */
#define RT_TCP_STATES(X)                                                       \
    X(NONE)                                                                    \
    X(SYN_SENT)                                                                \
    X(SYN_RECV)                                                                \
    X(ESTABLISHED)                                                             \
    X(FIN_WAIT)                                                                \
    X(CLOSE_WAIT)                                                              \
    X(LAST_ACK)                                                                \
    X(TIME_WAIT)                                                               \
    X(CLOSE)                                                                   \
    X(SYN_SENT2)

#define RT_TCP_ENUM__(name) RT_TCP_##name,
enum rt_tcp_state { RT_TCP_STATES(RT_TCP_ENUM__) RT_TCP_N_STATES };
#undef RT_TCP_ENUM__

/*
 * Timeouts, in seconds.  The defaults meet the IETF BEHAVE requirements for
 * NAT, which is where they differ from Linux's (shown after each): TCP
 * transitory states at least 4 minutes (RFC 5382 REQ-5, RFC 7857 2.1, which
 * also asks to keep a RST-closed session 4 minutes), UDP mappings at least 2
 * minutes and 5 once in use both ways (RFC 4787 REQ-5, 5c), ICMP queries at
 * least 60 s (RFC 5508 REQ-2).  The config can change every one of them.
 */
#define RT_TIMEOUTS(X)                                                         \
    X(TCP_SYN_SENT, "tcp_syn_sent", 240)         /* Linux 120 */               \
    X(TCP_SYN_RECV, "tcp_syn_recv", 240)         /* Linux 60 */                \
    X(TCP_ESTABLISHED, "tcp_established", 432000)                              \
    X(TCP_FIN_WAIT, "tcp_fin_wait", 240)         /* Linux 120 */               \
    X(TCP_CLOSE_WAIT, "tcp_close_wait", 240)     /* Linux 60 */                \
    X(TCP_LAST_ACK, "tcp_last_ack", 240)         /* Linux 30 */                \
    X(TCP_TIME_WAIT, "tcp_time_wait", 240)       /* Linux 120 */               \
    X(TCP_CLOSE, "tcp_close", 240)               /* Linux 10 */                \
    X(TCP_SYN_SENT2, "tcp_syn_sent2", 240)       /* Linux 120 */               \
    X(TCP_UNACK, "tcp_unacknowledged", 300)                                    \
    X(TCP_RETRANS, "tcp_max_retrans", 300)                                     \
    X(UDP, "udp", 120)                           /* Linux 30 */                \
    X(UDP_STREAM, "udp_stream", 300)             /* Linux 120 */               \
    X(ICMP, "icmp", 60)                          /* Linux 30 */                \
    X(GENERIC, "generic", 600)                                                 \
    X(FRAGMENT, "fragment", 30)                  /* Linux ipfrag_time */

#define RT_TO_ENUM__(name, str, secs) RT_TO_##name,
enum rt_timeout { RT_TIMEOUTS(RT_TO_ENUM__) RT_N_TIMEOUTS };
#undef RT_TO_ENUM__

/* Data plane counters, the conntrack ones named as in `conntrack -S`. */
#define RT_COUNTERS(X)                                                         \
    X(FOUND, "found")               /* lookup hit an existing entry */        \
    X(INVALID, "invalid")           /* packet classified INVALID */           \
    X(IGNORE, "ignore")             /* packet ignored by the TCP tracker */   \
    X(INSERT, "insert")             /* new entries inserted */                \
    X(INSERT_FAILED, "insert_failed") /* insert lost (tuple clash) */         \
    X(DROP, "drop")                 /* table full and nothing to evict */     \
    X(EARLY_DROP, "early_drop")     /* non-assured entry evicted for room */  \
    X(FAIR_EVICT, "fair_evict")     /* an over-share source's entry evicted   \
                                       for a source under its fair share */    \
    X(ERROR, "error")               /* ICMP errors with no flow */            \
    X(SEARCH_RESTART, "search_restart") /* always 0: no resizes under use */  \
    X(EXPIRED, "expired")           /* entries removed because they expired */ \
    X(DELETED, "deleted")           /* entries removed by request / reopen */ \
    X(RELATED, "related")           /* ICMP errors matched to a flow */       \
    X(NAT_PORT_SEARCH, "nat_port_search") /* NAT bindings needing a search */ \
    X(NAT_PORT_PROBES, "nat_port_probes") /* candidate ports tried */         \
    X(NAT_MAP_CLASH, "nat_map_clash") /* mapped port clashed: own port used */ \
    X(NAT_MAP_FULL, "nat_map_full")   /* no room for a mapping: not EIM */     \
    X(NAT_MAP_INBOUND, "nat_map_inbound") /* connections let in by a mapping */ \
    X(PORTMAP_INBOUND, "portmap_inbound") /* ... by one a LAN host asked for */ \
    X(ICMP_SENT, "icmp_sent")       /* ICMP messages the router sent */       \
    X(ICMP_RATE_LIMITED, "icmp_rate_limited") /* errors not sent: rate limit */ \
    X(RX_PACKETS, "rx_packets")     /* packets read from all interfaces */    \
    X(TX_PACKETS, "tx_packets")     /* packets written to all interfaces */   \
    X(BATCHES, "batches")           /* batch calls */                         \
    X(GSO_PACKETS, "gso_packets")   /* GSO super-packets forwarded whole */   \
    X(GSO_SEGMENTS, "gso_segments") /* segments those stood for */            \
    X(CSUM_PARTIAL, "csum_partial") /* packets with a partial L4 checksum */  \
    X(FRAGMENTS, "fragments")       /* fragments forwarded */                 \
    X(FRAGMENTS_HELD, "fragments_held") /* fragments that waited for the first */

#define RT_CNT_ENUM__(name, str) RT_CNT_##name,
enum rt_counter { RT_COUNTERS(RT_CNT_ENUM__) RT_N_COUNTERS };
#undef RT_CNT_ENUM__

#endif /* RT_TYPES_H */
