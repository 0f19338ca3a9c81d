/*
 * events.h - what the data plane reports to the control plane without ever
 * waiting for it: connection events (NEW, UPDATE, DESTROY as conntrack -E
 * shows them), samples of dropped packets for the log, and captured
 * packets.
 *
 * Each is a ring of fixed size, allocated only while someone listens, that
 * the data plane writes and Python drains between batches.  A full ring
 * never blocks or slows a batch: the event is counted as lost and dropped,
 * and the reader is told how many it missed.
 */
#ifndef RT_EVENTS_H
#define RT_EVENTS_H

#include "rt.h"

struct bpf_insn; /* libpcap's <pcap/bpf.h>, included where it runs */

struct ev_ring {
    struct rt_event *ev;   /* 'size' slots, NULL when off */
    uint32_t size;         /* a power of two */
    uint32_t head, tail;   /* free-running; head - tail = queued */
    uint64_t lost[RT_EV_N_TYPES]; /* per event type, never reset */
};

struct cap_ring {
    struct rt_capture *rec; /* 'size' records, NULL when off */
    uint8_t *data;          /* 'size' * 'snaplen' bytes */
    uint32_t size, snaplen;
    uint32_t head, tail;
    uint64_t ifaces;        /* bit i: capture interface i */
    uint64_t lost;
};

/* A capture's filter: classic BPF compiled by libpcap from a tcpdump
 * expression, run on each packet before it is copied (none: every packet). */
struct cap_filter {
    struct bpf_insn *insns; /* NULL: no filter */
    uint32_t len;
    uint64_t rejected;      /* packets the filter did not match */
};

/* Appends an event; counts it lost when the ring is full.  Returns the
 * slot to fill, or NULL. */
struct rt_event *ev_push(struct ev_ring *r, uint8_t type);

/* Copies packet 'data' ('len' bytes) into the capture ring if filter 'f'
 * matches it. */
void cap_push(struct cap_ring *r, struct cap_filter *f, uint16_t iface, uint8_t dir,
              const uint8_t *data, uint32_t len);

static inline bool cap_on(const struct cap_ring *r, uint32_t iface)
{
    return r->ifaces && iface < 64 && (r->ifaces >> iface) & 1;
}

#endif /* RT_EVENTS_H */
