/*
 * ct_proto.h - the interface between the table and the L4 trackers.
 *
 * One tracker per protocol behind a small table of handlers, looked up by IP
 * protocol number; protocols without their own default to the generic one.
 * Adding a protocol does not touch ct.c.
 */
#ifndef RT_CT_PROTO_H
#define RT_CT_PROTO_H

#include "ct.h"
#include "parse.h"

/* Knobs the trackers read; written by the control plane on load. */
struct ct_params {
    uint64_t timeout_ms[RT_N_TIMEOUTS]; /* per enum rt_timeout */
    bool tcp_loose;                     /* pick up mid-stream TCP */
    bool tcp_liberal;                   /* out-of-window segments pass */
    uint8_t tcp_max_retrans;            /* identical ACKs before the
                                           retransmission timeout */
};

/* What a tracker says about one packet of an existing connection. */
enum ct_verdict {
    CT_ACCEPT,  /* state updated, forward the packet */
    CT_IGNORE,  /* forward, but the state and timer stay as they were */
    CT_INVALID, /* the packet does not fit the connection: drop it */
    CT_OUT_OF_WINDOW, /* INVALID: TCP segment outside the windows */
    CT_BAD_RST, /* INVALID: TCP RST outside the windows */
    CT_REOPEN,  /* a new connection reuses the tuple: delete, start over */
    CT_KILL,    /* forward, then delete the connection now */
};

struct ct_l4_proto {
    /* May 'm' start a connection?  If so, initialises the L4 state of 'c'
     * (the tuples are set by the caller) and returns true.  'w' is the
     * connection's TCP window state, used by TCP only. */
    bool (*new_conn)(struct ct_conn *c, struct ct_tcp_win *w,
                     const struct pkt_meta *m, const struct ct_params *p);
    /* Updates 'c' for packet 'm' travelling in 'dir'; sets the deadline.
     * CT_SEEN_REPLY is not yet set for the first reply packet. */
    enum ct_verdict (*update)(struct ct_conn *c, struct ct_tcp_win *w,
                              const struct pkt_meta *m, enum ct_dir dir,
                              const struct ct_params *p, uint64_t now_ms);
};

extern const struct ct_l4_proto ct_proto_tcp;
extern const struct ct_l4_proto ct_proto_udp;
extern const struct ct_l4_proto ct_proto_icmp;
extern const struct ct_l4_proto ct_proto_other;

/* The tracker for IP protocol 'proto'. */
const struct ct_l4_proto *ct_l4_for(uint8_t proto);

/* The TCP transition, exported for the table-walk tests: the new state for
 * a packet of flag class 'cls' in 'dir' when the state is 'state'.
 * Returns a state, CT_TCP_IGNORE or CT_TCP_INVALID. */
#define CT_TCP_INVALID 0xfe
#define CT_TCP_IGNORE 0xff
uint8_t ct_tcp_transition(unsigned dir, unsigned cls, unsigned state);
unsigned ct_tcp_flag_class(uint8_t flags);

#endif /* RT_CT_PROTO_H */
