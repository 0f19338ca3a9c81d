/*
 * events.c - the event and capture rings (see events.h).
 */
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <pcap/bpf.h>
#include "events.h"

struct rt_event *ev_push(struct ev_ring *r, uint8_t type)
{
    if (r->head - r->tail >= r->size) {
        r->lost[type < RT_EV_N_TYPES ? type : 0]++;
        return NULL;
    }
    struct rt_event *e = &r->ev[r->head++ & (r->size - 1)];
    memset(e, 0, sizeof *e);
    e->type = type;
    return e;
}

void cap_push(struct cap_ring *r, struct cap_filter *f, uint16_t iface, uint8_t dir,
              const uint8_t *data, uint32_t len)
{
    /* libpcap's own interpreter (bpf_filter() checks every load against
     * the length, so a crafted packet cannot read past it); wirelen and
     * buflen are both the whole packet, not yet cut at the snap length. */
    if (f->insns && bpf_filter(f->insns, data, len, len) == 0) {
        f->rejected++;
        return;
    }
    if (r->head - r->tail >= r->size) {
        r->lost++;
        return;
    }
    uint32_t i = r->head++ & (r->size - 1);
    struct rt_capture *c = &r->rec[i];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->ts_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    c->len = len;
    c->caplen = len < r->snaplen ? len : r->snaplen;
    c->iface = iface;
    c->dir = dir;
    memcpy(r->data + (size_t)i * r->snaplen, data, c->caplen);
}
