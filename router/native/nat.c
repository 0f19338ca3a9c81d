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
 * fails cleanly instead of scanning 64 K ports under load.  A range of 128
 * ports or fewer is searched whole after the first round (which keeps the
 * port's parity), so there a flow fails only when every port is taken.
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
static bool is_icmp(uint8_t proto)
{
    return proto == IPPROTO_ICMP_ || proto == IPPROTO_ICMPV6_;
}

static rt_be16 *snat_port(struct ct_tuple *reply)
{
    return is_icmp(reply->proto) ? &reply->sport : &reply->dport;
}

static bool has_ports(uint8_t proto)
{
    return proto == IPPROTO_TCP_ || proto == IPPROTO_UDP_ || is_icmp(proto);
}

/* ---- the mapping table ------------------------------------------------- */

#include <stdlib.h>
#include <string.h>

static uint32_t map_hash(const struct nat_maps *nm, uint8_t proto, rt_be32 a,
                         rt_be32 b, rt_be16 port)
{
    uint64_t h = ((uint64_t)a << 32 | b) ^ nm->key;
    h ^= (uint64_t)port << 8 | proto;
    h *= 0x9e3779b97f4a7c15ULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return (uint32_t)h;
}

int nat_maps_init(struct nat_maps *nm, uint32_t capacity, uint32_t conns,
                  uint64_t seed)
{
    memset(nm, 0, sizeof *nm);
    uint32_t nb = 2;
    while (nb < 2 * (uint64_t)capacity)
        nb <<= 1;
    nm->maps = calloc(capacity, sizeof *nm->maps);
    nm->by_int = malloc((size_t)nb * sizeof *nm->by_int);
    nm->by_ext = malloc((size_t)nb * sizeof *nm->by_ext);
    nm->conn_next = malloc((size_t)conns * sizeof *nm->conn_next + 1);
    nm->conn_prev = malloc((size_t)conns * sizeof *nm->conn_prev + 1);
    if (!nm->maps || !nm->by_int || !nm->by_ext || !nm->conn_next || !nm->conn_prev) {
        nat_maps_destroy(nm);
        return -1;
    }
    for (uint32_t i = 0; i < conns; i++)
        nm->conn_next[i] = nm->conn_prev[i] = NAT_UNLINKED;
    nm->conns = conns;
    memset(nm->by_int, 0xff, (size_t)nb * sizeof *nm->by_int);
    memset(nm->by_ext, 0xff, (size_t)nb * sizeof *nm->by_ext);
    nm->mask = nb - 1;
    nm->capacity = capacity;
    nm->free_head = CT_NIL;
    nm->key = seed * 0xd6e8feb86659fd93ULL + 1;
    return 0;
}

void nat_maps_destroy(struct nat_maps *nm)
{
    free(nm->maps);
    free(nm->by_int);
    free(nm->by_ext);
    free(nm->conn_next);
    free(nm->conn_prev);
    memset(nm, 0, sizeof *nm);
}

struct nat_map *nat_map_by_int(struct nat_maps *nm, uint8_t proto, rt_be32 int_addr,
                               rt_be16 int_port, rt_be32 ext_addr)
{
    uint32_t i = nm->by_int[map_hash(nm, proto, int_addr, ext_addr, int_port) &
                            nm->mask];
    while (i != CT_NIL) {
        struct nat_map *m = &nm->maps[i];
        if (m->proto == proto && m->int_addr == int_addr &&
            m->int_port == int_port && m->ext_addr == ext_addr)
            return m;
        i = m->next_int;
    }
    return NULL;
}

struct nat_map *nat_map_by_ext(struct nat_maps *nm, uint8_t proto, rt_be32 addr,
                               rt_be16 port)
{
    uint32_t i = nm->by_ext[map_hash(nm, proto, addr, 0, port) & nm->mask];
    while (i != CT_NIL) {
        struct nat_map *m = &nm->maps[i];
        if (m->proto == proto && m->ext_addr == addr && m->ext_port == port)
            return m;
        i = m->next_ext;
    }
    return NULL;
}

static struct nat_map *map_new(struct nat_maps *nm, uint8_t proto,
                               rt_be32 int_addr, rt_be16 int_port,
                               rt_be32 ext_addr, rt_be16 ext_port)
{
    uint32_t i;
    if (nm->free_head != CT_NIL) {
        i = nm->free_head;
        nm->free_head = nm->maps[i].next_int;
    } else if (nm->high_water < nm->capacity) {
        i = nm->high_water++;
    } else {
        return NULL;
    }
    struct nat_map *m = &nm->maps[i];
    memset(m, 0, sizeof *m);
    m->proto = proto;
    m->int_addr = int_addr;
    m->int_port = int_port;
    m->ext_addr = ext_addr;
    m->ext_port = ext_port;
    m->in_use = 1;
    m->head = CT_NIL;
    uint32_t *hi = &nm->by_int[map_hash(nm, proto, int_addr, ext_addr, int_port) &
                               nm->mask];
    uint32_t *he = &nm->by_ext[map_hash(nm, proto, ext_addr, 0, ext_port) & nm->mask];
    m->next_int = *hi;
    *hi = i;
    m->next_ext = *he;
    *he = i;
    nm->count++;
    return m;
}

static void map_free(struct nat_maps *nm, struct nat_map *m)
{
    uint32_t i = (uint32_t)(m - nm->maps);
    uint32_t *link = &nm->by_int[map_hash(nm, m->proto, m->int_addr, m->ext_addr,
                                          m->int_port) & nm->mask];
    while (*link != CT_NIL && *link != i)
        link = &nm->maps[*link].next_int;
    if (*link == i)
        *link = m->next_int;
    link = &nm->by_ext[map_hash(nm, m->proto, m->ext_addr, 0, m->ext_port) &
                       nm->mask];
    while (*link != CT_NIL && *link != i)
        link = &nm->maps[*link].next_ext;
    if (*link == i)
        *link = m->next_ext;
    memset(m, 0, sizeof *m);
    m->next_int = nm->free_head;
    nm->free_head = i;
    nm->count--;
}

/* The mapping connection 'c' holds a reference on. */
static struct nat_map *map_of(struct nat_maps *nm, const struct ct_conn *c)
{
    const struct ct_tuple *o = &c->tuple[CT_DIR_ORIGINAL];
    const struct ct_tuple *r = &c->tuple[CT_DIR_REPLY];
    if (c->status & CT_SRC_NAT) /* outbound: inside is the original source */
        return nat_map_by_int(nm, o->proto, o->src.v4, o->sport, r->dst.v4);
    return nat_map_by_int(nm, o->proto, r->src.v4, r->sport, o->dst.v4); /* inbound */
}

void nat_map_link(struct nat_maps *nm, const struct ct_conn *c, uint32_t slot)
{
    struct nat_map *m = map_of(nm, c);
    if (!m || slot >= nm->conns || nm->conn_next[slot] != NAT_UNLINKED)
        return;
    nm->conn_prev[slot] = CT_NIL;
    nm->conn_next[slot] = m->head;
    if (m->head != CT_NIL)
        nm->conn_prev[m->head] = slot;
    m->head = slot;
}

static void unlink_conn(struct nat_maps *nm, struct nat_map *m, uint32_t slot)
{
    if (slot >= nm->conns || nm->conn_next[slot] == NAT_UNLINKED)
        return;
    uint32_t prev = nm->conn_prev[slot], next = nm->conn_next[slot];
    if (prev != CT_NIL)
        nm->conn_next[prev] = next;
    else if (m->head == slot)
        m->head = next;
    if (next != CT_NIL)
        nm->conn_prev[next] = prev;
    nm->conn_next[slot] = nm->conn_prev[slot] = NAT_UNLINKED;
}

void nat_map_release(struct nat_maps *nm, const struct ct_conn *c, uint32_t slot)
{
    struct nat_map *m = map_of(nm, c);
    if (!m)
        return;
    unlink_conn(nm, m, slot);
    if (m->refs && --m->refs == 0)
        map_free(nm, m);
}

struct nat_map *nat_map_live(struct ct_table *ct,
                             struct nat_map *m, uint64_t now_ms)
{
    /* Each expired connection is deleted once, whoever meets it: the walk
     * stops at the first live one, so it costs one look plus the deletions
     * the sweep would have made anyway.  A deletion unlinks the connection
     * (nat_map_release, through the table's on_delete) and frees the
     * mapping with its last reference (in_use then reads 0). */
    while (m->in_use) {
        uint32_t s = m->head;
        if (s == CT_NIL)
            return m; /* only references of connections being built */
        struct ct_conn *c = &ct->conns[s];
        if (!ct_expired(c, now_ms))
            return m;
        ct_delete(ct, c);
        ct->counters[RT_CNT_EXPIRED]++;
    }
    return NULL;
}

bool nat_map_knows_peer(const struct nat_map *m, rt_be32 peer)
{
    for (unsigned i = 0; i < m->n_peers; i++)
        if (m->peers[i] == peer)
            return true;
    return false;
}

static void map_add_peer(struct nat_map *m, rt_be32 peer)
{
    if (nat_map_knows_peer(m, peer))
        return;
    m->peers[m->peer_next] = peer;
    m->peer_next = (uint8_t)((m->peer_next + 1) % NAT_PEERS);
    if (m->n_peers < NAT_PEERS)
        m->n_peers++;
}

bool nat_map_adopt(struct nat_maps *nm, uint8_t proto, rt_be32 int_addr,
                   rt_be16 int_port, rt_be32 ext_addr, rt_be16 ext_port,
                   rt_be32 peer)
{
    struct nat_map *m = nat_map_by_int(nm, proto, int_addr, int_port, ext_addr);
    if (m && m->ext_port != ext_port)
        return false;
    if (!m) {
        if (nat_map_by_ext(nm, proto, ext_addr, ext_port))
            return false;
        m = map_new(nm, proto, int_addr, int_port, ext_addr, ext_port);
        if (!m)
            return false;
    }
    m->refs++;
    map_add_peer(m, peer);
    return true;
}

/* ---- choosing a binding ------------------------------------------------ */

/*
 * May the reply tuple 'r' take its current external port?  No live
 * connection may use the tuple, and under EIM no other mapping may own the
 * port.
 */
static bool port_free(struct ct_table *ct, struct nat_maps *nm,
                      const struct ct_tuple *r, rt_be16 port, bool eim,
                      uint64_t now_ms)
{
    if (nm && nm->pinned && r->family == 4 && pm_by_ext(nm->pinned, r->proto, port))
        return false; /* a LAN host asked for it */
    struct nat_map *m = eim && nm ? nat_map_by_ext(nm, r->proto, r->dst.v4, port) : NULL;
    if (m && nat_map_live(ct, m, now_ms))
        return false;
    return !ct_tuple_in_use(ct, r, now_ms);
}

bool nat_snat(struct ct_table *ct, struct nat_maps *nm, struct ct_conn *c,
              const union rt_addr *to, const struct nat_params *np,
              uint64_t *rng, uint64_t now_ms)
{
    struct ct_tuple *r = &c->tuple[CT_DIR_REPLY];
    const struct ct_tuple *o = &c->tuple[CT_DIR_ORIGINAL];
    rt_be32 addr = to->v4;
    r->dst = *to;
    c->status |= CT_SRC_NAT;
    if (!has_ports(r->proto))
        return !ct_tuple_in_use(ct, r, now_ms);
    rt_be16 *port = snat_port(r);
    /* The mapping table holds IPv4 endpoints: NAT66 maps per connection. */
    bool eim = np->eim && nm && nm->capacity && r->family == 4;

    if (eim) {
        struct nat_map *m = nat_map_by_int(nm, o->proto, o->src.v4, o->sport, addr);
        if (m)
            m = nat_map_live(ct, m, now_ms);
        if (m) {
            *port = m->ext_port;
            if (!ct_tuple_in_use(ct, r, now_ms)) {
                m->refs++;
                map_add_peer(m, o->dst.v4);
                c->status |= CT_NAT_MAPPED;
                return true;
            }
            /* The tuple clashes (a port forward on the same port, say):
             * this connection gets a port of its own, outside the mapping. */
            eim = false;
            ct->counters[RT_CNT_NAT_MAP_CLASH]++;
        }
    }

    bool found = false;
    if (np->preserve_ports && port_free(ct, nm, r, *port, eim, now_ms)) {
        found = true;
    } else {
        uint32_t lo = np->port_min, hi = np->port_max;
        if (is_icmp(r->proto)) {
            lo = 0;  /* identifiers have no reserved range */
            hi = 65535;
        }
        uint32_t range = hi - lo + 1;
        uint32_t attempts = range < 128 ? range : 128;
        /* Port parity (RFC 4787 REQ-4): the first round only tries ports of
         * the inside port's parity. */
        uint32_t parity = ntohs(o->sport) & 1u;
        bool first = !is_icmp(r->proto) && range >= 2;
        ct->counters[RT_CNT_NAT_PORT_SEARCH]++;
        while (!found) {
            uint32_t off = (uint32_t)(rng_next(rng) % range);
            for (uint32_t i = 0; i < attempts && !found; i++) {
                uint32_t p = lo + (first ? (off + 2 * i) % range : (off + i) % range);
                if (first && (p & 1) != parity)
                    p = p + 1 <= hi ? p + 1 : p - 1;
                *port = htons((uint16_t)p);
                ct->counters[RT_CNT_NAT_PORT_PROBES]++;
                found = port_free(ct, nm, r, *port, eim, now_ms);
            }
            bool was_first = first;
            first = false;
            if (found)
                break;
            if (range <= 128) {
                /* A small range is searched whole after the parity round,
                 * so a flow fails only when every port is taken. */
                if (!was_first)
                    break;
                continue;
            }
            if (attempts < 16)
                break;
            attempts /= 2;
        }
    }
    if (!found)
        return false;
    if (eim) {
        struct nat_map *m = map_new(nm, o->proto, o->src.v4, o->sport, addr, *port);
        if (!m) {
            ct->counters[RT_CNT_NAT_MAP_FULL]++; /* works, but not EIM */
            return true;
        }
        m->refs = 1;
        map_add_peer(m, o->dst.v4);
        c->status |= CT_NAT_MAPPED;
    }
    return true;
}

/* Offsets of the L4 checksum for 'proto', or 0 if it has none we keep. */
static uint32_t l4_csum_off(uint8_t proto)
{
    switch (proto) {
    case IPPROTO_TCP_: return TCP_OFF_CSUM;
    case IPPROTO_UDP_: return UDP_OFF_CSUM;
    case IPPROTO_ICMP_: return ICMP_OFF_CSUM;
    case IPPROTO_ICMPV6_: return ICMP_OFF_CSUM;
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
    /* A quoted packet may end before its ports (its header chain claimed
     * more than the quote holds): nothing there to rewrite. */
    if (l4_avail < off + 2)
        return;
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

/*
 * Changes the IPv6 address at 'ip' + 'addr_off' to 'new_'.  IPv6 has no
 * header checksum; TCP, UDP and ICMPv6 all cover the addresses through the
 * pseudo-header (RFC 8200 8.1).
 */
static void set_addr6(uint8_t *ip, uint32_t addr_off, uint8_t proto, uint8_t *l4,
                      uint32_t l4_avail, const uint8_t *new_, bool partial)
{
    uint8_t old[16];
    memcpy(old, ip + addr_off, 16);
    if (memcmp(old, new_, 16) == 0)
        return;
    memcpy(ip + addr_off, new_, 16);
    uint32_t coff = l4_csum_off(proto);
    if (!coff || l4_avail < coff + 2)
        return;
    csum_replace16(l4 + coff, old, new_, partial);
    /* A UDP checksum is never zero in IPv6; a computed zero is sent as
     * 0xffff (RFC 8200 8.1), which is the same value. */
    if (proto == IPPROTO_UDP_ && !partial && wire_be16(l4 + coff) == 0)
        wire_put_be16(l4 + coff, 0xffff);
}

/* make_like() for an IPv6 packet whose upper-layer protocol is 'proto'. */
static void make_like6(uint8_t *ip, uint8_t proto, uint8_t *l4, uint32_t l4_avail,
                       const struct ct_tuple *t, bool partial)
{
    set_addr6(ip, IP6_OFF_SRC, proto, l4, l4_avail, t->src.b, partial);
    set_addr6(ip, IP6_OFF_DST, proto, l4, l4_avail, t->dst.b, partial);
    if (proto == IPPROTO_TCP_ || proto == IPPROTO_UDP_) {
        set_l4_word(proto, l4, l4_avail, 0, t->sport, partial);
        set_l4_word(proto, l4, l4_avail, 2, t->dport, partial);
    } else if (proto == IPPROTO_ICMPV6_ && l4_avail >= ICMP_HDR_LEN) {
        set_l4_word(proto, l4, l4_avail, ICMP_OFF_ID, t->sport, false);
    }
}

/* How many bytes of the quoted packet's L4 header an ICMP error holds. */
static uint32_t quote_l4_avail(const struct pkt_meta *m)
{
    return m->inner_l4_off < m->len ? m->len - m->inner_l4_off : 0;
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
    if (!is_icmp(o->proto)) {
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
    if (m->family == 6)
        make_like6(m->data, m->proto, m->data + m->l4_off, m->l4_len, &t,
                   m->csum_partial);
    else
        make_like(m->data, m->data + m->l4_off, m->l4_len, &t, m->csum_partial);
}

/* nat_rewrite_icmp_error() for ICMPv6 (RFC 7857 section 2 asks the same of
 * every NAT). */
static void rewrite_icmp6_error(struct pkt_meta *m, const struct ct_conn *c,
                                enum ct_dir dir)
{
    uint8_t *ip = m->data;
    uint8_t *icmp = ip + m->l4_off;
    struct ct_tuple t;
    target_tuple(c, dir, &t);
    if (memcmp(ip + IP6_OFF_SRC, c->tuple[dir].src.b, 16) == 0)
        memcpy(ip + IP6_OFF_SRC, t.src.b, 16);
    memcpy(ip + IP6_OFF_DST, t.dst.b, 16);
    uint8_t *inner = m->data + m->inner_off;
    make_like6(inner, m->inner.proto, m->data + m->inner_l4_off,
               quote_l4_avail(m), &c->tuple[!dir], false);
    /* Addresses and quoted bytes changed: the whole checksum again. */
    wire_put_be16(icmp + ICMP_OFF_CSUM, 0);
    wire_put_be16(icmp + ICMP_OFF_CSUM,
                  csum_fold(csum_add_bytes(csum_pseudo6(ip + IP6_OFF_SRC, ip + IP6_OFF_DST,
                                                        IPPROTO_ICMPV6_, m->l4_len),
                                           icmp, m->l4_len)));
}

void nat_rewrite_icmp_error(struct pkt_meta *m, const struct ct_conn *c,
                            enum ct_dir dir)
{
    if (!(c->status & (CT_SRC_NAT | CT_DST_NAT)))
        return;
    if (m->family == 6) {
        rewrite_icmp6_error(m, c, dir);
        return;
    }
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
    make_like(inner, inner_l4, quote_l4_avail(m), &c->tuple[!dir], false);

    /* The quoted bytes changed under the ICMP checksum: recompute it. */
    wire_put_be16(icmp + ICMP_OFF_CSUM, 0);
    wire_put_be16(icmp + ICMP_OFF_CSUM, csum_full(icmp, m->l4_len));
}
