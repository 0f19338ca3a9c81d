/*
 * nat.c - NAT bindings and packet mangling.
 *
 * Theory of operation.  A binding is chosen once, when a connection is new,
 * by editing its reply tuple before the connection is inserted: for source
 * NAT the reply tuple's destination becomes the external address and port,
 * so replies find the connection through the table with no second map.
 * Rewriting a packet is then the same code for every kind of NAT: make the
 * packet look like the inverse of the other direction's tuple (as Linux's
 * nf_nat_manip_pkt does).
 *
 * Port choice: keep the source port (or ICMP identifier) when no other
 * connection uses the resulting reply tuple; otherwise probe from a random
 * offset in the configured range, 128 candidates, then 64, 32, 16 and 8
 * from fresh random offsets: at most 248 probes, after which the new flow
 * fails cleanly instead of scanning 64 K ports under load.
 *
 * Checksums are updated incrementally (RFC 1624): an address change touches
 * the IPv4 header checksum and, through the pseudo-header, the TCP and UDP
 * checksums; a port change touches the L4 checksum only; an ICMP identifier
 * change touches the ICMP checksum.  A UDP checksum of zero means "none" and
 * stays zero; a computed zero is sent as 0xffff (RFC 768).  A packet marked
 * NEEDS_CSUM (checksum offload) carries only the pseudo-header sum in its L4
 * checksum field: address changes update that sum without the complement,
 * and port changes leave it alone, since whoever completes the checksum sums
 * the ports then (as Linux's inet_proto_csum_replace4 does for
 * CHECKSUM_PARTIAL).
 */
#include "nat.h"
#include "csum.h"
#include "wire.h"

/* The field of a reply tuple that source NAT picks: where replies go. */
static rt_be16 *snat_port(struct ct_tuple *reply)
{
    return reply->proto == IPPROTO_ICMP_ ? &reply->sport : &reply->dport;
}

static bool has_ports(uint8_t proto)
{
    return proto == IPPROTO_TCP_ || proto == IPPROTO_UDP_ ||
           proto == IPPROTO_ICMP_;
}

bool nat_snat(struct ct_table *ct, struct ct_conn *c, rt_be32 addr,
              const struct nat_params *np, uint64_t *rng, uint64_t now_ms)
{
    struct ct_tuple *r = &c->tuple[CT_DIR_REPLY];
    r->dst.v4 = addr;
    c->status |= CT_SRC_NAT;
    if (!has_ports(r->proto))
        return !ct_tuple_in_use(ct, r, now_ms);
    if (np->preserve_ports && !ct_tuple_in_use(ct, r, now_ms))
        return true;

    uint32_t lo = np->port_min, hi = np->port_max;
    if (r->proto == IPPROTO_ICMP_) {
        lo = 0;  /* identifiers have no reserved range */
        hi = 65535;
    }
    uint32_t range = hi - lo + 1;
    uint32_t attempts = range < 128 ? range : 128;
    rt_be16 *port = snat_port(r);
    ct->counters[RT_CNT_NAT_PORT_SEARCH]++;
    for (;;) {
        uint32_t off = (uint32_t)(rng_next(rng) % range);
        for (uint32_t i = 0; i < attempts; i++) {
            *port = htons((uint16_t)(lo + (off + i) % range));
            ct->counters[RT_CNT_NAT_PORT_PROBES]++;
            if (!ct_tuple_in_use(ct, r, now_ms))
                return true;
        }
        if (attempts < 16)
            return false;
        attempts /= 2;
    }
}

/* Offsets of the L4 checksum for 'proto', or 0 if it has none we keep. */
static uint32_t l4_csum_off(uint8_t proto)
{
    switch (proto) {
    case IPPROTO_TCP_: return TCP_OFF_CSUM;
    case IPPROTO_UDP_: return UDP_OFF_CSUM;
    case IPPROTO_ICMP_: return ICMP_OFF_CSUM;
    default: return 0;
    }
}

/*
 * Changes the IPv4 address at 'ip' + 'addr_off' to 'new_'.  'l4' is the L4
 * header of the same packet and 'l4_avail' how many of its bytes are there
 * (an ICMP error may quote only 8).
 */
static void set_addr(uint8_t *ip, uint32_t addr_off, uint8_t *l4,
                     uint32_t l4_avail, rt_be32 new_, bool partial)
{
    rt_be32 old = wire_be32(ip + addr_off);
    if (old == new_)
        return;
    wire_put_be32(ip + addr_off, new_);
    csum_replace4(ip + IP4_OFF_CSUM, old, new_);
    uint8_t proto = ip[IP4_OFF_PROTO];
    if (partial) {
        /* NEEDS_CSUM: the field holds the pseudo-header sum, uncomplemented
         * (the trap: updating it like a full checksum corrupts it, and a
         * receiving namespace never notices because it trusts the flag). */
        uint32_t coff = proto == IPPROTO_TCP_ ? TCP_OFF_CSUM : UDP_OFF_CSUM;
        if (l4_avail >= coff + 2)
            csum_replace4_partial(l4 + coff, old, new_);
    } else if (proto == IPPROTO_TCP_ && l4_avail >= TCP_OFF_CSUM + 2) {
        csum_replace4(l4 + TCP_OFF_CSUM, old, new_);
    } else if (proto == IPPROTO_UDP_ && l4_avail >= UDP_HDR_LEN &&
               wire_be16(l4 + UDP_OFF_CSUM) != 0) {
        csum_replace4(l4 + UDP_OFF_CSUM, old, new_);
        if (wire_be16(l4 + UDP_OFF_CSUM) == 0)
            wire_put_be16(l4 + UDP_OFF_CSUM, 0xffff);
    }
    /* ICMP has no pseudo-header: nothing more to do. */
}

/* Changes the 16-bit field at 'l4' + 'off' (a port or ICMP identifier).  A
 * partial checksum does not cover it yet: only the field itself changes. */
static void set_l4_word(uint8_t proto, uint8_t *l4, uint32_t l4_avail,
                        uint32_t off, rt_be16 new_, bool partial)
{
    rt_be16 old = wire_be16(l4 + off);
    if (old == new_)
        return;
    wire_put_be16(l4 + off, new_);
    uint32_t coff = l4_csum_off(proto);
    if (partial || !coff || l4_avail < coff + 2)
        return;
    if (proto == IPPROTO_UDP_) {
        if (wire_be16(l4 + coff) == 0)
            return;
        csum_replace2(l4 + coff, old, new_);
        if (wire_be16(l4 + coff) == 0)
            wire_put_be16(l4 + coff, 0xffff);
    } else {
        csum_replace2(l4 + coff, old, new_);
    }
}

/*
 * Makes the IP packet at 'ip' (L4 header at 'l4', 'l4_avail' bytes of it)
 * look like tuple 't': addresses, ports or ICMP identifier.
 */
static void make_like(uint8_t *ip, uint8_t *l4, uint32_t l4_avail,
                      const struct ct_tuple *t, bool partial)
{
    uint8_t proto = ip[IP4_OFF_PROTO];
    set_addr(ip, IP4_OFF_SRC, l4, l4_avail, t->src.v4, partial);
    set_addr(ip, IP4_OFF_DST, l4, l4_avail, t->dst.v4, partial);
    if (proto == IPPROTO_TCP_ || proto == IPPROTO_UDP_) {
        set_l4_word(proto, l4, l4_avail, 0, t->sport, partial);
        set_l4_word(proto, l4, l4_avail, 2, t->dport, partial);
    } else if (proto == IPPROTO_ICMP_ && l4_avail >= ICMP_HDR_LEN) {
        set_l4_word(proto, l4, l4_avail, ICMP_OFF_ID, t->sport, false);
    }
}

/* The tuple a packet in 'dir' must look like: the inverse of the other
 * direction's tuple.  For ICMP the identifier is the same both ways. */
static void target_tuple(const struct ct_conn *c, enum ct_dir dir,
                         struct ct_tuple *t)
{
    const struct ct_tuple *o = &c->tuple[!dir];
    *t = *o;
    t->src = o->dst;
    t->dst = o->src;
    if (o->proto != IPPROTO_ICMP_) {
        t->sport = o->dport;
        t->dport = o->sport;
    }
}

void nat_rewrite(struct pkt_meta *m, const struct ct_conn *c, enum ct_dir dir)
{
    if (!(c->status & (CT_SRC_NAT | CT_DST_NAT)))
        return;
    struct ct_tuple t;
    target_tuple(c, dir, &t);
    make_like(m->data, m->data + m->l4_off, m->l4_len, &t, m->csum_partial);
}

void nat_rewrite_icmp_error(struct pkt_meta *m, const struct ct_conn *c,
                            enum ct_dir dir)
{
    if (!(c->status & (CT_SRC_NAT | CT_DST_NAT)))
        return;
    uint8_t *ip = m->data;
    uint8_t *icmp = ip + m->l4_off;
    struct ct_tuple t;
    target_tuple(c, dir, &t);

    /* Outer header: to the inside host; the source follows the
     * translation only when the error comes from the flow's own peer. */
    if (wire_be32(ip + IP4_OFF_SRC) == c->tuple[dir].src.v4)
        set_addr(ip, IP4_OFF_SRC, icmp, 0, t.src.v4, false);
    set_addr(ip, IP4_OFF_DST, icmp, 0, t.dst.v4, false);

    /* Quoted packet: it travelled in the other direction, so it must look
     * like the other direction's tuple as its sender sent it. */
    uint8_t *inner = m->data + m->inner_off;
    uint8_t *inner_l4 = m->data + m->inner_l4_off;
    make_like(inner, inner_l4, m->len - m->inner_l4_off, &c->tuple[!dir], false);

    /* The quoted bytes changed under the ICMP checksum: recompute it. */
    wire_put_be16(icmp + ICMP_OFF_CSUM, 0);
    wire_put_be16(icmp + ICMP_OFF_CSUM, csum_full(icmp, m->l4_len));
}
