/*
 * dp_frag.c - forwarding IPv4 and IPv6 fragments of tracked flows (RFC 4787
 * REQ-14; for IPv6 what Linux's nf_defrag_ipv6 makes possible, without
 * reassembling).
 *
 * Theory of operation: virtual reassembly, as VPP and OVS do it.  The
 * router never rebuilds a datagram.  Only the first fragment (offset 0)
 * carries the L4 header, so it alone goes through conntrack and NAT, like
 * any packet; what it became (addresses after NAT, output interface) is
 * remembered under the datagram's RFC 791 key (source, destination,
 * protocol, identification; IPv6: source, destination, identification).
 * Later fragments look that up and get the same address rewrite and the
 * same output.  IPv6 addresses are not covered by any header checksum, and
 * a later fragment carries no L4 header: copying them is the whole rewrite.  The L4 checksum, which covers the
 * whole datagram, sits in the first fragment and was updated there; a
 * rewrite of addresses and ports changes nothing else it covers.
 *
 * Fragments can arrive before their first one.  Those wait in a small fixed
 * pool (FRAG_PENDING slots of FRAG_BUF bytes) until it comes, and are
 * queued for output then; if it never comes they expire and are counted.
 * Everything is bounded: the table is fixed, a lookup probes at most
 * FRAG_PROBES slots, and a full pool drops new early fragments.
 */
#include <string.h>
#include <arpa/inet.h>
#include "dp.h"
#include "csum.h"
#include "wire.h"

void frag_key_of(const struct pkt_meta *m, struct frag_key *k)
{
    memset(k, 0, sizeof *k);
    k->src = m->tuple.src;
    k->dst = m->tuple.dst;
    k->id = m->frag_id;
    k->family = m->family;
    /* In IPv6 the next header after the fragment header may be another
     * extension header: the protocol is not part of the identity. */
    k->proto = m->family == 4 ? m->proto : 0;
}

static bool key_eq(const struct frag_key *a, const struct frag_key *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

static uint32_t key_hash(const struct frag_state *fs, const struct frag_key *k)
{
    uint64_t w[sizeof *k / 8];
    memcpy(w, k, sizeof w);
    uint64_t h = fs->key;
    for (unsigned i = 0; i < sizeof w / sizeof w[0]; i++) {
        h = (h ^ w[i]) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 31;
    }
    h *= 0xbf58476d1ce4e5b9ULL;
    return (uint32_t)(h ^ (h >> 29));
}
_Static_assert(sizeof(struct frag_key) == 40, "frag_key is hashed as five words");

static bool expired(uint32_t deadline, uint64_t now_ms)
{
    return (int32_t)(deadline - (uint32_t)now_ms) <= 0;
}

static struct frag_entry *lookup(struct frag_state *fs, const struct frag_key *k,
                                 uint64_t now_ms)
{
    uint32_t h = key_hash(fs, k);
    for (unsigned i = 0; i < FRAG_PROBES; i++) {
        struct frag_entry *e = &fs->table[(h + i) % FRAG_TABLE];
        if (e->in_use && key_eq(&e->key, k))
            return expired(e->expires, now_ms) ? NULL : e;
    }
    return NULL;
}

/* Rewrites the addresses of the IPv4 fragment at 'ip' (its header only). */
static void rewrite_addrs(uint8_t *ip, rt_be32 src, rt_be32 dst)
{
    rt_be32 old = wire_be32(ip + IP4_OFF_SRC);
    if (old != src) {
        wire_put_be32(ip + IP4_OFF_SRC, src);
        csum_replace4(ip + IP4_OFF_CSUM, old, src);
    }
    old = wire_be32(ip + IP4_OFF_DST);
    if (old != dst) {
        wire_put_be32(ip + IP4_OFF_DST, dst);
        csum_replace4(ip + IP4_OFF_CSUM, old, dst);
    }
}

/* TTL, MTU and rewrite for a later fragment at 'ip' of 'len' bytes.  Returns
 * the drop reason, or RT_DROP_NONE when it may go. */
static enum rt_drop_reason translate(struct rt_dp *dp, uint8_t *ip, uint32_t len,
                                     const struct frag_entry *e)
{
    /* No ICMP about later fragments (RFC 1812 4.3.2.7): only drops. */
    if (e->key.family == 6) {
        if (ip[IP6_OFF_HLIM] <= 1)
            return RT_DROP_TTL_EXPIRED;
        if (len > dp->ifaces[e->out_iface].mtu)
            return RT_DROP_TOO_BIG;
        memcpy(ip + IP6_OFF_SRC, e->new_src.b, 16);
        memcpy(ip + IP6_OFF_DST, e->new_dst.b, 16);
        ip[IP6_OFF_HLIM]--;
        return RT_DROP_NONE;
    }
    if (ip[IP4_OFF_TTL] <= 1)
        return RT_DROP_TTL_EXPIRED;
    if (len > dp->ifaces[e->out_iface].mtu)
        return RT_DROP_TOO_BIG;
    rewrite_addrs(ip, e->new_src.v4, e->new_dst.v4);
    uint16_t old = wire_be16(ip + IP4_OFF_TTL);
    ip[IP4_OFF_TTL]--;
    csum_replace2(ip + IP4_OFF_CSUM, old, wire_be16(ip + IP4_OFF_TTL));
    return RT_DROP_NONE;
}

void frag_first_done(struct rt_dp *dp, const struct frag_key *k, const uint8_t *ip,
                     int out, uint64_t now_ms)
{
    union rt_addr src = {.w = {0, 0}}, dst = {.w = {0, 0}};
    if (k->family == 6) {
        memcpy(src.b, ip + IP6_OFF_SRC, 16);
        memcpy(dst.b, ip + IP6_OFF_DST, 16);
    } else {
        src.v4 = wire_be32(ip + IP4_OFF_SRC);
        dst.v4 = wire_be32(ip + IP4_OFF_DST);
    }
    struct frag_state *fs = &dp->frag;
    uint32_t h = key_hash(fs, k);
    struct frag_entry *slot = NULL;
    for (unsigned i = 0; i < FRAG_PROBES; i++) {
        struct frag_entry *e = &fs->table[(h + i) % FRAG_TABLE];
        if (e->in_use && key_eq(&e->key, k)) {
            slot = e;
            break;
        }
        if (!slot && (!e->in_use || expired(e->expires, now_ms)))
            slot = e;
    }
    if (!slot) /* all probed slots live: take the first, the oldest bet */
        slot = &fs->table[h % FRAG_TABLE];
    *slot = (struct frag_entry){.key = *k, .new_src = src, .new_dst = dst,
                                .out_iface = (int16_t)out, .in_use = 1};
    slot->expires = (uint32_t)(now_ms + dp->ctp.timeout_ms[RT_TO_FRAGMENT]);

    for (unsigned i = 0; i < FRAG_PENDING; i++) {
        struct frag_pending *q = &fs->pending[i];
        if (q->state != FRAG_WAITING || !key_eq(&q->key, k))
            continue;
        enum rt_drop_reason r = translate(dp, q->data, q->len, slot);
        if (r != RT_DROP_NONE) {
            dp->drops[r]++;
            q->state = FRAG_FREE;
            continue;
        }
        q->out_iface = (int16_t)out;
        q->state = FRAG_READY;
        fs->n_ready++;
        dp->counters[RT_CNT_FRAGMENTS]++;
    }
}

void frag_later(struct rt_dp *dp, struct rt_pkt *p, struct pkt_meta *m,
                uint64_t now_ms)
{
    struct frag_state *fs = &dp->frag;
    struct frag_key k;
    frag_key_of(m, &k);
    struct frag_entry *e = lookup(fs, &k, now_ms);
    if (e) {
        enum rt_drop_reason r = translate(dp, p->data, m->len, e);
        if (r != RT_DROP_NONE) {
            dp_drop(dp, p, r);
            /* IPv6 sources fragment, so they must hear of a fragment the
             * next link cannot take (RFC 8201); an IPv4 router would have
             * fragmented it instead, which this one does not do. */
            if (r == RT_DROP_TOO_BIG && e->key.family == 6)
                dp_icmp6_error(dp, p, m, ICMP6_PACKET_TOO_BIG, 0, dp->ifaces[e->out_iface].mtu);
            return;
        }
        p->len = m->len;
        p->out_iface = e->out_iface;
        dp->counters[RT_CNT_FRAGMENTS]++;
        return;
    }
    /* Its first fragment has not come yet: hold it. */
    struct frag_pending *slot = NULL;
    for (unsigned i = 0; i < FRAG_PENDING && !slot; i++) {
        struct frag_pending *q = &fs->pending[i];
        if (q->state == FRAG_WAITING && expired(q->expires, now_ms)) {
            dp->drops[RT_DROP_FRAG_EXPIRED]++;
            q->state = FRAG_FREE;
        }
        if (q->state == FRAG_FREE)
            slot = q;
    }
    if (!slot || m->len > FRAG_BUF) {
        dp_drop(dp, p, RT_DROP_FRAG_NO_ROOM);
        return;
    }
    slot->key = k;
    slot->len = (uint16_t)m->len;
    memcpy(slot->data, p->data, m->len);
    slot->expires = (uint32_t)(now_ms + dp->ctp.timeout_ms[RT_TO_FRAGMENT]);
    slot->state = FRAG_WAITING;
    dp->counters[RT_CNT_FRAGMENTS_HELD]++;
    /* Not a drop: the packet goes on later.  Nothing to send now. */
    p->out_iface = -1;
    p->reason = RT_DROP_NONE;
}

uint32_t rt_dp_take_ready(struct rt_dp *dp, uint8_t *buf, uint32_t cap,
                          int16_t *out_iface)
{
    struct frag_state *fs = &dp->frag;
    if (!fs->n_ready)
        return 0;
    for (unsigned i = 0; i < FRAG_PENDING; i++) {
        struct frag_pending *q = &fs->pending[i];
        if (q->state != FRAG_READY)
            continue;
        q->state = FRAG_FREE;
        fs->n_ready--;
        if (q->len > cap) {
            dp->drops[RT_DROP_TX_ERROR]++;
            continue;
        }
        memcpy(buf, q->data, q->len);
        *out_iface = q->out_iface;
        return q->len;
    }
    return 0;
}

void frag_remap_ifaces(struct frag_state *f, const int16_t *remap)
{
    for (uint32_t i = 0; i < FRAG_TABLE; i++) {
        struct frag_entry *e = &f->table[i];
        if (!e->in_use || e->out_iface < 0)
            continue;
        e->out_iface = e->out_iface < RT_MAX_IFACES ? remap[e->out_iface] : -1;
        if (e->out_iface < 0)
            e->in_use = 0;
    }
    for (uint32_t i = 0; i < FRAG_PENDING; i++) {
        struct frag_pending *q = &f->pending[i];
        if (q->state != FRAG_READY)
            continue;
        q->out_iface = q->out_iface >= 0 && q->out_iface < RT_MAX_IFACES
                           ? remap[q->out_iface] : -1;
        if (q->out_iface < 0) {
            q->state = FRAG_FREE;
            f->n_ready--;
        }
    }
}
